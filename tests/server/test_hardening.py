"""What a hostile or broken client found (issue 14), each over real sockets.

Every test here failed on the code before its fix: a WebSocket ping flood
grew memory without bound, a trickled frame kept a connection alive past
``CONNECTION_TIMEOUT``, HTTP connections were never timed out or closed, the
handshake took HTTP/1.0 and malformed keys, hypercorn spoke h2c, and
``/health`` said nothing useful during a drain.
"""

from __future__ import annotations

import logging

import pytest
import trio
from support import RawClient, running

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
