"""End to end over WebSockets: the ``trio-pubsub serve`` process under load from other processes.

The server runs as its console script pinned to core 0 (``taskset -c 0``); the load
processes (:mod:`bench.loadgen`: plain Python on non-blocking sockets and epoll, many
connections per process) run pinned to core 1, as does this orchestrator. Server CPU is
``utime + stime`` of the server process from ``/proc/PID/stat`` (all its threads), as
a delta over the measured window, which runs from the ``go`` sent to the load
processes until the last of them reports that it is done.

Scenarios (``--only fanout,throughput,latency,idle``):

``fanout``
    1 topic, S subscribers (1, 10, 100, 1000), one publisher flooding N messages
    (pre-built frames, many per write, at most ``--window`` unacknowledged). Reports
    server CPU microseconds per delivered message, deliveries/s, publishes/s and the
    loss check: every subscriber must count exactly N events and its last offset must
    be N; loss, duplicates, order errors, closed connections and the server's own
    ``dropped`` counter (``GET /stats``) are reported, never hidden. When
    ``redis-server`` is on PATH the same shape runs against it (pinned to core 0,
    same kind of clients, RESP ``SUBSCRIBE``/``PUBLISH``) as a reference.
``throughput``
    1 subscriber, publisher flooding: messages/s end to end, from the first publish
    written to the last event received (``time.monotonic_ns``, CLOCK_MONOTONIC, which
    is system-wide on Linux, so the publisher's and subscriber's stamps compare).
``latency``
    A fixed 2,000 deliveries/s to 10 and 100 subscribers (200 and 20 msg/s). Publisher
    and subscribers share one load process and so one clock; each payload carries its
    send time (``time.perf_counter_ns``). Reports p50/p90/p99/p99.9/max.
``idle``
    1000 connections that only completed the handshake: (server RSS after - before) /
    1000 from ``/proc/PID/status`` VmRSS.

A run where the load core was near saturation (its load processes used >= 90 % of a
core over the window) is flagged ``load-bound``: there the load, not the server, may
have set the pace. Every process started here is stopped by its PID on the way out,
errors and Ctrl-C included; everything binds and connects to 127.0.0.1 only.

``python -m bench.bench_ws [--quick] [--only fanout,latency] [--sizes 1,10,100,1000] ...``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TypedDict, cast

from bench import bench_core
from bench.loadgen import (
    HOST,
    IdleConfig,
    IdleResult,
    LatencyConfig,
    LatencyResult,
    Proto,
    PublisherConfig,
    PublisherResult,
    SubscriberConfig,
    SubscriberResult,
)

LOADGEN: Final = Path(__file__).resolve().with_name("loadgen.py")
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
SCENARIOS: Final = ("fanout", "throughput", "latency", "idle")
SIZES: Final = (1, 10, 100, 1000)
#: N per subscriber count S: S*N aims at this, N clamped to [MIN_MESSAGES, MAX_MESSAGES].
TARGET_DELIVERIES: Final = 10_000_000
MIN_MESSAGES: Final = 2_000
MAX_MESSAGES: Final = 200_000
THROUGHPUT_MESSAGES: Final = 200_000
LATENCY_SIZES: Final = (10, 100)
#: Deliveries per second in the latency scenario (messages/s = this / subscribers).
LATENCY_DELIVERIES_PER_S: Final = 2_000
LATENCY_SECONDS: Final = 20.0
IDLE_CONNECTIONS: Final = 1_000
#: Wall-clock cap of one publisher (it stops publishing there; the run still ends cleanly).
MAX_SECONDS: Final = 30.0
#: Runs per fan-out size (and of the throughput run); the median is reported.
REPEATS: Final = 3
PAYLOAD_BYTES: Final = 64
BATCH: Final = 64
WINDOW: Final = 4096
#: Outboxes never overflow: the benchmark measures delivery, not the drop policy.
MAX_QUEUE_SIZE: Final = 100_000_000
#: Heartbeats and idle timeouts out of the way (an hour).
QUIET_MS: Final = 3_600_000
#: A load core busier than this over the window flags the run as load-bound.
LOAD_BOUND: Final = 0.9
#: ``--awake``: a busy loop at SCHED_IDLE priority (runs only when the core has nothing
#: else to do), so the core never idles and no wake-up pays for leaving an idle state.
SPIN: Final = (
    "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass"
)
#: Settle time before reading RSS in the idle scenario.
IDLE_SETTLE_SECONDS: Final = 1.0

TARGETS: Final = {
    "us_per_delivery_1000": 1.0,
    "throughput_msg_s": 50_000.0,
    "p99_ms_10": 1.0,
    "p99_ms_100": 5.0,
    "idle_kb": 16.0,
}


class BenchError(Exception):
    """A run could not be completed (a process failed, a step timed out)."""


# ------------------------------------------------------------------ rows


class LoadProcess(TypedDict):
    name: str
    cpu_s: float
    wall_s: float
    #: cpu_s / wall_s: 1.0 is a whole core.
    busy: float


class FanoutRow(TypedDict):
    proto: str
    subscribers: int
    #: N asked for.
    messages: int
    published: int
    acked: int
    #: Events counted by the subscribers.
    deliveries: int
    expected_deliveries: int
    lost: int
    duplicated: int
    order_errors: int
    final_offset_errors: int
    closed_connections: int
    publisher_errors: int
    publisher_error_sample: str
    #: Offset of the last publish ack (ws, should be ``acked``) or the receiver count
    #: of the last PUBLISH reply (redis, should be ``subscribers``).
    publisher_last_value: int
    #: Server counters over the window (ws only, from GET /stats; None for redis).
    server_delivered: int | None
    server_dropped: int | None
    capped: bool
    timed_out: bool
    exact: bool
    server_cpu_s: float
    server_user_s: float
    server_system_s: float
    #: The same window's CPU from schedstat (ns resolution; a cross-check for short runs).
    server_schedstat_s: float
    window_s: float
    server_us_per_delivery: float
    server_schedstat_us_per_delivery: float
    #: Server CPU / window wall time (1.0 is the whole server core).
    server_busy: float
    #: Deliveries / (last event received - first publish written).
    deliveries_per_s: float
    #: Acks / (last ack - first publish written).
    publishes_per_s: float
    delivery_s: float
    load_cpu_s: float
    load_busy: float
    load_processes: list[LoadProcess]
    load_bound: bool
    recv_calls: int
    events_per_recv: float
    #: server_us_per_delivery of every repeat, in run order (the row is the median one).
    server_us_runs: list[float]


class LatencyRow(TypedDict):
    subscribers: int
    messages_per_s: float
    deliveries_per_s: float
    seconds: float
    result: LatencyResult
    server_cpu_s: float
    server_system_s: float
    server_us_per_delivery: float
    window_s: float
    load_busy: float
    load_bound: bool
    #: Both cores were kept awake by SCHED_IDLE spinners (``--awake``).
    awake: bool
    exact: bool


class IdleRow(TypedDict):
    connections: int
    opened: int
    server_clients: int | None
    rss_before_kb: int
    rss_after_kb: int
    kb_per_connection: float
    exact: bool


# ------------------------------------------------------------------ processes


class Processes:
    """Every process the benchmark starts; each is stopped by its own PID."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] | None = None,
    ) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(list(args), stdin=stdin, stdout=stdout, stderr=stderr)
        self._running.append(popen)
        return popen

    def stop(self, popen: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
        """SIGTERM the process by its PID, wait, SIGKILL it if it does not go."""
        try:
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if popen in self._running:
            self._running.remove(popen)
        return popen.returncode

    def stop_all(self) -> None:
        for popen in reversed(list(self._running)):
            self.stop(popen)


@dataclass(frozen=True)
class Pinning:
    """Which cores the server and the load run on (``taskset``), if pinning is possible."""

    taskset: str | None
    server_core: int
    load_core: int

    def prefix(self, core: int) -> list[str]:
        return [self.taskset, "-c", str(core)] if self.taskset else []

    @property
    def pinned(self) -> bool:
        return self.taskset is not None


def make_pinning(server_core: int, load_core: int) -> tuple[Pinning, str]:
    """Pin when ``taskset`` exists and both cores are usable; else say why not."""
    taskset = shutil.which("taskset")
    usable = os.sched_getaffinity(0)
    if taskset is None:
        return Pinning(None, server_core, load_core), "NOT PINNED: taskset not found"
    if server_core == load_core or not {server_core, load_core} <= usable:
        note = f"NOT PINNED: cores {server_core} and {load_core} not both usable ({usable})"
        return Pinning(None, server_core, load_core), note
    return (
        Pinning(taskset, server_core, load_core),
        f"server on core {server_core}, load on core {load_core} (taskset)",
    )


@dataclass(frozen=True)
class Cpu:
    """CPU time of a process: user and system seconds (clock ticks, usually 10 ms) and
    the run time its threads' schedstat reports (nanoseconds; -1 if unavailable)."""

    user: float
    system: float
    sched_ns: int

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, start: Cpu) -> Cpu:
        sched = self.sched_ns - start.sched_ns if min(self.sched_ns, start.sched_ns) >= 0 else -1
        return Cpu(self.user - start.user, self.system - start.system, sched)


