"""Load processes for :mod:`bench.bench_ws`: WebSocket and Redis clients on raw sockets.

Each load process is ``python bench/loadgen.py ROLE CONFIG_JSON``; the orchestrator
pins it to the load core with ``taskset``. It imports only the standard library, so it
starts fast and never shares code paths with the server under test.

Roles:

``subscribe``
    Opens many connections (WebSocket or Redis), subscribes each to one topic, and
    counts events with ``bytes.count`` on every received chunk, at C speed, without
    parsing frames. A marker split across two chunks is found by also counting in
    the last ``len(marker) - 1`` bytes of the previous chunk joined to the first ones
    of the new chunk. Order and loss are checked without decoding: every 64th chunk
    the last complete ``"offset":`` (WebSocket) or ``"seq":`` (Redis) in it must equal
    the connection's running count (or that minus one, when the chunk ends inside the
    frame), and when a connection finishes its last offset must equal its count.
``publish``
    One connection that floods the topic with pre-built frames, many per write, and
    reads the acks (WebSocket) or integer replies (Redis) as they come, keeping at
    most ``window`` messages unacknowledged so that acks never pile up unread.
``latency``
    One publisher and the subscribers in the same process (one clock), publishing at a
    fixed rate with ``time.perf_counter_ns()`` as the payload; every event is decoded
    and its publish-to-receive time recorded.
``idle``
    Opens connections, completes each handshake and its ``connected`` frame, and holds
    them until told to stop.

Talking to the orchestrator: the process writes one JSON object per line on stdout
(``{"event": "ready"}``, ``{"event": "progress", ...}``, ``{"event": "done", "result":
{...}}`` or ``{"event": "error", ...}``) and reads commands, one per line, on stdin:
``go`` (start measuring), ``target N`` (the publisher finished with N messages: stop
once every connection has N, or once nothing arrived for ``quiet_seconds``) and
``stop``. End of stdin means stop. Every loop is bounded in wall time.

Client frames are masked as RFC 6455 requires; the masking key is zero (legal, and
masking with it is the identity), so pre-built frames cost nothing to mask.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, TypedDict, cast

HOST: Final = "127.0.0.1"
#: RFC 6455's sample nonce; any fixed 16-byte base64 key is fine for a benchmark.
WS_KEY: Final = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ZERO_MASK: Final = b"\x00\x00\x00\x00"
RECV_SIZE: Final = 1 << 18
#: Markers counted in the received byte stream (the payloads never contain them).
EVENT_MARK: Final = b'"type":"event"'
ACK_MARK: Final = b'"type":"ack"'
ERROR_MARK: Final = b'"type":"error"'
OFFSET_KEY: Final = b'"offset":'
SEQ_KEY: Final = b'"seq":'
REDIS_MESSAGE_MARK: Final = b"\r\nmessage\r\n"
REDIS_REPLY_MARK: Final = b"\r\n"
REDIS_ERROR_MARK: Final = b"-ERR"
#: Seconds between progress lines.
PROGRESS_EVERY: Final = 0.5
#: Connections opened (handshakes in flight) at a time during set-up.
SETUP_BATCH: Final = 100
#: Bytes of each connection's stream kept for the offset checks (several whole frames).
END_BYTES: Final = 1024
#: Sample the order check on one chunk in this many (a power of two, minus one).
SAMPLE_MASK: Final = 63

Proto = Literal["ws", "redis"]


class ProtocolViolation(Exception):
    """The server said something the benchmark did not expect."""


# ------------------------------------------------------------------ configs and results


class SubscriberConfig(TypedDict):
    proto: Proto
    port: int
    topic: str
    connections: int
    #: Events each connection expects (``target N`` may lower it).
    messages: int
    max_seconds: float
    setup_seconds: float
    #: After ``target N``: give up on connections short of N once nothing came for this long.
    quiet_seconds: float


class PublisherConfig(TypedDict):
    proto: Proto
    port: int
    topic: str
    messages: int
    #: Frames per write.
    batch: int
    #: Most messages sent and not yet acknowledged.
    window: int
    payload_bytes: int
    max_seconds: float
    setup_seconds: float
    #: After the time cap: how long to wait for the acks of what was sent.
    grace_seconds: float


class LatencyConfig(TypedDict):
    port: int
    topic: str
    subscribers: int
    #: Messages per second published.
    rate: float
    seconds: float
    #: Messages published in the first ``warmup_seconds`` are not measured.
    warmup_seconds: float
    max_seconds: float
    setup_seconds: float


class IdleConfig(TypedDict):
    port: int
    connections: int
    #: Hold at most this long when no ``stop`` comes.
    max_seconds: float
    setup_seconds: float


class SubscriberResult(TypedDict):
    connections: int
    target: int
    events: int
    min_count: int
    max_count: int
    #: Events missing / in excess, summed over connections.
    lost: int
    duplicated: int
    #: Sampled chunks whose last offset did not match the running count.
    order_errors: int
    #: Connections whose last offset seen differs from their count.
    final_errors: int
    #: Connections closed by the server.
    closed: int
    timed_out: bool
    recv_calls: int
    bytes: int
    cpu_s: float
    wall_s: float
    #: ``time.monotonic_ns()`` (CLOCK_MONOTONIC, system-wide on Linux) of the first and
    #: the last received chunk.
    first_ns: int
    last_ns: int


class PublisherResult(TypedDict):
    messages: int
    published: int
    acked: int
    errors: int
    error_sample: str
    #: Offset of the last ack (WebSocket) or receiver count of the last reply (Redis).
    last_value: int
    capped: bool
    timed_out: bool
    cpu_s: float
    wall_s: float
    first_ns: int
    last_ns: int


class LatencyResult(TypedDict):
    subscribers: int
    rate: float
    sent: int
    measured_messages: int
    expected_deliveries: int
    received: int
    lost: int
    duplicated: int
    order_errors: int
    acks: int
    #: Publish-to-receive latency of every delivery after the warm-up, in microseconds.
    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float
    ack_p50_us: float
    ack_p99_us: float
    #: Messages published per second, as achieved.
    achieved_rate: float
    timed_out: bool
    cpu_s: float
    wall_s: float


class IdleResult(TypedDict):
    connections: int
    held_s: float


# ------------------------------------------------------------------ WebSocket framing


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (RFC 6455 5.3); identity for a zero key."""
    if key == ZERO_MASK or not payload:
        return payload
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )


