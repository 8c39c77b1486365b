"""The commands behave in a shell: Ctrl-C, a reader that goes away, a topic that
goes away, each a one-line message (or none) and a documented exit code."""

from __future__ import annotations

import json
import os
import signal

import trio
from support import base_url, running

from pubsub import Settings, open_server

from .shell import SCRIPT, Output, cli, publish_until_printed, read_all, start


async def test_ctrl_c_ends_sub_with_130_and_no_traceback() -> None:
    async with running() as server:
        await server.node.create_topic("orders")
        process = await start(server, "sub", "orders")
        output = Output(process)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.collect)
            await publish_until_printed(server, "orders", output)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                assert await process.wait() == 130
        assert await read_all(process.stderr) == b""


async def test_ctrl_c_ends_pub_waiting_for_stdin_with_130() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        stdin_read, stdin_write = os.pipe()
        try:
            process = await start(server, "pub", "t", "--verbose", stdin=stdin_read)
        finally:
            os.close(stdin_read)
        output = Output(process)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(output.collect)
                os.write(stdin_write, b"1\n")
                # Acknowledged: the command waits for the next line now.
                await output.wait_for(lambda lines: len(lines) == 1)
                process.send_signal(signal.SIGINT)
                with trio.fail_after(30):
                    assert await process.wait() == 130
        finally:
            os.close(stdin_write)
        assert output.lines[0].startswith("ack topic=t offset=1 ")
        assert await read_all(process.stderr) == b""


async def test_sub_ends_quietly_when_its_reader_goes_away() -> None:
    """``sub --json | head -1``: no BrokenPipeError traceback, exit 0, and no
    need for another event to notice."""
    async with running() as server:
        await server.node.create_topic("orders")
        process = await start(server, "sub", "orders", "--json")
        output = Output(process)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.collect)
            await publish_until_printed(server, "orders", output)
            nursery.cancel_scope.cancel()
        assert json.loads(output.lines[0])["topic"] == "orders"
        assert process.stdout is not None
        await process.stdout.aclose()  # what head does after one line
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert await read_all(process.stderr) == b""


async def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """A command still writing when its reader leaves (history of ~1 MB, more
    than a pipe holds) stops at the failed write, quietly, with 0."""
    async with running(max_messages_per_topic=1000) as server:
        await server.node.create_topic("t")
        lines = b"".join(b'"%s"\n' % (b"x" * 1000) for _ in range(1000))
        published = await cli(server, "pub", "t", stdin=lines)
        assert published.returncode == 0, published.stderr
        process = await start(server, "history", "t", "--limit", "1000", "--json")
        assert process.stdout is not None
        with trio.fail_after(30):
            first = await process.stdout.receive_some(100)
        assert first.startswith(b'{"topic":"t"')
        await process.stdout.aclose()
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert await read_all(process.stderr) == b""


async def test_sub_says_when_its_topic_is_deleted() -> None:
    async with running() as server:
        await server.node.create_topic("orders")
        process = await start(server, "sub", "orders")
        output = Output(process)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.collect)
            await publish_until_printed(server, "orders", output)
            await server.node.delete_topic("orders")
            with trio.fail_after(30):
                assert await process.wait() == 1
        assert (await read_all(process.stderr)).decode() == (
            "trio-pubsub: topic 'orders' no longer exists (deleted, or the broker restarted "
            "without it); re-create it or run the broker with AUTO_CREATE_TOPICS=true\n"
        )


async def test_sub_says_when_the_broker_restarted_without_its_topic() -> None:
    async with running() as server:
        port = server.port
        await server.node.create_topic("orders")
        process = await start(server, "sub", "orders")
        output = Output(process)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.collect)
            await publish_until_printed(server, "orders", output)
            nursery.cancel_scope.cancel()
    # The memory engine's topics are gone with it; the client reconnects and
    # subscribes again.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(output.collect)
        async with open_server(Settings(port=port)):
            with trio.fail_after(60):
                assert await process.wait() == 1
    errors = (await read_all(process.stderr)).decode()
    assert errors.endswith(
        "trio-pubsub: topic 'orders' no longer exists (deleted, or the broker "
        "restarted without it); re-create it or run the broker with AUTO_CREATE_TOPICS=true\n"
    )
    assert "Traceback" not in errors
    # What the client said meanwhile (reconnect attempts) reads like the command's own.
    assert all(line.startswith("trio-pubsub: ") for line in errors.splitlines())


async def test_output_into_a_pipe_nobody_reads_ends_quietly() -> None:
    async with running() as server:
        for args in (["config", "init"], ["stats", "--json", "--url", base_url(server)]):
            read_end, write_end = os.pipe()
            os.close(read_end)  # a reader that left before the first write
            try:
                with trio.fail_after(60):
                    done = await trio.run_process(
                        [SCRIPT, *args], stdout=write_end, capture_stderr=True, check=False
                    )
            finally:
                os.close(write_end)
            assert (done.returncode, done.stderr) == (0, b""), args
