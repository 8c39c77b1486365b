// The live tail of one topic over /ws. After a dropped connection it resubscribes
// with since_offset + epoch, so the tail goes on without a gap or a duplicate when
// the server still holds the missed messages (and says so when it does not).

const HISTORY = 100; // events shown, and asked for with last_n on the first subscribe
const RETRY_MS = [500, 1000, 2000, 5000];

export class TopicTail {
  /**
   * @param {string} url the /ws address (with ?api_key= when needed)
   * @param {string} topic
   * @param {{event(frame), note(text), status(text, isError)}} view
   */
  constructor(url, topic, view) {
    this.url = url;
    this.topic = topic;
    this.view = view;
    this.lastOffset = null; // of the newest event shown
    this.epoch = null;
    this.retries = 0;
    this.stopped = false;
    this.timer = null;
    this.connect();
  }

  connect() {
    this.view.status("connecting…");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    socket.onclose = () => this.closed(socket);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000);
  }

  subscribeFrame() {
    const frame = { type: "subscribe", topic: this.topic, client_id: "dashboard", request_id: "tail" };
    if (this.epoch !== null && this.lastOffset !== null) {
      frame.since_offset = this.lastOffset;
      frame.epoch = this.epoch;
    } else {
      frame.last_n = HISTORY;
    }
    return frame;
  }

  receive(frame) {
    if (frame.type === "info" && frame.msg === "connected") {
      this.socket.send(JSON.stringify(this.subscribeFrame()));
    } else if (frame.type === "ack" && frame.request_id === "tail") {
      this.acknowledged(frame);
    } else if (frame.type === "event" && frame.topic === this.topic) {
      if (this.lastOffset === null || frame.offset > this.lastOffset) {
        this.lastOffset = frame.offset;
        this.view.event(frame);
      }
    } else if (frame.type === "info") {
      this.info(frame);
    } else if (frame.type === "error") {
      this.view.status(`${frame.error.code}: ${frame.error.message}`, true);
      if (frame.error.code === "TOPIC_NOT_FOUND") this.stop();
    }
  }

  acknowledged(ack) {
    const resumed = this.epoch !== null && this.lastOffset !== null;
    if (resumed && !ack.recovered) {
      this.view.note("reconnected, but the server no longer holds every missed message");
    }
    this.epoch = ack.epoch;
    // The last_n replay follows the ack with offsets above this, then live events:
    // should the connection drop before any arrives, the resume starts here.
    this.lastOffset ??= Math.max(ack.offset - HISTORY, 0);
    this.retries = 0;
    this.view.status("live");
  }

  info(frame) {
    if (frame.msg === "topic_deleted" && frame.topic === this.topic) {
      this.view.status("this topic was deleted", true);
      this.stop();
    } else if (frame.msg === "messages_dropped") {
      this.view.note(`${frame.dropped} messages dropped (this tab read too slowly)`);
    } else if (frame.msg === "messages_expired") {
      this.view.note(`${frame.expired} messages expired before delivery`);
    } else if (frame.msg === "shutting_down") {
      this.view.status("the server is shutting down", true);
    }
  }

  closed(socket) {
    if (this.stopped || socket !== this.socket) return;
    const delay = RETRY_MS[Math.min(this.retries, RETRY_MS.length - 1)];
    this.retries += 1;
    this.view.status(`disconnected; retrying in ${delay / 1000} s`, true);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
