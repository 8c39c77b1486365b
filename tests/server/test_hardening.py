"""What a hostile or broken client found (issue 14), each over real sockets.

Every test here failed on the code before its fix: a WebSocket ping flood
grew memory without bound, a trickled frame kept a connection alive past
``CONNECTION_TIMEOUT``, HTTP connections were never timed out or closed, the
handshake took HTTP/1.0 and malformed keys, hypercorn spoke h2c, and
``/health`` said nothing useful during a drain.
"""

from __future__ import annotations

import logging
import re

import pytest
import trio
from support import RawClient, http, running

#: A masked ping frame with a 125-byte payload (the largest a control frame may
#: carry), as the attack sent them; the mask is zero so the payload is plain.
PING_PAYLOAD = b"p" * 125
PING = bytes((0x89, 0x80 | 125)) + b"\x00" * 4 + PING_PAYLOAD


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def masked_ping(payload: bytes) -> bytes:
    assert len(payload) <= 125
    return bytes((0x89, 0x80 | len(payload))) + b"\x00" * 4 + payload


async def test_ping_flood_from_a_client_that_never_reads_is_closed_1008(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: every ping queued a pong for ever (RSS 48 -> 371 MB in 20 s).
    caplog.set_level(logging.WARNING, logger="pubsub.transport")
    settings = {"max_queue_size": 16, "close_timeout": 200, "shutdown_timeout": 200}
    async with running(**settings) as server:
        client = await RawClient.connect(server)  # reads its welcome, then never again
        [session] = server.node.sessions()
        batch = PING * 100
        sent = 0
        with trio.fail_after(60):
            try:
                # At most 200,000 pings (25 MB of pongs queued on the old code).
                for _ in range(2000):
                    await client.stream.send_all(batch)
                    sent += 100
                    # Whatever the peer sends, at most two pongs wait: one queued
                    # while the writer was busy, and the latest.
                    assert len(session.outbox.queue) <= 2
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the server closed the connection (it reads no more)
            await server.node.wait_sessions_closed()
        [record] = events(caplog, "ping_flood")
        assert record.unanswered_pings > 16  # type: ignore[attr-defined]
        assert session.close_reason is not None
        assert session.close_reason.code == 1008  # policy violation
        assert sent < 200_000
        await client.stream.aclose()


async def test_pings_of_one_read_get_one_pong_for_the_latest() -> None:
    async with running() as server:
        client = await RawClient.connect(server)
        await client.stream.send_all(
            masked_ping(b"first") + masked_ping(b"second") + masked_ping(b"third")
        )
        pongs: list[bytes] = []
        with trio.fail_after(10):
            data = b""
            while not pongs or pongs[-1] != b"third":
                data += await client.stream.receive_some(65536)
                while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
                    size = data[1] & 0x7F
                    if data[0] == 0x8A:
                        pongs.append(data[2 : 2 + size])
                    data = data[2 + size :]
        # One answer per read the server made (one, when the three came together),
        # and the last always answers the latest ping.
        assert 1 <= len(pongs) <= 3
        assert pongs[-1] == b"third"
        await client.stream.aclose()


async def test_a_frame_trickled_byte_by_byte_does_not_keep_a_connection_alive() -> None:
    # Before: any byte counted as activity; one byte every 5 s of a frame that
    # never completes kept a connection open past an 8 s CONNECTION_TIMEOUT.
    settings = {"connection_timeout": 600, "heartbeat_interval": 3_600_000}
    async with running(**settings) as server:
        client = await RawClient.connect(server)
        # The header of a masked text frame announcing 100 bytes, then its
        # payload one byte at a time: never a whole frame.
        trickle = b"\x81\xe4" + b"\x00" * 4 + b"x" * 100
        sent = 0
        with trio.fail_after(30):
            try:
                while sent < len(trickle) and server.node.sessions():
                    await client.stream.send_all(trickle[sent : sent + 1])
                    sent += 1
                    await trio.sleep(0.1)  # the trickle's pace: ten bytes a second
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await client.read_until_closed()
        assert client.close_code == 1001
        # Closed long before the frame could complete (106 bytes at ten a second).
        assert sent < len(trickle)


async def test_whole_frames_and_pongs_keep_a_connection_alive() -> None:
    settings = {"connection_timeout": 1000, "heartbeat_interval": 3_600_000}
    async with running(**settings) as server:
        client = await RawClient.connect(server)
        pong = b"\x8a\x80" + b"\x00" * 4  # an unsolicited pong (RFC 6455 5.5.3)
        for _ in range(20):  # 2 s: two CONNECTION_TIMEOUTs
            await client.stream.send_all(pong)
            await trio.sleep(0.1)
        assert server.node.sessions()
        await client.send(type="ping")
        await client.read_until_frame(lambda frame: frame["type"] == "pong")
        assert client.close_code is None
        await client.stream.aclose()


# ------------------------------------------------------------------- HTTP


async def http_exchange(port: int, data: bytes, *, trickle: float = 0.0) -> bytes:
    """Send ``data`` (one byte every ``trickle`` seconds when set) and read until the
    server closes; everything it sent. Fails the test if the server never closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        with trio.fail_after(30):
            if trickle:

                async def trickled() -> None:
                    try:
                        for index in range(len(data)):
                            await stream.send_all(data[index : index + 1])
                            await trio.sleep(trickle)  # the trickle's pace
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trickled)
                    received = await read_to_end(stream)
                    nursery.cancel_scope.cancel()
            else:
                await stream.send_all(data)
                received = await read_to_end(stream)
    return received


async def read_to_end(stream: trio.SocketStream) -> bytes:
    received = b""
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:  # reset: the server closed with bytes unread
        pass
    return received


def statuses(response: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]


#: Only the setting under test may close a connection: the others are an hour.
AN_HOUR = 3_600_000


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", id="close"),
        pytest.param(b"GET /health HTTP/1.0\r\n\r\n", id="http-1.0"),
    ],
)
async def test_a_connection_that_asks_to_close_is_closed_after_the_answer(head: bytes) -> None:
    # Before: answered, and the socket left open (hypercorn's close was cancelled).
    async with running(keep_alive_timeout=AN_HOUR, request_timeout=AN_HOUR) as server:
        response = await http_exchange(server.port, head)
    assert statuses(response) == [200]
    assert b'{"status":"ok"' in response and response.endswith(b"}")  # the whole body


async def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout() -> None:
    # Before: open after 70 s.
    async with running(keep_alive_timeout=200, request_timeout=AN_HOUR) as server:
        response = await http_exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(response) == [200]


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /topics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", id="short-body"
        ),
        pytest.param(
            b"POST /topics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1000000000000000000\r\n",
            id="chunk-of-2-to-the-72",
        ),
    ],
)
async def test_a_request_that_never_arrives_whole_gets_408(request_bytes: bytes) -> None:
    # Before: held the connection (and its descriptor) for good; 260 of them
    # under `ulimit -n 256` kept /health and /ws out for as long as they lasted.
    async with running(keep_alive_timeout=AN_HOUR, request_timeout=300) as server:
        response = await http_exchange(server.port, request_bytes)
    assert statuses(response) == [408]
    assert b'"error":"REQUEST_TIMEOUT"' in response


async def test_an_unfinished_request_behind_an_answered_one_is_closed_after_keep_alive() -> None:
    # Bytes that came with the answered request wait as idle time.
    async with running(keep_alive_timeout=300, request_timeout=AN_HOUR) as server:
        response = await http_exchange(
            server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHo"
        )
    assert statuses(response)[0] == 200


async def test_a_second_request_head_trickled_byte_by_byte_gets_408() -> None:
    # Before: HANDSHAKE_TIMEOUT covered only the first head; a trickled second one
    # (1 byte/s) kept the connection open for as long as it went on.
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 60 + b"\r\n\r\n"
    async with running(keep_alive_timeout=AN_HOUR, request_timeout=500) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(head)
            with trio.fail_after(30):
                first = b""
                while not first.endswith(b"}"):
                    first += await stream.receive_some(65536)
            assert statuses(first) == [200]
            sent = 0
            received = b""
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:

                    async def trickle() -> None:
                        nonlocal sent
                        try:
                            for index in range(len(second)):
                                await stream.send_all(second[index : index + 1])
                                sent += 1
                                await trio.sleep(0.05)  # the trickle's pace
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass

                    nursery.start_soon(trickle)
                    received = await read_to_end(stream)
                    nursery.cancel_scope.cancel()
    assert statuses(received) == [408]
    assert sent < len(second)  # refused before the head was complete


async def test_h2c_upgrade_is_answered_in_http_1_1() -> None:
    # Before: 101 and HTTP/2 frames (HTTP/2 is not in the contract).
    head = (
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    async with running() as server:
        response = await http_exchange(server.port, head)
    assert statuses(response) == [200]
    assert b"h2c" not in response


async def test_an_http2_connection_preface_gets_505() -> None:
    async with running() as server:
        response = await http_exchange(server.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert statuses(response) == [505]
    assert b"HTTP/2 is not supported" in response


WS_HEAD = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    ("head", "status", "says"),
    [
        pytest.param(
            WS_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"), 400, b"HTTP/1.1", id="http-1.0-upgrade"
        ),
        pytest.param(
            WS_HEAD.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"abc"), 400, b"Key", id="short-key"
        ),
        pytest.param(WS_HEAD.replace(b"Version: 13", b"Version: 8"), 426, b"'8'", id="version-8"),
    ],
)
async def test_a_handshake_rfc_6455_does_not_allow_is_refused(
    head: bytes, status: int, says: bytes
) -> None:
    # Before: HTTP/1.0 and a 3-character key got 101.
    async with running() as server:
        response = await http_exchange(server.port, head)
    assert statuses(response) == [status]
    assert says in response
    if status == 426:
        assert b"sec-websocket-version: 13\r\n" in response


async def test_health_says_503_draining_to_old_and_new_connections_for_the_whole_drain() -> None:
    # Before: new connections were closed with 0 bytes once the drain began.
    settings = {"shutdown_timeout": AN_HOUR, "close_timeout": AN_HOUR}
    async with running(**settings) as server, http(server) as old:
        assert (await old.get("/health")).status_code == 200
        # A WebSocket client that never answers the close keeps the drain going.
        stuck = await RawClient.connect(server)
        server.shutdown()
        seen = b""
        with trio.fail_after(30):
            while b"shutting_down" not in seen:
                seen += await stuck.stream.receive_some(65536)
        for _ in range(3):
            answer = await old.get("/health")
            assert answer.status_code == 503 and answer.json()["status"] == "draining"
            async with http(server) as new:
                answer = await new.get("/health")
                assert answer.status_code == 503 and answer.json()["status"] == "draining"
        refused = await http_exchange(server.port, WS_HEAD)
        assert statuses(refused) == [503]
        await stuck.stream.aclose()  # the drain ends, and the server with it


# ------------------------------------------------- found by REST fuzzing


async def test_a_ttl_beyond_any_date_is_bad_request_and_the_topic_stays_readable() -> None:
    # Before: ttl_ms 5e21 was stored, then writing its expiry date failed: 500 for
    # the publish and for every later history read, 1011 for subscribers.
    huge = 4992405653275668381696
    async with running(auto_create_topics=True) as server, http(server) as client:
        answer = await client.post("/topics/t/messages", json={"payload": 1, "ttl_ms": huge})
        assert answer.status_code == 400 and "ttl_ms" in answer.json()["message"]
        assert (await client.post("/topics/t/messages", json={"payload": 2})).status_code == 201
        history = await client.get("/topics/t/messages")
        assert history.status_code == 200
        assert [m["message"]["payload"] for m in history.json()["messages"]] == [2]
        created = await client.post("/topics", json={"name": "u", "message_ttl_ms": huge})
        assert created.status_code == 400
        client_ws = await RawClient.connect(server)
        await client_ws.send(
            type="publish", topic="t", message={"id": "x", "payload": 3}, ttl_ms=huge
        )
        await client_ws.read_until_frame(lambda frame: frame["type"] == "error")
        [error] = [frame for frame in client_ws.frames if frame["type"] == "error"]
        assert error["error"]["code"] == "BAD_REQUEST"
        await client_ws.send(type="ping")
        await client_ws.read_until_frame(lambda frame: frame["type"] == "pong")
        await client_ws.stream.aclose()


async def test_405_names_the_allowed_methods() -> None:
    async with running() as server, http(server) as client:
        answer = await client.put("/topics")
        assert answer.status_code == 405
        assert set(answer.headers["allow"].split(", ")) >= {"GET", "POST"}
