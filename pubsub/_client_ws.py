"""The client library's WebSocket: wsproto over an AnyIO byte stream, so it runs
under Trio and asyncio alike.

Two layers, as the server's transport has them. :class:`ClientProtocol` is
sans-IO: bytes in; messages, the handshake's verdict and the close out; and the
bytes owed to the peer (pongs, close replies) to be written back. It applies
what the client adds to wsproto: fragments are joined into one message, a
message over ``max_message_size`` closes the connection with 1009, pings are
answered, a close frame is answered. :class:`WebSocket` moves those bytes over
a TCP (or TLS) stream from :func:`anyio.connect_tcp`: one task reads
(:meth:`WebSocket.receive`), any number send (:meth:`WebSocket.send`, one frame
at a time under a lock).

Only what the pub/sub client needs: text messages, no extensions, no
subprotocols. Failures come out as two exceptions: :class:`HandshakeFailed`
(no connection was made) and :class:`ConnectionClosed` (an open one ended).
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import anyio.lowlevel
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

#: Seconds to open a connection: TCP connect, TLS and the HTTP upgrade together.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds a closing client waits for the server's close frame before it drops
#: the TCP connection anyway.
CLOSE_TIMEOUT: Final = 2.0
#: Bytes read from the socket at a time.
RECEIVE_SIZE: Final = 65536

#: RFC 6455 close codes used here.
CLOSE_NORMAL: Final = 1000
CLOSE_ABNORMAL: Final = 1006
CLOSE_TOO_BIG: Final = 1009

_SCHEMES: Final = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_DEFAULT_PORTS: Final = {"ws": 80, "wss": 443}


class HandshakeFailed(Exception):
    """No WebSocket connection was made: unreachable, TLS failed, or the server
    answered the upgrade with an HTTP status (``status``) instead of 101."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class ConnectionClosed(Exception):
    """The connection ended: a close frame (``code``, ``reason``) or, with code
    1006, a TCP connection lost without one."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".rstrip())
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------ endpoints


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a URL says to connect, and what to ask for there."""

    #: The URL in its normal form (``ws://`` or ``wss://``, path included).
    url: str
    host: str
    port: int
    tls: bool
    #: The ``Host`` header: the URL's host and port as written.
    authority: str
    #: The request target: path and query.
    target: str


def parse_url(url: str) -> Endpoint:
    """The endpoint a server URL names, in the forms the CLI accepts too.

    ``ws://`` and ``http://`` mean plain TCP, ``wss://`` and ``https://`` TLS.
    A URL without a path (or with ``/``) means the broker's ``/ws`` endpoint;
    any other path is kept as given, as is the query. So ``ws://h:3000``,
    ``http://h:3000`` and ``ws://h:3000/ws`` all give ``ws://h:3000/ws``.

    Raises:
        ValueError: not a ws(s) or http(s) URL, or without a host.
    """
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in the URL {url!r}")
    port = parts.port or _DEFAULT_PORTS[scheme]  # parts.port raises ValueError if bad
    path = "/ws" if parts.path in ("", "/") else parts.path
    authority = parts.netloc.rpartition("@")[2]
    target = f"{path}?{parts.query}" if parts.query else path
    return Endpoint(
        url=urlunsplit((scheme, authority, path, parts.query, "")),
        host=host,
        port=port,
        tls=scheme == "wss",
        authority=authority,
        target=target,
    )


# -------------------------------------------------------------------- sans-IO


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server accepted the upgrade (101)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The server answered the upgrade with another HTTP status."""

    status: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is closed (by either side, or lost: 1006)."""

    code: int
    reason: str


#: What :meth:`ClientProtocol.receive_data` gives: a whole text message, or news.
Received = str | Accepted | Refused | Closed


