// REST and WebSocket addresses of the server that serves this page, with the API
// key when it asks for one. The key lives in sessionStorage: it survives a reload
// but not the tab, and is never written into the page.

const KEY_STORAGE = "trio-pubsub.api-key";

/** The server refused the API key (or wants one): 401. */
export class Unauthorized extends Error {}

/** Any other non-2xx answer; `message` is the server's own explanation. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor() {
    this.key = sessionStorage.getItem(KEY_STORAGE);
  }

  useKey(key) {
    this.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  }

  forgetKey() {
    this.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body);
  }

  delete(path) {
    return this.request("DELETE", path);
  }

  async request(method, path, body) {
    const headers = {};
    if (this.key) headers["X-API-Key"] = this.key;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) throw new Unauthorized("the server wants a valid API key");
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ApiError(response.status, data?.message ?? `HTTP ${response.status}`);
    }
    return data;
  }

  /** Whether the server wants a key, from the open /health (false when it does not say). */
  async keyRequired() {
    try {
      const health = await (await fetch("/health", { cache: "no-store" })).json();
      return health.api_key_required === true;
    } catch {
      return false; // the first request will tell
    }
  }

  /** The /ws address of this server; browsers cannot set headers on a WebSocket. */
  socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = this.key ? `?api_key=${encodeURIComponent(this.key)}` : "";
    return `${scheme}//${location.host}/ws${query}`;
  }
}

/** `/topics/{name}...` with the name escaped (names may hold ':'). */
export function topicPath(name, rest = "") {
  return `/topics/${encodeURIComponent(name)}${rest}`;
}
