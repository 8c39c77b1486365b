"""The contract's WebSocket rules, sans-IO: bytes in, messages and refusals out.

wsproto parses frames; this module applies what PROTOCOL.md adds on top:
fragments are assembled into one message, a message over ``MAX_MESSAGE_SIZE``
is refused with ``MESSAGE_TOO_LARGE`` (the connection then closes with 1009
and nothing more is read from it), a binary message is refused with
``BAD_REQUEST`` (the connection stays open), pings are answered, and the close
codes the server sends are valid ones. No trio and no sockets: the transport
feeds bytes to :meth:`MessageReader.receive_data` and acts on what it returns.

Server frames are built here too: :func:`text_frame` gives the bytes of one
unmasked text frame, written as they are to every subscriber of an event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final
from urllib.parse import parse_qs, urlsplit

import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .errors import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    BadRequest,
    ErrorCode,
    MessageTooLarge,
    PubSubError,
    error_body,
)

#: An unmasked WebSocket ping frame with no payload.
PING_FRAME: Final = b"\x89\x00"
#: Close reasons are at most 123 bytes (a control frame's payload is at most 125).
MAX_CLOSE_REASON: Final = 123

#: The opcode of a text frame (RFC 6455 5.2), as :func:`iter_server_frames` gives it.
OPCODE_TEXT: Final = 0x1


def text_frame(data: bytes) -> bytes:
    """One final, unmasked WebSocket text frame carrying ``data`` (RFC 6455 5.2).

    Server-to-client frames are never masked, so these bytes can be written
    to every subscriber as they are.
    """
    length = len(data)
    if length < 126:
        return bytes((0x81, length)) + data
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + data
    return b"\x81\x7f" + length.to_bytes(8, "big") + data


def iter_server_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(opcode, payload)`` of each whole unmasked frame in ``data``, as built by
    :func:`text_frame` and :data:`PING_FRAME` (for transports that send messages,
    not bytes). A truncated last frame is an error: callers pass whole frames."""
    view = memoryview(data)
    position = 0
    while position < len(view):
        if position + 2 > len(view):
            raise ValueError("truncated WebSocket frame")
        opcode = view[position] & 0x0F
        length = view[position + 1] & 0x7F
        position += 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if position + size > len(view):
                raise ValueError("truncated WebSocket frame")
            length = int.from_bytes(view[position : position + size], "big")
            position += size
        if position + length > len(view):
            raise ValueError("truncated WebSocket frame")
        yield opcode, bytes(view[position : position + length])
        position += length


def close_reason(reason: str) -> str:
    """``reason`` cut to at most :data:`MAX_CLOSE_REASON` UTF-8 bytes (never mid-character)."""
    encoded = reason.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return reason
    return encoded[:MAX_CLOSE_REASON].decode(errors="ignore")


def sendable_close_code(code: int) -> int:
    """A close code that may be sent: 1005 (no status) and 1006 (abnormal) only
    describe what was received, so a close answering them carries 1000."""
    return CLOSE_NORMAL if code in (CLOSE_NO_STATUS, CLOSE_ABNORMAL) else code


# --------------------------------------------------------------------------
# The handshake.