def client_frame(payload: bytes, opcode: int = 0x1, key: bytes = ZERO_MASK) -> bytes:
    """One final, masked client frame (text by default) carrying ``payload``."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + key + mask(payload, key)


class FrameReader:
    """Splits the server's (unmasked, unfragmented) frames out of a byte stream.

    Used on the slow paths only: set-up and the latency scenario.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Append ``data``; return the complete frames as ``(opcode, payload)``."""
        buf = self.buffer
        buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                raise ProtocolViolation("the server sent a masked frame")
            if not first & 0x80:
                raise ProtocolViolation("the server sent a fragmented frame")
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            frames.append((first & 0x0F, bytes(buf[pos + head : pos + head + length])))
            pos += head + length
        if pos:
            del buf[:pos]
        return frames


class WsConn:
    """A blocking-mode WebSocket client connection, for set-up and slow paths."""

    __slots__ = ("frames", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.frames: list[tuple[int, bytes]] = []

    def next_frame(self, deadline: float) -> tuple[int, bytes]:
        """The next server frame; raises on close or at ``deadline`` (monotonic)."""
        while not self.frames:
            self.frames.extend(self.reader.feed(recv_before(self.sock, deadline)))
        return self.frames.pop(0)

    def next_text(self, deadline: float) -> bytes:
        """The next text frame's payload (control frames are skipped, pings answered)."""
        while True:
            opcode, payload = self.next_frame(deadline)
            if opcode == 0x1:
                return payload
            if opcode == 0x8:
                raise ProtocolViolation(f"the server closed the connection: {payload!r}")
            if opcode == 0x9:
                self.sock.sendall(client_frame(payload, opcode=0xA))

    def expect(self, marker: bytes, deadline: float) -> bytes:
        """The next text frame, which must contain ``marker``."""
        payload = self.next_text(deadline)
        if marker not in payload:
            raise ProtocolViolation(f"expected {marker!r}, got {payload[:300]!r}")
        return payload

    def clean(self) -> bool:
        """Nothing is buffered: the byte stream continues at a frame boundary."""
        return not self.frames and not self.reader.buffer


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