class Service:
    """A server process whose CPU time and memory are read from /proc."""

    name = "service"

    def __init__(self, procs: Processes, pinning: Pinning) -> None:
        self.procs = procs
        self.pinning = pinning
        self.popen: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    def cpu(self) -> Cpu:
        """CPU time used so far: utime and stime of the process (all its threads) from
        ``/proc/PID/stat``, and the nanosecond run time of its threads from schedstat."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # After "pid (comm)": field 3 (state) is fields[0]; utime is 14, stime 15.
        ticks = os.sysconf("SC_CLK_TCK")
        sched_ns = 0
        try:
            for task in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{task}/schedstat", encoding="ascii") as stat:
                    sched_ns += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            sched_ns = -1
        return Cpu(int(fields[11]) / ticks, int(fields[12]) / ticks, sched_ns)

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all threads), in seconds."""
        return self.cpu().total

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BenchError("no VmRSS in /proc/PID/status")

    def check_alive(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            code = None if self.popen is None else self.popen.returncode
            raise BenchError(f"{self.name} is not running (exit status {code})")

    def stop(self) -> None:
        if self.popen is not None:
            self.procs.stop(self.popen)
            self.popen = None


class PubSubServer(Service):
    """``trio-pubsub serve --port 0`` with outboxes that never overflow and no heartbeats."""

    name = "trio-pubsub"

    def __init__(self, procs: Processes, pinning: Pinning, max_connections: int = 10_000) -> None:
        super().__init__(procs, pinning)
        self.max_connections = max_connections
        self.log_path: Path | None = None

    @staticmethod
    def script() -> str:
        beside = Path(sys.executable).with_name("trio-pubsub")
        if beside.exists():
            return str(beside)
        found = shutil.which("trio-pubsub")
        if found is None:
            raise BenchError("the trio-pubsub console script is not installed")
        return found

    def start(self, timeout: float = 60.0) -> None:
        fd, name = tempfile.mkstemp(prefix="bench-ws-server-", suffix=".log")
        self.log_path = Path(name)
        args = [
            *self.pinning.prefix(self.pinning.server_core),
            self.script(),
            "serve",
            "--port",
            "0",
            "--host",
            HOST,
            "--max-queue-size",
            str(MAX_QUEUE_SIZE),
            "--heartbeat-interval",
            str(QUIET_MS),
            "--connection-timeout",
            str(QUIET_MS),
            "--shutdown-timeout",
            "2000",
            "--max-connections",
            str(self.max_connections),
            # info: the only way to learn the port; nothing is logged per connection.
            "--log-level",
            "info",
        ]
        try:
            self.popen = self.procs.start(args, stderr=fd)
        finally:
            os.close(fd)
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
        while True:
            match = pattern.search(self.log())
            if match:
                self.port = int(match.group(1))
                return
            if self.popen.poll() is not None:
                raise BenchError(f"trio-pubsub exited with {self.popen.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"trio-pubsub did not start within {timeout:g} s: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        super().stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {} if body is None else {"content-type": "application/json"}
            connection.request(method, path, payload, headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            connection.close()

    def create_topic(self, name: str) -> None:
        status, body = self.request("POST", "/topics", {"name": name})
        if status != 201:
            raise BenchError(f"POST /topics {name!r}: {status} {body}")

    def stats(self) -> dict[str, Any]:
        status, body = self.request("GET", "/stats")
        if status != 200 or not isinstance(body, dict):
            raise BenchError(f"GET /stats: {status} {body}")
        return body

    def wait_for_clients(self, count: int, timeout: float = 15.0) -> int:
        """Wait until the server counts ``count`` WebSocket clients; return the last count."""
        deadline = time.monotonic() + timeout
        while True:
            clients = int(self.stats()["websocket"]["total_clients"])
            if clients == count or time.monotonic() > deadline:
                return clients
            time.sleep(0.05)


class RedisServer(Service):
    """``redis-server`` as a reference: no persistence, no output-buffer limit for pub/sub."""

    name = "redis-server"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    @staticmethod
    def version() -> str | None:
        binary = RedisServer.binary()
        if binary is None:
            return None
        try:
            out = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        match = re.search(r"v=(\S+)", out.stdout)
        return match.group(1) if match else out.stdout.strip() or None

    def start(self, timeout: float = 30.0) -> None:
        binary = self.binary()
        if binary is None:
            raise BenchError("redis-server is not on PATH")
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="bench-ws-redis-")
        args = [
            *self.pinning.prefix(self.pinning.server_core),
            binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--client-output-buffer-limit",
            "pubsub 0 0 0",
            "--daemonize",
            "no",
            "--dir",
            self.workdir,
            "--loglevel",
            "warning",
        ]
        self.popen = self.procs.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.popen.poll() is not None:
                raise BenchError(f"redis-server exited with {self.popen.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server did not answer PING within {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        workdir = getattr(self, "workdir", None)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Worker:
    """One load process (``loadgen.py ROLE CONFIG``) and its line protocol."""

    def __init__(
        self, procs: Processes, pinning: Pinning, name: str, role: str, config: object
    ) -> None:
        self.procs = procs
        self.name = name
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        args = [
            *pinning.prefix(pinning.load_core),
            sys.executable,
            str(LOADGEN),
            role,
            json.dumps(config),
        ]
        self.popen = procs.start(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        assert self.popen.stdout is not None
        self.stdout: IO[bytes] = self.popen.stdout
        self._buffer = b""
        self.ready = False
        self.eof = False
        self.progress: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.error: str | None = None

    def send(self, command: str) -> None:
        stdin = self.popen.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(command.encode() + b"\n")
            stdin.flush()
        except OSError:
            pass  # it already exited; pump() reports why

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.error = f"unexpected output: {line[:300]!r}"
                continue
            event = message.get("event")
            if event == "ready":
                self.ready = True
            elif event == "progress":
                self.progress = message
            elif event == "done":
                self.result = message["result"]
            elif event == "error":
                self.error = f"{message.get('error')}\n{message.get('traceback', '')}"

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-2000:].decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        stdin = self.popen.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()  # end of input: the process stops by itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(2.0)
        self.procs.stop(self.popen)
        self.stdout.close()
        self._stderr.close()


def pump(
    workers: Sequence[Worker],
    until: Callable[[], bool],
    timeout: float,
    what: str,
    tick: Callable[[], None] = lambda: None,
) -> None:
    """Read the workers' output until ``until()``; raise on a worker error or at ``timeout``."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            if not worker.eof:
                selector.register(worker.stdout, selectors.EVENT_READ, worker)
        while True:
            for worker in workers:
                if worker.error:
                    raise BenchError(f"{worker.name} failed: {worker.error}")
                if worker.eof and worker.result is None:
                    raise BenchError(
                        f"{worker.name} exited ({worker.popen.poll()}) before finishing: "
                        f"{worker.stderr_tail()}"
                    )
            if until():
                return
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
            for key, _ in selector.select(0.2):
                worker = cast(Worker, key.data)
                data = os.read(worker.stdout.fileno(), 65536)
                if data:
                    worker.feed(data)
                else:
                    worker.eof = True
                    selector.unregister(key.fileobj)
            tick()


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else every 2 s."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._shown = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if now - self._shown < (0.2 if self.tty else 2.0):
            return
        self._shown = now
        self._write(text, final=False)

    def done(self, text: str) -> None:
        self._shown = 0.0
        self._write(text, final=True)

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
            self._width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class Options:
    quick: bool
    scenarios: tuple[str, ...]
    sizes: tuple[int, ...]
    messages: int | None
    deliveries: int
    throughput_messages: int
    latency_sizes: tuple[int, ...]
    latency_deliveries_per_s: float
    latency_seconds: float
    latency_warmup: float
    idle_connections: int
    redis: bool
    sub_procs: int
    batch: int
    window: int
    payload_bytes: int
    max_seconds: float
    setup_seconds: float
    quiet_seconds: float
    repeats: int
    awake: bool


def messages_for(subscribers: int, options: Options) -> int:
    """N for S subscribers: S*N near ``deliveries``, N within [MIN, MAX] (or ``--messages``)."""
    if options.messages is not None:
        return options.messages
    low = min(MIN_MESSAGES, options.deliveries)
    return max(low, min(MAX_MESSAGES, options.deliveries // max(1, subscribers)))


# ------------------------------------------------------------------ fan-out


def split_evenly(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def load_process(name: str, result: dict[str, Any]) -> LoadProcess:
    cpu = float(result["cpu_s"])
    wall = float(result["wall_s"])
    return LoadProcess(name=name, cpu_s=cpu, wall_s=wall, busy=cpu / wall if wall > 0 else 0.0)


def run_fanout(
    service: PubSubServer | RedisServer,
    proto: Proto,
    subscribers: int,
    messages: int,
    options: Options,
    procs: Processes,
    pinning: Pinning,
    progress: Progress,
) -> FanoutRow:
    """One fan-out run: S subscribers in load processes, one flooding publisher."""
    topic = f"fanout-{subscribers}-{messages}-{time.monotonic_ns() % 1_000_000}"
    ws = isinstance(service, PubSubServer)
    if isinstance(service, PubSubServer):
        service.create_topic(topic)
    label = f"fanout {proto} S={subscribers} N={messages:,}"
    workers: list[Worker] = []
    try:
        for index, count in enumerate(split_evenly(subscribers, options.sub_procs)):
            config = SubscriberConfig(
                proto=proto,
                port=service.port,
                topic=topic,
                connections=count,
                messages=messages,
                max_seconds=options.max_seconds + 60.0,
                setup_seconds=options.setup_seconds,
                quiet_seconds=options.quiet_seconds,
            )
            workers.append(Worker(procs, pinning, f"subscribers-{index}", "subscribe", config))
        subs = list(workers)
        publisher = Worker(
            procs,
            pinning,
            "publisher",
            "publish",
            PublisherConfig(
                proto=proto,
                port=service.port,
                topic=topic,
                messages=messages,
                batch=options.batch,
                window=options.window,
                payload_bytes=options.payload_bytes,
                max_seconds=options.max_seconds,
                setup_seconds=options.setup_seconds,
                grace_seconds=10.0,
            ),
        )
        workers.append(publisher)
        progress.show(f"{label}: connecting")
        pump(
            workers,
            lambda: all(worker.ready for worker in workers),
            options.setup_seconds + 30.0,
            f"{label}: load processes to connect",
            lambda: progress.show(f"{label}: connecting"),
        )
        stats_before = service.stats() if isinstance(service, PubSubServer) else None
        service.check_alive()
        cpu_start = service.cpu()
        start = time.monotonic()
        for worker in subs:
            worker.send("go")
        publisher.send("go")
        expected = subscribers * messages

        def tick() -> None:
            elapsed = time.monotonic() - start
            cpu = service.cpu_seconds() - cpu_start.total
            published = int(publisher.progress.get("acked", 0))
            delivered = sum(int(worker.progress.get("events", 0)) for worker in subs)
            progress.show(
                f"{label}: {elapsed:5.1f} s, acked {published:,}/{messages:,}, "
                f"delivered {delivered:,}/{expected:,}, server CPU {cpu / max(elapsed, 1e-9):.0%}"
            )

        pump(
            workers,
            lambda: publisher.result is not None,
            options.max_seconds + 40.0,
            f"{label}: the publisher",
            tick,
        )
        assert publisher.result is not None
        pub = cast(PublisherResult, publisher.result)
        for worker in subs:
            worker.send(f"target {pub['acked']}")
        pump(
            subs,
            lambda: all(worker.result is not None for worker in subs),
            options.max_seconds + options.quiet_seconds + 70.0,
            f"{label}: the subscribers",
            tick,
        )
        cpu = service.cpu() - cpu_start
        window = time.monotonic() - start
        stats_after = service.stats() if isinstance(service, PubSubServer) else None
    finally:
        for worker in workers:
            worker.stop()
    results = [cast(SubscriberResult, worker.result) for worker in subs]
    return fanout_row(
        proto,
        subscribers,
        messages,
        pub,
        results,
        [load_process(w.name, cast(dict[str, Any], w.result)) for w in workers],
        cpu,
        window,
        stats_before,
        stats_after,
        ws,
    )


def fanout_row(
    proto: str,
    subscribers: int,
    messages: int,
    pub: PublisherResult,
    subs: Sequence[SubscriberResult],
    loads: list[LoadProcess],
    usage: Cpu,
    window: float,
    stats_before: dict[str, Any] | None,
    stats_after: dict[str, Any] | None,
    ws: bool,
) -> FanoutRow:
    deliveries = sum(result["events"] for result in subs)
    cpu = usage.total
    sched_s = usage.sched_ns / 1e9 if usage.sched_ns >= 0 else -1.0
    target = pub["acked"]
    expected = subscribers * target
    server_delivered = server_dropped = None
    if stats_before is not None and stats_after is not None:
        before, after = stats_before["delivery"], stats_after["delivery"]
        server_delivered = int(after["delivered"]) - int(before["delivered"])
        server_dropped = int(after["dropped"]) - int(before["dropped"])
    first = pub["first_ns"]
    last_event = max((result["last_ns"] for result in subs), default=0)
    delivery_s = (last_event - first) / 1e9 if last_event > first else 0.0
    publish_s = (pub["last_ns"] - first) / 1e9 if pub["last_ns"] > first else 0.0
    load_cpu = sum(load["cpu_s"] for load in loads)
    load_busy = load_cpu / window if window > 0 else 0.0
    recv_calls = sum(result["recv_calls"] for result in subs)
    expected_last = pub["acked"] if ws else subscribers
    lost = sum(result["lost"] for result in subs)
    duplicated = sum(result["duplicated"] for result in subs)
    order_errors = sum(result["order_errors"] for result in subs)
    final_errors = sum(result["final_errors"] for result in subs)
    closed = sum(result["closed"] for result in subs)
    timed_out = pub["timed_out"] or any(result["timed_out"] for result in subs)
    exact = (
        deliveries == expected
        and lost == duplicated == order_errors == final_errors == closed == 0
        and pub["errors"] == 0
        and pub["acked"] == pub["published"]
        and pub["last_value"] == expected_last
        and not server_dropped
        and not timed_out
    )
    return FanoutRow(
        proto=proto,
        subscribers=subscribers,
        messages=messages,
        published=pub["published"],
        acked=pub["acked"],
        deliveries=deliveries,
        expected_deliveries=expected,
        lost=lost,
        duplicated=duplicated,
        order_errors=order_errors,
        final_offset_errors=final_errors,
        closed_connections=closed,
        publisher_errors=pub["errors"],
        publisher_error_sample=pub["error_sample"],
        publisher_last_value=pub["last_value"],
        server_delivered=server_delivered,
        server_dropped=server_dropped,
        capped=pub["capped"],
        timed_out=timed_out,
        exact=exact,
        server_cpu_s=cpu,
        server_user_s=usage.user,
        server_system_s=usage.system,
        server_schedstat_s=sched_s,
        window_s=window,
        server_us_per_delivery=cpu * 1e6 / deliveries if deliveries else 0.0,
        server_schedstat_us_per_delivery=sched_s * 1e6 / deliveries if deliveries else 0.0,
        server_busy=cpu / window if window > 0 else 0.0,
        deliveries_per_s=deliveries / delivery_s if delivery_s > 0 else 0.0,
        publishes_per_s=pub["acked"] / publish_s if publish_s > 0 else 0.0,
        delivery_s=delivery_s,
        load_cpu_s=load_cpu,
        load_busy=load_busy,
        load_processes=loads,
        load_bound=load_busy >= LOAD_BOUND or any(load["busy"] >= LOAD_BOUND for load in loads),
        recv_calls=recv_calls,
        events_per_recv=deliveries / recv_calls if recv_calls else 0.0,
        server_us_runs=[cpu * 1e6 / deliveries if deliveries else 0.0],
    )


def server_cost(row: FanoutRow) -> float:
    return row["server_us_per_delivery"]


def delivery_rate(row: FanoutRow) -> float:
    return row["deliveries_per_s"]


def median_row(
    runs: Sequence[FanoutRow], key: Callable[[FanoutRow], float] = server_cost
) -> FanoutRow:
    """The run with the median ``key`` (server cost by default); exact only if every run was."""
    ordered = sorted(runs, key=key)
    row = FanoutRow(**ordered[(len(ordered) - 1) // 2])
    row["exact"] = all(run["exact"] for run in runs)
    row["load_bound"] = any(run["load_bound"] for run in runs)
    row["server_us_runs"] = [run["server_us_per_delivery"] for run in runs]
    return row


def measure_fanout(
    service: PubSubServer | RedisServer,
    proto: Proto,
    subscribers: int,
    messages: int,
    options: Options,
    procs: Processes,
    pinning: Pinning,
    progress: Progress,
    key: Callable[[FanoutRow], float] = server_cost,
) -> FanoutRow:
    """``options.repeats`` runs of :func:`run_fanout`; the one with the median ``key``."""
    runs = []
    for _ in range(options.repeats):
        runs.append(
            run_fanout(service, proto, subscribers, messages, options, procs, pinning, progress)
        )
        if isinstance(service, PubSubServer):
            service.wait_for_clients(0)
    return median_row(runs, key)


def warm_up(
    service: PubSubServer | RedisServer,
    proto: Proto,
    options: Options,
    procs: Processes,
    pinning: Pinning,
    progress: Progress,
) -> None:
    """A short untimed fan-out on a fresh server, so no measured run is its first."""
    messages = 300 if options.quick else 5_000
    run_fanout(service, proto, 10, messages, options, procs, pinning, progress)
    if isinstance(service, PubSubServer):
        service.wait_for_clients(0)


def describe_fanout(row: FanoutRow) -> str:
    status = "exact" if row["exact"] else "MISMATCH"
    notes = []
    if row["capped"]:
        notes.append("publisher stopped at the time cap")
    if row["timed_out"]:
        notes.append("TIMED OUT")
    if row["load_bound"]:
        notes.append("LOAD-BOUND: the load core was near 100%")
    if row["publisher_error_sample"]:
        notes.append(f"first error: {row['publisher_error_sample'][:120]!r}")
    loads = ", ".join(f"{load['name']} {load['busy']:.0%}" for load in row["load_processes"])
    dropped = "n/a" if row["server_dropped"] is None else f"{row['server_dropped']:,}"
    return (
        f"- {row['proto']} S={row['subscribers']}: {status}: {row['deliveries']:,}/"
        f"{row['expected_deliveries']:,} events, {row['acked']:,}/{row['published']:,} acked, "
        f"lost {row['lost']}, duplicated {row['duplicated']}, order errors "
        f"{row['order_errors']}, final-offset errors {row['final_offset_errors']}, closed "
        f"{row['closed_connections']}, publisher errors {row['publisher_errors']}, server "
        f"dropped {dropped}; server CPU {row['server_cpu_s']:.2f} s (user "
        f"{row['server_user_s']:.2f}, system {row['server_system_s']:.2f}; schedstat "
        f"{row['server_schedstat_us_per_delivery']:.3f} us/delivery) over {row['window_s']:.2f} s "
        f"({row['server_busy']:.0%}); load {loads}; {row['events_per_recv']:.0f} events/recv"
        + (f" ({'; '.join(notes)})" if notes else "")
    )


# ------------------------------------------------------------------ latency and idle


def run_latency(
    server: PubSubServer,
    subscribers: int,
    options: Options,
    procs: Processes,
    pinning: Pinning,
    progress: Progress,
) -> LatencyRow:
    rate = options.latency_deliveries_per_s / subscribers
    topic = f"latency-{subscribers}-{time.monotonic_ns() % 1_000_000}"
    server.create_topic(topic)
    label = f"latency S={subscribers} at {rate:g} msg/s"
    config = LatencyConfig(
        port=server.port,
        topic=topic,
        subscribers=subscribers,
        rate=rate,
        seconds=options.latency_seconds,
        warmup_seconds=options.latency_warmup,
        max_seconds=options.latency_seconds + 30.0,
        setup_seconds=options.setup_seconds,
    )
    worker = Worker(procs, pinning, "latency", "latency", config)
    spinners = []
    try:
        pump([worker], lambda: worker.ready, options.setup_seconds + 30.0, f"{label}: connect")
        if options.awake:
            spinners = [
                procs.start([*pinning.prefix(core), sys.executable, "-c", SPIN])
                for core in (pinning.server_core, pinning.load_core)
            ]
        cpu_start = server.cpu()
        start = time.monotonic()
        worker.send("go")

        def tick() -> None:
            sent = int(worker.progress.get("sent", 0))
            progress.show(
                f"{label}: {time.monotonic() - start:5.1f}/{options.latency_seconds:g} s, "
                f"sent {sent:,}"
            )

        pump(
            [worker],
            lambda: worker.result is not None,
            options.latency_seconds + 60.0,
            label,
            tick,
        )
        usage = server.cpu() - cpu_start
        window = time.monotonic() - start
    finally:
        for spinner in spinners:
            procs.stop(spinner)
        worker.stop()
    result = cast(LatencyResult, worker.result)
    received = result["received"]
    load_busy = result["cpu_s"] / result["wall_s"] if result["wall_s"] > 0 else 0.0
    return LatencyRow(
        subscribers=subscribers,
        messages_per_s=rate,
        deliveries_per_s=options.latency_deliveries_per_s,
        seconds=options.latency_seconds,
        result=result,
        server_cpu_s=usage.total,
        server_system_s=usage.system,
        server_us_per_delivery=usage.total * 1e6 / received if received else 0.0,
        window_s=window,
        load_busy=load_busy,
        load_bound=load_busy >= LOAD_BOUND,
        awake=options.awake,
        exact=(
            result["received"] == result["expected_deliveries"]
            and result["lost"] == result["duplicated"] == result["order_errors"] == 0
            and result["acks"] == result["sent"]
            and not result["timed_out"]
        ),
    )


def run_idle(options: Options, procs: Processes, pinning: Pinning, progress: Progress) -> IdleRow:
    count = options.idle_connections
    server = PubSubServer(procs, pinning, max_connections=count + 100)
    server.start()
    try:
        time.sleep(0.5)
        before = server.rss_kb()
        label = f"idle {count:,} connections"
        config = IdleConfig(
            port=server.port,
            connections=count,
            max_seconds=options.setup_seconds + 60.0,
            setup_seconds=options.setup_seconds,
        )
        worker = Worker(procs, pinning, "idle", "idle", config)
        try:
            progress.show(f"{label}: connecting")
            pump([worker], lambda: worker.ready, options.setup_seconds + 30.0, label)
            time.sleep(IDLE_SETTLE_SECONDS)
            clients = server.wait_for_clients(count, timeout=5.0)
            after = server.rss_kb()
            worker.send("stop")
            pump([worker], lambda: worker.result is not None, 30.0, f"{label}: close")
        finally:
            worker.stop()
        result = cast(IdleResult, worker.result)
    finally:
        server.stop()
    return IdleRow(
        connections=count,
        opened=result["connections"],
        server_clients=clients,
        rss_before_kb=before,
        rss_after_kb=after,
        kb_per_connection=(after - before) / count,
        exact=result["connections"] == count == clients,
    )


# ------------------------------------------------------------------ scenarios


class Report(TypedDict):
    fanout: list[FanoutRow]
    redis: list[FanoutRow]
    redis_note: str
    throughput: list[FanoutRow]
    latency: list[LatencyRow]
    idle: list[IdleRow]
    errors: list[str]


def run_all(options: Options, procs: Processes, pinning: Pinning, progress: Progress) -> Report:
    report = Report(
        fanout=[], redis=[], redis_note="", throughput=[], latency=[], idle=[], errors=[]
    )

    def attempt(name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except BenchError as exc:
            progress.done(f"{name}: FAILED: {exc}")
            report["errors"].append(f"{name}: {exc}")

    def with_server(max_connections: int, body: Callable[[PubSubServer], None]) -> None:
        server = PubSubServer(procs, pinning, max_connections=max_connections)
        server.start()
        try:
            body(server)
        finally:
            server.stop()

    if "fanout" in options.scenarios:

        def fanout(server: PubSubServer) -> None:
            warm_up(server, "ws", options, procs, pinning, progress)
            for subscribers in options.sizes:
                n = messages_for(subscribers, options)
                row = measure_fanout(
                    server, "ws", subscribers, n, options, procs, pinning, progress
                )
                report["fanout"].append(row)
                progress.done(
                    f"fanout ws S={subscribers}: {row['server_us_per_delivery']:.3f} us/delivery, "
                    f"{row['deliveries_per_s']:,.0f} deliveries/s"
                    + ("" if row["exact"] else " (MISMATCH)")
                )
                server.wait_for_clients(0)

        attempt("fanout", lambda: with_server(max(options.sizes) + 100, fanout))
        if not options.redis:
            report["redis_note"] = "redis: skipped (--no-redis)"
        elif RedisServer.binary() is None:
            report["redis_note"] = "redis: not available"
        else:
            report["redis_note"] = f"redis-server {RedisServer.version()}"

            def redis() -> None:
                service = RedisServer(procs, pinning)
                service.start()
                try:
                    warm_up(service, "redis", options, procs, pinning, progress)
                    for subscribers in options.sizes:
                        n = messages_for(subscribers, options)
                        row = measure_fanout(
                            service, "redis", subscribers, n, options, procs, pinning, progress
                        )
                        report["redis"].append(row)
                        progress.done(
                            f"fanout redis S={subscribers}: "
                            f"{row['server_us_per_delivery']:.3f} us/delivery"
                        )
                finally:
                    service.stop()

            attempt("redis", redis)

    if "throughput" in options.scenarios:

        def throughput(server: PubSubServer) -> None:
            n = options.throughput_messages
            warm_up(server, "ws", options, procs, pinning, progress)
            row = measure_fanout(
                server, "ws", 1, n, options, procs, pinning, progress, key=delivery_rate
            )
            report["throughput"].append(row)
            progress.done(f"throughput: {row['deliveries_per_s']:,.0f} msg/s end to end")

        attempt("throughput", lambda: with_server(100, throughput))

    if "latency" in options.scenarios:

        def latency(server: PubSubServer) -> None:
            for subscribers in options.latency_sizes:
                row = run_latency(server, subscribers, options, procs, pinning, progress)
                report["latency"].append(row)
                result = row["result"]
                progress.done(
                    f"latency S={subscribers}: p50 {result['p50_us'] / 1000:.3f} ms, "
                    f"p99 {result['p99_us'] / 1000:.3f} ms"
                )
                server.wait_for_clients(0)

        attempt("latency", lambda: with_server(max(options.latency_sizes) + 100, latency))

    if "idle" in options.scenarios:

        def idle() -> None:
            row = run_idle(options, procs, pinning, progress)
            report["idle"].append(row)
            progress.done(f"idle: {row['kb_per_connection']:.1f} KB/connection")

        attempt("idle", idle)
    return report


# ------------------------------------------------------------------ reporting


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def fanout_table(rows: Sequence[FanoutRow], redis: Sequence[FanoutRow]) -> str:
    by_size = {row["subscribers"]: row for row in redis}
    lines = [
        "| subscribers | N | deliveries | server us/delivery | redis us/delivery | ours/redis "
        "| deliveries/s | publishes/s | server CPU | load CPU | lost/dup/order | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        reference = by_size.get(row["subscribers"])
        if reference and reference["server_us_per_delivery"] > 0:
            redis_us = f"{reference['server_us_per_delivery']:.3f}"
            ratio = f"{row['server_us_per_delivery'] / reference['server_us_per_delivery']:.1f}x"
        else:
            redis_us = ratio = "-"
        loss = (
            f"{row['lost']}/{row['duplicated']}/{row['order_errors'] + row['final_offset_errors']}"
        )
        check = "exact" if row["exact"] else "MISMATCH"
        if row["load_bound"]:
            check += ", LOAD-BOUND"
        lines.append(
            f"| {row['subscribers']:,} | {row['acked']:,} | {row['deliveries']:,} "
            f"| {row['server_us_per_delivery']:.3f} | {redis_us} | {ratio} "
            f"| {row['deliveries_per_s']:,.0f} | {row['publishes_per_s']:,.0f} "
            f"| {row['server_busy']:.0%} | {row['load_busy']:.0%} | {loss} | {check} |"
        )
    return "\n".join(lines)


def redis_table(rows: Sequence[FanoutRow]) -> str:
    lines = [
        "| subscribers | N | deliveries | redis us/delivery | deliveries/s | publishes/s "
        "| redis CPU | load CPU | lost/dup/order | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        check = ("exact" if row["exact"] else "MISMATCH") + (
            ", LOAD-BOUND" if row["load_bound"] else ""
        )
        loss = (
            f"{row['lost']}/{row['duplicated']}/{row['order_errors'] + row['final_offset_errors']}"
        )
        lines.append(
            f"| {row['subscribers']:,} | {row['acked']:,} | {row['deliveries']:,} "
            f"| {row['server_us_per_delivery']:.3f} | {row['deliveries_per_s']:,.0f} "
            f"| {row['publishes_per_s']:,.0f} | {row['server_busy']:.0%} "
            f"| {row['load_busy']:.0%} | {loss} | {check} |"
        )
    return "\n".join(lines)


def throughput_table(rows: Sequence[FanoutRow]) -> str:
    lines = [
        "| subscribers | messages | msg/s end to end | publishes/s | server us/message "
        "| server CPU | load CPU | lost/dup/order | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        check = ("exact" if row["exact"] else "MISMATCH") + (
            ", LOAD-BOUND" if row["load_bound"] else ""
        )
        loss = (
            f"{row['lost']}/{row['duplicated']}/{row['order_errors'] + row['final_offset_errors']}"
        )
        lines.append(
            f"| {row['subscribers']} | {row['acked']:,} | {row['deliveries_per_s']:,.0f} "
            f"| {row['publishes_per_s']:,.0f} | {row['server_us_per_delivery']:.2f} "
            f"| {row['server_busy']:.0%} | {row['load_busy']:.0%} | {loss} | {check} |"
        )
    return "\n".join(lines)


def latency_table(rows: Sequence[LatencyRow]) -> str:
    lines = [
        "| subscribers | msg/s | deliveries/s | samples | p50 ms | p90 ms | p99 ms | p99.9 ms "
        "| max ms | ack p99 ms | server us/delivery | load CPU | lost/dup/order | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        result = row["result"]
        check = ("exact" if row["exact"] else "MISMATCH") + (
            ", LOAD-BOUND" if row["load_bound"] else ""
        )
        lines.append(
            f"| {row['subscribers']} | {row['messages_per_s']:g} | {row['deliveries_per_s']:,.0f} "
            f"| {result['samples']:,} | {_ms(result['p50_us'])} | {_ms(result['p90_us'])} "
            f"| {_ms(result['p99_us'])} | {_ms(result['p999_us'])} | {_ms(result['max_us'])} "
            f"| {_ms(result['ack_p99_us'])} | {row['server_us_per_delivery']:.1f} "
            f"| {row['load_busy']:.0%} "
            f"| {result['lost']}/{result['duplicated']}/{result['order_errors']} | {check} |"
        )
    return "\n".join(lines)


def idle_table(rows: Sequence[IdleRow]) -> str:
    lines = [
        "| connections | server RSS before | server RSS after | KB per connection | check |",
        "|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        check = "exact" if row["exact"] else f"MISMATCH (server saw {row['server_clients']})"
        lines.append(
            f"| {row['connections']:,} | {row['rss_before_kb'] / 1024:.1f} MB "
            f"| {row['rss_after_kb'] / 1024:.1f} MB | {row['kb_per_connection']:.1f} | {check} |"
        )
    return "\n".join(lines)


class Target(TypedDict):
    name: str
    goal: str
    measured: str
    met: bool | None


def targets(report: Report) -> list[Target]:
    def fanout_at(size: int) -> FanoutRow | None:
        return next((row for row in report["fanout"] if row["subscribers"] == size), None)

    def latency_at(size: int) -> LatencyRow | None:
        return next((row for row in report["latency"] if row["subscribers"] == size), None)

    found: list[Target] = []
    row = fanout_at(1000)
    value = row["server_us_per_delivery"] if row else None
    found.append(
        Target(
            name="server CPU per delivery, 1000 subscribers, busy",
            goal=f"<= {TARGETS['us_per_delivery_1000']:g} us",
            measured="not run" if value is None else f"{value:.3f} us",
            met=None if value is None else value <= TARGETS["us_per_delivery_1000"],
        )
    )
    rate = report["throughput"][0]["deliveries_per_s"] if report["throughput"] else None
    found.append(
        Target(
            name="single publisher, 1 subscriber, end to end",
            goal=f">= {TARGETS['throughput_msg_s']:,.0f} msg/s",
            measured="not run" if rate is None else f"{rate:,.0f} msg/s",
            met=None if rate is None else rate >= TARGETS["throughput_msg_s"],
        )
    )
    for size, key in ((10, "p99_ms_10"), (100, "p99_ms_100")):
        lat = latency_at(size)
        p99 = lat["result"]["p99_us"] / 1000 if lat else None
        found.append(
            Target(
                name=f"latency p99, {size} subscribers, 2,000 deliveries/s",
                goal=f"<= {TARGETS[key]:g} ms",
                measured="not run" if p99 is None else f"{p99:.3f} ms",
                met=None if p99 is None else p99 <= TARGETS[key],
            )
        )
    idle = report["idle"][0]["kb_per_connection"] if report["idle"] else None
    found.append(
        Target(
            name="idle connection memory (server RSS)",
            goal=f"<= {TARGETS['idle_kb']:g} KB",
            measured="not run" if idle is None else f"{idle:.1f} KB",
            met=None if idle is None else idle <= TARGETS["idle_kb"],
        )
    )
    return found


def targets_table(found: Sequence[Target]) -> str:
    lines = ["| target | goal | measured | met |", "|---|---:|---:|---|"]
    for target in found:
        met = "-" if target["met"] is None else ("yes" if target["met"] else "**NO**")
        lines.append(f"| {target['name']} | {target['goal']} | {target['measured']} | {met} |")
    return "\n".join(lines)


def options_awake(report: Report) -> bool:
    return any(row["awake"] for row in report["latency"])


def markdown(report: Report, env: dict[str, object], pin_note: str) -> str:
    parts = [
        "## trio-pubsub end to end (WebSocket)",
        "",
        f"{env['cpu_model']}, {env['nproc']} CPUs, Python {platform.python_version()}, "
        f"trio-pubsub {env['trio_pubsub']}; {pin_note}; {report['redis_note'] or 'redis: -'}",
    ]
    if report["fanout"]:
        parts += [
            "",
            "### Fan-out: 1 topic, S subscribers, publisher flooding",
            "",
            fanout_table(report["fanout"], report["redis"]),
        ]
    if report["redis"]:
        parts += ["", "### Same shape against redis-server", "", redis_table(report["redis"])]
    if report["throughput"]:
        parts += [
            "",
            "### Single publisher throughput",
            "",
            throughput_table(report["throughput"]),
        ]
    if report["latency"]:
        parts += [
            "",
            "### Latency: publish to receive at a fixed rate",
            "",
            latency_table(report["latency"]),
            "",
            "All subscribers of a message get it in one burst, so their delay is correlated: "
            "with 100 subscribers p99 is set by the slowest ~1% of messages. "
            + (
                "Both cores were kept awake by SCHED_IDLE spinners (--awake)."
                if options_awake(report)
                else "Cores idle between messages (see --awake)."
            ),
        ]
    if report["idle"]:
        parts += ["", "### Idle connections", "", idle_table(report["idle"])]
    parts += ["", "### Targets (DESIGN.md)", "", targets_table(targets(report))]
    runs = [*report["fanout"], *report["redis"], *report["throughput"]]
    if any(row["server_cpu_s"] < 1.0 for row in runs):
        parts += [
            "",
            f"Note: CPU comes from /proc/PID/stat in ticks of 1/{env['clk_tck']} s; runs with "
            "under 1 s of server CPU are coarse (the check lines give the schedstat figure, "
            "in ns, as a cross-check).",
        ]
    checks = [describe_fanout(row) for row in [*report["fanout"], *report["redis"]]]
    checks += [describe_fanout(row) for row in report["throughput"]]
    if checks:
        parts += ["", "Checks:", *checks]
    if report["errors"]:
        parts += ["", "Errors:", *(f"- {error}" for error in report["errors"])]
    return "\n".join(parts)


def write_json(
    report: Report, env: dict[str, object], params: dict[str, object], directory: Path
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"ws-{stamp}.json"
    document = {
        "scenario": "ws",
        "unit": "server CPU microseconds per delivery (utime+stime of the server process)",
        "timestamp": stamp,
        "environment": env,
        "params": params,
        **report,
        "targets": targets(report),
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ command line


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("values must be >= 1")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or text!r}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text}")
    return value


def parse_options(argv: Sequence[str]) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench ws",
        description="End-to-end WebSocket benchmark of the trio-pubsub server process.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few seconds in all (smoke test)"
    )
    parser.add_argument(
        "--only",
        type=_scenarios,
        help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--sizes", type=_ints, help="fan-out subscriber counts (1,10,100,1000)")
    parser.add_argument("--messages", type=_positive, help="N for every fan-out size")
    parser.add_argument(
        "--deliveries",
        type=_positive,
        default=TARGET_DELIVERIES,
        help=f"fan-out S*N aimed at when N is scaled (default {TARGET_DELIVERIES:,})",
    )
    parser.add_argument(
        "--throughput-messages",
        type=_positive,
        help=f"messages in the throughput run (default {THROUGHPUT_MESSAGES:,})",
    )
    parser.add_argument("--latency-sizes", type=_ints, help="latency subscriber counts (10,100)")
    parser.add_argument(
        "--latency-rate",
        type=_seconds,
        default=LATENCY_DELIVERIES_PER_S,
        help="latency deliveries/s, split over the subscribers "
        f"(default {LATENCY_DELIVERIES_PER_S})",
    )
    parser.add_argument(
        "--latency-seconds", type=_seconds, help=f"per latency run (default {LATENCY_SECONDS:g})"
    )
    parser.add_argument("--idle-connections", type=_positive, help=f"default {IDLE_CONNECTIONS:,}")
    parser.add_argument(
        "--repeats",
        type=_positive,
        help=f"runs per fan-out size and throughput, median kept (default {REPEATS}, quick 1)",
    )
    parser.add_argument(
        "--awake",
        action="store_true",
        help="latency runs: keep both cores busy with SCHED_IDLE spinners, to tell the cost "
        "of waking idle (virtual) CPUs apart from the server's own work",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the redis-server reference")
    parser.add_argument(
        "--sub-procs", type=_positive, default=1, help="subscriber load processes (default 1)"
    )
    parser.add_argument("--batch", type=_positive, default=BATCH, help="publish frames per write")
    parser.add_argument(
        "--window", type=_positive, default=WINDOW, help="most unacknowledged publishes"
    )
    parser.add_argument("--payload-bytes", type=_positive, default=PAYLOAD_BYTES)
    parser.add_argument(
        "--max-seconds",
        type=_seconds,
        help=f"wall-clock cap of each publisher (default {MAX_SECONDS:g})",
    )
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(list(argv))
    quick: bool = args.quick
    options = Options(
        quick=quick,
        scenarios=args.only or SCENARIOS,
        sizes=args.sizes or ((1, 10) if quick else SIZES),
        messages=args.messages or (1_000 if quick else None),
        deliveries=args.deliveries,
        throughput_messages=args.throughput_messages or (3_000 if quick else THROUGHPUT_MESSAGES),
        latency_sizes=args.latency_sizes or ((10,) if quick else LATENCY_SIZES),
        latency_deliveries_per_s=args.latency_rate,
        latency_seconds=args.latency_seconds or (1.0 if quick else LATENCY_SECONDS),
        latency_warmup=0.1 if quick else 1.0,
        idle_connections=args.idle_connections or (100 if quick else IDLE_CONNECTIONS),
        redis=not args.no_redis,
        sub_procs=args.sub_procs,
        batch=args.batch,
        window=args.window,
        payload_bytes=args.payload_bytes,
        max_seconds=args.max_seconds or (10.0 if quick else MAX_SECONDS),
        setup_seconds=60.0,
        quiet_seconds=2.0,
        repeats=args.repeats or (1 if quick else REPEATS),
        awake=args.awake,
    )
    return options, args


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench ws``: run, print the tables, write the JSON.

    Returns 0 when every count was exact, 1 when a check failed or a run errored.
    """
    options, args = parse_options(sys.argv[1:] if argv is None else argv)
    pinning, pin_note = make_pinning(args.server_core, args.load_core)
    largest = max((*options.sizes, *options.latency_sizes, options.idle_connections))
    _raise_fd_limit(2 * largest + 1024)
    print(
        f"ws end to end: scenarios {','.join(options.scenarios)}; fan-out sizes "
        f"{list(options.sizes)}; {pin_note}",
        flush=True,
    )
    procs = Processes()
    progress = Progress()
    affinity = os.sched_getaffinity(0)

    def terminated(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        if pinning.pinned:
            os.sched_setaffinity(0, {pinning.load_core})  # the orchestrator is load too
        report = run_all(options, procs, pinning, progress)
    finally:
        procs.stop_all()
        os.sched_setaffinity(0, affinity)
        signal.signal(signal.SIGTERM, previous)
    env = bench_core.environment()
    env["redis"] = RedisServer.version()
    env["pinning"] = pin_note
    env["clk_tck"] = os.sysconf("SC_CLK_TCK")
    print()
    print(markdown(report, env, pin_note))
    if not args.no_save:
        params: dict[str, object] = {
            **{key: value for key, value in vars(options).items()},
            "messages_per_size": {str(size): messages_for(size, options) for size in options.sizes},
            "min_messages": MIN_MESSAGES,
            "max_messages": MAX_MESSAGES,
            "max_queue_size": MAX_QUEUE_SIZE,
            "load_bound_threshold": LOAD_BOUND,
        }
        path = write_json(report, env, params, RESULTS_DIR)
        print(f"\nwrote {path}")
    rows_exact = all(
        row["exact"] for row in [*report["fanout"], *report["redis"], *report["throughput"]]
    )
    rows_exact = rows_exact and all(row["exact"] for row in report["latency"])
    rows_exact = rows_exact and all(row["exact"] for row in report["idle"])
    return 0 if rows_exact and not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
