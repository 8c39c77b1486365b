"""REST on quart-trio: topic management, health, stats, info, metrics and the
API's own descriptions.

No broker logic lives here: every route translates HTTP to one node call and
a typed error to the contract's JSON error body; answers are encoded from the
types of :mod:`pubsub._server.bodies`, which the OpenAPI document is generated
from. The app also serves ``/ws`` upgrades that arrive on a connection that
already carried HTTP requests (:mod:`pubsub._server.asgi_ws`).

Auth (``API_KEY``): every path needs the key but ``/health``, ``/openapi.json``
and ``/schema/frames.json`` (they describe the API and hold no data);
``/metrics`` also opens to ``METRICS_TOKEN``.
"""

from __future__ import annotations

import math
import mimetypes
import platform
import time
import uuid
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .._core.engine import TopicInfo
from .._core.node import MAX_HISTORY_LIMIT, Node
from .._core.ratelimit import TokenBucket
from .._protocol.errors import (
    BadRequest,
    MessageTooLarge,
    PubSubError,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_body,
)
from .._protocol.frames import MAX_JSON_DEPTH, Message, json_too_deep, too_deep_message
from .._protocol.timestamps import format_ts, ts_now
from .._version import __version__
from .asgi_ws import serve_asgi_websocket
from .auth import allowed, metrics_allowed, refused
from .bodies import (
    DEFAULT_HISTORY_LIMIT,
    CreateTopic,
    EngineStatus,
    Health,
    HealthStatus,
    Latency,
    Memory,
    MessageHistory,
    NodeList,
    NodeStatus,
    PublishResult,
    RestMessage,
    ServiceInfo,
    StoredMessage,
    TopicCreated,
    TopicDeleted,
    TopicDetail,
    TopicList,
    TopicSummary,
    stats_report,
)
from .metrics import Metrics
from .origins import FORBIDDEN, allowed_origins, origin_refusal, refused_origin
from .schemas import FRAMES_FILE, OPENAPI_FILE, generated

JSON: Final = "application/json"
#: Paths that need no API key: health checks, the API's descriptions, and the
#: dashboard's page and files (they hold no data: the page asks for the key).
OPEN_PATHS: Final = frozenset({"/health", "/openapi.json", "/schema/frames.json", "/dashboard"})
DASHBOARD_PREFIX: Final = "/dashboard/"
#: The dashboard's page and its files, shipped in the package.
DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "dashboard"
#: The dashboard's files: revalidated (an upgrade shows at once), and only its
#: own scripts, styles and connections (no inline script, nothing from elsewhere).
DASHBOARD_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
#: Methods that change nothing: served to any origin (without CORS headers, a
#: page elsewhere cannot read the answer).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: What a page of an allowed origin may send and read.
CORS_ALLOW_METHODS: Final = "GET, POST, DELETE, OPTIONS"
CORS_ALLOW_HEADERS: Final = "Content-Type, X-API-Key, Authorization, X-Metrics-Token"
CORS_EXPOSE_HEADERS: Final = "Retry-After"
CORS_MAX_AGE: Final = "600"


