"""``trio-pubsub serve --workers N``: one supervisor, N worker processes, one port.

The supervisor reserves the port (a bound, never listening socket with
``SO_REUSEPORT``, so ``--port 0`` picks one port for all), then starts each
worker as a fresh interpreter (``python -m pubsub serve``: spawned, not
forked, since valkey-glide refuses a client made before a fork). Every worker
binds the same port with ``SO_REUSEPORT`` and the kernel spreads connections
over them; everything they share goes through the engine (Redis).

Each worker reads its configuration from its stdin: the supervisor's own,
resolved once (file, environment, flags), with the reserved port and one
worker. So every worker, and every worker started again later, runs with the
same settings and declared topics even if the file changes meanwhile, and no
secret goes on a worker's command line or into its environment.

A worker that dies is started again (with a growing delay if it keeps dying at
once). SIGTERM/SIGINT is forwarded to every worker as SIGTERM (each drains
gracefully) and the supervisor exits 0 once they are gone; a second signal, or
``SHUTDOWN_TIMEOUT`` plus a margin, kills them. Workers run in their own
process group (a terminal's Ctrl-C reaches only the supervisor, which forwards
it once) and stop by themselves if the supervisor disappears.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Final

import msgspec
import trio

from .config import Config

log = logging.getLogger("pubsub.supervisor")

#: Set in a worker's environment: its number (1..N). The worker binds its port
#: with SO_REUSEPORT and watches its parent.
WORKER_ENV: Final = "TRIO_PUBSUB_WORKER"
#: Set in a worker's environment: the supervisor's PID (the worker stops when it is gone).
SUPERVISOR_ENV: Final = "TRIO_PUBSUB_SUPERVISOR"
#: Seconds before a dead worker is started again; doubled while it keeps dying
#: within ``QUICK_DEATH`` seconds, up to ``MAX_RESTART_DELAY``.
RESTART_DELAY: Final = 0.2
MAX_RESTART_DELAY: Final = 5.0
QUICK_DEATH: Final = 5.0
#: Seconds a draining worker may take beyond SHUTDOWN_TIMEOUT before it is killed.
KILL_MARGIN: Final = 5.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket holding ``port`` for the workers."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Keeps ``settings.workers`` worker processes running on one port.

    Args:
        config: The checked configuration (``workers`` > 1): each worker gets
            it on its stdin, with the reserved port and one worker.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.settings
        self.port = 0
        self.stopping = trio.Event()
        self.processes: dict[int, trio.Process] = {}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pubsub", "serve"]

    def worker_config(self) -> bytes:
        """What each worker reads from its stdin."""
        settings = self.settings.replace(port=self.port, workers=1)
        return msgspec.json.encode(msgspec.structs.replace(self.config, settings=settings))

    async def run(self) -> None:
        settings = self.settings
        with reserve_port(settings.host, settings.port) as reserved:
            self.port = reserved.getsockname()[1]
            log.info(
                "supervisor (pid %d): %d workers on http://%s:%d",
                os.getpid(),
                settings.workers,
                settings.host,
                self.port,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, nursery)
                async with trio.open_nursery() as workers:
                    for number in range(1, settings.workers + 1):
                        workers.start_soon(self._keep_running, number)
                # Every worker ended (we are stopping): no more signals to watch.
                nursery.cancel_scope.cancel()
        log.info("supervisor: every worker has stopped")

    async def _keep_running(self, number: int) -> None:
        delay = RESTART_DELAY
        env = {**os.environ, WORKER_ENV: str(number), SUPERVISOR_ENV: str(os.getpid())}
        while not self.stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self.command(), env=env, process_group=0, stdin=subprocess.PIPE
            )
            self.processes[number] = process
            log.info("worker %d started (pid %d)", number, process.pid)
            await self._hand_config(process)
            if self.stopping.is_set():
                process.send_signal(signal.SIGTERM)  # the stop came while it was spawned
            code = await process.wait()
            del self.processes[number]
            if self.stopping.is_set():
                log.info("worker %d (pid %d) stopped (exit %s)", number, process.pid, code)
                return
            quick = trio.current_time() - started < QUICK_DEATH
            delay = min(MAX_RESTART_DELAY, delay * 2) if quick else RESTART_DELAY
            log.warning(
                "worker %d (pid %d) died (exit %s): starting it again in %.1f s",
                number,
                process.pid,
                code,
                delay,
            )
            with trio.move_on_after(delay):
                await self.stopping.wait()

    async def _hand_config(self, process: trio.Process) -> None:
        assert process.stdin is not None
        try:
            await process.stdin.send_all(self.worker_config())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the worker died at once: the restart below deals with it
        finally:
            await process.stdin.aclose()

    async def _watch_signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stopping.is_set():
                    log.warning("second %s: killing the workers", name)
                    self._signal_all(signal.SIGKILL)
                    continue
                log.info("received %s: stopping %d workers", name, len(self.processes))
                self.stopping.set()
                self._signal_all(signal.SIGTERM)
                nursery.start_soon(self._kill_after, self.settings.seconds("shutdown_timeout"))

    async def _kill_after(self, grace: float) -> None:
        """Workers still draining after ``grace`` (+ a margin) are killed."""
        await trio.sleep(grace + KILL_MARGIN)
        if self.processes:
            log.warning("killing %d workers that did not stop in time", len(self.processes))
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, signum: int) -> None:
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signum)


async def watch_parent(parent: int, shutdown: Callable[[], object]) -> None:
    """In a worker: begin a graceful shutdown once the supervisor is gone."""
    try:
        fd = os.pidfd_open(parent)  # readable once the process has ended (Linux)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
    else:
        while os.getppid() == parent:  # noqa: ASYNC110 - no event for it without pidfd
            await trio.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone: shutting down", parent)
    shutdown()
