"""The console script as a user runs it: a subprocess, signals, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from support import RawClient, close_code, recv, subscribe
from trio_websocket import ConnectionClosed, open_websocket_url

from pubsub._settings import FIELD_NAMES, describe

SCRIPT = str(Path(sys.executable).with_name("trio-pubsub"))


async def _start(*args: str, **env: str) -> tuple[trio.Process, int, bytes]:
    """Start ``trio-pubsub serve --port 0 ARGS``; return it, its port and its log so far."""
    process = await trio.lowlevel.open_process(
        [SCRIPT, "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        env={**os.environ, "LOG_FORMAT": "text", **env},
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(30):
        while (match := re.search(rb"listening on http://127\.0\.0\.1:(\d+)", seen)) is None:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, seen.decode()
            seen += chunk
    return process, int(match.group(1)), seen


async def test_serve_then_sigterm_closes_clients_with_1001_and_exits_0() -> None:
    process, port, _ = await _start("--heartbeat-interval", "60000")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            created = await client.post("/topics", json={"name": "orders"})
            assert created.status_code == 201
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            assert (await recv(ws))["msg"] == "connected"
            await subscribe(ws, "orders")
            process.send_signal(signal.SIGTERM)
            notice = await recv(ws)
            assert notice["type"] == "info" and notice["msg"] == "shutting_down"
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert close_code(closed.value)[0] == 1001
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_write_the_socket_only_partly_takes_is_finished_with_nothing_else_happening() -> (
    None
):
    """A held write that the socket takes only in part, at the end of a scheduler
    pass, starts the connection's writer: it must run although no other I/O
    follows (it once waited in trio's run queue until the next timer, here an
    hour away)."""
    process, port, _ = await _start(
        "--heartbeat-interval",
        "3600000",
        "--connection-timeout",
        "3600000",
        "--max-message-size",
        str(16 * 1024 * 1024),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/topics", json={"name": "big"})).status_code == 201
            slow = await RawClient.connect(port)
            await slow.send(type="subscribe", topic="big", client_id="slow")
            await slow.read_until_frame(lambda f: f["type"] == "ack")
            payload = "x" * (8 * 1024 * 1024)
            async with open_websocket_url(
                f"ws://127.0.0.1:{port}/ws", max_message_size=2**25
            ) as publisher:
                assert (await recv(publisher))["msg"] == "connected"
                message = {"id": "m", "payload": payload}
                frame = {"type": "publish", "topic": "big", "client_id": "p", "message": message}
                await publisher.send_message(json.dumps(frame))
                assert (await recv(publisher))["type"] == "ack"
                # The publisher stays connected and quiet: nothing else happens.
                await slow.read_until_frame(lambda f: f["type"] == "event")
            (event,) = [f for f in slow.frames if f["type"] == "event"]
            assert event["message"] == message
            await slow.stream.aclose()
    finally:
        process.kill()
        await process.wait()


def test_bad_setting_exits_2_naming_the_setting() -> None:
    done = subprocess.run(
        [SCRIPT, "serve", "--max-queue-size", "zero"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "MAX_QUEUE_SIZE" in done.stderr
    env = {**os.environ, "BACKPRESSURE_POLICY": "sometimes"}
    done = subprocess.run([SCRIPT, "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "BACKPRESSURE_POLICY" in done.stderr


def test_help_lists_every_setting() -> None:
    done = subprocess.run([SCRIPT, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # argparse wraps lines
    for name in FIELD_NAMES:
        flag = "--" + name.replace("_", "-")
        assert f"{flag} {name.upper()}" in text
        # The help text is the setting's own description, words unbroken.
        assert " ".join(describe(name).split()) in text, name


async def test_json_logs_and_flags_override_environment() -> None:
    process, _, log = await _start("--log-format", "json", MAX_TOPICS="3")
    try:
        entries = [json.loads(line) for line in log.splitlines() if line.startswith(b"{")]
        assert entries and all(e["level"] == "info" for e in entries)
        assert '"max_topics":3' in entries[0]["msg"]
        assert '"log_format":"json"' in entries[0]["msg"]
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