def cors_headers(origin: str) -> dict[str, str]:
    """The headers that let a page of ``origin`` (allowed) read an answer."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
        "Vary": "Origin",
    }


def preflight_headers(origin: str) -> dict[str, str]:
    """The answer to a CORS preflight from ``origin`` (allowed)."""
    return {
        **cors_headers(origin),
        "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": CORS_MAX_AGE,
    }


async def dashboard_response(name: str) -> Response:
    """A file of the dashboard (404 for anything outside its directory)."""
    path = (DASHBOARD_DIR / name).resolve()
    if not path.is_relative_to(DASHBOARD_DIR) or not path.is_file():
        return Response(
            error_body("NOT_FOUND", f"no dashboard file {name!r}"), 404, content_type=JSON
        )
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    body = await trio.Path(path).read_bytes()
    return Response(body, content_type=content_type, headers=DASHBOARD_HEADERS)


def _forbidden(origin: str) -> Response:
    return Response(error_body(FORBIDDEN, origin_refusal(origin)), 403, content_type=JSON)


T = TypeVar("T")
_node_status_decoder: Final = msgspec.json.Decoder(NodeStatus)


def decode_body(body: str | bytes, kind: type[T], max_depth: int = MAX_JSON_DEPTH) -> T:
    """``body`` as ``kind``; ``BAD_REQUEST`` naming what is wrong otherwise
    (malformed or not UTF-8, nested deeper than ``max_depth``, invalid fields)."""
    if json_too_deep(body, max_depth):
        raise BadRequest(too_deep_message(max_depth))
    try:
        if isinstance(body, bytes):
            body.decode()  # before the fields are looked at: a bad key says nothing of it
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    except RecursionError:  # a MAX_JSON_DEPTH above what msgspec can decode
        raise BadRequest(too_deep_message(max_depth)) from None


def query_int(name: str, default: int, *, most: int | None = None) -> int:
    """A non-negative integer query parameter (at most ``most``)."""
    text = request.args.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise BadRequest(f"query parameter {name!r} must be a non-negative integer")
    value = int(text)
    if most is not None and value > most:
        raise BadRequest(f"query parameter {name!r} must be at most {most}")
    return value


class ServerState:
    """What the REST layer needs to know about the server around it."""

    def __init__(self) -> None:
        self.draining = False


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, content_type=JSON)


def error_response(error: PubSubError) -> Response:
    """The contract's REST error body with the error's HTTP status (and, for
    ``RATE_LIMITED``, ``retry_after_ms`` and a ``Retry-After`` header in seconds)."""
    if isinstance(error, RateLimited):
        body = error_body(error.code, error.message, error.retry_after_ms)
        headers = {"Retry-After": str(math.ceil(error.retry_after_ms / 1000))}
        return Response(body, error.code.http_status, headers=headers, content_type=JSON)
    return Response(
        error_body(error.code, error.message), error.code.http_status, content_type=JSON
    )


class AddressLimits:
    """``REST_RATE_LIMIT``: a token bucket per client address (burst = rate).

    A bucket that has refilled is the same as none, so those are forgotten now
    and then: the table holds only addresses that published in the last second
    or so, however many come and go."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._next_sweep = 0.0

    def take(self, address: str) -> int:
        """0 if ``address`` may publish now, else the milliseconds to wait."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._buckets = {a: b for a, b in self._buckets.items() if not b.full(now)}
            self._next_sweep = now + 1.0
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.rate, now)
        return bucket.take(now)


def _subscribers(node: Node, info: TopicInfo) -> int:
    """Cluster-wide when the engine knows them, else this node's."""
    return info.subscribers if info.subscribers is not None else node.local_subscribers(info.name)


def _engine_status(node: Node) -> EngineStatus:
    engine = node.engine
    return EngineStatus(engine.kind, "ok" if engine.available else "unavailable")


