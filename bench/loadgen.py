"""Load processes: WebSocket, Redis and NATS clients on raw non-blocking sockets and epoll.

Each load process is ``python bench/loadgen.py ROLE CONFIG_JSON`` (or ``@FILE`` holding
the JSON, for configurations too long for one argument); the orchestrator
(:mod:`bench.scenarios`) pins it to the load core with ``taskset``. It imports only the
standard library, so it starts fast and shares no code path with the server under test.

Every message's payload is ``{"seq":N,"t":"T","data":"xxx..."}``: ``seq`` counts 1, 2, ...
per topic and publisher, ``T`` is the publisher's ``time.monotonic_ns()`` (CLOCK_MONOTONIC,
system-wide on Linux, so stamps compare across processes) as 19 digits, written into
pre-built frames at send time (``stamp.join(pieces)``), one stamp per batch. With
``classes`` C > 0 the payload also carries ``"kind":"kK"``, K = (N - 1) % C, for content
filters to select on (``{"seq":N,"t":"T","kind":"k3","data":"..."}``).

Roles:

``subscribe``
    Many connections, each subscribed to one of the run's topics, or each following a
    :class:`Plan` (any number of topics or patterns, each with an optional content
    filter, and which topics and kinds of message reach it). Mode ``count`` counts
    the protocol's per-message marker with ``bytes.count`` on every received chunk (a
    marker split across two chunks is found too) and, on one chunk in 8, checks that the
    chunk's last complete ``"seq":`` equals the running count (or one less when the
    chunk ends inside a message) and samples the latency of that message (the order
    checks apply to connections that receive one topic and one kind, or every kind, of
    messages: the ``seq`` they see rises by a known step). Mode ``every``
    decodes each message's ``seq`` and ``t`` (exact order check, latency of every
    delivery). Mode ``stall`` subscribes and then never reads: the slow consumer.
``publish``
    One connection that floods (``rate`` 0: pre-built batches, at most ``window``
    messages unacknowledged) or publishes one message every ``1/rate`` seconds,
    round-robin over its topics. Acknowledgements: our ``ack`` frames, Redis integer
    replies, NATS ``PONG`` to a ``PING`` sent after each batch.
``connect``
    Opens connections as fast as set-up allows (``SETUP_BATCH`` in flight), timing the
    set-up; then holds them until ``stop`` (``hold``) or closes them.

Talking to the orchestrator: one JSON object per line on stdout (``ready``, ``progress``,
``done`` with ``result``, or ``error``); commands one per line on stdin: ``go``, ``target
A`` (the publishers finished with A messages in all: stop once every connection has its
share, or once nothing arrived for ``quiet_seconds``) and ``stop``. End of stdin means
stop. Every loop is bounded in wall time. Client WebSocket frames are masked with a zero
key (legal; masking is then the identity), so pre-built frames cost nothing to mask.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, NotRequired, TypedDict, cast

HOST: Final = "127.0.0.1"
#: RFC 6455's sample nonce; any fixed 16-byte base64 key is fine for a benchmark.
WS_KEY: Final = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RECV_SIZE: Final = 1 << 18
#: The stamp slot in a pre-built frame (never occurs elsewhere).
STAMP_SLOT: Final = b"\x00" * 19
SEQ_KEY: Final = b'"seq":'
T_KEY: Final = b'"t":"'
#: Every message in the byte stream of each protocol contains its marker exactly once.
#: (Redis: ``message`` from SUBSCRIBE and ``pmessage`` from PSUBSCRIBE alike.)
EVENT_MARKS: Final = {"ws": b'"type":"event"', "redis": b"message\r\n", "nats": b"MSG "}
ACK_MARKS: Final = {"ws": b'"type":"ack"', "redis": b"\r\n", "nats": b"PONG\r\n"}
ERROR_MARKS: Final = {"ws": b'"type":"error"', "redis": b"-ERR", "nats": b"-ERR"}
MESSAGE_RE: Final = re.compile(rb'"seq":(\d+),"t":"(\d+)"')
PROGRESS_EVERY: Final = 0.5
#: Connections opened (set-ups in flight) at a time.
SETUP_BATCH: Final = 100
#: Bytes of each connection's stream kept for the order checks (several whole messages).
END_BYTES: Final = 1024
#: Check order and sample latency on one chunk in this many (a power of two, minus one).
SAMPLE_MASK: Final = 7

Proto = Literal["ws", "redis", "nats"]
Mode = Literal["count", "every", "stall"]


class ProtocolViolation(Exception):
    """The server said something the benchmark did not expect."""


class Subscription(TypedDict):
    """One subscribe a connection makes."""

    #: A topic, or a wildcard pattern when ``pattern`` (Redis: a glob, sent by PSUBSCRIBE).
    topic: str
    pattern: bool
    #: A content filter (our protocol only); None: every message.
    filter: dict[str, Any] | None


class Plan(TypedDict):
    """What one subscriber connection subscribes to and which published messages reach it."""

    subscriptions: list[Subscription]
    #: Indexes into the run's ``topics`` of the topics whose messages reach it.
    topics: list[int]
    #: Of those, the kinds (``(seq - 1) % classes``) that reach it; None: every message.
    kinds: list[int] | None


class SubscriberConfig(TypedDict):
    proto: Proto
    port: int
    topics: list[str]
    #: Connection i subscribes to ``topics[(first + i) % len(topics)]`` (without ``plans``).
    first: int
    connections: int
    #: One per connection, instead of the rule above (``connections`` is then their number).
    plans: NotRequired[list[Plan]]
    #: The publishers' ``classes`` (0: their payloads carry no kind).
    classes: NotRequired[int]
    mode: Mode
    #: False when several publishers interleave on a topic (counts are still exact).
    check_order: bool
    #: Latency of messages with ``seq <= warm`` is not recorded.
    warm: int
    max_seconds: float
    setup_seconds: float
    quiet_seconds: float


class PublisherConfig(TypedDict):
    proto: Proto
    port: int
    topics: list[str]
    messages: int
    #: Messages per second; 0 floods.
    rate: float
    batch: int
    window: int
    payload_bytes: int
    max_seconds: float
    setup_seconds: float
    #: After the time cap: how long to wait for the acks of what was sent.
    grace_seconds: float
    #: Payloads carry ``"kind":"kK"``, K = (seq - 1) % classes; 0: no kind.
    classes: NotRequired[int]


class ConnectConfig(TypedDict):
    proto: Proto
    port: int
    connections: int
    hold: bool
    max_seconds: float
    setup_seconds: float


class SubscriberResult(TypedDict):
    connections: int
    events: int
    expected: int
    lost: int
    duplicated: int
    order_errors: int
    #: Connections whose last ``seq`` differs from their count.
    final_errors: int
    closed: int
    timed_out: bool
    recv_calls: int
    cpu_s: float
    wall_s: float
    first_ns: int
    last_ns: int
    #: Publish-to-receive latencies in microseconds (sampled in ``count`` mode).
    latencies_us: list[float]


class PublisherResult(TypedDict):
    messages: int
    published: int
    acked: int
    errors: int
    error_sample: str
    capped: bool
    timed_out: bool
    cpu_s: float
    wall_s: float
    first_ns: int
    last_ns: int


class ConnectResult(TypedDict):
    connections: int
    setup_s: float
    per_s: float
    cpu_s: float
    wall_s: float


# ------------------------------------------------------------------ sockets and set-up


def remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("set-up took too long")
    return left


def recv_before(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(remaining(deadline))
    data = sock.recv(RECV_SIZE)
    if not data:
        raise ConnectionError("the server closed the connection")
    return data


def read_until(
    sock: socket.socket, done: Callable[[bytes], bool], deadline: float, most: int = 65536
) -> bytes:
    data = b""
    while not done(data):
        data += recv_before(sock, deadline)
        if len(data) > most:
            raise ProtocolViolation(f"set-up reply too long: {data[:200]!r}")
    return data


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame masked with the zero key (so the payload is unchanged)."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def resp_command(*args: bytes) -> bytes:
    return b"".join([b"*%d\r\n" % len(args), *(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)])


def ws_frames(data: bytes) -> list[bytes]:
    """The text payloads of the complete server frames in ``data`` (set-up only)."""
    frames, pos = [], 0
    while len(data) - pos >= 2:
        length, head = data[pos + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if len(data) - pos < head + length:
            break
        frames.append(data[pos + head : pos + head + length])
        pos += head + length
    return frames


def ws_request(port: int) -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_finish(sock: socket.socket, deadline: float) -> None:
    """Read the 101 response (checking the accept key) and the ``connected`` frame."""
    data = read_until(sock, lambda d: bool(ws_frames(d.partition(b"\r\n\r\n")[2])), deadline)
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ProtocolViolation(f"handshake refused: {head[:200]!r}")
    if base64.b64encode(hashlib.sha1(WS_KEY + WS_GUID).digest()) not in head:
        raise ProtocolViolation("wrong Sec-WebSocket-Accept")
    frames = ws_frames(rest)
    if len(frames) != 1 or b'"connected"' not in frames[0]:
        raise ProtocolViolation(f"expected only the connected frame, got {rest[:300]!r}")


def subscription(topic: str) -> Subscription:
    """A plain subscribe to one topic."""
    return Subscription(topic=topic, pattern=False, filter=None)


def setup_steps(proto: Proto, port: int, subs: Sequence[Subscription]) -> bytes:
    """What a new connection sends first (the part that does not wait for the server)."""
    if proto != "ws" and any(sub["filter"] is not None for sub in subs):
        raise ValueError(f"content filters are ours alone, not {proto}'s")
    if proto == "ws":
        return ws_request(port)
    if proto == "redis":
        if not subs:
            return resp_command(b"PING")
        plain = [sub["topic"].encode() for sub in subs if not sub["pattern"]]
        globs = [sub["topic"].encode() for sub in subs if sub["pattern"]]
        return (resp_command(b"SUBSCRIBE", *plain) if plain else b"") + (
            resp_command(b"PSUBSCRIBE", *globs) if globs else b""
        )
    connect = b'CONNECT {"verbose":false,"pedantic":false,"protocol":0}\r\n'
    # One subscription id per SUB of the connection.
    subs_ = [b"SUB %s %d\r\n" % (sub["topic"].encode(), sid) for sid, sub in enumerate(subs, 1)]
    return b"".join([connect, *subs_, b"PING\r\n"])


def ws_subscribe(sock: socket.socket, subs: Sequence[Subscription], deadline: float) -> None:
    """Send every subscribe at once, then check each answer: an ack, saying ``filtered``
    or ``pattern`` where asked (a server without the feature refuses or ignores it)."""
    requests = []
    for sub in subs:
        request: dict[str, object] = {
            "type": "subscribe",
            "topic": sub["topic"],
            "client_id": "bench-sub",
        }
        if sub["filter"] is not None:
            request["filter"] = sub["filter"]
        requests.append(client_frame(json.dumps(request, separators=(",", ":")).encode()))
    sock.sendall(b"".join(requests))
    most = 65536 + 1024 * len(subs)
    data = read_until(sock, lambda d: len(ws_frames(d)) >= len(subs), deadline, most)
    frames = ws_frames(data)
    if len(frames) != len(subs):
        raise ProtocolViolation(f"expected {len(subs)} subscribe acks, got {data[:300]!r}")
    for sub, frame in zip(subs, frames, strict=True):
        wanted = [b'"type":"ack"']
        wanted += [b'"filtered":true'] if sub["filter"] is not None else []
        wanted += [b'"pattern":true'] if sub["pattern"] else []
        if not all(part in frame for part in wanted):
            raise ProtocolViolation(
                f"subscribe {sub['topic']!r}: expected an ack with {b', '.join(wanted)!r}, "
                f"got {frame[:300]!r}"
            )


def setup_finish(
    proto: Proto, sock: socket.socket, subs: Sequence[Subscription], deadline: float
) -> None:
    """Complete a connection's set-up; afterwards the stream is at a message boundary."""
    if proto == "ws":
        ws_finish(sock, deadline)
        if subs:
            ws_subscribe(sock, subs, deadline)
    elif proto == "redis":
        # Each (P)SUBSCRIBE name: *3 $9 subscribe $N name :count (six lines); PING: +PONG.
        lines = 6 * len(subs) or 1
        most = 65536 + 256 * len(subs)
        data = read_until(sock, lambda d: d.count(b"\r\n") >= lines, deadline, most)
        if data.count(b"\r\n") != lines or data.startswith(b"-") or b"\r\n-" in data:
            raise ProtocolViolation(f"unexpected Redis reply {data[:200]!r}")
    else:
        data = read_until(sock, lambda d: b"PONG\r\n" in d, deadline)
        if b"-ERR" in data or not data.startswith(b"INFO "):
            raise ProtocolViolation(f"unexpected NATS reply {data[:200]!r}")


