"""The accept loop: real listeners, real client sockets."""

from __future__ import annotations

import logging
import os
import resource
import socket
from functools import partial

import pytest
import trio
import trio.testing

from pubsub._server.listen import ACCEPT_BATCH, serve_listeners


async def listener() -> tuple[trio.SocketListener, int]:
    [listening] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return listening, listening.socket.getsockname()[1]


def connect_all(port: int, count: int) -> list[socket.socket]:
    """``count`` connections the kernel has completed, waiting in the backlog."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


async def test_every_waiting_connection_is_handed_over_and_the_listener_closed() -> None:
    listening, port = await listener()
    clients = connect_all(port, 3 * ACCEPT_BATCH + 5)  # more than one wake-up's batch
    served: list[bytes] = []
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        with stream.socket:
            served.append(await stream.receive_some(16))
        if len(served) == len(clients):
            done.set()

    try:
        for index, client in enumerate(clients):
            client.sendall(b"%d" % index)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_listeners, handler, [listening], handler_nursery=nursery)
            )
            await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
    assert sorted(served) == sorted(b"%d" % index for index in range(len(clients)))
    assert listening.socket.fileno() == -1  # closed on exit


async def test_out_of_file_descriptors_is_logged_and_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE from accept: log once, pause and retry, go on once handlers have
    closed sockets, log the count once; no connection is lost."""
    listening, port = await listener()
    clients = connect_all(port, 6)
    served = 0
    done = trio.Event()
    release = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal served
        with stream.socket:
            served += 1
            if served == len(clients):
                done.set()
            await release.wait()  # hold the descriptor until accept has run out

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    try:
        with caplog.at_level(logging.WARNING, logger="pubsub.server"):
            async with trio.open_nursery() as nursery:
                # Room for a dup of the listener and two accepted connections.
                resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 3, hard))
                await nursery.start(
                    partial(serve_listeners, handler, [listening], handler_nursery=nursery)
                )
                await trio.testing.wait_all_tasks_blocked()
                assert served < len(clients)
                await trio.sleep(2)  # (virtual time) 20 retries, all failing
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                release.set()
                await done.wait()
                nursery.cancel_scope.cancel()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for client in clients:
            client.close()
    assert served == len(clients)
    # Once when the run of failures begins, once with its count when it ends
    # (it was a line every 100 ms).
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == "accept_failed"]
    assert "EMFILE" in failed.getMessage() and failed.exc_info is None
    [resumed] = [r for r in caplog.records if getattr(r, "event", None) == "accept_resumed"]
    assert resumed.failures >= 20  # type: ignore[attr-defined]
    assert len(caplog.records) == 2
