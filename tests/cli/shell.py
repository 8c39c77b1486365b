"""Running ``trio-pubsub`` as a shell does: subprocesses, and their output as it comes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio
from support import base_url

from pubsub import Server
from pubsub.client import open_client

SCRIPT = str(Path(sys.executable).with_name("trio-pubsub"))


async def cli(
    server: Server | None, *args: str, stdin: bytes = b"", url: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``trio-pubsub ARGS --url URL`` to its end (``server``'s URL by default)."""
    target = url or (base_url(server) if server else "")
    with trio.fail_after(60):
        return await trio.run_process(
            [SCRIPT, *args, "--url", target],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def start(server: Server, *args: str, stdin: int | None = None) -> trio.Process:
    """Start ``trio-pubsub ARGS --url URL`` with its stdout and stderr piped."""
    return await trio.lowlevel.open_process(
        [SCRIPT, *args, "--url", base_url(server)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def read_all(stream: trio.abc.ReceiveStream | None) -> bytes:
    assert stream is not None
    data = b""
    with trio.fail_after(30):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


class Output:
    """The lines a running command prints, as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def collect(self) -> None:
        assert self.process.stdout is not None
        text = b""
        while chunk := await self.process.stdout.receive_some(65536):
            text += chunk
            *done, text = text.split(b"\n")
            self.lines += [line.decode() for line in done]
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, done: Callable[[list[str]], bool]) -> None:
        with trio.fail_after(30):
            while not done(self.lines):
                await self._changed.wait()


async def publish_until_printed(server: Server, topic: str, output: Output) -> int:
    """Publish probes to ``topic`` until a running ``sub`` prints one: it is
    subscribed then. Returns how many were published."""
    probes = 0
    async with open_client(f"ws://127.0.0.1:{server.port}/ws") as client:
        with trio.fail_after(30):
            while not output.lines:
                assert output.process.returncode is None, "sub exited"
                probes += 1
                await client.publish(topic, {"probe": probes})
    return probes