def create_app(node: Node, state: ServerState, metrics: Metrics) -> QuartTrio:
    """The REST application for ``node``."""
    settings = node.settings
    app = QuartTrio("pubsub", static_folder=None)  # no /static route: nothing to serve
    app.config["MAX_CONTENT_LENGTH"] = settings.max_message_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    origins = allowed_origins(settings.allowed_origins)

    @app.before_request
    async def check_origin() -> Response | None:
        """CORS preflights, and ``ALLOWED_ORIGINS`` for requests from a browser page."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        allowed = origins.allows(origin, request.headers.get("Host"))
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                refused_origin("rest", request.path, request.remote_addr, origin)
                return _forbidden(origin)
            return Response(b"", 204, headers=preflight_headers(origin))
        if not allowed and request.method not in SAFE_METHODS:
            # Whatever its content type: a "simple" POST needs no preflight.
            refused_origin("rest", request.path, request.remote_addr, origin)
            return _forbidden(origin)
        return None

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and origins.allows(origin, request.headers.get("Host")):
            response.headers.update(cors_headers(origin))
        return response

    @app.before_request
    async def authenticate() -> Response | None:
        path = request.path
        if path in OPEN_PATHS or path.startswith(DASHBOARD_PREFIX):
            return None
        if request.method == "OPTIONS":
            return None  # a preflight (answered above) or an OPTIONS carries no key
        headers = request.headers
        key = headers.get("X-API-Key")
        if path == "/metrics":
            authorization = headers.get("Authorization")
            token = headers.get("X-Metrics-Token")
            if metrics_allowed(
                settings.api_key,
                settings.metrics_token,
                key_header=key,
                authorization=authorization,
                token_header=token,
            ):
                return None
            given = key is not None or authorization is not None or token is not None
            refused("rest", path, request.remote_addr, key_given=given)
            response = error_response(
                Unauthorized("missing or wrong X-API-Key header or metrics token")
            )
            if settings.metrics_token is not None:
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if allowed(settings.api_key, key):
            return None
        refused("rest", path, request.remote_addr, key_given=key is not None)
        return error_response(Unauthorized("missing or wrong X-API-Key header"))

    @app.errorhandler(PubSubError)
    async def on_pubsub_error(exc: PubSubError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return error_response(
                MessageTooLarge(
                    f"request body larger than MAX_MESSAGE_SIZE ({settings.max_message_size} bytes)"
                )
            )
        if status == 400:
            return error_response(BadRequest(exc.description or "bad request"))
        # Not contract errors (unknown path, wrong method): the HTTP reason as the code.
        name = (exc.name or "error").upper().replace(" ", "_")
        response = Response(error_body(name, exc.description or ""), status, content_type=JSON)
        methods = getattr(exc, "valid_methods", None)
        if status == 405 and methods:
            response.headers["Allow"] = ", ".join(methods)  # RFC 9110 15.5.6
        return response

    @app.post("/topics")
    async def create_topic() -> Response:
        body = decode_body(
            await request.get_data(cache=False), CreateTopic, settings.max_json_depth
        )
        info = await node.create_topic(body.name, body.message_ttl_ms)
        return _json(TopicCreated("created", info.name, ts_now()), 201)

    @app.delete("/topics/<name>")
    async def delete_topic(name: str) -> Response:
        await node.delete_topic(name)
        return _json(TopicDeleted("deleted", name, ts_now()))

    @app.get("/topics")
    async def list_topics() -> Response:
        topics = [
            TopicSummary(
                name=info.name,
                subscribers=_subscribers(node, info),
                messages=info.offset,
                created_at=format_ts(info.created_at),
            )
            for info in await node.topics()
        ]
        return _json(TopicList(topics))

    @app.get("/topics/<name>")
    async def show_topic(name: str) -> Response:
        info = await node.topic(name)
        return _json(
            TopicDetail(
                name=info.name,
                subscribers=_subscribers(node, info),
                messages=info.offset,
                stored=info.stored,
                offset=info.offset,
                epoch=info.epoch,
                message_ttl_ms=info.message_ttl_ms,
                created_at=format_ts(info.created_at),
            )
        )

    limits = AddressLimits(settings.rest_rate_limit) if settings.rest_rate_limit else None

    @app.post("/topics/<name>/messages")
    async def publish(name: str) -> Response:
        if limits is not None:
            wait = limits.take(request.remote_addr or "")
            if wait:
                node.counters.rate_limited += 1
                raise node.rate_limited("REST_RATE_LIMIT", wait)
        body = decode_body(
            await request.get_data(cache=False), RestMessage, settings.max_json_depth
        )
        message = Message(id=body.id or uuid.uuid4().hex, payload=body.payload)
        answer = await node.publish(name, message, body.ttl_ms)
        return _json(PublishResult("published", name, message.id, answer.offset, answer.ts), 201)

    @app.get("/topics/<name>/messages")
    async def history(name: str) -> Response:
        since = query_int("since_offset", 0)
        limit = query_int("limit", DEFAULT_HISTORY_LIMIT, most=MAX_HISTORY_LIMIT)
        found = await node.history(name, since, limit)
        messages = [
            StoredMessage(p.offset, p.ts, p.message, format_ts(p.expires) if p.expires else None)
            for p in found.publications
        ]
        return _json(MessageHistory(name, found.epoch, found.offset, messages))

    @app.get("/health")
    async def health() -> Response:
        engine = node.engine
        status: HealthStatus
        if state.draining:
            status = "draining"
        elif not engine.available:
            status = "unavailable"
        else:
            status = "ok"
        topics: int | None = None
        if engine.available:
            try:
                topics = await node.topic_count()
            except Unavailable:
                status = "unavailable"
        body = Health(
            status=status,
            uptime_sec=node.uptime_sec(),
            topics=topics,
            subscribers=node.total_subscribers(),
            engine=_engine_status(node),
            api_key_required=settings.api_key is not None,
        )
        return _json(body, 200 if status == "ok" else 503)

    def node_status() -> NodeStatus:
        counters = node.counters
        p50, p99, _ = metrics.sampler.recent()
        rss = metrics.resident_memory_bytes()
        return NodeStatus(
            node_id=node.node_id,
            connections=len(node.sessions()),
            subscribers=node.total_subscribers(),
            published=counters.published,
            delivered=counters.delivered,
            dropped=counters.dropped,
            slow_consumer_disconnects=counters.slow_consumer_disconnects,
            p50_ms=p50,
            p99_ms=p99,
            rss_mb=round(rss / 1_048_576, 2) if rss is not None else 0.0,
            updated_at=ts_now(),
        )

    node.engine.report_status(lambda: msgspec.json.encode(node_status()))

    @app.get("/nodes")
    async def nodes() -> Response:
        own = msgspec.structs.replace(node_status(), is_self=True)
        others: list[NodeStatus] = []
        try:
            reports = await node.engine.node_statuses()
        except Unavailable:
            reports = []  # the others are out of sight; this node still answers
        for report in reports:
            try:
                status = _node_status_decoder.decode(report)
            except msgspec.DecodeError:
                continue  # a node of another version: left out rather than fail
            if status.node_id != own.node_id:
                others.append(status)
        others.sort(key=lambda status: status.node_id)
        return _json(NodeList([own, *others]))

    @app.get("/stats")
    async def stats() -> Response:
        rss = metrics.resident_memory_bytes()
        memory = Memory(rss_mb=round(rss / 1_048_576, 2) if rss is not None else 0.0)
        p50, p99, samples = metrics.sampler.recent()
        latency = Latency(p50_ms=p50, p99_ms=p99, samples=samples)
        return _json(stats_report(await node.stats(), memory, latency))

    # The settings without secrets (API_KEY, METRICS_TOKEN, the Redis password).
    config = msgspec.structs.replace(settings, **settings.public())

    @app.get("/info")
    async def info() -> Response:
        return _json(
            ServiceInfo(
                service="trio-pubsub",
                version=__version__,
                python=platform.python_version(),
                node_id=node.node_id,
                engine=_engine_status(node),
                config=config,
            )
        )

    @app.get("/metrics")
    async def metrics_route() -> Response:
        # Scrapes go on during an engine outage, when they matter most.
        try:
            stats = await node.stats()
        except Unavailable:
            stats = await node.stats(local=True)
        exposition = metrics.exposition(stats, engine_available=node.engine.available)
        return Response(exposition, content_type="text/plain; version=0.0.4")

    # Generated on the first request (once per process), not at start-up.
    @app.get("/openapi.json")
    async def openapi() -> Response:
        return Response(generated()[OPENAPI_FILE], content_type=JSON)

    @app.get("/schema/frames.json")
    async def frame_schema() -> Response:
        return Response(generated()[FRAMES_FILE], content_type=JSON)

    @app.get("/dashboard")
    async def dashboard() -> Response:
        return await dashboard_response("index.html")

    @app.get("/dashboard/<path:name>")
    async def dashboard_file(name: str) -> Response:
        return await dashboard_response(name)

    @app.websocket("/ws")
    async def websocket_on_reused_connection() -> Response | None:
        return await serve_asgi_websocket(node, state.draining, metrics, origins)

    return app
