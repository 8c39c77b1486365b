"""The Python examples under examples/, run as a reader would run them, against a
real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from support import http, running

from pubsub import Server
from pubsub._core.session import CloseReason

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def start(name: str, server: Server, *args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / name), "--url", f"http://127.0.0.1:{server.port}", *args],
        stdout=subprocess.PIPE,
    )


class Lines:
    """A process's output, line by line."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self.stream = process.stdout
        self.seen: list[str] = []
        self._rest = b""

    async def until(self, text: str) -> list[str]:
        """Read until a line contains ``text``; every line so far."""
        with trio.fail_after(30):
            while not any(text in line for line in self.seen):
                chunk = await self.stream.receive_some(65536)
                assert chunk, f"the example ended before printing {text!r}: {self.seen}"
                *lines, self._rest = (self._rest + chunk).split(b"\n")
                self.seen += [line.decode() for line in lines]
        return self.seen


async def publish_over_rest(server: Server, topic: str, *numbers: int) -> None:
    async with http(server) as client:
        for number in numbers:
            answer = await client.post(f"/topics/{topic}/messages", json={"payload": number})
            assert answer.status_code == 201


async def test_publish_prints_each_acknowledged_offset() -> None:
    async with running(auto_create_topics=True) as server:
        result = await trio.run_process(
            [
                sys.executable,
                str(EXAMPLES / "publish.py"),
                "--url",
                f"http://127.0.0.1:{server.port}",
                "--topic",
                "orders",
                "--count",
                "3",
            ],
            capture_stdout=True,
        )
        lines = result.stdout.decode().splitlines()
        assert lines == [f"published n={n} at offset {n + 1}" for n in range(3)]


async def test_publish_to_a_missing_topic_says_how_to_create_it() -> None:
    async with running() as server:
        result = await trio.run_process(
            [
                sys.executable,
                str(EXAMPLES / "publish.py"),
                "--url",
                f"http://127.0.0.1:{server.port}",
            ],
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 1
        assert b"trio-pubsub topics create orders" in result.stderr


async def test_subscribe_replays_last_n_then_prints_live_events() -> None:
    async with running(auto_create_topics=True) as server:
        await publish_over_rest(server, "orders", 1, 2)
        process = await start("subscribe.py", server, "--last-n", "1", "--count", "2")
        lines = Lines(process)
        await lines.until("orders #2: 2")  # the replayed one
        await publish_over_rest(server, "orders", 3)
        await lines.until("orders #3: 3")
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert lines.seen[0] == "subscribed to orders"


async def test_resume_goes_on_without_a_hole_after_the_connection_is_cut() -> None:
    async with running(auto_create_topics=True) as server:
        await publish_over_rest(server, "orders", 0)  # the topic exists
        process = await start("resume.py", server, "--count", "6")
        lines = Lines(process)
        await lines.until("following orders")
        await publish_over_rest(server, "orders", 1, 2, 3)
        await lines.until("#4: 3")
        # Cut the example's connection, and publish while it is away.
        [session] = server.node.sessions()
        session.close(CloseReason(1001, "cut by the test"))
        await server.node.wait_sessions_closed()
        await publish_over_rest(server, "orders", 4, 5, 6)
        await lines.until("#7: 6")
        with trio.fail_after(30):
            assert await process.wait() == 0
        events = [line for line in lines.seen if line.startswith("#")]
        assert events == [f"#{n + 1}: {n}" for n in range(1, 7)]
        assert not any("gap" in line or "not consecutive" in line for line in lines.seen)
