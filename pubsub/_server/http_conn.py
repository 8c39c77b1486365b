"""The socket under hypercorn's HTTP/1.1 handling, with the limits hypercorn
does not enforce when it runs quart-trio.

hypercorn acts on a connection (closes it after ``Connection: close`` or
HTTP/1.0, starts its keep-alive timer) from inside the app's ``send``, and
quart-trio has cancelled the app's task by then: the close and the timer are
cancelled with it, so such connections stayed open for ever. A stream under
hypercorn is where the limits can be kept whatever hypercorn's tasks do:

- an idle connection (no request begun) is closed after ``KEEP_ALIVE_TIMEOUT``;
- a request must arrive whole (head and body) within ``REQUEST_TIMEOUT`` of its
  first byte, else ``408`` and the connection closes (a trickled head, a body
  that never comes, a chunk size of 2^72);
- a response must be taken within ``REQUEST_TIMEOUT`` per write, else the
  connection closes;
- closing happens at once, before any checkpoint (so a cancelled caller still
  closes);
- after a ``101`` (a WebSocket upgrade on a reused connection) none of this
  applies: the WebSocket's own timeouts do.

HTTP/2 is not part of the contract: :class:`Http11Only` makes hypercorn ignore
``Upgrade: h2c`` (RFC 9110 7.8 lets a server) and the server answers the
HTTP/2 connection preface with ``505`` before hypercorn sees it.
"""

from __future__ import annotations

import contextlib
import math
import socket
from typing import Final

import h11
import hypercorn.protocol
import trio
from hypercorn.protocol.h11 import H11Protocol

from .._protocol.errors import ErrorCode, error_body
from .._protocol.websocket import error_response

#: How long a 408 (or 505) may take to go out before the connection is closed anyway.
REFUSAL_WRITE_TIMEOUT: Final = 1.0
#: Bytes an HTTP/2 client with prior knowledge sends first (RFC 9113 3.4).
HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n"


def request_timeout_response() -> bytes:
    return error_response(408, error_body("REQUEST_TIMEOUT", "the request did not arrive in time"))


def http2_refusal() -> bytes:
    """The answer to an HTTP/2 connection preface."""
    return error_response(
        505,
        error_body(
            ErrorCode.BAD_REQUEST, "HTTP/2 is not supported: use HTTP/1.1 (and /ws for WebSocket)"
        ),
    )


class Http11Only(H11Protocol):
    """hypercorn's HTTP/1.1 protocol without its switches to HTTP/2: an
    ``Upgrade: h2c`` request is answered in HTTP/1.1 like any other."""

    async def _check_protocol(self, event: h11.Request) -> None:
        return None


def serve_http11_only() -> None:
    """Make hypercorn's connections HTTP/1.1 only (see :class:`Http11Only`); the
    server calls this once before serving."""
    hypercorn.protocol.H11Protocol = Http11Only  # type: ignore[attr-defined]


class HttpStream(trio.abc.HalfCloseableStream):
    """A socket stream for hypercorn: first the bytes the dispatcher already
    read (a whole request head), then the socket, with the timeouts above.

    Args:
        stream: The accepted connection.
        prefix: What the dispatcher read of it.
        keep_alive_timeout: ``KEEP_ALIVE_TIMEOUT`` in seconds.
        request_timeout: ``REQUEST_TIMEOUT`` in seconds.
    """

    def __init__(
        self,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        prefix: bytes,
        *,
        keep_alive_timeout: float,
        request_timeout: float,
    ) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = (
            stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket
        )
        self._keep_alive = keep_alive_timeout
        self._request_timeout = request_timeout
        #: A request has begun and its response has not: the request's deadline runs.
        self._in_request = True
        self._deadline = trio.current_time() + request_timeout
        self._upgraded = False
        self._closed = False
        #: The deadline of the receive in progress (hypercorn reads while it answers).
        self._receiving: trio.CancelScope | None = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            await trio.lowlevel.checkpoint()
            return data
        if self._closed:
            raise trio.ClosedResourceError("the connection timed out")
        deadline = math.inf if self._upgraded else self._deadline
        with trio.move_on_at(deadline) as self._receiving:
            received = await self._stream.receive_some(max_bytes)
            if received and not self._in_request and not self._upgraded:
                # The next request begins: it has REQUEST_TIMEOUT to arrive whole.
                self._in_request = True
                self._deadline = trio.current_time() + self._request_timeout
                if received.startswith(HTTP2_PREFACE[: len(received)]) and len(received) >= 3:
                    await self._refuse(http2_refusal())
                    raise trio.ClosedResourceError("HTTP/2 preface")
            return received
        if self._in_request:
            await self._refuse(request_timeout_response())
            raise trio.ClosedResourceError("the request did not arrive in time")
        return b""  # idle for KEEP_ALIVE_TIMEOUT: hypercorn closes as if the peer had

    async def _refuse(self, response: bytes) -> None:
        """Answer ``response`` if the peer takes it at once, and close: whatever
        hypercorn sends after this is dropped."""
        with (
            trio.move_on_after(REFUSAL_WRITE_TIMEOUT),
            contextlib.suppress(
                trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError
            ),
        ):
            await self._stream.send_all(response)
        self._close_now()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.BrokenResourceError("the connection was closed")
        if self._in_request and not self._upgraded and bytes(data[:9]) == b"HTTP/1.1 ":
            status = bytes(data[9:12])
            if status == b"101":
                self._upgraded = True
                if self._receiving is not None:
                    self._receiving.deadline = math.inf
            elif status >= b"200":
                # The response has begun: the request was read (or never will be).
                self._in_request = False
        with trio.move_on_after(self._request_timeout) as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            self._close_now()
            raise trio.BrokenResourceError("the peer did not take the response in time")
        if not self._in_request and not self._upgraded:
            self._deadline = trio.current_time() + self._keep_alive
            if self._receiving is not None:
                self._receiving.deadline = self._deadline

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        # At once: hypercorn calls this from tasks that may be cancelled already.
        if not self._closed:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        self._closed = True
        self.socket.close()  # wakes any task waiting on it (trio notifies first)