class Handshake:
    """The server side of an opening handshake whose request head has been read.

    Args:
        head: The bytes read so far (the request head, maybe more).

    Attributes:
        request: The upgrade request, or None when ``head`` is not a valid one;
            :attr:`refusal` then holds the bytes of the HTTP error response.
    """

    def __init__(self, head: bytes) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.refusal = b""
        # A client may send its first frames right behind the head (without
        # waiting for the 101); wsproto's server side would drop them.
        end = head.find(b"\r\n\r\n")
        self._trailing = head[end + 4 :] if end >= 0 else b""
        if not head:  # wsproto would take b"" for the end of the stream
            body = error_body(ErrorCode.BAD_REQUEST, "empty WebSocket handshake")
            self.refusal = (
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        try:
            self._ws.receive_data(head)
            self.request = next((e for e in self._ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            self.refusal = self.reject(
                status, ErrorCode.BAD_REQUEST, f"bad WebSocket handshake: {exc}"
            )
        else:
            if self.request is None:
                self.refusal = self.reject(
                    400, ErrorCode.BAD_REQUEST, "incomplete WebSocket handshake"
                )

    def header(self, name: bytes) -> str | None:
        """A request header's value (``name`` in lower case), or None."""
        assert self.request is not None
        for key, value in self.request.extra_headers:
            if key.lower() == name:
                return bytes(value).decode("latin-1")
        return None

    def query(self, name: str) -> str | None:
        """A query parameter of the request target, or None."""
        assert self.request is not None
        values = parse_qs(urlsplit(self.request.target).query).get(name)
        return values[0] if values else None

    def reject(self, status: int, code: ErrorCode, message: str) -> bytes:
        """The bytes of an HTTP error response with the contract's JSON error body."""
        body = error_body(code, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        data = self._ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        return data + self._ws.send(RejectData(data=body, body_finished=True))

    def accept(self) -> tuple[bytes, Connection]:
        """The ``101`` response bytes and the frame-level connection that follows it
        (holding any frames that came with the head: read them with
        ``MessageReader.receive_data(b"")``).

        Only the frame-level connection is kept afterwards: the handshake's HTTP
        state is done with, and an idle connection should cost little memory.
        """
        data = self._ws.send(AcceptConnection())
        connection = self._ws.connection
        assert connection is not None
        if self._trailing:
            # Held by the connection: the reader's first ``receive_data`` returns them.
            connection.receive_data(self._trailing)
        return data, connection


# --------------------------------------------------------------------------
# Messages.


class Text(msgspec.Struct, frozen=True):
    """A whole text message within ``MAX_MESSAGE_SIZE``."""

    text: str


class Refused(msgspec.Struct, frozen=True):
    """A message the contract refuses. ``error.code.ws_close`` says whether the
    connection must close (``MESSAGE_TOO_LARGE``: 1009) or stays open."""

    error: PubSubError


class Reply(msgspec.Struct, frozen=True):
    """Bytes to send back at once (the pong answering a ping)."""

    data: bytes


class Closed(msgspec.Struct, frozen=True):
    """The peer closed (or broke the framing, which wsproto reports as a close
    with 1002 or 1007). Answer with :meth:`MessageReader.close` and stop reading."""

    code: int
    reason: str


ReaderEvent = Text | Refused | Reply | Closed


class MessageReader:
    """Whole client messages from a frame-level WebSocket connection.

    Args:
        connection: wsproto's frame-level connection (see :meth:`Handshake.accept`).
        max_message_size: The largest message in bytes (``MAX_MESSAGE_SIZE``).
    """

    __slots__ = ("_binary", "_connection", "_max_size", "_parts", "_size", "refused_too_large")

    def __init__(self, connection: Connection, max_message_size: int) -> None:
        self._connection = connection
        self._max_size = max_message_size
        self._parts: list[str] = []
        self._size = 0
        self._binary = False
        #: Set once a message was too large: the connection is closing, and
        #: every later message is ignored.
        self.refused_too_large = False

    @property
    def can_send_close(self) -> bool:
        """Whether a close frame may still be sent (we have not sent one yet)."""
        return self._connection.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)

    def receive_data(self, data: bytes) -> list[ReaderEvent]:
        """Feed bytes from the peer; returns what they complete, in order."""
        self._connection.receive_data(data)
        out: list[ReaderEvent] = []
        for event in self._connection.events():
            if isinstance(event, TextMessage | BytesMessage):
                if self.refused_too_large:
                    continue
                message = self._add(event)
                if message is not None:
                    out.append(message)
            elif isinstance(event, Ping):
                if self._connection.state is ConnectionState.OPEN:
                    out.append(Reply(self._connection.send(event.response())))
            elif isinstance(event, CloseConnection):
                out.append(Closed(event.code, event.reason or ""))
                break
        return out

    def _add(self, event: TextMessage | BytesMessage) -> Text | Refused | None:
        # wsproto hands over each frame's payload as it arrives, so the size is
        # checked before a large message is held in memory. Text data are
        # characters: at most as many as bytes, so the exact check comes at the end.
        self._size += len(event.data)
        if self._size > self._max_size:
            return self._too_large()
        if isinstance(event, BytesMessage):
            self._binary = True
        elif not self._binary:
            self._parts.append(event.data)
        if not event.message_finished:
            return None
        binary, parts = self._binary, self._parts
        self._parts, self._size, self._binary = [], 0, False
        if binary:
            return Refused(BadRequest("binary frames are not supported: send JSON in text frames"))
        text = parts[0] if len(parts) == 1 else "".join(parts)
        if len(text) * 4 > self._max_size and len(text.encode()) > self._max_size:
            return self._too_large()
        return Text(text)

    def _too_large(self) -> Refused:
        self.refused_too_large = True
        self._parts, self._size, self._binary = [], 0, False
        return Refused(
            MessageTooLarge(f"message larger than MAX_MESSAGE_SIZE ({self._max_size} bytes)")
        )

    def close(self, code: int, reason: str) -> bytes:
        """The close frame to send (``b""`` when one was already sent)."""
        if not self.can_send_close:
            return b""
        return self._connection.send(
            CloseConnection(sendable_close_code(code), close_reason(reason))
        )