def connect(port: int, deadline: float) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=remaining(deadline))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def handshake_request(port: int, path: str = "/ws") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def finish_handshake(sock: socket.socket, deadline: float) -> WsConn:
    """Read the 101 response (checking its accept key) and the ``connected`` frame."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv_before(sock, deadline)
        if len(data) > 65536:
            raise ProtocolViolation("handshake response too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 101"):
        raise ProtocolViolation(f"handshake refused: {lines[0]!r}")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    if headers.get(b"sec-websocket-accept") != accept_key(WS_KEY):
        raise ProtocolViolation("wrong Sec-WebSocket-Accept")
    conn = WsConn(sock)
    conn.frames.extend(conn.reader.feed(rest))
    connected = conn.expect(b'"type":"info"', deadline)
    if b'"connected"' not in connected:
        raise ProtocolViolation(f"expected the connected frame, got {connected!r}")
    return conn


def open_ws(port: int, count: int, deadline: float) -> list[WsConn]:
    """``count`` WebSocket connections, handshakes pipelined ``SETUP_BATCH`` at a time."""
    request = handshake_request(port)
    conns: list[WsConn] = []
    while len(conns) < count:
        group: list[socket.socket] = []
        try:
            for _ in range(min(SETUP_BATCH, count - len(conns))):
                sock = connect(port, deadline)
                group.append(sock)
                sock.sendall(request)
            while group:
                conns.append(finish_handshake(group[0], deadline))
                group.pop(0)
        except BaseException:
            for sock in group:
                sock.close()
            for conn in conns:
                conn.sock.close()
            raise
    return conns


def ws_subscribe(conns: Sequence[WsConn], topic: str, deadline: float) -> list[int]:
    """Subscribe every connection (requests pipelined); return each ack's offset."""
    for index, conn in enumerate(conns):
        request = {"type": "subscribe", "topic": topic, "client_id": f"bench-sub-{index}"}
        conn.sock.sendall(client_frame(json.dumps(request, separators=(",", ":")).encode()))
    offsets: list[int] = []
    for conn in conns:
        ack = conn.expect(ACK_MARK, deadline)
        value = last_value(ack, OFFSET_KEY)
        if value is None:
            raise ProtocolViolation(f"subscribe ack without an offset: {ack!r}")
        offsets.append(value)
        if not conn.clean():
            raise ProtocolViolation("unexpected data after the subscribe ack")
    return offsets


def publish_payload(seq: int, payload_bytes: int) -> bytes:
    """The payload of message ``seq``: ``{"seq":N,"data":"xxx..."}`` (JSON)."""
    return b'{"seq":%d,"data":"%s"}' % (seq, b"x" * payload_bytes)


def ws_publish_frame(topic: str, seq: int, payload_bytes: int) -> bytes:
    body = (
        b'{"type":"publish","topic":"%s","client_id":"bench-pub",'
        b'"message":{"id":"m%d","payload":%s}}'
    ) % (topic.encode(), seq, publish_payload(seq, payload_bytes))
    return client_frame(body)


# ------------------------------------------------------------------ Redis (RESP)


