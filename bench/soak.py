"""The soak run (issue 14): ``python -m bench soak --minutes N``.

One fresh server holds ``--soak-connections`` WebSocket connections (10,000) for N
minutes under steady, mixed load, and the run reports how the server's memory, open
file descriptors and latency move over time. It answers one question: does a long run
leak? The figure is the server's RSS at the end against its RSS after warm-up (the
first minute, or the first 10 % of a shorter run): within 10 % holds. That is reported
beside the numbers, never turned into an exit status (0 unless the harness failed).

The load, from load processes pinned to the load core (``python -m bench.soak load
CONFIG``: raw non-blocking sockets and epoll, like :mod:`bench.loadgen`):

- most connections subscribe to one of ``--soak-topics`` topics (100), spread evenly;
  the rest (``1 - --soak-subscribed``) hold an idle connection;
- publishers (one connection each, in one "pacer" process) publish round-robin over the
  topics at a steady ``--soak-rate`` in all (500 messages/s), stamped with the send time;
- churn: ``--soak-churn`` of the connections per second (1 %) are closed and at once
  replaced, alternately with a close handshake and by dropping the socket;
- slow consumers (``--soak-slow``, 1 %, never churned, each on ``--soak-slow-topics``
  topics) read for a while, then stop reading for ``--soak-stall-seconds`` with a small
  receive buffer (a client on a slow link), so the server's policy acts
  (``--soak-policy``: ``disconnect`` closes them with ``SLOW_CONSUMER``, and they
  reconnect; ``drop_oldest`` drops what they miss);
- every connection answers the server's heartbeat (``info``/``ping``) with a pong, so
  the server's default heartbeat and idle timeout run as in production;
- probe subscribers (in the pacer process) decode every message they get and time it
  from its stamp: the latency figures.

Every ``--sample-seconds`` (5) the orchestrator asks each load process for its counters
(so one sample's windows line up) and reads the server: RSS and open fds from
``/proc/PID``, CPU from its CPU-time clock, clients and delivery counters from
``/stats``. Output: Markdown on stdout, JSON and a PNG chart (RSS, fds, latency,
throughput, CPU, churn over time) under ``bench/results/``. Every loop is bounded in
time; every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import json
import math
import os
import random
import resource
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, TypedDict, cast

from bench import report
from bench.loadgen import (
    HOST,
    MESSAGE_RE,
    STAMP_SLOT,
    Control,
    client_frame,
    message_template,
    ws_request,
)
from bench.peers import LIMIT, PubSub
from bench.procs import (
    BenchError,
    Pinning,
    Processes,
    Progress,
    Worker,
    make_pinning,
    managed,
    pump,
    raise_fd_limit,
)
from bench.scenarios import percentile

#: Issue 14's bar: RSS at the end within this share of RSS after warm-up.
RSS_TARGET: Final = 0.10
#: A load process busier than this share of the load core makes the figures the load's.
LOAD_BOUND: Final = 0.9

Policy = Literal["disconnect", "drop_oldest"]


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 10.0
    #: Connections held (subscribers, idle ones and slow consumers; the publishers and
    #: probes come on top).
    soak_connections: int = 10_000
    soak_topics: int = 100
    #: Share of the connections subscribed to a topic (the rest subscribe to nothing).
    soak_subscribed: float = 0.9
    #: Messages per second, all publishers together. With 90 subscribers a topic and
    #: each delivery a write of its own (about 10 us of server CPU each), 1,000 msg/s
    #: already needs all of the server's core on the development machine: a soak there
    #: would measure an overloaded server. 500 leaves it about half its core.
    soak_rate: float = 500.0
    soak_publishers: int = 4
    soak_payload_bytes: int = 128
    #: Share of the connections closed and replaced per second.
    soak_churn: float = 0.01
    #: Share of the connections that are slow consumers, and the topics each takes
    #: (consecutive ones): a consumer of several topics whose stall fills its outbox.
    soak_slow: float = 0.01
    soak_slow_topics: int = 10
    #: A slow consumer reads for about this long (0.5-1.5x), then stalls this long.
    soak_read_seconds: float = 10.0
    soak_stall_seconds: float = 20.0
    soak_probes: int = 10
    #: The server's MAX_QUEUE_SIZE and BACKPRESSURE_POLICY for the run: small enough
    #: that a 20 s stall fills a slow consumer's outbox at this rate.
    soak_queue_size: int = 100
    soak_policy: str = "disconnect"
    #: The server's HEARTBEAT_INTERVAL and CONNECTION_TIMEOUT (ms): its defaults.
    soak_heartbeat_ms: int = 30_000
    soak_timeout_ms: int = 60_000
    sample_seconds: float = 5.0
    #: Warm-up: this long, or a tenth of the run if that is shorter.
    warmup_seconds: float = 60.0
    conns_per_proc: int = 2_500
    setup_seconds: float = 120.0
    seed: int = 14


def parse(argv: Sequence[str]) -> tuple[SoakOptions, argparse.Namespace]:
    defaults = SoakOptions()
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--target", help="drive this server (ws://127.0.0.1:PORT/ws) instead")
    parser.add_argument("--target-pid", type=int, help="the --target server's PID (RSS, fds)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    for field in fields(SoakOptions):
        default = getattr(defaults, field.name)
        choices = ("disconnect", "drop_oldest") if field.name == "soak_policy" else None
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(default),
            default=default,
            choices=choices,
            help=f"default {default}",
        )
    args = parser.parse_args(list(argv))
    options = SoakOptions(
        **{field.name: getattr(args, field.name) for field in fields(SoakOptions)}
    )
    problems = [
        name
        for name, bad in (
            ("--minutes", options.minutes <= 0),
            ("--soak-connections", options.soak_connections < 1),
            ("--soak-topics", options.soak_topics < 1),
            ("--soak-publishers", options.soak_publishers < 1),
            ("--soak-rate", options.soak_rate <= 0),
            ("--soak-probes", options.soak_probes < 0),
            ("--sample-seconds", options.sample_seconds <= 0),
            ("--conns-per-proc", options.conns_per_proc < 1),
            ("--soak-subscribed", not 0 <= options.soak_subscribed <= 1),
            ("--soak-slow", not 0 <= options.soak_slow <= options.soak_subscribed),
            ("--soak-churn", options.soak_churn < 0),
            ("--soak-slow-topics", not 1 <= options.soak_slow_topics <= options.soak_topics),
        )
        if bad
    ]
    if problems:
        parser.error(f"out of range: {', '.join(problems)}")
    return options, args


# ------------------------------------------------------------------ load processes

Kind = Literal["sub", "idle", "slow", "probe", "pub"]
#: A connection's states: connecting, handshake and subscribe sent, live, closing
#: (our close frame sent), stalled (a slow consumer not reading: out of the epoll set).
CONNECTING, SETUP, LIVE, CLOSING, STALLED = range(5)

EVENT: Final = b'"type":"event"'
ACK: Final = b'"type":"ack"'
ERROR: Final = b'"type":"error"'
CONNECTED: Final = b'"msg":"connected"'
#: The server's heartbeat: a WebSocket ping and this ``info`` frame; both answered by
#: one pong (any frame counts as activity for CONNECTION_TIMEOUT).
PING: Final = b'"msg":"ping"'
PONG: Final = client_frame(b"", opcode=0xA)
#: A close frame (1000), sent by the polite half of the churn.
CLOSE: Final = client_frame(b"\x03\xe8", opcode=0x8)
#: A server close frame's first byte (ASCII JSON never holds it; a rare length byte may,
#: which only costs a look for the reason).
CLOSE_BYTE: Final = b"\x88"
REASONS: Final = {b"SLOW_CONSUMER": "slow consumer", b"CONNECTION_TIMEOUT": "idle timeout"}
#: A slow consumer's receive buffer (the kernel doubles it): a client on a slow link,
#: whose stall fills the server's outbox in seconds, not minutes of kernel buffers.
SLOW_RCVBUF: Final = 4096
RECV_SIZE: Final = 1 << 16
#: Set-ups in flight per load process; how long one may take, and the wait before a
#: failed one is retried.
SETUP_WINDOW: Final = 100
SETUP_TIMEOUT: Final = 10.0
RETRY_SECONDS: Final = 1.0
#: How long a polite close waits for the server's close before dropping the socket.
CLOSE_WAIT: Final = 2.0
#: A publisher whose socket holds this many unsent bytes skips messages instead.
PUBLISH_BACKLOG: Final = 1 << 20
#: Housekeeping (time-outs, stalls) at most this often; epoll waits at most TICK.
SWEEP_SECONDS: Final = 0.1
TICK: Final = 0.05
#: Latencies kept per sample per process (evenly thinned beyond).
LATENCIES_PER_SAMPLE: Final = 20_000
#: Counters a load process reports in each ``sample`` answer (cumulative).
COUNTERS: Final = (
    "live", "opened", "churned", "churned_polite", "close_timeouts", "stalls",
    "closed_slow", "closed_lagging", "closed_timeout", "closed_other", "connect_errors", "events",
    "published", "acked", "publish_errors", "skipped", "pongs", "cpu_s",
)  # fmt: skip


class LoadConfig(TypedDict):
    port: int
    topics: list[str]
    #: Subscribers (churned): subscriber i takes ``topics[(first + i) % len(topics)]``.
    subscribers: int
    first: int
    #: Connections that subscribe to nothing (churned).
    idle: int
    #: Slow consumers (not churned): slow i takes ``slow_topics`` topics from
    #: ``topics[(slow_first + i) % len(topics)]`` on.
    slow: int
    slow_first: int
    slow_topics: int
    #: Probe subscriber i takes ``topics[i % len(topics)]``.
    probes: int
    publishers: int
    #: Messages per second, this process's publishers together, round-robin over topics.
    rate: float
    payload_bytes: int
    #: Connections closed and replaced per second.
    churn_per_s: float
    read_seconds: float
    stall_seconds: float
    seed: int
    setup_seconds: float
    max_seconds: float


class Conn:
    """One connection of a load process, in one slot (its role and topic)."""

    __slots__ = ("data", "fd", "out", "reason", "slot", "sock", "state", "until")

    def __init__(self, sock: socket.socket, slot: int, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.slot = slot
        self.state = CONNECTING
        #: Set-up bytes so far; a probe's unfinished message.
        self.data = b""
        #: Set-up and closing: when to give up; a slow consumer: when it stalls (live)
        #: or reads again (stalled).
        self.until = now + SETUP_TIMEOUT
        #: What the server gave as its reason to close, if seen.
        self.reason = ""
        #: A publisher's bytes the socket has not taken yet.
        self.out = b""


class Load:
    """A load process's connections and its event loop."""

    def __init__(self, config: LoadConfig, ctl: Control) -> None:
        self.config = config
        self.ctl = ctl
        self.rng = random.Random(config["seed"])
        topics = config["topics"]
        self.kinds: list[Kind] = []
        self.topics: list[list[str]] = []
        for i in range(config["subscribers"]):
            self._slot("sub", [topics[(config["first"] + i) % len(topics)]])
        for _ in range(config["idle"]):
            self._slot("idle", [])
        for i in range(config["slow"]):
            first = config["slow_first"] + i
            mine = {topics[(first + j) % len(topics)] for j in range(config["slow_topics"])}
            self._slot("slow", sorted(mine))
        for i in range(config["probes"]):
            self._slot("probe", [topics[i % len(topics)]])
        for _ in range(config["publishers"]):
            self._slot("pub", [])
        self.slots: list[Conn | None] = [None] * len(self.kinds)
        self.churnable = [i for i, kind in enumerate(self.kinds) if kind in ("sub", "idle")]
        self.slow_slots = [i for i, kind in enumerate(self.kinds) if kind == "slow"]
        self.pub_slots = [i for i, kind in enumerate(self.kinds) if kind == "pub"]
        self.requests = [self._request(mine) for mine in self.topics]
        self.conns: dict[int, Conn] = {}
        #: Connections being set up or closing (time-outs are checked on these only).
        self.pending: set[Conn] = set()
        #: (when, slot): connections to open, soonest first.
        self.due: list[tuple[float, int]] = [(0.0, slot) for slot in range(len(self.kinds))]
        self.epoll = select.epoll()
        self.epoll.register(ctl.fd, select.EPOLLIN)
        self.buffer = bytearray(RECV_SIZE)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.error_sample = ""
        self.latencies: list[int] = []
        self.go_at: float | None = None
        self.stopped = False

    def _slot(self, kind: Kind, topics: list[str]) -> None:
        self.kinds.append(kind)
        self.topics.append(topics)

    def _request(self, topics: list[str]) -> bytes:
        """The handshake, with the subscribes right behind it (the server reads frames
        that come with the handshake)."""
        subscribes = [
            client_frame(
                json.dumps(
                    {"type": "subscribe", "topic": topic, "client_id": "bench-soak"},
                    separators=(",", ":"),
                ).encode()
            )
            for topic in topics
        ]
        return b"".join([ws_request(self.config["port"]), *subscribes])

    # -------------------------------------------------------------- opening, closing

    def open_due(self, now: float) -> None:
        setting_up = sum(1 for conn in self.pending if conn.state != CLOSING)
        while self.due and self.due[0][0] <= now and setting_up < SETUP_WINDOW:
            _, slot = heapq.heappop(self.due)
            setting_up += self.open(slot, now)

    def open(self, slot: int, now: float) -> bool:
        sock = None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.kinds[slot] == "slow":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            code = sock.connect_ex((HOST, self.config["port"]))
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
        except OSError as exc:
            if sock is not None:
                sock.close()
            self.failed(slot, now, f"connect: {exc}")
            return False
        conn = Conn(sock, slot, now)
        self.conns[conn.fd] = conn
        self.slots[slot] = conn
        self.pending.add(conn)
        self.epoll.register(conn.fd, select.EPOLLOUT)
        return True

    def failed(self, slot: int, now: float, why: str) -> None:
        self.counts["connect_errors"] += 1
        self.error_sample = self.error_sample or why[:300]
        heapq.heappush(self.due, (now + RETRY_SECONDS, slot))

    def discard(self, conn: Conn) -> None:
        """Close the socket and forget the connection (its slot is the caller's)."""
        if conn.state != STALLED:
            with contextlib.suppress(OSError):
                self.epoll.unregister(conn.fd)
        self.conns.pop(conn.fd, None)
        self.pending.discard(conn)
        conn.sock.close()
        if self.slots[conn.slot] is conn:
            self.slots[conn.slot] = None

    def replace(self, conn: Conn, now: float) -> None:
        """``conn`` is gone: its slot gets a new connection (opened after this round
        of events, so a stale event for a reused descriptor finds nothing)."""
        if self.slots[conn.slot] is conn:
            self.slots[conn.slot] = None
        heapq.heappush(self.due, (now, conn.slot))

    def lost(self, conn: Conn, now: float) -> None:
        """The server closed a connection we did not close."""
        if conn.state == LIVE or conn.state == STALLED:
            self.counts["live"] -= 1
        if self.kinds[conn.slot] == "slow":
            # Its close frame seldom gets through to a reader that is not reading: the
            # server gives up on the close handshake and drops the connection.
            self.counts["closed_slow"] += 1
        else:
            key = {"slow consumer": "closed_lagging", "idle timeout": "closed_timeout"}
            self.counts[key.get(conn.reason, "closed_other")] += 1
        self.discard(conn)
        self.replace(conn, now)

    def churn(self, now: float) -> None:
        """Close one live churnable connection (every other one politely) and replace it."""
        for _ in range(8):
            picked = self.slots[self.rng.choice(self.churnable)]
            if picked is not None and picked.state == LIVE:
                conn = picked
                break
        else:
            return
        self.counts["churned"] += 1
        self.counts["live"] -= 1
        self.replace(conn, now)
        if self.counts["churned"] % 2:
            self.counts["churned_polite"] += 1
            with contextlib.suppress(OSError):
                conn.sock.send(CLOSE)
            conn.state = CLOSING
            conn.until = now + CLOSE_WAIT
            self.pending.add(conn)
        else:
            self.discard(conn)

    # -------------------------------------------------------------- events

    def on_event(self, conn: Conn, now: float) -> None:
        state = conn.state
        if state == LIVE:
            self.on_live(conn, now)
        elif state == CONNECTING:
            code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            request = self.requests[conn.slot]
            try:
                if code:
                    raise OSError(code, os.strerror(code))
                if conn.sock.send(request) != len(request):
                    raise OSError("the handshake did not fit the socket")
            except OSError as exc:
                self.discard(conn)
                self.failed(conn.slot, now, f"connect: {exc}")
                return
            conn.state = SETUP
            self.epoll.modify(conn.fd, select.EPOLLIN)
        elif state == SETUP:
            self.on_setup(conn, now)
        elif state == CLOSING:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.discard(conn)

    def on_setup(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            data, why = b"", f"set-up: {exc}"
        else:
            why = f"set-up: the server closed the connection after {conn.data[:200]!r}"
        if not data:
            self.discard(conn)
            self.failed(conn.slot, now, why)
            return
        conn.data += data
        head, found, rest = conn.data.partition(b"\r\n\r\n")
        if not found:
            if len(conn.data) > RECV_SIZE:
                self.discard(conn)
                self.failed(conn.slot, now, f"set-up: no response head in {conn.data[:200]!r}")
            return
        if not head.startswith(b"HTTP/1.1 101") or ERROR in rest:
            self.discard(conn)
            self.failed(conn.slot, now, f"set-up refused: {conn.data[:300]!r}")
            return
        subscribes = len(self.topics[conn.slot])
        if CONNECTED not in rest or rest.count(ACK) < subscribes:
            return  # not all of it yet
        self.pending.discard(conn)
        conn.state = LIVE
        conn.data = b""
        self.counts["opened"] += 1
        self.counts["live"] += 1
        self.counts["events"] += rest.count(EVENT)
        if self.kinds[conn.slot] == "slow" and self.go_at is not None:
            conn.until = now + self.config["read_seconds"] * self.rng.uniform(0.5, 1.5)

    def on_live(self, conn: Conn, now: float) -> None:
        buffer = self.buffer
        try:
            size = conn.sock.recv_into(buffer)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        if not size:
            self.lost(conn, now)
            return
        self.counts["events"] += buffer.count(EVENT, 0, size)
        if buffer.find(PING, 0, size) >= 0:
            self.counts["pongs"] += 1
            with contextlib.suppress(OSError):
                conn.sock.send(PONG)
        if buffer.find(CLOSE_BYTE, 0, size) >= 0:
            chunk = bytes(buffer[:size])
            conn.reason = next((why for mark, why in REASONS.items() if mark in chunk), "")
        kind = self.kinds[conn.slot]
        if kind == "probe":
            now_ns = time.monotonic_ns()
            data = conn.data + buffer[:size]
            end = 0
            for match in MESSAGE_RE.finditer(data):
                self.latencies.append(now_ns - int(match[2]))
                end = match.end()
            conn.data = bytes(data[end:][-1024:])
        elif kind == "pub":
            self.counts["acked"] += buffer.count(ACK, 0, size)
            errors = buffer.count(ERROR, 0, size)
            if errors:
                self.counts["publish_errors"] += errors
                at = buffer.find(ERROR, 0, size)
                self.error_sample = self.error_sample or bytes(buffer[at : at + 300]).decode(
                    errors="replace"
                )

    # -------------------------------------------------------------- the run

    def publish(self, now: float) -> None:
        """Send the messages due by now (paced from ``go``), round-robin over the topics
        and the publishers, each stamped with its send time."""
        if self.go_at is None or not self.pub_slots:
            return
        config = self.config
        topics = config["topics"]
        sent = self.counts["published"] + self.counts["skipped"]
        due = math.floor((now - self.go_at) * config["rate"]) - sent
        if due <= 0:
            return
        batches: dict[int, list[bytes]] = {}
        for seq in range(sent + 1, sent + 1 + min(due, 10_000)):
            slot = self.pub_slots[seq % len(self.pub_slots)]
            frame = message_template("ws", topics[seq % len(topics)], seq, config["payload_bytes"])
            batches.setdefault(slot, []).append(frame)
        stamp = b"%019d" % time.monotonic_ns()
        for slot, frames in batches.items():
            conn = self.slots[slot]
            if conn is None or conn.state != LIVE or len(conn.out) > PUBLISH_BACKLOG:
                self.counts["skipped"] += len(frames)
                continue
            self.counts["published"] += len(frames)
            self.flush(conn, conn.out + b"".join(frames).replace(STAMP_SLOT, stamp))

    def flush(self, conn: Conn, out: bytes) -> None:
        try:
            sent = conn.sock.send(out) if out else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the read side sees the close
        waiting = bool(conn.out)
        conn.out = out[sent:]
        if bool(conn.out) != waiting:
            mask = select.EPOLLIN | (select.EPOLLOUT if conn.out else 0)
            self.epoll.modify(conn.fd, mask)

    def sweep(self, now: float) -> None:
        """Time-outs of set-ups and polite closes, and the slow consumers' stalls."""
        for late in [conn for conn in self.pending if now > conn.until]:
            self.discard(late)
            if late.state == CLOSING:
                self.counts["close_timeouts"] += 1
            else:
                self.failed(late.slot, now, f"set-up timed out after {SETUP_TIMEOUT:g} s")
        if self.go_at is None:
            return
        config = self.config
        for slot in self.slow_slots:
            conn = self.slots[slot]
            if conn is None or now < conn.until:
                continue
            if conn.state == LIVE:
                self.epoll.unregister(conn.fd)
                conn.state = STALLED
                conn.until = now + config["stall_seconds"]
                self.counts["stalls"] += 1
            elif conn.state == STALLED:
                self.epoll.register(conn.fd, select.EPOLLIN)
                conn.state = LIVE
                conn.until = now + config["read_seconds"] * self.rng.uniform(0.5, 1.5)

    def go(self, now: float) -> None:
        self.go_at = now
        span = self.config["read_seconds"] + self.config["stall_seconds"]
        for slot in self.slow_slots:
            conn = self.slots[slot]
            if conn is not None and conn.state == LIVE:
                conn.until = now + self.rng.uniform(0.0, span)  # stalls spread out

    def commands(self, now: float) -> None:
        for command in self.ctl.read():
            if command == "go" and self.go_at is None:
                self.go(now)
            elif command == "stop":
                self.stopped = True
            elif command.startswith("sample "):
                latencies = sorted(self.latencies)
                self.latencies = []
                if len(latencies) > LATENCIES_PER_SAMPLE:
                    step = len(latencies) / LATENCIES_PER_SAMPLE
                    latencies = [
                        latencies[math.floor(i * step)] for i in range(LATENCIES_PER_SAMPLE)
                    ]
                self.ctl.emit(
                    "sample",
                    n=int(command.split()[1]),
                    counts={**self.counts, "cpu_s": time.process_time()},
                    error_sample=self.error_sample,
                    latencies_us=[value // 1000 for value in latencies],
                )

    def run(self) -> None:
        """Open every connection, say ``ready``, then run the load from ``go`` until
        ``stop``, end of input, or the time cap."""
        config = self.config
        start = time.monotonic()
        setup_deadline = start + config["setup_seconds"]
        ready = False
        next_sweep = start
        churned = 0
        conns, epoll = self.conns, self.epoll
        while not self.stopped:
            now = time.monotonic()
            timeout = TICK
            if self.go_at is not None and self.pub_slots:
                sent = self.counts["published"] + self.counts["skipped"]
                next_due = self.go_at + (sent + 1) / config["rate"]
                timeout = min(timeout, max(0.001, next_due - now))
            for fd, mask in epoll.poll(timeout):
                conn = conns.get(fd)
                if conn is not None:
                    if mask & select.EPOLLOUT and conn.state == LIVE:
                        self.flush(conn, conn.out)
                    if mask & ~select.EPOLLOUT or conn.state != LIVE:
                        self.on_event(conn, now)
                elif fd == self.ctl.fd:
                    self.commands(now)
            now = time.monotonic()
            if self.go_at is not None:
                if now - self.go_at > config["max_seconds"]:
                    break
                wanted = math.floor((now - self.go_at) * config["churn_per_s"])
                for _ in range(min(wanted - churned, 1000)):
                    self.churn(now)
                churned = max(churned, wanted)
                self.publish(now)
            elif now > setup_deadline + 60.0:  # the orchestrator gave up long before
                raise TimeoutError(
                    f"set-up: {self.counts['live']:,} of {len(self.slots):,} connections "
                    f"live after {config['setup_seconds']:g} s; {self.error_sample}"
                )
            if now >= next_sweep:
                self.sweep(now)
                next_sweep = now + SWEEP_SECONDS
            self.open_due(now)
            if not ready and self.counts["live"] == len(self.slots):
                ready = True
                self.ctl.emit("ready", connections=len(self.slots))

    def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.epoll.close()


def load_main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.soak load CONFIG_JSON``: one soak load process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "load":
        print("usage: python -m bench.soak load CONFIG_JSON", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctl = Control()
    text = args[1]
    if text.startswith("@"):  # a configuration too long for one argument (procs.Worker)
        with open(text[1:], encoding="utf-8") as file:
            text = file.read()
    load = Load(cast(LoadConfig, json.loads(text)), ctl)
    start = time.monotonic()
    try:
        load.run()
        result = {**load.counts, "cpu_s": time.process_time(), "wall_s": time.monotonic() - start}
        ctl.emit("done", result=result)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        ctl.emit("error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 1
    finally:
        load.close()
    return 0


# ------------------------------------------------------------------ the orchestrator


class SoakServer(PubSub):
    """Our server with the soak's queue, policy, heartbeat and idle timeout, and room
    for every connection the run holds."""

    def __init__(
        self,
        procs: Processes,
        pinning: Pinning,
        options: SoakOptions,
        target: str | None,
        target_pid: int | None,
    ) -> None:
        super().__init__(
            procs, pinning, max_queue_size=options.soak_queue_size, policy=options.soak_policy,
            target=target, target_pid=target_pid,
        )  # fmt: skip
        self.options = options

    def serve_flags(self) -> dict[str, object]:
        flags = super().serve_flags()
        flags.update(
            {
                "heartbeat-interval": self.options.soak_heartbeat_ms,
                "connection-timeout": self.options.soak_timeout_ms,
                "max-connections": max(LIMIT, 2 * self.options.soak_connections),
            }
        )
        return flags

    def fds(self) -> int | None:
        pid = self.pid
        return None if pid is None else len(os.listdir(f"/proc/{pid}/fd"))

    def waited(self) -> float | None:
        return None if self.pid is None else waited(self.pid)


def waited(pid: int) -> float | None:
    """Seconds process ``pid``'s main thread (the server's event loop; a load process's
    epoll loop) spent ready to run but waiting for a CPU (``/proc/PID/schedstat``,
    second field, ns): on a shared machine, how much of the slowness is other
    processes'. None if unknown."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class SoakWorker(Worker):
    """A soak load process: :class:`~bench.procs.Worker`'s line protocol, started as
    ``python -m bench.soak load CONFIG``, whose ``sample`` answers are kept by number."""

    def __init__(self, procs: Processes, pinning: Pinning, name: str, config: LoadConfig) -> None:
        super().__init__(procs, pinning, name, "load", config, program=("-m", "bench.soak"))
        self.samples: dict[int, dict[str, Any]] = {}

    def feed(self, data: bytes) -> None:
        *lines, rest = (self._buffer + data).split(b"\n")
        self._buffer = b""
        for line in lines:
            if line.startswith(b'{"event": "sample"'):
                message = json.loads(line)
                self.samples[int(message["n"])] = message
            else:
                super().feed(line + b"\n")
        self._buffer = rest


class Sample(TypedDict):
    #: Seconds since ``go``: when the load processes answered, and when the server's
    #: figures were read (a busy server answers ``/stats`` late).
    t_s: float
    server_t_s: float
    rss_kb: int | None
    fds: int | None
    #: Server CPU over the window, as a share of one core; the share of the window its
    #: event loop was ready to run but waited for a CPU (other processes had it): CPU +
    #: wait near 1 means the server had more work than CPU.
    server_cpu: float | None
    server_wait: float | None
    #: The machine's 1-minute load average (``/proc/loadavg``).
    loadavg: float
    #: Server-side: open WebSocket connections, connections ever opened, event frames
    #: delivered per second over the window, drops and slow-consumer closes so far.
    clients: int | None
    connections_ever: int | None
    deliveries_per_s: float | None
    dropped: int | None
    slow_disconnects: int | None
    #: Load-side: live connections, events counted per second, publishes sent and
    #: acknowledged per second over the window.
    live: int
    events_per_s: float | None
    published_per_s: float | None
    acked_per_s: float | None
    #: Probe latencies over the window (ms).
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    latency_samples: int
    #: Load-side, so far: connections opened (set-ups done), churned, closed by the
    #: server (slow consumer / idle timeout / other), set-up failures, stalls begun.
    opened: int
    churned: int
    closed_slow: int
    closed_lagging: int
    closed_timeout: int
    closed_other: int
    connect_errors: int
    stalls: int
    #: All load processes' CPU over the window, as a share of one core (they share one),
    #: and their time waiting for a CPU, summed, as a share of the window.
    load_cpu: float | None
    load_wait: float | None


class Soak:
    """One soak run against one server: the load processes, the samples, the summary."""

    def __init__(
        self, options: SoakOptions, procs: Processes, pinning: Pinning, progress: Progress
    ) -> None:
        self.options = options
        self.procs = procs
        self.pinning = pinning
        self.progress = progress
        self.samples: list[Sample] = []
        self.latencies_us: list[list[int]] = []
        self.error_samples: list[str] = []
        self.rss_after_close_kb: int | None = None
        #: The load's counters and the server's at the last sample.
        self.totals: dict[str, float] = {}
        self.last: ServerRead | None = None
        self.load_waited: list[float | None] = []
        self.stats_failures: list[str] = []

    def configs(self, port: int, topics: list[str]) -> list[tuple[str, LoadConfig]]:
        """The pacer (publishers and probes), then the held connections split evenly."""
        opts = self.options
        total = opts.soak_connections
        slow = round(total * opts.soak_slow)
        subscribed = max(slow, round(total * opts.soak_subscribed))
        parts = math.ceil(total / opts.conns_per_proc)
        # Their own cap, far beyond the run's end: the orchestrator says when to stop.
        seconds = opts.minutes * 60 + opts.setup_seconds + 300.0

        def config(**values: Any) -> LoadConfig:
            base = LoadConfig(
                port=port, topics=topics, subscribers=0, first=0, idle=0, slow=0, slow_first=0,
                slow_topics=opts.soak_slow_topics,
                probes=0, publishers=0, rate=opts.soak_rate, payload_bytes=opts.soak_payload_bytes,
                churn_per_s=0.0, read_seconds=opts.soak_read_seconds,
                stall_seconds=opts.soak_stall_seconds, seed=opts.seed,
                setup_seconds=opts.setup_seconds, max_seconds=seconds,
            )  # fmt: skip
            base.update(values)  # type: ignore[typeddict-item]
            return base

        out = [("pacer", config(probes=opts.soak_probes, publishers=opts.soak_publishers))]
        first = slow_first = 0
        for index, (subs, idle, slows) in enumerate(
            zip(
                spread(subscribed - slow, parts),
                spread(total - subscribed, parts),
                spread(slow, parts),
                strict=True,
            )
        ):
            churn = opts.soak_churn * total * (subs + idle) / max(1, total - slow)
            out.append(
                (
                    f"connections-{index}",
                    config(
                        subscribers=subs, first=first, idle=idle, slow=slows,
                        slow_first=slow_first, churn_per_s=churn, seed=opts.seed + 1 + index,
                    ),
                )
            )  # fmt: skip
            first += subs
            slow_first += slows
        return out

    def run(self, server: SoakServer) -> None:
        opts = self.options
        topics = [f"soak-{i}" for i in range(opts.soak_topics)]
        server.create_topics(topics, exist_ok=True)
        workers: list[SoakWorker] = []
        try:
            for name, config in self.configs(server.port, topics):
                workers.append(SoakWorker(self.procs, self.pinning, name, config))
            label = f"soak: {opts.soak_connections:,} connections"
            self.progress.show(f"{label}: connecting")
            pump(
                workers,
                lambda: all(worker.ready for worker in workers),
                opts.setup_seconds + 30.0,
                f"{label}: load processes to connect",
            )
            server.check_alive()
            self.progress.done(f"{label}: all open; load running for {opts.minutes:g} min")
            duration = opts.minutes * 60
            count = max(1, math.ceil(duration / opts.sample_seconds))
            start = time.monotonic()
            for worker in workers:
                worker.send("go")
            self.take(server, workers, 0, start)
            for n in range(1, count + 1):
                at = start + min(duration, n * opts.sample_seconds)
                if at < time.monotonic() and at < start + duration:
                    continue  # a slow sample (a busy server answers /stats late) ran over
                pump(workers, due(at), at - time.monotonic() + 30.0, "the next sample")
                self.take(server, workers, n, start)
            for worker in workers:
                worker.send("stop")
            pump(workers, lambda: all(w.result is not None for w in workers), 30.0, "the load")
        finally:
            for worker in workers:
                worker.stop()
        self.rss_after_close_kb = after_close(server)

    def take(self, server: SoakServer, workers: Sequence[SoakWorker], n: int, start: float) -> None:
        """Sample ``n``: every load process's counters (asked for now), then the server's
        (a busy server may take seconds to answer ``/stats``: its figures are read when
        it has, and its rates are over the time between those reads)."""
        for worker in workers:
            worker.send(f"sample {n}")
        pump(workers, lambda: all(n in w.samples for w in workers), 30.0, f"sample {n}")
        now = time.monotonic()
        answers = [worker.samples.pop(n) for worker in workers]
        load_waited = [waited(worker.popen.pid) for worker in workers]
        counts = {key: sum(a["counts"][key] for a in answers) for key in COUNTERS}
        self.error_samples += [a["error_sample"] for a in answers if a["error_sample"]]
        latencies = sorted(value for a in answers for value in a["latencies_us"])
        try:
            stats = server.stats()
        except (OSError, BenchError) as exc:  # a server too busy to answer in 30 s
            stats = {}
            self.stats_failures.append(f"sample {n}: GET /stats: {exc}")
        delivery, websocket = stats.get("delivery", {}), stats.get("websocket", {})
        read = ServerRead(
            at=time.monotonic(), delivered=delivery.get("delivered"), cpu=server.cpu(),
            waited=server.waited(),
        )  # fmt: skip
        sample = Sample(
            t_s=round(now - start, 2), server_t_s=round(read.at - start, 2),
            rss_kb=server.rss_kb(), fds=server.fds(), server_cpu=None,
            server_wait=None, loadavg=loadavg(), clients=websocket.get("total_clients"),
            connections_ever=websocket.get("connection_counter"), deliveries_per_s=None,
            dropped=delivery.get("dropped"),
            slow_disconnects=delivery.get("slow_consumer_disconnects"),
            live=counts["live"], events_per_s=None, published_per_s=None, acked_per_s=None,
            p50_ms=None, p99_ms=None, max_ms=None, latency_samples=len(latencies),
            opened=counts["opened"], churned=counts["churned"], closed_slow=counts["closed_slow"],
            closed_lagging=counts["closed_lagging"], closed_timeout=counts["closed_timeout"],
            closed_other=counts["closed_other"], connect_errors=counts["connect_errors"],
            stalls=counts["stalls"], load_cpu=None, load_wait=None,
        )  # fmt: skip
        if latencies:
            sample["p50_ms"] = percentile(latencies, 0.5) / 1000
            sample["p99_ms"] = percentile(latencies, 0.99) / 1000
            sample["max_ms"] = latencies[-1] / 1000
        last = self.last
        if self.samples and last is not None:
            window = now - start - self.samples[-1]["t_s"]
            if window > 0:
                per_s = {key: (counts[key] - self.totals[key]) / window for key in COUNTERS}
                sample["events_per_s"] = per_s["events"]
                sample["published_per_s"] = per_s["published"]
                sample["acked_per_s"] = per_s["acked"]
                sample["load_cpu"] = per_s["cpu_s"]
                if None not in load_waited and None not in self.load_waited:
                    known = cast(list[float], load_waited)
                    gone = sum(known) - sum(cast(list[float], self.load_waited))
                    sample["load_wait"] = gone / window
            span = read.at - last.at
            if span > 0:
                if read.delivered is not None and last.delivered is not None:
                    sample["deliveries_per_s"] = (read.delivered - last.delivered) / span
                if read.cpu is not None and last.cpu is not None:
                    sample["server_cpu"] = (read.cpu - last.cpu) / span
                if read.waited is not None and last.waited is not None:
                    sample["server_wait"] = (read.waited - last.waited) / span
        self.totals, self.last, self.load_waited = counts, read, load_waited
        self.samples.append(sample)
        self.latencies_us.append(latencies)
        self.progress.show(describe(sample))


@dataclass(frozen=True)
class ServerRead:
    """The server's counters at one sample, and when they were read."""

    at: float
    delivered: int | None
    cpu: float | None
    waited: float | None


def loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as file:
        return float(file.read().split()[0])


def due(at: float) -> Callable[[], bool]:
    return lambda: time.monotonic() >= at


def spread(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal parts."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def after_close(server: SoakServer) -> int | None:
    """The server's RSS once the load's connections are all gone (at most 10 s on)."""
    if not server.port:
        return None
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if server.stats()["websocket"]["total_clients"] == 0:
            break
        time.sleep(0.2)
    return server.rss_kb()


def describe(sample: Sample) -> str:
    parts = [f"soak {sample['t_s']:6.0f} s"]
    if sample["rss_kb"] is not None:
        parts.append(f"RSS {sample['rss_kb'] / 1024:,.1f} MB")
    if sample["fds"] is not None:
        parts.append(f"{sample['fds']:,} fds")
    if sample["clients"] is not None:
        parts.append(f"{sample['clients']:,} clients")
    if sample["deliveries_per_s"] is not None:
        parts.append(f"{sample['deliveries_per_s']:,.0f} deliveries/s")
    if sample["p99_ms"] is not None:
        parts.append(f"p50/p99 {sample['p50_ms']:.2f}/{sample['p99_ms']:.2f} ms")
    parts.append(f"churned {sample['churned']:,}, slow closes {sample['closed_slow']:,}")
    return ", ".join(parts)


# ------------------------------------------------------------------ summary and report


def warmup_seconds(options: SoakOptions) -> float:
    return min(options.warmup_seconds, 0.1 * options.minutes * 60)


def summarize(
    samples: Sequence[Sample], latencies_us: Sequence[Sequence[int]], warmup: float
) -> dict[str, Any]:
    """The figures of a run: RSS after warm-up (the first sample at or after its end)
    and at the end, their ratio against the 10 % bar, RSS's slope after warm-up, fds,
    latency pooled over the windows after warm-up, rates and totals."""
    if not samples:
        return {}
    warm_index = next((i for i, s in enumerate(samples) if s["t_s"] >= warmup), len(samples) - 1)
    warm, end = samples[warm_index], samples[-1]
    after = list(samples[warm_index:])
    windows = after[1:] or after  # rates and latencies: the windows after warm-up
    summary: dict[str, Any] = {"warmup_s": warmup, "warm_t_s": warm["t_s"], "end_t_s": end["t_s"]}
    rss = [(s["t_s"], s["rss_kb"]) for s in after if s["rss_kb"] is not None]
    if warm["rss_kb"] is not None and end["rss_kb"] is not None:
        growth = end["rss_kb"] / warm["rss_kb"] - 1
        summary.update(
            rss_warm_kb=warm["rss_kb"], rss_end_kb=end["rss_kb"], rss_growth=growth,
            rss_holds=growth <= RSS_TARGET,
            rss_max_kb=max(value for _, value in rss), rss_min_kb=min(value for _, value in rss),
            rss_slope_kb_per_min=slope(rss) * 60,
        )  # fmt: skip
    fds = [s["fds"] for s in after if s["fds"] is not None]
    if fds and warm["fds"] is not None and end["fds"] is not None:
        summary.update(fds_warm=warm["fds"], fds_end=end["fds"], fds_min=min(fds), fds_max=max(fds))
    pooled = sorted(
        value for index in range(warm_index + 1, len(samples)) for value in latencies_us[index]
    ) or sorted(value for values in latencies_us for value in values)
    if pooled:
        p99s = sorted(s["p99_ms"] for s in windows if s["p99_ms"] is not None)
        summary.update(
            p50_ms=percentile(pooled, 0.5) / 1000, p99_ms=percentile(pooled, 0.99) / 1000,
            max_ms=pooled[-1] / 1000, latency_samples=len(pooled),
            window_p99_ms=[p99s[0], percentile(p99s, 0.5), p99s[-1]] if p99s else None,
        )  # fmt: skip
    summary.update({key: mean([cast(dict[str, Any], s)[key] for s in windows]) for key in RATES})
    summary["load_cpu_max"] = max((s["load_cpu"] or 0.0) for s in windows)
    clients = [s["clients"] for s in after if s["clients"] is not None]
    if clients:
        summary.update(clients_min=min(clients), clients_max=max(clients))
    summary.update({key: cast(dict[str, Any], end)[key] for key in TOTALS})
    return summary


#: Sample figures averaged over the windows after warm-up, and those taken at the end.
RATES: Final = (
    "deliveries_per_s", "events_per_s", "published_per_s", "acked_per_s", "server_cpu",
    "server_wait", "load_cpu", "load_wait", "loadavg",
)  # fmt: skip
TOTALS: Final = (
    "opened", "churned", "closed_slow", "closed_lagging", "closed_timeout", "closed_other",
    "connect_errors",
    "stalls", "dropped", "slow_disconnects", "connections_ever",
)  # fmt: skip


def mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def verdict(summary: dict[str, Any]) -> str:
    """The RSS line: warm-up against end, and whether the 10 % bar holds (reported)."""
    if "rss_warm_kb" not in summary:
        return "RSS: not known (no server PID)"
    holds = "HOLDS" if summary["rss_holds"] else "DOES NOT HOLD"
    return (
        f"RSS after warm-up ({summary['warm_t_s']:.0f} s) {summary['rss_warm_kb'] / 1024:,.1f} MB, "
        f"at the end ({summary['end_t_s']:.0f} s) {summary['rss_end_kb'] / 1024:,.1f} MB: "
        f"{summary['rss_growth']:+.1%} (target within {RSS_TARGET:.0%}): {holds}; "
        f"slope after warm-up {summary['rss_slope_kb_per_min']:+,.0f} KB/min, "
        f"range {summary['rss_min_kb'] / 1024:,.1f}-{summary['rss_max_kb'] / 1024:,.1f} MB"
    )


def markdown(
    options: SoakOptions, samples: Sequence[Sample], summary: dict[str, Any], notes: Sequence[str]
) -> str:
    """A table of the samples (at most about 20 rows, the last always), then the figures."""
    step = max(1, math.ceil(len(samples) / 20))
    shown = [s for i, s in enumerate(samples) if i % step == 0 or i == len(samples) - 1]
    out = [
        f"### soak: {options.soak_connections:,} connections on {options.soak_topics} topics, "
        f"{options.soak_rate:,.0f} msg/s, churn {options.soak_churn:.1%}/s, "
        f"{options.soak_slow:.1%} slow consumers, {options.minutes:g} min\n",
        "| t (s) | RSS MB | fds | clients | server CPU | deliveries/s | publishes/s "
        "| p50 ms | p99 ms | churned | slow closes | connect errors |",
        "|" + "---:|" * 12,
    ]

    def cell(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    for s in shown:
        out.append(
            "| "
            + " | ".join(
                [
                    f"{s['t_s']:.0f}",
                    cell(None if s["rss_kb"] is None else s["rss_kb"] / 1024, ",.1f"),
                    cell(s["fds"], ","),
                    cell(s["clients"], ","),
                    cell(None if s["server_cpu"] is None else s["server_cpu"] * 100, ".0f") + "%",
                    cell(s["deliveries_per_s"], ",.0f"),
                    cell(s["acked_per_s"], ",.0f"),
                    cell(s["p50_ms"], ".2f"),
                    cell(s["p99_ms"], ".2f"),
                    f"{s['churned']:,}",
                    f"{s['closed_slow']:,}",
                    f"{s['connect_errors']:,}",
                ]
            )
            + " |"
        )
    out += ["", f"- {verdict(summary)} (reported, not judged)"]
    if "fds_warm" in summary:
        out.append(
            f"- open fds: {summary['fds_warm']:,} after warm-up, {summary['fds_end']:,} at the "
            f"end (range {summary['fds_min']:,}-{summary['fds_max']:,})"
        )
    if "p99_ms" in summary:
        low, mid, high = summary["window_p99_ms"] or (None, None, None)
        text = (
            f"- latency after warm-up (probes, {summary['latency_samples']:,} messages): "
            f"p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
            f"max {summary['max_ms']:.1f} ms"
        )
        if low is not None:
            text += f"; per-window p99 {low:.2f} / {mid:.2f} / {high:.2f} ms (min/median/max)"
        out.append(text)
    rates = [
        ("deliveries/s (server)", summary.get("deliveries_per_s"), ",.0f"),
        ("events/s counted by the load", summary.get("events_per_s"), ",.0f"),
        ("publishes/s acknowledged", summary.get("acked_per_s"), ",.0f"),
    ]
    out.append(
        "- mean after warm-up: "
        + ", ".join(f"{name} {value:{form}}" for name, value, form in rates if value is not None)
    )
    cpu, wait = summary.get("server_cpu"), summary.get("server_wait")
    text = "- server CPU " + ("not known" if cpu is None else f"{cpu:.0%} of a core")
    if wait is not None:
        text += f", waiting for a CPU {wait:.0%} of the time"
    load, load_wait = summary.get("load_cpu") or 0.0, summary.get("load_wait")
    text += f"; load processes {load:.0%} of the load core (max {summary['load_cpu_max']:.0%})"
    if load_wait is not None:
        text += f", waiting for it {load_wait:.0%}"
    if summary["load_cpu_max"] >= LOAD_BOUND:
        text += ": LOAD-BOUND (latency includes the load's own delay)"
    text += f"; machine load average {summary.get('loadavg') or 0.0:.2f} on {os.cpu_count()} cores"
    out.append(text)
    out.append(
        f"- connections: {summary['opened']:,} set up ({summary['connections_ever'] or 0:,} "
        f"seen by the server), {summary['churned']:,} churned, closed by the server: "
        f"{summary['closed_slow']:,} slow consumers, {summary['closed_lagging']:,} readers "
        f"behind (SLOW_CONSUMER), {summary['closed_timeout']:,} idle timeout, "
        f"{summary['closed_other']:,} other; {summary['stalls']:,} stalls; "
        f"{summary['connect_errors']:,} set-up failures (retried); server: "
        f"{summary['slow_disconnects'] or 0:,} slow-consumer closes, "
        f"{summary['dropped'] or 0:,} events dropped; clients "
        f"{summary.get('clients_min', 0):,}-{summary.get('clients_max', 0):,}"
    )
    out += ["", "Notes:", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(out)


def chart(name: str, samples: Sequence[Sample], summary: dict[str, Any]) -> Path | str:
    """Six panels over time: RSS (with the warm-up value and the 10 % bar), fds and
    clients, latency, throughput, CPU, and the churn counters. Returns the PNG's path,
    or why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    minutes = [s["t_s"] / 60 for s in samples]
    figure, grid = plt.subplots(3, 2, figsize=(12, 11), sharex=True)
    axes = [a for row in grid for a in row]

    def line(ax: Any, key: str, label: str, scale: float = 1.0, color: str | None = None) -> None:
        points = [
            (m, value * scale)
            for m, s in zip(minutes, samples, strict=True)
            if (value := cast(dict[str, Any], s)[key]) is not None
        ]
        if points:
            xs, ys = [x for x, _ in points], [y for _, y in points]
            ax.plot(xs, ys, marker=".", label=label, color=color)

    line(axes[0], "rss_kb", "server RSS", 1 / 1024)
    if "rss_warm_kb" in summary:
        warm = summary["rss_warm_kb"] / 1024
        axes[0].axhline(warm, color="grey", linestyle=":", label="after warm-up")
        axes[0].axhline(warm * (1 + RSS_TARGET), color="red", linestyle="--", label="+10 %")
        axes[0].set_ylim(bottom=0, top=max(warm * 1.2, summary["rss_max_kb"] / 1024 * 1.05))
    axes[0].set_title("server RSS (MB)")
    line(axes[1], "fds", "open fds")
    line(axes[1], "clients", "WebSocket clients")
    line(axes[1], "live", "live at the load")
    axes[1].set_title("server open fds and connections")
    line(axes[2], "p50_ms", "p50")
    line(axes[2], "p99_ms", "p99")
    axes[2].set_yscale("log")
    axes[2].set_title("publish-to-receive latency, probes (ms)")
    line(axes[3], "deliveries_per_s", "deliveries/s (server)")
    line(axes[3], "acked_per_s", "publishes/s acknowledged")
    axes[3].set_yscale("log")
    axes[3].set_title("throughput (per second)")
    line(axes[4], "server_cpu", "server", 100)
    line(axes[4], "load_cpu", "load processes", 100)
    line(axes[4], "server_wait", "server waiting for a CPU", 100)
    line(axes[4], "load_wait", "load processes waiting for it (sum)", 100)
    axes[4].set_title("CPU (% of one core)")
    line(axes[5], "churned", "churned (left)")
    right = axes[5].twinx()
    line(right, "closed_slow", "slow consumers closed by the server (right)", color="C1")
    line(right, "connect_errors", "set-up failures (right)", color="C2")
    handles = [h for ax in (axes[5], right) for h in ax.get_legend_handles_labels()[0]]
    axes[5].legend(handles=handles, fontsize="small", loc="upper left")
    axes[5].set_title("connections closed and reopened (so far)")
    for ax in axes:
        if "warmup_s" in summary:
            ax.axvline(summary["warm_t_s"] / 60, color="grey", linewidth=0.8)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0] and ax.get_legend() is None:
            ax.legend(fontsize="small")
    for ax in axes[4:]:
        ax.set_xlabel("minutes")
    figure.suptitle(f"soak: {verdict(summary)}", fontsize="small")
    figure.tight_layout()
    report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = report.RESULTS_DIR / f"{name}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Sequence[str]) -> int:
    """``python -m bench soak [OPTIONS]``: 0 when the run completed (whatever it
    measured), 1 when the harness failed, 130 when interrupted."""
    options, args = parse(argv)
    raise_fd_limit(LIMIT)
    pinning = make_pinning()
    progress = Progress()
    notes = [f"pinning: {pinning.note}"]
    failed = None
    versions: dict[str, str] = {}
    try:
        with managed() as procs:
            soak = Soak(options, procs, pinning, progress)
            server = SoakServer(procs, pinning, options, args.target, args.target_pid)
            try:
                server.start()
                versions[server.name] = server.version()
                soak.run(server)
            except BenchError as exc:
                failed = str(exc)
                progress.done(f"soak: FAILED: {exc}")
                notes.append(f"FAILED: {exc}")
            finally:
                server.stop()
    except KeyboardInterrupt:
        progress.done("interrupted; every process started was stopped")
        return 130
    summary = summarize(soak.samples, soak.latencies_us, warmup_seconds(options))
    if soak.rss_after_close_kb is not None:
        summary["rss_after_close_kb"] = soak.rss_after_close_kb
        notes.append(
            f"RSS once every connection had closed: {soak.rss_after_close_kb / 1024:,.1f} MB"
        )
    notes += [f"load error (first seen): {text}" for text in dict.fromkeys(soak.error_samples)][:5]
    if soak.stats_failures:
        notes.append(
            f"{len(soak.stats_failures)} samples without the server's /stats figures "
            f"(first: {soak.stats_failures[0]})"
        )
    name = report.stem(["soak"])
    if soak.samples and not args.no_chart:
        notes.append(f"chart: {chart(name, soak.samples, summary)}")
    path = report.write_json(
        name,
        {
            "scenarios": ["soak"],
            "machine": report.machine(pinning.note, versions),
            "options": asdict(options),
            "target": args.target,
            "samples": soak.samples,
            "summary": summary,
            "failed": failed,
            "notes": notes,
        },
    )
    notes.append(f"results: {path}")
    if soak.samples:
        print(markdown(options, soak.samples, summary, notes))
    else:
        print("\n".join(f"- {note}" for note in notes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(load_main())
