"""``stats`` (JSON, a refreshing view) and ``check`` against real and fake brokers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from support import running

from .shell import cli

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def test_stats_json_is_the_stats_object() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        shown = await cli(server, "stats", "--json")
        assert shown.returncode == 0, shown.stderr
        [line] = shown.stdout.splitlines()
        stats = json.loads(line)
        assert stats["total_topics"] == 1
        assert set(stats["topics"]) == {"t"}


async def test_stats_watch_prints_a_line_per_refresh() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        watched = await cli(server, "stats", "--watch", "--count", "3", "--interval", "0.01")
        assert watched.returncode == 0, watched.stderr
        header, *rows = watched.stdout.decode().splitlines()
        assert header.split() == [
            "TIME",
            "CONNECTIONS",
            "TOPICS",
            "SUBSCRIBERS",
            "MESSAGES",
            "MSG/S",
            "DELIVERED/S",
            "DROPPED/S",
            "RSS_MB",
        ]
        assert len(rows) == 3
        # No rates before there are two samples; the figures line up with the header.
        assert rows[0].split()[5:8] == ["-", "-", "-"]
        for row in rows:
            assert row.split()[2] == "1"
            assert len(row) == len(header)
        as_json = await cli(
            server, "stats", "--watch", "--json", "--count", "2", "--interval", "0.01"
        )
        assert as_json.returncode == 0, as_json.stderr
        assert [json.loads(line)["total_topics"] for line in as_json.stdout.splitlines()] == [1, 1]


async def test_stats_options_are_checked() -> None:
    async with running() as server:
        for args, says in (
            (["--count", "2"], b"--count needs --watch"),
            (["--watch", "--count", "0"], b"--count must be at least 1"),
            (["--watch", "--interval", "0"], b"--interval must be more than 0 seconds"),
        ):
            refused = await cli(server, "stats", *args)
            assert refused.returncode == 2, args
            assert refused.stderr == b"trio-pubsub: " + says + b"\n"


async def test_check_a_running_then_a_stopped_broker() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        port = server.port
        healthy = await cli(server, "check")
        assert healthy.returncode == 0, healthy.stderr
        assert healthy.stdout.decode().startswith(
            f"ok: http://127.0.0.1:{port} (memory engine, 1 topics, 0 subscribers, up "
        )
        assert len(healthy.stdout.splitlines()) == 1
    stopped = await cli(None, "check", url=f"http://127.0.0.1:{port}")
    assert stopped.returncode == 1
    assert stopped.stdout.decode().startswith(f"unreachable: cannot reach http://127.0.0.1:{port}")
    assert len(stopped.stdout.splitlines()) == 1
    assert stopped.stderr == b""


async def _fake_broker(handler: Handler, task_status: trio.TaskStatus[int]) -> None:
    """A TCP server on a free port that answers every connection with ``handler``."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


async def test_check_a_draining_broker_exits_1() -> None:
    body = b'{"status":"draining","uptime_sec":1,"topics":0,"subscribers":0,' + (
        b'"engine":{"kind":"memory","status":"ok"}}'
    )

    async def draining(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )

    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_broker, draining)
        checked = await cli(None, "check", url=f"http://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()
    assert checked.returncode == 1
    assert checked.stdout == (
        f"draining: http://127.0.0.1:{port} answered HTTP 503 (shutting down)\n".encode()
    )


async def test_check_a_broker_that_does_not_answer_exits_1() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_broker, silent)
        checked = await cli(None, "check", "--timeout", "0.2", url=f"http://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()
    assert checked.returncode == 1
    assert checked.stdout == (
        f"unreachable: http://127.0.0.1:{port} did not answer within 0.2 s\n".encode()
    )