def resp_command(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def redis_subscribe(port: int, count: int, topic: str, deadline: float) -> list[socket.socket]:
    """``count`` connections, each SUBSCRIBEd to ``topic`` (confirmation read)."""
    command = resp_command(b"SUBSCRIBE", topic.encode())
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            group = [connect(port, deadline) for _ in range(min(SETUP_BATCH, count - len(socks)))]
            socks.extend(group)
            for sock in group:
                sock.sendall(command)
            for sock in group:
                # *3 $9 subscribe $N topic :1 - six CRLF-terminated lines.
                data = b""
                while data.count(b"\r\n") < 6:
                    data += recv_before(sock, deadline)
                if b"subscribe" not in data or data.count(b"\r\n") != 6:
                    raise ProtocolViolation(f"unexpected SUBSCRIBE reply {data[:200]!r}")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def redis_publish_frame(topic: str, seq: int, payload_bytes: int) -> bytes:
    return resp_command(b"PUBLISH", topic.encode(), publish_payload(seq, payload_bytes))


# ------------------------------------------------------------------ helpers


def last_value(data: bytes, key: bytes) -> int | None:
    """The integer after the last ``key`` in ``data``, or None when absent or cut short
    (the digits must be followed by some other byte, so the value is complete)."""
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


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of a sorted sequence (0 when empty)."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


class Control:
    """Line protocol with the orchestrator: JSON lines out, commands in."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self._buffer = b""
        self.closed = False

    def emit(self, event: str, **fields: object) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def read(self) -> list[str]:
        """Commands available now (never blocks); sets ``closed`` at end of input."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not data:
            self.closed = True
            return ["stop"]
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode().strip() for line in lines if line.strip()]

    def wait_for(self, command: str, deadline: float) -> None:
        """Block until ``command`` arrives; raise on ``stop``, end of input or at ``deadline``."""
        while True:
            for line in self.read():
                if line == command:
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
    count = config["connections"]
    if config["proto"] == "ws":
        conns = open_ws(config["port"], count, setup_deadline)
        socks = [conn.sock for conn in conns]
        try:
            bases = ws_subscribe(conns, config["topic"], setup_deadline)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        marker, key = EVENT_MARK, OFFSET_KEY
    else:
        socks = redis_subscribe(config["port"], count, config["topic"], setup_deadline)
        bases = [0] * count
        marker, key = REDIS_MESSAGE_MARK, SEQ_KEY
    try:
        ctl.emit("ready", connections=len(socks))
        ctl.wait_for("go", setup_deadline)
        result = count_events(socks, marker, key, bases, config, ctl)
        ctl.emit("done", result=result)
    finally:
        for sock in socks:
            sock.close()


def count_events(
    socks: Sequence[socket.socket],
    marker: bytes,
    key: bytes,
    bases: Sequence[int],
    config: SubscriberConfig,
    ctl: Control,
) -> SubscriberResult:
    """The hot loop: count ``marker`` per connection until each has the target."""
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
    # One receive buffer for all connections (recv_into: no allocation per chunk).
    buffer = bytearray(RECV_SIZE)
    counts = [0] * n
    #: The last END_BYTES bytes each connection received (a few whole frames).
    ends = [b""] * n
    done = [False] * n
    finals = [-1] * n
    closed = 0
    split = len(marker) - 1
    target = config["messages"]
    pending = n
    order_errors = recv_calls = nbytes = 0
    final_target = stopped = timed_out = False
    monotonic = time.monotonic
    monotonic_ns = time.monotonic_ns
    cpu_start = time.process_time()
    start = monotonic()
    deadline = start + config["max_seconds"]
    quiet = config["quiet_seconds"]
    next_progress = start + PROGRESS_EVERY
    first_ns = last_ns = 0
    last_rx = start
    try:
        while pending and not stopped:
            events = epoll.poll(0.1)
            received = False
            for fd, _ in events:
                index = index_of.get(fd, -1)
                if index < 0:
                    for command in ctl.read():
                        if command == "stop":
                            stopped = True
                        elif command.startswith("target "):
                            target = int(command.split()[1])
                            final_target = True
                            # Lowered? Some connections may have it already.
                            for other in range(n):
                                if not done[other] and counts[other] >= target:
                                    value = last_value(ends[other], key)
                                    if value is not None:
                                        finals[other] = value
                                        done[other] = True
                                        pending -= 1
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
                nbytes += size
                found = buffer.count(marker, 0, size)
                end = ends[index]
                if end:  # a marker split across the previous chunk and this one
                    head = buffer[: split if size > split else size]
                    found += (end[-split:] + head).count(marker)
                if size >= END_BYTES:
                    end = bytes(buffer[size - END_BYTES : size])
                else:
                    end = (end + buffer[:size])[-END_BYTES:]
                ends[index] = end
                found += counts[index]
                counts[index] = found
                if not recv_calls & SAMPLE_MASK:
                    value = last_value(end, key)
                    expected = bases[index] + found
                    if value is not None and value != expected and value != expected - 1:
                        order_errors += 1
                if found >= target and not done[index]:
                    value = last_value(end, key)
                    if value is not None:  # else wait for the rest of the last frame
                        finals[index] = value
                        done[index] = True
                        pending -= 1
            now = monotonic()
            if received:
                last_rx = now
                last_ns = monotonic_ns()
                if not first_ns:
                    first_ns = last_ns
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
    wall = monotonic() - start
    cpu = time.process_time() - cpu_start
    for index in range(n):
        if finals[index] < 0:
            value = last_value(ends[index], key)
            finals[index] = -1 if value is None else value
    final_errors = sum(
        1 for index in range(n) if counts[index] and finals[index] != bases[index] + counts[index]
    )
    return SubscriberResult(
        connections=n,
        target=target,
        events=sum(counts),
        min_count=min(counts, default=0),
        max_count=max(counts, default=0),
        lost=sum(max(0, target - count) for count in counts),
        duplicated=sum(max(0, count - target) for count in counts),
        order_errors=order_errors,
        final_errors=final_errors,
        closed=closed,
        timed_out=timed_out or (pending > 0 and not final_target),
        recv_calls=recv_calls,
        bytes=nbytes,
        cpu_s=cpu,
        wall_s=wall,
        first_ns=first_ns,
        last_ns=last_ns,
    )


