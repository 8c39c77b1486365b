"""The references for the differential tests of :mod:`pubsub._protocol.websocket`:
the same rules applied on top of wsproto's own frame parser and handshake (what the
server used before it parsed frames, and then handshakes, itself)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

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

from pubsub._protocol.errors import BadRequest, ErrorCode, MessageTooLarge, error_body
from pubsub._protocol.websocket import Closed, ReaderEvent, Refused, Reply, Text


class WsprotoReader:
    """Whole client messages as wsproto frames them (fed everything at once)."""

    def __init__(self, max_message_size: int) -> None:
        self._connection = Connection(ConnectionType.SERVER)
        self._max_size = max_message_size
        self._parts: list[str] = []
        self._size = 0
        self._binary = False
        self.refused_too_large = False

    @property
    def mid_message(self) -> bool:
        """Whether part of a message was read and its end is awaited."""
        return bool(self._parts or self._size or self._binary)

    def receive_data(self, data: bytes) -> list[ReaderEvent]:
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
            return Refused(BadRequest("binary frames are not supported"))
        text = parts[0] if len(parts) == 1 else "".join(parts)
        if len(text.encode()) > self._max_size:
            return self._too_large()
        return Text(text)

    def _too_large(self) -> Refused:
        self.refused_too_large = True
        self._parts, self._size, self._binary = [], 0, False
        return Refused(MessageTooLarge("message larger than MAX_MESSAGE_SIZE"))


class WsprotoHandshake:
    """The server's opening handshake as wsproto's ``H11Handshake`` does it: the
    former :class:`pubsub._protocol.websocket.Handshake`, unchanged."""

    def __init__(self, head: bytes) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.refusal = b""
        end = head.find(b"\r\n\r\n")
        self._trailing = head[end + 4 :] if end >= 0 else b""
        if not head:
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
        assert self.request is not None
        for key, value in self.request.extra_headers:
            if key.lower() == name:
                return bytes(value).decode("latin-1")
        return None

    def query(self, name: str) -> str | None:
        assert self.request is not None
        values = parse_qs(urlsplit(self.request.target).query).get(name)
        return values[0] if values else None

    def reject(self, status: int, code: ErrorCode, message: str) -> bytes:
        body = error_body(code, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        data = self._ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        return data + self._ws.send(RejectData(data=body, body_finished=True))

    def accept(self) -> tuple[bytes, bytes]:
        return self._ws.send(AcceptConnection()), self._trailing
