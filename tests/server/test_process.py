"""The console script as a user runs it: a subprocess, signals, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import RedisServer
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
    assert done.stderr == (
        "trio-pubsub: error: --max-queue-size (MAX_QUEUE_SIZE): expected an integer, not 'zero'\n"
    )
    env = {**os.environ, "BACKPRESSURE_POLICY": "sometimes"}
    done = subprocess.run([SCRIPT, "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr == (
        "trio-pubsub: error: BACKPRESSURE_POLICY: 'sometimes' is not one of drop_oldest, "
        "disconnect (any case)\n"
    )


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


async def _stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await process.wait() == 0


async def test_log_level_in_capitals_is_accepted_and_a_bad_one_names_the_choices() -> None:
    process, _, log = await _start(LOG_LEVEL="INFO")
    await _stop(process)
    assert b'"log_level":"info"' in log
    env = {**os.environ, "LOG_LEVEL": "loud"}
    with trio.fail_after(60):
        done = await trio.run_process(
            [SCRIPT, "serve"], capture_stdout=True, capture_stderr=True, env=env, check=False
        )
    assert done.returncode == 2
    assert done.stderr == (
        b"trio-pubsub: error: LOG_LEVEL: 'loud' is not one of debug, info, warning, error, "
        b"critical (any case)\n"
    )


def test_a_busy_port_says_address_already_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [SCRIPT, "serve", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 3
    [error] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert error.endswith(
        f"cannot listen on 127.0.0.1:{port}: address already in use (another process "
        "listens there: stop it, or choose another --port; 0 picks a free one)"
    )
    assert "Traceback" not in done.stderr


async def _command_line(pid: int) -> bytes:
    """What ``ps`` shows of process ``pid``: its arguments, each ended by a NUL."""
    if sys.platform != "linux":
        pytest.skip("reads /proc/PID/cmdline")
    return await trio.Path(f"/proc/{pid}/cmdline").read_bytes()


async def _info(port: int, **headers: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        response = await client.get("/info")
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()["config"]
        return config


async def test_settings_come_from_flags_then_environment_then_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pubsub.toml"
    path.write_text(
        "max_topics = 3\nmax_queue_size = 500\nclose_timeout = 1500\nhandshake_timeout = 900\n"
        'log_level = "WARNING"\n'
    )
    process, port, _ = await _start(
        "--handshake-timeout",
        "700",
        PUBSUB_CONFIG=str(path),
        MAX_QUEUE_SIZE="600",
        CLOSE_TIMEOUT="1700",
        PUBSUB_CLOSE_TIMEOUT="1600",
        HANDSHAKE_TIMEOUT="800",
        LOG_LEVEL="info",  # so that serve reports listening
    )
    try:
        config = await _info(port)
    finally:
        await _stop(process)
    assert {name: config[name] for name in ("max_topics", "max_queue_size")} == {
        "max_topics": 3,  # the file
        "max_queue_size": 600,  # the environment over the file
    }
    assert (config["close_timeout"], config["handshake_timeout"]) == (1600, 700)
    assert config["max_connections"] == 10_000  # the default


def test_an_unknown_key_in_the_file_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "pubsub.toml"
    path.write_text("max_queue_size = 5\nmax_topic = 3\n")
    done = subprocess.run(
        [SCRIPT, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"trio-pubsub: error: {path}: unknown key 'max_topic' (did you mean 'max_topics'?)\n"
    )


async def test_an_api_key_file_keeps_the_key_off_the_command_line(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    process, port, log = await _start("--api-key-file", str(key_file))
    try:
        # What ps shows: the command line has the file's name, not the key.
        command_line = await _command_line(process.pid)
        assert str(key_file).encode() in command_line
        assert b"s3cret-key" not in command_line and b"s3cret-key" not in log
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/topics")).status_code == 401
            allowed = await client.get("/topics", headers={"X-API-Key": "s3cret-key"})
            assert allowed.status_code == 200
    finally:
        await _stop(process)


async def test_topics_declared_in_the_file_exist_once_serve_reports_listening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pubsub.toml"
    path.write_text(
        'message_ttl = 5000\n[[topics]]\nname = "orders"\nmessage_ttl_ms = 60000\n\n'
        '[[topics]]\nname = "audit"\n'
    )
    process, port, log = await _start("--config", str(path))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            listed = (await client.get("/topics")).json()["topics"]
            orders = (await client.get("/topics/orders")).json()
            audit = (await client.get("/topics/audit")).json()
    finally:
        await _stop(process)
    assert sorted(topic["name"] for topic in listed) == ["audit", "orders"]
    assert (orders["message_ttl_ms"], audit["message_ttl_ms"]) == (60000, 5000)
    assert log.index(b"created the declared topic 'orders'") < log.index(b"listening on")


class _Log:
    """A process's stderr, collected as it comes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.text = b""
        self._changed = trio.Event()

    async def collect(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some(65536):
            self.text += chunk
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, pattern: bytes, count: int = 1) -> list[re.Match[bytes]]:
        with trio.fail_after(60):
            while len(found := list(re.finditer(pattern, self.text))) < count:
                assert self.process.returncode is None, self.text.decode()
                await self._changed.wait()
        return found


async def test_workers_run_with_the_supervisors_configuration(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("w0rker-key")
    path = tmp_path / "pubsub.toml"
    path.write_text(
        f'engine = "redis"\nredis_url = "{redis_server.url}"\nredis_prefix = "{redis_prefix}"\n'
        'max_queue_size = 500\napi_key_file = "key"\ntopics = ["orders"]\n'
    )
    process = await trio.lowlevel.open_process(
        [SCRIPT, "serve", "--config", str(path), "--port", "0", "--workers", "2"],
        stderr=subprocess.PIPE,
        env={**os.environ, "LOG_FORMAT": "text"},
    )
    log = _Log(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.collect)
            [started] = await log.wait_for(rb"workers on http://127\.0\.0\.1:(\d+)")
            await log.wait_for(rb"listening on http://", 2)
            port = int(started.group(1))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                listed = await client.get("/topics", headers={"X-API-Key": "w0rker-key"})
            assert [topic["name"] for topic in listed.json()["topics"]] == ["orders"]
            workers = await log.wait_for(rb"starting as worker (\d) \(pid (\d+)\) with (.*)", 2)
            for worker in workers:
                settings = json.loads(worker.group(3).split(b" and topics ")[0])
                assert (settings["max_queue_size"], settings["api_key"]) == (500, "***")
                assert worker.group(3).endswith(b" and topics ['orders']")
                # Nothing secret on a worker's command line either.
                command_line = await _command_line(int(worker.group(2)))
                assert command_line.split(b"\0")[-3:] == [b"pubsub", b"serve", b""]
            await _stop(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