# ------------------------------------------------------------------ publish


def run_publisher(config: PublisherConfig, ctl: Control) -> None:
    setup_deadline = time.monotonic() + config["setup_seconds"]
    topic, size = config["topic"], config["payload_bytes"]
    build = ws_publish_frame if config["proto"] == "ws" else redis_publish_frame
    total = config["messages"]
    step = max(1, config["batch"])
    window = max(step, config["window"])
    batches: list[bytes] = []
    sizes: list[int] = []
    for first in range(1, total + 1, step):
        last = min(total, first + step - 1)
        batches.append(b"".join(build(topic, seq, size) for seq in range(first, last + 1)))
        sizes.append(last - first + 1)
    if config["proto"] == "ws":
        sock = open_ws(config["port"], 1, setup_deadline)[0].sock
        marker, key, error_marker = ACK_MARK, OFFSET_KEY, ERROR_MARK
    else:
        sock = connect(config["port"], setup_deadline)
        marker, key, error_marker = REDIS_REPLY_MARK, b":", REDIS_ERROR_MARK
    try:
        ctl.emit("ready", messages=total)
        ctl.wait_for("go", setup_deadline)
        result = flood(sock, batches, sizes, window, marker, key, error_marker, config, ctl)
        ctl.emit("done", result=result)
    finally:
        sock.close()


def flood(
    sock: socket.socket,
    batches: Sequence[bytes],
    sizes: Sequence[int],
    window: int,
    marker: bytes,
    key: bytes,
    error_marker: bytes,
    config: PublisherConfig,
    ctl: Control,
) -> PublisherResult:
    """Send the batches, at most ``window`` messages unacknowledged; count the acks."""
    sock.setblocking(False)
    epoll = select.epoll(2)
    fd = sock.fileno()
    epoll.register(fd, select.EPOLLIN)
    epoll.register(ctl.fd, select.EPOLLIN)
    watching_out = False
    send, recv = sock.send, sock.recv
    split = len(marker) - 1
    tail = before = last = b""
    out: memoryview | None = None
    index = published = acked = errors = 0
    error_sample = ""
    count = len(batches)
    stopped = capped = timed_out = False
    monotonic = time.monotonic
    cpu_start = time.process_time()
    start = monotonic()
    deadline = start + config["max_seconds"]
    hard_deadline = deadline + config["grace_seconds"]
    next_progress = start + PROGRESS_EVERY
    first_ns = last_ns = 0
    try:
        while not stopped:
            # Send while the window allows and the socket takes it.
            while not capped:
                if out is None:
                    if index < count and published - acked + sizes[index] <= window:
                        out = memoryview(batches[index])
                        published += sizes[index]
                        index += 1
                        if not first_ns:
                            first_ns = time.monotonic_ns()
                    else:
                        break
                try:
                    sent = send(out)
                except BlockingIOError:
                    break
                if sent < len(out):
                    out = out[sent:]
                    break
                out = None
            if index == count and out is None and acked >= published:
                break
            if (out is not None) != watching_out:
                watching_out = out is not None
                epoll.modify(fd, select.EPOLLIN | (select.EPOLLOUT if watching_out else 0))
            for ready, _ in epoll.poll(0.1):
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
                before, last = last, data
                acked += found
                if error_marker in data:
                    errors += data.count(error_marker)
                    if not error_sample:
                        at = data.find(error_marker)
                        error_sample = data[max(0, at - 20) : at + 200].decode(errors="replace")
                last_ns = time.monotonic_ns()
            now = monotonic()
            if now >= next_progress:
                ctl.emit("progress", published=published, acked=acked)
                next_progress = now + PROGRESS_EVERY
            if now > deadline and not capped:
                # Stop publishing; what was handed to the socket still gets acked.
                capped = index < count or out is not None
                if out is not None:
                    # A partly sent batch: finish it (blocking) so no frame is cut.
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
    value = last_value(before[-512:] + last, key)
    return PublisherResult(
        messages=sum(sizes),
        published=published,
        acked=acked,
        errors=errors,
        error_sample=error_sample,
        last_value=-1 if value is None else value,
        capped=capped,
        timed_out=timed_out,
        cpu_s=time.process_time() - cpu_start,
        wall_s=monotonic() - start,
        first_ns=first_ns,
        last_ns=last_ns,
    )