class ClientProtocol:
    """One client connection's WebSocket state, without I/O.

    Args:
        max_message_size: The largest message (in characters) accepted from the
            server; a larger one closes the connection with 1009.
    """

    def __init__(self, *, max_message_size: int) -> None:
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._max_message_size = max_message_size
        self._parts: list[str] = []
        self._size = 0
        self._outgoing = bytearray()
        #: Set once the connection is closed; nothing is received after it.
        self.closed: Closed | None = None

    def request(self, authority: str, target: str, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
        """The bytes of the opening handshake's HTTP upgrade request."""
        return self._ws.send(Request(host=authority, target=target, extra_headers=list(headers)))

    @property
    def is_open(self) -> bool:
        return self._ws.state is ConnectionState.OPEN

    def text(self, text: str) -> bytes:
        """The bytes of one text message (masked, as a client's must be).

        Raises:
            ConnectionClosed: the connection is no longer open.
        """
        if not self.is_open:
            closed = self.closed or Closed(CLOSE_ABNORMAL, "not open")
            raise ConnectionClosed(closed.code, closed.reason)
        return self._ws.send(Message(data=text))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        """The bytes of a close frame we start (nothing if one was already sent)."""
        if not self.is_open:
            return b""
        return self._ws.send(CloseConnection(code=code, reason=reason))

    def receive_data(self, data: bytes | None) -> list[Received]:
        """What ``data`` (``None``: the peer ended the TCP stream) brings.

        Raises:
            HandshakeFailed: the server's answer to the upgrade is not HTTP, or
                the TCP stream ended before it.
        """
        if self.closed is not None:
            return []
        handshaking = self._ws.connection is None
        if data is None and handshaking:
            raise HandshakeFailed("the server closed the connection during the handshake")
        try:
            self._ws.receive_data(data)
            return [item for event in self._ws.events() if (item := self._on(event)) is not None]
        except RemoteProtocolError as exc:
            if handshaking:
                raise HandshakeFailed(f"invalid handshake answer: {exc}") from None
            raise  # wsproto reports frame errors as CloseConnection, not this

    def data_to_send(self) -> bytes:
        """Bytes owed to the server (pongs, close frames), to write in order."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _on(self, event: object) -> Received | None:
        match event:
            case TextMessage(data=data, message_finished=finished):
                self._size += len(data)
                if self._size > self._max_message_size:
                    reason = f"message over {self._max_message_size} characters"
                    self._outgoing += self.close(CLOSE_TOO_BIG, reason)
                    return self._closed(CLOSE_TOO_BIG, reason)
                if not finished:
                    self._parts.append(data)
                    return None
                text = "".join([*self._parts, data]) if self._parts else data
                self._parts.clear()
                self._size = 0
                return text
            case Ping():
                self._outgoing += self._ws.send(event.response())
                return None
            case CloseConnection(code=code, reason=reason):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._outgoing += self._ws.send(event.response())
                elif self._ws.state is ConnectionState.OPEN:
                    # wsproto found a bad frame and reports it as a close of its own.
                    self._outgoing += self._ws.send(CloseConnection(code=code))
                return self._closed(code, reason or "")
            case AcceptConnection():
                return Accepted()
            case RejectConnection(status_code=status):
                return Refused(status)
        return None  # binary messages (the server sends none), pongs, a refusal's body

    def _closed(self, code: int, reason: str) -> Closed:
        self.closed = Closed(code, reason)
        return self.closed


# ------------------------------------------------------------------------- I/O


class WebSocket:
    """An open client WebSocket on an AnyIO byte stream. Make one with
    :func:`open_websocket`.

    One task receives; any number may send (frames are written whole, one at a
    time).
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, protocol: ClientProtocol, received: list[str]
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._messages: deque[str] = deque(received)
        self._send_lock = anyio.Lock()

    async def send(self, text: str) -> None:
        """Send one text message.

        Raises:
            ConnectionClosed: the connection is closed, or broke while sending.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        async with self._send_lock:
            await self._write(self._protocol.text(text))

    async def receive(self) -> str:
        """The next text message from the server (one task at a time).

        Raises:
            ConnectionClosed: the connection ended (the messages that came
                before its close are received first).
        """
        while not self._messages:
            closed = self._protocol.closed
            if closed is not None:
                raise ConnectionClosed(closed.code, closed.reason)
            try:
                data: bytes | None = await self._stream.receive(RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                data = None
            except OSError:  # a TLS error AnyIO passes on as it is
                data = None
            for item in self._protocol.receive_data(data):
                if isinstance(item, str):
                    self._messages.append(item)
            if reply := self._protocol.data_to_send():
                # Pongs and close replies are best effort: a broken stream shows
                # up on the next read.
                async with self._send_lock:
                    with suppress(ConnectionClosed):
                        await self._write(reply)
        return self._messages.popleft()

    async def aclose(self) -> None:
        """Close politely: send a close frame and wait up to :data:`CLOSE_TIMEOUT`
        seconds for the server's, then close the stream. Runs to the end even
        when cancelled; no other task may be receiving meanwhile."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CLOSE_TIMEOUT):
                try:
                    async with self._send_lock:
                        await self._write(self._protocol.close())
                    while True:  # what the server sent before its close is dropped
                        await self.receive()
                except ConnectionClosed:
                    pass
            await anyio.aclose_forcefully(self._stream)

    async def _write(self, data: bytes) -> None:
        """Write ``data``, holding the send lock."""
        if not data:
            return
        try:
            await self._stream.send(data)
        except BaseException as exc:
            # Some of the frame may have been written (cancelled mid-write): the
            # stream cannot carry another frame, so it is closed.
            self._protocol.closed = self._protocol.closed or Closed(CLOSE_ABNORMAL, repr(exc))
            await anyio.aclose_forcefully(self._stream)
            if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError | OSError):
                raise ConnectionClosed(CLOSE_ABNORMAL, f"write failed: {exc!r}") from None
            raise


