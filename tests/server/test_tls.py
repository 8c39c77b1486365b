"""TLS_CERT / TLS_KEY: https:// and wss:// on the server's one port, over real
sockets with a certificate made in the test (trustme)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from support import running
from trio_websocket import open_websocket_url

from pubsub._cli.config import Config, ConfigError, check
from pubsub._settings import Settings


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return {"tls_cert": str(cert), "tls_key": str(key)}


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_https_rest_and_wss_fan_out(
    tls_files: dict[str, str], client_context: ssl.SSLContext
) -> None:
    async with running(**tls_files) as server:
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=client_context, timeout=10) as rest:
            assert (await rest.get("/health")).json()["status"] == "ok"
            assert (await rest.post("/topics", json={"name": "t"})).status_code == 201
        url = f"wss://127.0.0.1:{server.port}/ws"
        subscribers = 3
        async with (
            open_websocket_url(url, ssl_context=client_context) as publisher,
        ):
            assert json.loads(await publisher.get_message())["msg"] == "connected"
            received: list[list[int]] = [[] for _ in range(subscribers)]

            async def subscribe_and_read(index: int, ready: trio.Event) -> None:
                async with open_websocket_url(url, ssl_context=client_context) as ws:
                    await ws.get_message()  # welcome
                    await ws.send_message(
                        json.dumps({"type": "subscribe", "topic": "t", "client_id": "s"})
                    )
                    assert json.loads(await ws.get_message())["type"] == "ack"
                    ready.set()
                    while len(received[index]) < 50:
                        frame = json.loads(await ws.get_message())
                        if frame["type"] == "event":
                            received[index].append(frame["message"]["payload"])

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for index in range(subscribers):
                        ready = trio.Event()
                        nursery.start_soon(subscribe_and_read, index, ready)
                        await ready.wait()
                    for number in range(50):
                        await publisher.send_message(
                            json.dumps(
                                {
                                    "type": "publish",
                                    "topic": "t",
                                    "client_id": "p",
                                    "message": {"id": f"m{number}", "payload": number},
                                }
                            )
                        )
        assert received == [list(range(50))] * subscribers


async def test_plain_http_to_a_tls_port_is_dropped_and_the_server_goes_on(
    tls_files: dict[str, str], client_context: ssl.SSLContext
) -> None:
    async with running(**tls_files) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(10):
                answer = b""
                try:
                    while chunk := await stream.receive_some(65536):
                        answer += chunk
                except trio.BrokenResourceError:
                    pass
        assert b"HTTP/1.1 200" not in answer
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=client_context, timeout=10) as rest:
            assert (await rest.get("/health")).status_code == 200


def test_tls_cert_without_key_and_unreadable_files_are_refused(
    tls_files: dict[str, str], tmp_path: Path
) -> None:
    def config(**settings: str) -> Config:
        return Config(Settings().replace(**settings))

    with pytest.raises(ConfigError, match="go together"):
        check(config(tls_cert=tls_files["tls_cert"]))
    with pytest.raises(ConfigError, match="TLS_CERT"):
        check(config(tls_cert=str(tmp_path / "missing.pem"), tls_key=tls_files["tls_key"]))
    with pytest.raises(ConfigError, match="TLS_CERT"):
        check(config(tls_cert=tls_files["tls_key"], tls_key=tls_files["tls_key"]))
    check(config(**tls_files))
