"""ALLOWED_ORIGINS and CORS over real sockets: which browser pages may use the API."""

from __future__ import annotations

import re

import pytest
import trio
from support import http, running

from pubsub import SettingsError
from pubsub._server.origins import Origins, normalise
from pubsub._settings import convert

EVIL = "http://evil.example"
APP = "https://app.example.com"


async def upgrade(port: int, origin: str | None, host: str | None = None) -> bytes:
    """The server's answer to a ``/ws`` upgrade from ``origin`` (its head, and the
    welcome frame when accepted)."""
    lines = [
        b"GET /ws HTTP/1.1",
        b"Host: " + (host or f"127.0.0.1:{port}").encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(b"Origin: " + origin.encode())
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer or (
                answer.startswith(b"HTTP/1.1 101") and b"connected" not in answer
            ):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
    return answer


def status(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    assert match is not None, answer
    return int(match.group(1))


async def test_by_default_only_the_servers_own_origin_may_open_ws() -> None:
    async with running() as server:
        port = server.port
        assert status(await upgrade(port, None)) == 101  # tools send no Origin
        assert status(await upgrade(port, f"http://127.0.0.1:{port}")) == 101
        assert status(await upgrade(port, f"http://localhost:{port}", f"localhost:{port}")) == 101
        refused = await upgrade(port, EVIL)
        assert status(refused) == 403
        assert b'"error":"FORBIDDEN"' in refused and b"ALLOWED_ORIGINS" in refused
        # Another port of the same host is another origin.
        assert status(await upgrade(port, f"http://127.0.0.1:{port + 1}")) == 403
        assert status(await upgrade(port, "null")) == 403  # a file:// page, a sandbox


async def test_listed_origins_and_star_may_open_ws() -> None:
    async with running(allowed_origins=f"{APP}, http://localhost:8080/") as server:
        assert status(await upgrade(server.port, APP)) == 101
        assert status(await upgrade(server.port, "HTTPS://APP.example.com:443")) == 101
        assert status(await upgrade(server.port, "http://localhost:8080")) == 101
        assert status(await upgrade(server.port, EVIL)) == 403
    async with running(allowed_origins="*") as server:
        assert status(await upgrade(server.port, EVIL)) == 101


async def test_a_state_changing_request_from_another_origin_is_403_whatever_its_type() -> None:
    # Before: a page anywhere could create topics with a "simple" text/plain POST.
    async with running() as server, http(server) as client:
        headers = {"Origin": EVIL, "Content-Type": "text/plain"}
        refused = await client.post("/topics", content=b'{"name":"t"}', headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"] == "FORBIDDEN"
        assert "access-control-allow-origin" not in refused.headers
        assert (await client.get("/topics")).json()["topics"] == []
        assert (await client.delete("/topics/t", headers={"Origin": EVIL})).status_code == 403
        # Reading is answered (the browser keeps the answer from the page: no CORS headers).
        read = await client.get("/topics", headers={"Origin": EVIL})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers


async def test_an_allowed_origin_gets_cors_headers_and_preflights() -> None:
    async with running(allowed_origins=APP, api_key="k3y") as server, http(server) as client:
        preflight = await client.options(
            "/topics",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-api-key",
            },
        )
        assert preflight.status_code == 204  # no key: browsers never send one with it
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "X-API-Key" in preflight.headers["access-control-allow-headers"]
        assert preflight.headers["vary"] == "Origin"
        created = await client.post(
            "/topics", json={"name": "t"}, headers={"Origin": APP, "X-API-Key": "k3y"}
        )
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == APP
        assert created.headers["access-control-expose-headers"] == "Retry-After"
        # Errors carry the headers too, so the page can read why.
        refused = await client.post("/topics", json={"name": "u"}, headers={"Origin": APP})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == APP
        denied = await client.options(
            "/topics", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        )
        assert denied.status_code == 403
        assert "access-control-allow-origin" not in denied.headers


async def test_ws_on_a_reused_connection_checks_the_origin_too() -> None:
    async with running() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            head = (
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nOrigin: " + EVIL.encode() + b"\r\n\r\n"
            )
            await stream.send_all(head)
            answer = b""
            with trio.fail_after(10):
                while answer.count(b"HTTP/1.1 ") < 2 or not answer.endswith(b"}"):
                    answer += await stream.receive_some(65536)
        assert re.findall(rb"HTTP/1\.1 (\d{3})", answer) == [b"200", b"403"]


async def test_stats_reports_recent_latency() -> None:
    async with running() as server, http(server) as client:
        latency = (await client.get("/stats")).json()["latency"]
        assert latency == {"p50_ms": None, "p99_ms": None, "samples": 0}


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://App.Example.com:443/", "https://app.example.com"),
        ("http://example.com:8080", "http://example.com:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("null", None),
        ("ftp://example.com", None),
        ("http://example.com/path", None),
        ("http://user@example.com", None),
        ("http://example.com:99999", None),
    ],
)
def test_origins_are_compared_as_browsers_serialize_them(origin: str, expected: str | None) -> None:
    assert normalise(origin) == expected


def test_a_bad_allowed_origins_entry_is_named() -> None:
    with pytest.raises(SettingsError, match=r"'app\.example\.com' is not an origin"):
        convert("allowed_origins", "https://ok.example, app.example.com")
    with pytest.raises(ValueError, match="ALLOWED_ORIGINS"):
        Origins("example.com")
    assert convert("allowed_origins", " * ") == " * "


async def test_nodes_lists_this_node_fresh() -> None:
    async with running() as server, http(server) as client:
        [own] = (await client.get("/nodes")).json()["nodes"]
        assert own["node_id"] == server.node.node_id and own["self"] is True
        assert own["connections"] == 0 and own["p50_ms"] is None
        health = (await client.get("/health")).json()
        assert health["api_key_required"] is False
    async with running(api_key="k3y") as server, http(server) as client:
        assert (await client.get("/nodes")).status_code == 401
        assert (await client.get("/health")).json()["api_key_required"] is True


async def test_the_dashboard_is_served_without_a_key_and_nothing_outside_it() -> None:
    async with running(api_key="k3y") as server, http(server) as client:
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        script = await client.get("/dashboard/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"GET /dashboard/..%2f_server%2fhttp.py HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        assert status(answer) == 404
        # (httpx resolves the dots first: that path is outside /dashboard, and needs a key.)
        assert (await client.get("/dashboard/../_server/http.py")).status_code in (401, 404)