# ------------------------------------------------------------------ latency


def run_latency(config: LatencyConfig, ctl: Control) -> None:
    setup_deadline = time.monotonic() + config["setup_seconds"]
    conns = open_ws(config["port"], config["subscribers"] + 1, setup_deadline)
    try:
        publisher, subscribers = conns[0], conns[1:]
        bases = ws_subscribe(subscribers, config["topic"], setup_deadline)
        ctl.emit("ready", connections=len(conns))
        ctl.wait_for("go", setup_deadline)
        ctl.emit("done", result=measure_latency(publisher, subscribers, bases, config, ctl))
    finally:
        for conn in conns:
            conn.sock.close()


def measure_latency(
    publisher: WsConn,
    subscribers: Sequence[WsConn],
    bases: Sequence[int],
    config: LatencyConfig,
    ctl: Control,
) -> LatencyResult:
    """Publish at a fixed rate; time every delivery against the send time in its payload.

    A chunk's receive time is taken once when ``epoll.poll`` returns, before any
    chunk is processed, so handling one subscriber never delays the others' stamps.
    """
    clock = time.perf_counter_ns
    rate = config["rate"]
    total = max(1, round(rate * config["seconds"]))
    warm = min(total - 1, round(rate * config["warmup_seconds"]))
    interval = round(1e9 / rate)
    prefix = (
        b'{"type":"publish","topic":"%s","client_id":"bench-latency","message":{"id":"m","payload":'
        % config["topic"].encode()
    )
    base = bases[0] if bases else 0
    epoll = select.epoll(len(subscribers) + 2)
    by_fd: dict[int, int] = {}
    for index, conn in enumerate(subscribers):
        conn.sock.setblocking(False)
        epoll.register(conn.sock.fileno(), select.EPOLLIN)
        by_fd[conn.sock.fileno()] = index
    publisher.sock.setblocking(False)
    pub_fd = publisher.sock.fileno()
    epoll.register(pub_fd, select.EPOLLIN)
    epoll.register(ctl.fd, select.EPOLLIN)
    counts = [0] * len(subscribers)
    next_offset = [b + 1 for b in bases]
    order_errors = duplicated = 0
    latencies: list[int] = []
    ack_latencies: list[int] = []
    sent_at: list[int] = []
    acks = 0
    expected = total * len(subscribers)
    received = 0
    cpu_start = time.process_time()
    wall_start = time.monotonic()
    deadline = wall_start + config["max_seconds"]
    next_progress = wall_start + PROGRESS_EVERY
    start = clock() + 10_000_000
    sent = 0
    stopped = timed_out = False
    try:
        while not stopped:
            now = clock()
            if sent < total and now >= start + sent * interval:
                stamp = clock()
                frame = client_frame(prefix + str(stamp).encode() + b"}}")
                publisher.sock.setblocking(True)
                publisher.sock.sendall(frame)
                publisher.sock.setblocking(False)
                sent_at.append(stamp)
                sent += 1
                continue
            if sent == total and received >= expected and acks >= total:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            wait = 0.05 if sent == total else (start + sent * interval - now) / 1e9
            events = epoll.poll(max(0.0, min(0.05, wait)))
            stamp = clock()
            for fd, _ in events:
                if fd == pub_fd:
                    try:
                        data = publisher.sock.recv(RECV_SIZE)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise ConnectionError("the server closed the publisher connection")
                    for opcode, payload in publisher.reader.feed(data):
                        if opcode == 0x1 and ACK_MARK in payload:
                            offset = last_value(payload, OFFSET_KEY)
                            seq = -1 if offset is None else offset - base - 1
                            if 0 <= seq < len(sent_at) and seq >= warm:
                                ack_latencies.append(stamp - sent_at[seq])
                            acks += 1
                    continue
                index = by_fd.get(fd, -1)
                if index < 0:
                    stopped = "stop" in ctl.read()
                    continue
                conn = subscribers[index]
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("the server closed a subscriber connection")
                for opcode, payload in conn.reader.feed(data):
                    if opcode != 0x1 or EVENT_MARK not in payload:
                        continue
                    received += 1
                    counts[index] += 1
                    offset = last_value(payload, OFFSET_KEY)
                    if offset != next_offset[index]:
                        order_errors += 1
                    if offset is not None:
                        if offset < next_offset[index]:
                            duplicated += 1
                        next_offset[index] = offset + 1
                    sent_stamp = last_value(payload, b'"payload":')
                    if (
                        offset is not None
                        and sent_stamp is not None
                        and offset - bases[index] - 1 >= warm
                    ):
                        latencies.append(stamp - sent_stamp)
            if time.monotonic() >= next_progress:
                ctl.emit("progress", sent=sent, received=received)
                next_progress = time.monotonic() + PROGRESS_EVERY
    finally:
        epoll.close()
    wall = time.monotonic() - wall_start
    latencies.sort()
    ack_latencies.sort()
    duration = (sent_at[-1] - sent_at[0]) / 1e9 if len(sent_at) > 1 else 0.0
    return LatencyResult(
        subscribers=len(subscribers),
        rate=rate,
        sent=sent,
        measured_messages=max(0, sent - warm),
        expected_deliveries=sent * len(subscribers),
        received=received,
        lost=sum(max(0, sent - count) for count in counts),
        duplicated=duplicated,
        order_errors=order_errors,
        acks=acks,
        samples=len(latencies),
        p50_us=percentile(latencies, 0.50) / 1000,
        p90_us=percentile(latencies, 0.90) / 1000,
        p99_us=percentile(latencies, 0.99) / 1000,
        p999_us=percentile(latencies, 0.999) / 1000,
        max_us=(latencies[-1] if latencies else 0) / 1000,
        mean_us=sum(latencies) / len(latencies) / 1000 if latencies else 0.0,
        ack_p50_us=percentile(ack_latencies, 0.50) / 1000,
        ack_p99_us=percentile(ack_latencies, 0.99) / 1000,
        achieved_rate=(sent - 1) / duration if duration > 0 else 0.0,
        timed_out=timed_out,
        cpu_s=time.process_time() - cpu_start,
        wall_s=wall,
    )


