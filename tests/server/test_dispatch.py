"""The dispatcher's pieces: request-head routing and the stream that hands the
bytes already read to hypercorn."""

from __future__ import annotations

import pytest
import trio

from pubsub._server.http_conn import HttpStream
from pubsub._server.server import is_websocket_request


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET /ws?api_key=k HTTP/1.1\r\n\r\n", True),
        (b"GET /wss HTTP/1.1\r\n\r\n", False),
        (b"GET /topics HTTP/1.1\r\n\r\n", False),
        (b"GET /ws\r\n\r\n", False),
        (b"", False),
    ],
)
def test_only_a_request_for_ws_takes_the_fast_path(head: bytes, expected: bool) -> None:
    assert is_websocket_request(head) is expected


def http_stream(sock: trio.socket.SocketType, prefix: bytes) -> HttpStream:
    return HttpStream(
        trio.SocketStream(sock), prefix, keep_alive_timeout=60.0, request_timeout=60.0
    )


async def test_prefixed_stream_honours_max_bytes() -> None:
    """trio's ReceiveStream contract: never more than ``max_bytes`` at a time."""
    left, right = trio.socket.socketpair()
    with left, right:
        stream = http_stream(left, b"abcdef")
        assert await stream.receive_some(4) == b"abcd"
        assert await stream.receive_some(1) == b"e"
        assert await stream.receive_some(100) == b"f"
        await right.send(b"after")
        assert await stream.receive_some(3) == b"aft"
        assert await stream.receive_some() == b"er"


async def test_prefixed_stream_without_max_bytes_returns_the_whole_prefix() -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        stream = http_stream(left, b"head")
        assert await stream.receive_some() == b"head"
        await stream.send_all(b"reply")
        assert await right.recv(100) == b"reply"