@asynccontextmanager
async def open_websocket(
    endpoint: Endpoint,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    max_message_size: int,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocket]:
    """A WebSocket connection to ``endpoint`` for the duration of the block,
    closed politely (:meth:`WebSocket.aclose`) at its end.

    Args:
        headers: Extra request headers (``X-API-Key``).
        max_message_size: The largest message accepted from the server.
        ssl_context: For ``wss://`` (default: :func:`ssl.create_default_context`,
            the system's CAs).

    Raises:
        HandshakeFailed: no connection within :data:`CONNECT_TIMEOUT` seconds:
            unreachable, TLS failed, or the upgrade was refused (``status``).
    """
    ws = await _connect(endpoint, headers, max_message_size, ssl_context)
    try:
        yield ws
    finally:
        await ws.aclose()


async def _connect(
    endpoint: Endpoint,
    headers: Sequence[tuple[bytes, bytes]],
    max_message_size: int,
    ssl_context: ssl.SSLContext | None,
) -> WebSocket:
    protocol = ClientProtocol(max_message_size=max_message_size)
    try:
        with anyio.fail_after(CONNECT_TIMEOUT):
            stream: anyio.abc.ByteStream
            if endpoint.tls:
                stream = await anyio.connect_tcp(
                    endpoint.host,
                    endpoint.port,
                    ssl_context=ssl_context or ssl.create_default_context(),
                    # The WebSocket close handshake, not TLS close_notify, marks the end.
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(endpoint.host, endpoint.port)
            try:
                await stream.send(protocol.request(endpoint.authority, endpoint.target, headers))
                while True:
                    try:
                        data: bytes | None = await stream.receive(RECEIVE_SIZE)
                    except anyio.EndOfStream:
                        data = None
                    items = protocol.receive_data(data)
                    for index, item in enumerate(items):
                        if isinstance(item, Accepted):
                            rest = [m for m in items[index + 1 :] if isinstance(m, str)]
                            return WebSocket(stream, protocol, rest)
                        if isinstance(item, Refused):
                            raise HandshakeFailed(
                                f"handshake refused with HTTP {item.status}", item.status
                            )
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
    except TimeoutError:
        raise HandshakeFailed(f"no connection within {CONNECT_TIMEOUT:g} s") from None
    except OSError as exc:
        raise HandshakeFailed(_describe(exc)) from None
    except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        # TLS: the server hung up during the TLS handshake.
        raise HandshakeFailed(_describe(exc) if str(exc) else "the connection was closed") from None


def _describe(exc: BaseException) -> str:
    """What went wrong, with the cause AnyIO puts behind "All connection attempts
    failed" (each address it tried)."""
    text = str(exc) or repr(exc)
    cause = exc.__cause__
    if cause is None:
        return text
    if isinstance(cause, BaseExceptionGroup):
        return f"{text}: " + "; ".join(str(e) or repr(e) for e in cause.exceptions)
    return f"{text}: {str(cause) or repr(cause)}"