def open_connections(
    proto: Proto, port: int, subs: Sequence[Sequence[Subscription]], deadline: float
) -> list[socket.socket]:
    """One connection per entry of ``subs``, making those subscribes (none: just connect)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < len(subs):
            group = subs[len(socks) : len(socks) + SETUP_BATCH]
            start = len(socks)
            for mine in group:
                sock = socket.create_connection((HOST, port), timeout=remaining(deadline))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socks.append(sock)
                sock.sendall(setup_steps(proto, port, mine))
            for offset, mine in enumerate(group):
                setup_finish(proto, socks[start + offset], mine, deadline)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def message_template(
    proto: Proto, topic: str, seq: int, payload_bytes: int, classes: int = 0
) -> bytes:
    """One publish of message ``seq`` with ``STAMP_SLOT`` where the send time goes."""
    kind = b',"kind":"k%d"' % ((seq - 1) % classes) if classes else b""
    payload = b'{"seq":%d,"t":"%s"%s,"data":"%s"}' % (seq, STAMP_SLOT, kind, b"x" * payload_bytes)
    name = topic.encode()
    if proto == "ws":
        return client_frame(
            b'{"type":"publish","topic":"%s","client_id":"bench-pub",'
            b'"message":{"id":"m%d","payload":%s}}' % (name, seq, payload)
        )
    if proto == "redis":
        return resp_command(b"PUBLISH", name, payload)
    return b"PUB %s %d\r\n%s\r\n" % (name, len(payload), payload)


def last_value(data: bytes, key: bytes) -> int | None:
    """The integer after the last ``key`` in ``data``, or None when absent or cut short."""
    start = data.rfind(key)
    if start < 0:
        return None
    start += len(key)
    end = start
    size = len(data)
    while end < size and 48 <= data[end] <= 57:
        end += 1
    if end in (start, size):
        return None
    return int(data[start:end])


def share(total: int, index: int, parts: int) -> int:
    """How many of messages 1..total, sent round-robin over ``parts`` topics, go to ``index``."""
    return max(0, (total - index + parts - 1) // parts)


def plan_target(plan: Plan, total: int, topics: int, classes: int) -> int:
    """How many of ``total`` messages, published round-robin over ``topics`` topics, reach
    a connection following ``plan`` (the kind of a topic's message N is (N - 1) % classes)."""
    kinds = plan["kinds"]
    count = 0
    for index in plan["topics"]:
        on_topic = share(total, index, topics)
        count += on_topic if kinds is None else sum(share(on_topic, k, classes) for k in kinds)
    return count


def plain_plans(topics: Sequence[str], first: int, connections: int) -> list[Plan]:
    """Connection i subscribes to ``topics[(first + i) % len(topics)]`` and gets all of it."""
    indexes = [(first + i) % len(topics) for i in range(connections)]
    return [Plan(subscriptions=[subscription(topics[i])], topics=[i], kinds=None) for i in indexes]


def seq_steps(plan: Plan, classes: int) -> tuple[int, int] | None:
    """``(first, step)`` when the ``seq`` of the messages reaching a connection following
    ``plan`` is known in advance (message n has ``first + (n - 1) * step``); None when
    several topics or some of several kinds interleave."""
    kinds = plan["kinds"]
    if len(plan["topics"]) != 1:
        return None
    if kinds is None or (classes and len(kinds) == classes):
        return 1, 1
    if len(kinds) == 1:
        return kinds[0] + 1, classes
    return None


class Control:
    """Line protocol with the orchestrator: JSON lines out, commands in."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self._buffer = b""
        self._pending: list[str] = []

    def emit(self, event: str, **fields: object) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def read(self) -> list[str]:
        """Commands available now (never blocks); end of input reads as ``stop``."""
        lines, self._pending = self._pending, []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return lines
        if not data:
            return [*lines, "stop"]
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        return lines + [line.decode().strip() for line in complete if line.strip()]

    def wait_for(self, command: str, deadline: float) -> None:
        """Block until ``command``; raise on ``stop`` or at ``deadline``. Commands that
        came after it in the same read stay pending for the next :meth:`read`."""
        while True:
            lines = self.read()
            for index, line in enumerate(lines):
                if line == command:
                    self._pending = lines[index + 1 :]
                    return
                if line == "stop":
                    raise KeyboardInterrupt
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {command!r} from the orchestrator in time")
            select.select([self.fd], [], [], min(left, 1.0))

    def hold(self, deadline: float) -> None:
        """Block until ``stop`` (or end of input), at most until ``deadline``."""
        while time.monotonic() < deadline:
            if "stop" in self.read():
                return
            select.select([self.fd], [], [], min(max(0.0, deadline - time.monotonic()), 1.0))


# ------------------------------------------------------------------ subscribe


def run_subscribers(config: SubscriberConfig, ctl: Control) -> None:
    setup_deadline = time.monotonic() + config["setup_seconds"]
    topics = config["topics"]
    plans = config.get("plans") or plain_plans(topics, config["first"], config["connections"])
    mine = [plan["subscriptions"] for plan in plans]
    socks = open_connections(config["proto"], config["port"], mine, setup_deadline)
    try:
        ctl.emit("ready", connections=len(socks))
        ctl.wait_for("go", setup_deadline)
        if config["mode"] == "stall":
            start = time.monotonic()
            ctl.hold(start + config["max_seconds"])
            result = SubscriberResult(
                connections=len(socks), events=0, expected=0, lost=0, duplicated=0,
                order_errors=0, final_errors=0, closed=0, timed_out=False, recv_calls=0,
                cpu_s=0.0, wall_s=time.monotonic() - start, first_ns=0, last_ns=0,
                latencies_us=[],
            )  # fmt: skip
        else:
            result = receive(socks, plans, config, ctl)
        ctl.emit("done", result=result)
    finally:
        for sock in socks:
            sock.close()


def receive(
    socks: Sequence[socket.socket], plans: Sequence[Plan], config: SubscriberConfig, ctl: Control
) -> SubscriberResult:
    """The hot loop: count (or decode) messages per connection until each has its share."""
    proto = config["proto"]
    every = config["mode"] == "every"
    parts, classes = len(config["topics"]), config.get("classes", 0)
    # Per connection: is its order checked, the seq of its first message and the step.
    steps = [seq_steps(plan, classes) if config["check_order"] else None for plan in plans]
    checks = [step is not None for step in steps]
    firsts = [step[0] if step else 1 for step in steps]
    strides = [step[1] if step else 1 for step in steps]
    warm = config["warm"]
    marker = EVENT_MARKS[proto]
    nats = proto == "nats"
    n = len(socks)
    epoll = select.epoll(n + 1)
    index_of: dict[int, int] = {}
    receivers: list[Callable[[bytearray], int]] = []
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        epoll.register(sock.fileno(), select.EPOLLIN)
        index_of[sock.fileno()] = index
        receivers.append(sock.recv_into)
    epoll.register(ctl.fd, select.EPOLLIN)
    buffer = bytearray(RECV_SIZE)
    counts = [0] * n
    nexts = list(firsts)
    ends = [b""] * n
    targets = [1 << 62] * n
    done = [False] * n
    pending = n
    latencies: list[int] = []
    split = len(marker) - 1
    order_errors = duplicated = recv_calls = closed = 0
    final_target = stopped = timed_out = False
    monotonic, monotonic_ns = time.monotonic, time.monotonic_ns
    cpu_start = time.process_time()
    start = monotonic()
    deadline = start + config["max_seconds"]
    quiet = config["quiet_seconds"]
    next_progress = start + PROGRESS_EVERY
    first_ns = last_ns = 0
    last_rx = start

    def finish(index: int) -> None:
        nonlocal pending
        if not done[index] and counts[index] >= targets[index]:
            done[index] = True
            pending -= 1

    def commands() -> None:
        nonlocal stopped, final_target
        for command in ctl.read():
            if command == "stop":
                stopped = True
            elif command.startswith("target "):
                total = int(command.split()[1])
                final_target = True
                for other in range(n):
                    targets[other] = plan_target(plans[other], total, parts, classes)
                    finish(other)

    commands()  # any that came with "go"
    try:
        while pending and not stopped:
            events = epoll.poll(0.1)
            now_ns = monotonic_ns()
            received = False
            for fd, _ in events:
                index = index_of.get(fd, -1)
                if index < 0:
                    commands()
                    continue
                try:
                    size = receivers[index](buffer)
                except BlockingIOError:
                    continue
                except OSError:
                    size = 0
                if not size:
                    epoll.unregister(fd)
                    closed += 1
                    if not done[index]:
                        done[index] = True
                        pending -= 1
                    continue
                received = True
                recv_calls += 1
                end = ends[index]
                if every:
                    data = end + buffer[:size]
                    count, expect = counts[index], nexts[index]
                    check, stride = checks[index], strides[index]
                    stop_at = 0
                    for match in MESSAGE_RE.finditer(data):
                        seq = int(match[1])
                        count += 1
                        if check and seq != expect:
                            order_errors += 1
                            duplicated += seq < expect
                        expect = seq + stride
                        if seq > warm:
                            latencies.append(now_ns - int(match[2]))
                        stop_at = match.end()
                    counts[index], nexts[index] = count, expect
                    ends[index] = bytes(data[stop_at:][-END_BYTES:])
                else:
                    found = buffer.count(marker, 0, size)
                    if end:  # a marker split across the previous chunk and this one
                        found += (end[-split:] + buffer[: min(split, size)]).count(marker)
                    if size >= END_BYTES:
                        end = bytes(buffer[size - END_BYTES : size])
                    else:
                        end = (end + buffer[:size])[-END_BYTES:]
                    ends[index] = end
                    found += counts[index]
                    counts[index] = found
                    if (recv_calls & SAMPLE_MASK) == 1:  # the first chunk, then one in 8
                        stamp = last_value(end, T_KEY)
                        if stamp is not None:
                            latencies.append(now_ns - stamp)
                        if checks[index]:
                            value = last_value(end, SEQ_KEY)
                            stride = strides[index]
                            want = firsts[index] + (found - 1) * stride
                            if value is not None and value != want and value != want - stride:
                                order_errors += 1
                    if nats and b"PING\r\n" in end:
                        socks[index].sendall(b"PONG\r\n")
                finish(index)
            now = monotonic()
            if received:
                last_rx = now
                last_ns = now_ns
                first_ns = first_ns or now_ns
            if final_target and now - last_rx > quiet:
                break
            if now >= next_progress:
                ctl.emit("progress", events=sum(counts))
                next_progress = now + PROGRESS_EVERY
            if now > deadline:
                timed_out = True
                break
    finally:
        epoll.close()
    final_errors = 0
    if not every:
        for index in range(n):
            if not checks[index]:
                continue
            value = last_value(ends[index], SEQ_KEY)  # None: a message longer than the end
            want = firsts[index] + (counts[index] - 1) * strides[index]
            final_errors += value is not None and value != want
    expected = sum(targets) if final_target else 0
    latencies.sort()
    return SubscriberResult(
        connections=n,
        events=sum(counts),
        expected=expected,
        lost=sum(max(0, t - c) for t, c in zip(targets, counts, strict=True))
        if final_target
        else 0,
        duplicated=duplicated
        + (sum(max(0, c - t) for t, c in zip(targets, counts, strict=True)) if final_target else 0),
        order_errors=order_errors,
        final_errors=final_errors,
        closed=closed,
        timed_out=timed_out or (pending > 0 and not final_target),
        recv_calls=recv_calls,
        cpu_s=time.process_time() - cpu_start,
        wall_s=monotonic() - start,
        first_ns=first_ns,
        last_ns=last_ns,
        latencies_us=[value / 1000 for value in thin(latencies)],
    )


def thin(ordered: list[int], keep: int = 20_000) -> list[int]:
    """At most ``keep`` evenly spaced values of a sorted list, always with its maximum."""
    if len(ordered) <= keep:
        return ordered
    step = len(ordered) / keep
    return [ordered[math.floor(i * step)] for i in range(keep - 1)] + [ordered[-1]]


# ------------------------------------------------------------------ publish


def run_publisher(config: PublisherConfig, ctl: Control) -> None:
    setup_deadline = time.monotonic() + config["setup_seconds"]
    proto, topics = config["proto"], config["topics"]
    total = config["messages"]
    step = 1 if config["rate"] > 0 else max(1, config["batch"])
    ping = b"PING\r\n" if proto == "nats" else b""
    batches: list[list[bytes]] = []
    #: acked_after[k]: messages acknowledged once k ack markers arrived.
    acked_after = [0]
    for first in range(1, total + 1, step):
        last = min(total, first + step - 1)
        frames = [
            message_template(
                proto,
                topics[(seq - 1) % len(topics)],
                1 + (seq - 1) // len(topics),
                config["payload_bytes"],
                config.get("classes", 0),
            )
            for seq in range(first, last + 1)
        ]
        batches.append((b"".join(frames) + ping).split(STAMP_SLOT))
        if proto == "nats":
            acked_after.append(last)
        else:
            acked_after.extend(range(first, last + 1))
    sock = open_connections(proto, config["port"], [[]], setup_deadline)[0]
    try:
        ctl.emit("ready", messages=total)
        ctl.wait_for("go", setup_deadline)
        ctl.emit("done", result=publish(sock, batches, acked_after, config, ctl))
    finally:
        sock.close()


def publish(
    sock: socket.socket,
    batches: Sequence[list[bytes]],
    acked_after: Sequence[int],
    config: PublisherConfig,
    ctl: Control,
) -> PublisherResult:
    """Send the batches (flooding within the window, or paced); count the acks."""
    proto = config["proto"]
    marker, error_marker = ACK_MARKS[proto], ERROR_MARKS[proto]
    interval_ns = round(1e9 / config["rate"]) if config["rate"] > 0 else 0
    window = max(config["window"], config["batch"])
    sock.setblocking(False)
    epoll = select.epoll(2)
    fd = sock.fileno()
    epoll.register(fd, select.EPOLLIN)
    epoll.register(ctl.fd, select.EPOLLIN)
    watching_out = False
    send, recv = sock.send, sock.recv
    split = len(marker) - 1
    tail = b""
    out: memoryview | None = None
    index = marks = errors = 0
    published = acked = 0
    error_sample = ""
    count = len(batches)
    stopped = capped = timed_out = False
    monotonic, monotonic_ns = time.monotonic, time.monotonic_ns
    cpu_start = time.process_time()
    start = monotonic()
    start_ns = monotonic_ns()
    deadline = start + config["max_seconds"]
    hard_deadline = deadline + config["grace_seconds"]
    next_progress = start + PROGRESS_EVERY
    first_ns = last_ns = 0
    try:
        while not stopped:
            wait = 0.1
            while not capped and out is None and index < count:
                size = len(batches[index]) - 1  # messages in the batch (stamp slots)
                if interval_ns:
                    due = start_ns + index * interval_ns - monotonic_ns()
                    if due > 0:
                        wait = min(wait, due / 1e9)
                        break
                elif published - acked - errors + size > window:
                    break
                now_ns = monotonic_ns()
                out = memoryview((b"%019d" % now_ns).join(batches[index]))
                published += size
                index += 1
                first_ns = first_ns or now_ns
                try:
                    sent = send(out)
                except BlockingIOError:
                    sent = 0
                out = out[sent:] if sent < len(out) else None
            if out is not None:
                try:
                    sent = send(out)
                except BlockingIOError:
                    sent = 0
                out = out[sent:] if sent < len(out) else None
            if index == count and out is None and acked + errors >= published:
                break
            if (out is not None) != watching_out:
                watching_out = out is not None
                epoll.modify(fd, select.EPOLLIN | (select.EPOLLOUT if watching_out else 0))
            for ready, _ in epoll.poll(max(0.0, wait)):
                if ready != fd:
                    stopped = "stop" in ctl.read()
                    continue
                try:
                    data = recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("the server closed the publisher's connection")
                found = data.count(marker)
                if tail:
                    found += (tail + data[:split]).count(marker)
                tail = data[-split:]
                marks += found
                if error_marker in data:
                    failed = data.count(error_marker)
                    errors += failed
                    if proto == "ws":  # an error frame answers its publish instead of an ack
                        marks += failed
                    if not error_sample:
                        at = data.find(error_marker)
                        error_sample = data[max(0, at - 20) : at + 200].decode(errors="replace")
                acked = acked_after[min(marks, len(acked_after) - 1)] - errors
                if proto == "nats" and b"PING\r\n" in data:
                    sock.sendall(b"PONG\r\n")
                last_ns = monotonic_ns()
            now = monotonic()
            if now >= next_progress:
                ctl.emit("progress", published=published, acked=acked)
                next_progress = now + PROGRESS_EVERY
            if now > deadline and not capped:
                # Stop publishing; what was handed to the socket still gets acked.
                capped = index < count or out is not None
                if out is not None:  # finish a partly sent batch so no frame is cut
                    sock.setblocking(True)
                    sock.settimeout(max(0.1, hard_deadline - now))
                    sock.sendall(out)
                    sock.setblocking(False)
                    out = None
                count = index
            if now > hard_deadline:
                timed_out = True
                break
    finally:
        epoll.close()
    return PublisherResult(
        messages=acked_after[-1],
        published=published,
        acked=acked,
        errors=errors,
        error_sample=error_sample,
        capped=capped,
        timed_out=timed_out,
        cpu_s=time.process_time() - cpu_start,
        wall_s=monotonic() - start,
        first_ns=first_ns,
        last_ns=last_ns,
    )


# ------------------------------------------------------------------ connect


def run_connect(config: ConnectConfig, ctl: Control) -> None:
    deadline = time.monotonic() + config["setup_seconds"]
    cpu_start = time.process_time()
    start = time.monotonic()
    socks = open_connections(
        config["proto"], config["port"], [[]] * config["connections"], deadline
    )
    setup = time.monotonic() - start
    try:
        result = ConnectResult(
            connections=len(socks),
            setup_s=setup,
            per_s=len(socks) / setup if setup > 0 else 0.0,
            cpu_s=time.process_time() - cpu_start,
            wall_s=setup,
        )
        if config["hold"]:
            ctl.emit("ready", connections=len(socks))
            ctl.hold(time.monotonic() + config["max_seconds"])
        ctl.emit("done", result=result)
    finally:
        for sock in socks:
            sock.close()


# ------------------------------------------------------------------ entry point


ROLES: Final[dict[str, Callable[[Any, Control], None]]] = {
    "subscribe": run_subscribers,
    "publish": run_publisher,
    "connect": run_connect,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``loadgen.py ROLE CONFIG_JSON``: run one load process; 0 when it finished."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ROLES:
        print(f"usage: loadgen.py {{{','.join(ROLES)}}} CONFIG_JSON", file=sys.stderr)
        return 2
    ctl = Control()
    text = args[1]
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as file:
            text = file.read()
    try:
        ROLES[args[0]](cast(dict[str, Any], json.loads(text)), ctl)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        ctl.emit("error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