# ------------------------------------------------------------------ idle


def run_idle(config: IdleConfig, ctl: Control) -> None:
    setup_deadline = time.monotonic() + config["setup_seconds"]
    conns = open_ws(config["port"], config["connections"], setup_deadline)
    try:
        ctl.emit("ready", connections=len(conns))
        start = time.monotonic()
        ctl.hold(start + config["max_seconds"])
        ctl.emit("done", result=IdleResult(connections=len(conns), held_s=time.monotonic() - start))
    finally:
        for conn in conns:
            conn.sock.close()


# ------------------------------------------------------------------ entry point


def _run(role: str, config: dict[str, Any], ctl: Control) -> None:
    if role == "subscribe":
        run_subscribers(cast(SubscriberConfig, config), ctl)
    elif role == "publish":
        run_publisher(cast(PublisherConfig, config), ctl)
    elif role == "latency":
        run_latency(cast(LatencyConfig, config), ctl)
    elif role == "idle":
        run_idle(cast(IdleConfig, config), ctl)
    else:
        raise ValueError(f"unknown role {role!r}")


ROLES: Final = ("subscribe", "publish", "latency", "idle")


def main(argv: Sequence[str] | None = None) -> int:
    """``loadgen.py ROLE CONFIG_JSON``: run one load process; 0 when it finished."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ROLES:
        print(f"usage: loadgen.py {{{','.join(ROLES)}}} CONFIG_JSON", file=sys.stderr)
        return 2
    ctl = Control()
    try:
        _run(args[0], json.loads(args[1]), ctl)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        ctl.emit("error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
