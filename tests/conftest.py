"""Helpers shared by the tests: a node on the memory engine, client frames,
draining a session's outbox, and a real redis-server for the Redis engine's tests
(skipped with a message when redis-server is missing; a failure under CI=true)."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio.testing

from pubsub import Settings
from pubsub._core.node import Node, open_node
from pubsub._core.session import Session
from pubsub._engines.memory import MemoryEngine
from pubsub._protocol.frames import AnyClientFrame, decode_client_frame


def memory_engine(settings: Settings) -> MemoryEngine:
    return MemoryEngine(
        max_topics=settings.max_topics, max_messages=settings.max_messages_per_topic
    )


@asynccontextmanager
async def open_memory_node(settings: Settings | None = None) -> AsyncIterator[Node]:
    """A node on a memory engine, as ``trio-pubsub serve`` runs one (but unframed)."""
    settings = settings or Settings()
    async with open_node(settings, memory_engine(settings)) as node:
        yield node


def client_frame(fields: dict[str, Any]) -> AnyClientFrame:
    """A client frame as the transport would hand it to the node: JSON, then decoded."""
    return decode_client_frame(msgspec.json.encode(fields))


async def drain(session: Session) -> list[dict[str, Any]]:
    """Let every task settle, then take and decode everything queued for ``session``.

    Returns ``[]`` when nothing is queued: :meth:`Session.next_batch` would block then,
    unless the session is closing (it then returns what is left, or an empty batch).
    """
    await trio.testing.wait_all_tasks_blocked()
    if not session.queued and session.is_open:
        return []
    batch = await session.next_batch()
    return [msgspec.json.decode(frame) for frame in batch]


# ---------------------------------------------------------------- a real Redis

REDIS_MISSING = (
    "needs redis-server on PATH (Debian/Ubuntu: apt-get install redis-server; "
    "macOS: brew install redis); .ci/run installs it"
)


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, started and stopped by PID.

    Args:
        directory: Where it keeps its append-only file (``persist=True``).
        persist: ``appendonly yes`` with ``appendfsync always``: a SIGKILL loses
            nothing. Without it a restart loses everything.
    """

    def __init__(self, directory: Path, *, persist: bool = False) -> None:
        self.directory = directory
        self.persist = persist
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.directory),
                "--logfile",
                "",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _wait_for_line(self.process, b"Ready to accept connections", timeout=20)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it by its PID (SIGKILL: as a crash would)."""
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_line(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> None:
    """Read the process's output until ``marker`` (or fail: exited, or ``timeout`` s)."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                process.kill()
                raise RuntimeError(f"redis-server did not start: {seen[-2000:]!r}")
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"redis-server exited: {seen[-2000:]!r}")
            seen += chunk


def _need_redis() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"redis-server is missing under CI: {REDIS_MISSING}")
        pytest.skip(REDIS_MISSING)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart with ``redis_prefix``."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill(signal.SIGTERM)


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (persisting), for outage tests."""
    _need_redis()
    server = RedisServer(tmp_path, persist=True)
    server.start()
    yield server
    server.kill(signal.SIGTERM)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"
