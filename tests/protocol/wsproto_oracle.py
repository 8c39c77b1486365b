"""The reference for the differential test of :class:`pubsub._protocol.websocket.MessageReader`:
the same rules applied on top of wsproto's own frame parser (what the server used
before it parsed frames itself)."""

from __future__ import annotations

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from pubsub._protocol.errors import BadRequest, MessageTooLarge
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
