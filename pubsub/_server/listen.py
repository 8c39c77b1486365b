"""Accepting connections: every connection that waits, at each wake-up.

``trio.serve_listeners`` accepts one connection per scheduler round trip and
wraps each handler in a forced close (a cancel scope and a cancellation per
connection). Connection set-up is a figure we measure (handshakes per second,
server CPU per handshake), so this loop takes everything the kernel has queued
(up to :data:`ACCEPT_BATCH`) each time the listener is readable, and leaves the
close to the handler. Errors are handled as trio does: capacity errors
(out of file descriptors or memory) are retried after a pause (and logged once
per run of them, :class:`CapacityOutage`), the errors a vanished client causes
are skipped.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import trio

log = logging.getLogger("pubsub.server")

#: Connections accepted per wake-up before other tasks get a turn.
ACCEPT_BATCH: Final = 64
#: How long to wait after ``accept`` ran out of a resource (trio's choice too).
CAPACITY_PAUSE: Final = 0.1
_CAPACITY: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: A client gone between the kernel's queue and ``accept`` (Linux reports some of
#: the new socket's pending network errors here).
_SKIP: Final = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)

Handler = Callable[[trio.SocketStream], Awaitable[object]]


async def serve_listeners(
    handler: Handler,
    listeners: list[trio.SocketListener],
    *,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener until cancelled, starting ``handler(stream)`` for each
    connection in ``handler_nursery``; the handler must close its stream. The
    listeners are closed on exit."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept, listener, handler, handler_nursery)
        task_status.started()


async def _accept(
    listener: trio.SocketListener, handler: Handler, handler_nursery: trio.Nursery
) -> None:
    listening = listener.socket
    # A plain socket object on a duplicate of the listener's descriptor: its
    # non-blocking accept is one system call.
    raw = socket.socket(fileno=os.dup(listening.fileno()))
    raw.setblocking(False)
    outage = CapacityOutage()
    try:
        while True:
            await trio.lowlevel.wait_readable(listening)
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, _ = raw.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _SKIP:
                        continue
                    if exc.errno not in _CAPACITY:
                        raise
                    outage.failed(exc.errno)
                    await trio.sleep(CAPACITY_PAUSE)
                    break
                if outage.failures:
                    outage.ended()
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
                handler_nursery.start_soon(handler, stream)
    finally:
        raw.close()
        listening.close()


class CapacityOutage:
    """Logs a run of failed accepts (out of descriptors or memory) once when it
    begins and once, with the count, when accepting works again: a server at its
    descriptor limit retries ten times a second, and a line (or a traceback)
    each time would bury everything else in the log."""

    def __init__(self) -> None:
        self.failures = 0
        self._since = 0.0
        self._errno = 0

    def failed(self, errno_: int) -> None:
        if not self.failures:
            self._since = trio.current_time()
            self._errno = errno_
            log.error(
                "accept failed with %s (%s): new connections wait in the listen queue; "
                "retrying every %s s, the count follows when accepting works again",
                errno.errorcode[errno_],
                os.strerror(errno_),
                CAPACITY_PAUSE,
                extra={"event": "accept_failed", "error": errno.errorcode[errno_]},
            )
        self.failures += 1

    def ended(self) -> None:
        seconds = trio.current_time() - self._since
        log.warning(
            "accepting again after %d failed accepts in %.1f s (%s)",
            self.failures,
            seconds,
            errno.errorcode[self._errno],
            extra={
                "event": "accept_resumed",
                "failures": self.failures,
                "seconds": round(seconds, 3),
                "error": errno.errorcode[self._errno],
            },
        )
        self.failures = 0
