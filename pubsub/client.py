"""A Python client for trio-pubsub, on trio-websocket.

Example::

    async with open_client("ws://127.0.0.1:3000/ws", client_id="me") as client:
        ack = await client.publish("orders", {"amount": 99.99})
        async with client.subscribe("orders", last_n=10) as sub:
            async for item in sub:
                match item:
                    case Event():
                        print(item.offset, item.payload)
                    case Gap():
                        print("missed messages", item)

One connection carries every subscription and request. When it drops, the
client reconnects with exponential backoff and jitter, resubscribes, and
resumes each subscription from the last offset it saw (``since_offset`` +
``epoch``). Whatever could not be recovered is reported as a :class:`Gap`
before the next event, so the application always knows when it missed
messages. Every buffer is bounded: an application that reads slowly slows the
connection down (and the server's backpressure policy applies) instead of
growing memory.

Because the buffers are shared by one connection, a subscription whose buffer
is full holds up every answer on that connection: do not ``await`` a request
(``publish``, ``ping``) from inside an ``async for`` over a subscription of the
same client unless its ``buffer`` is large enough for the burst; use a second
client for that instead.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ._protocol.errors import ErrorCode, PubSubError, error_for
from ._protocol.frames import (
    Ack,
    AnyServerFrame,
    Info,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Unsubscribe,
    decode_server_frame,
    encode,
)
from ._protocol.frames import Error as ErrorFrame
from ._protocol.frames import Event as EventFrame
from ._protocol.frames import Message as WireMessage

__all__ = [
    "Client",
    "ConnectionLost",
    "Event",
    "Gap",
    "PublishAck",
    "ServerUnreachable",
    "Subscription",
    "open_client",
]

log = logging.getLogger("pubsub.client")

#: Largest frame the client accepts from the server (events may exceed the
#: server's own MAX_MESSAGE_SIZE by their envelope).
MAX_FRAME: Final = 64 * 1024 * 1024


class ConnectionLost(ConnectionError):
    """The connection dropped while a request was in flight; it may or may not have
    been carried out."""


class ServerUnreachable(ConnectionError):
    """The first connection to the server could not be made."""


class Event(msgspec.Struct, frozen=True):
    """A message delivered on a subscription."""

    topic: str
    id: str
    offset: int
    ts: str
    #: The payload exactly as the publisher sent it (JSON bytes).
    raw_payload: bytes

    @property
    def payload(self) -> Any:
        """The payload decoded from JSON."""
        return msgspec.json.decode(self.raw_payload)


class Gap(msgspec.Struct, frozen=True):
    """Messages were missed on a subscription.

    Attributes:
        after_offset: The last offset received before the gap.
        reason: ``"dropped"`` (the server dropped events for this slow
            connection: the next event's offset jumped) or ``"not_recovered"``
            (after a reconnect the server could not replay what was missed:
            restarted, topic re-created, or the messages left its replay ring).
        missed: How many messages were missed, when known.
    """

    topic: str
    after_offset: int
    reason: Literal["dropped", "not_recovered"]
    missed: int | None = None


class PublishAck(msgspec.Struct, frozen=True):
    topic: str
    id: str
    offset: int


class Subscription:
    """Events of one topic, in order. Iterate it with ``async for``.

    Iteration ends when the subscription is closed; it raises
    :class:`~pubsub.PubSubError` (``TOPIC_NOT_FOUND``) if the topic is deleted.
    """

    def __init__(self, topic: str, buffer: int) -> None:
        self.topic = topic
        #: Offset of the newest event received (or of the topic when subscribed).
        self.offset = 0
        #: The topic incarnation this subscription follows.
        self.epoch: str | None = None
        self._replayed = 0
        self._error: Exception | None = None
        self._send, self._receive = trio.open_memory_channel[Event | Gap | object](buffer)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Gap:
        try:
            item = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        if isinstance(item, PubSubError):
            raise item
        assert isinstance(item, Event | Gap)
        return item

    def _end(self, error: Exception) -> None:
        """No more events will come: iteration raises ``error`` once the buffer is read."""
        self._error = error
        self._send.close()

    async def _put(self, item: Event | Gap | object) -> None:
        # Closed: the application left this subscription's block.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._send.send(item)

    async def _deliver(self, frame: EventFrame) -> None:
        offset = frame.offset
        if offset <= self.offset:
            # A ``last_n`` replay of messages from before the subscribe.
            if offset <= self._replayed:
                return  # already seen (cannot happen with a correct server)
            self._replayed = offset
        else:
            if offset > self.offset + 1:
                missed = offset - self.offset - 1
                await self._put(Gap(self.topic, self.offset, "dropped", missed))
            self.offset = offset
        message = frame.message
        await self._put(
            Event(frame.topic, message.id, frame.offset, frame.ts, bytes(message.payload))
        )


class _Pending:
    __slots__ = ("done", "error", "frame", "resume", "subscription")

    def __init__(self, subscription: Subscription | None = None, resume: bool = False) -> None:
        self.done = trio.Event()
        self.frame: AnyServerFrame | None = None
        self.error: BaseException | None = None
        #: For a subscribe: whose ack this is, applied by the reader before the
        #: replayed events that follow it are routed.
        self.subscription = subscription
        self.resume = resume


class _Reading:
    """One connection's reader task, with what its starter waits for."""

    def __init__(
        self, read: Callable[[WebSocketConnection], Awaitable[None]], ws: WebSocketConnection
    ) -> None:
        self._read = read
        self._ws = ws
        #: Set by the welcome frame, or when the connection ended without one.
        self.welcomed = trio.Event()
        self.done = trio.Event()

    async def run(self) -> None:
        try:
            await self._read(self._ws)
        finally:
            self.welcomed.set()
            self.done.set()


class Client:
    """A connection to a trio-pubsub server. Create it with :func:`open_client`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        client_id: str,
        api_key: str | None,
        reconnect: bool,
        backoff_initial: float,
        backoff_max: float,
        buffer: int,
    ) -> None:
        if not urls:
            raise ValueError("open_client needs at least one URL")
        #: Every endpoint; the client moves to the next one when it reconnects.
        self.urls = tuple(urls)
        self._url_index = 0
        self.client_id = client_id
        self.connection_id: str | None = None
        #: The node serving the connection (a cluster names each node).
        self.node_id: str | None = None
        self._headers = [(b"X-API-Key", api_key.encode())] if api_key else []
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._buffer = buffer
        self._ws: WebSocketConnection | None = None
        self._connected = trio.Event()
        self._closed = False
        self._subscriptions: dict[str, Subscription] = {}
        self._pending: dict[str, _Pending] = {}
        self._request_ids = itertools.count(1)
        self._welcomed = trio.Event()
        #: Times the client has reconnected after losing its connection.
        self.reconnects = 0
        self._attempt = 0

    @property
    def url(self) -> str:
        """The endpoint in use (or tried next)."""
        return self.urls[self._url_index]

    # ------------------------------------------------------------------ requests

    async def publish(self, topic: str, payload: Any, *, id: str | None = None) -> PublishAck:
        """Publish ``payload`` (anything msgspec can encode as JSON, or ``msgspec.Raw``).

        Returns the ack with the offset the message got.

        Raises:
            PubSubError: ``TopicNotFound``, ``BadRequest``, ``MessageTooLarge``, ...
            ConnectionLost: the connection dropped before the ack arrived.
        """
        raw = payload if isinstance(payload, msgspec.Raw) else msgspec.Raw(encode(payload))
        message_id = id or uuid.uuid4().hex
        request_id = self._next_id()
        frame = Publish(
            topic=topic,
            message=WireMessage(message_id, raw),
            client_id=self.client_id,
            request_id=request_id,
        )
        ack = await self._request(request_id, frame)
        assert isinstance(ack, Ack) and ack.offset is not None
        return PublishAck(topic, message_id, ack.offset)

    async def ping(self) -> float:
        """Round-trip time to the server in seconds."""
        request_id = self._next_id()
        start = time.perf_counter()
        await self._request(request_id, Ping(request_id=request_id))
        return time.perf_counter() - start

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, last_n: int = 0, buffer: int | None = None
    ) -> AsyncIterator[Subscription]:
        """Subscribe to ``topic`` for the duration of the block.

        ``last_n`` replays up to that many stored messages first. ``buffer``
        bounds the events held for this subscription before the connection
        stops being read.

        Raises:
            PubSubError: ``TopicNotFound`` and other refusals of the subscribe.
            ValueError: this client is already subscribed to ``topic``.
        """
        if topic in self._subscriptions:
            raise ValueError(f"already subscribed to {topic!r} on this client")
        subscription = Subscription(topic, buffer or self._buffer)
        self._subscriptions[topic] = subscription
        subscribed = False
        try:
            await self._send_subscribe(subscription, last_n=last_n)
            subscribed = True
            yield subscription
        finally:
            del self._subscriptions[topic]
            subscription._send.close()
            subscription._receive.close()
            if subscribed and self._ws is not None and not self._closed:
                with trio.move_on_after(5):
                    try:
                        request_id = self._next_id()
                        await self._request(
                            request_id,
                            Unsubscribe(
                                topic=topic, client_id=self.client_id, request_id=request_id
                            ),
                        )
                    except (PubSubError, ConnectionLost):
                        pass

    async def _send_subscribe(
        self,
        subscription: Subscription,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
    ) -> Ack:
        request_id = self._next_id()
        frame = Subscribe(
            topic=subscription.topic,
            client_id=self.client_id,
            last_n=last_n,
            request_id=request_id,
            since_offset=since_offset,
            epoch=epoch,
        )
        pending = _Pending(subscription, resume=since_offset is not None)
        ack = await self._request(request_id, frame, pending)
        assert isinstance(ack, Ack)
        return ack

    def _next_id(self) -> str:
        return f"r{next(self._request_ids)}"

    async def _request(
        self, request_id: str, frame: Any, pending: _Pending | None = None
    ) -> AnyServerFrame:
        pending = pending or _Pending()
        self._pending[request_id] = pending
        try:
            ws = await self._connection()
            try:
                await ws.send_message(encode(frame).decode())
            except ConnectionClosed:
                raise ConnectionLost("connection lost before the request was sent") from None
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        assert pending.frame is not None
        return pending.frame

    async def _connection(self) -> WebSocketConnection:
        while self._ws is None:
            if self._closed:
                raise ConnectionLost("the client is closed")
            await self._connected.wait()
        return self._ws

    # -------------------------------------------------------------- connection

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        """Connect; on loss, reconnect with backoff and resubscribe (forever).

        The first connection tries each URL in turn; every reconnect moves on to
        the next URL, so a client of a node that died resumes on another.
        """
        first = True
        unreachable: list[str] = []
        while True:
            try:
                async with (
                    open_websocket_url(
                        self.url, extra_headers=self._headers, max_message_size=MAX_FRAME
                    ) as ws,
                    trio.open_nursery() as nursery,
                ):
                    self._ws = ws
                    self._connected.set()
                    read = _Reading(self._read, ws)
                    self._welcomed = read.welcomed
                    nursery.start_soon(read.run)
                    # The welcome frame names the connection and the node first.
                    await read.welcomed.wait()
                    if first:
                        first = False
                        task_status.started()
                    else:
                        self.reconnects += 1
                        nursery.start_soon(self._resubscribe_all)
                    await read.done.wait()
                    nursery.cancel_scope.cancel()
            except ConnectionRejected as exc:
                error: Exception
                if exc.status_code == 401:
                    error = error_for(ErrorCode.UNAUTHORIZED, "the server refused the API key")
                    if first:
                        raise error from None
                else:
                    error = ServerUnreachable(f"handshake refused with HTTP {exc.status_code}")
                    if first:
                        self._first_attempt_failed(unreachable, str(error))
                        continue
                log.warning("reconnect to %s refused: %s", self.url, error)
            except (OSError, HandshakeError, ConnectionClosed) as exc:
                if first:
                    # trio-websocket's HandshakeError says nothing; its cause says why.
                    reason = str(exc) or str(exc.__cause__ or exc.__context__ or repr(exc))
                    self._first_attempt_failed(unreachable, reason)
                    continue
                log.info("connection to %s lost: %r", self.url, exc)
            finally:
                self._on_disconnect()
            if self._closed or not self._reconnect:
                self._give_up()
                return
            self._url_index = (self._url_index + 1) % len(self.urls)
            # Reset only by a welcome frame: a server that accepts and then closes
            # at once (MAX_CONNECTIONS, 1013) must not cause a reconnect storm.
            self._attempt += 1
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (self._attempt - 1))
            await trio.sleep(delay * random.uniform(0.5, 1.0))

    def _first_attempt_failed(self, failures: list[str], reason: str) -> None:
        """The first connection to the current URL failed: move on to the next one,
        or raise ``ServerUnreachable`` once every URL failed."""
        failures.append(f"{self.url}: {reason}")
        if len(failures) == len(self.urls):
            raise ServerUnreachable("cannot connect to " + "; ".join(failures)) from None
        self._url_index = (self._url_index + 1) % len(self.urls)

    def _give_up(self) -> None:
        """Not reconnecting: waiting requests and subscriptions end with ConnectionLost."""
        self._closed = True
        self._connected.set()  # wakes requests waiting for a connection; they see _closed
        for subscription in self._subscriptions.values():
            subscription._end(ConnectionLost("the connection to the server was lost"))

    def _on_disconnect(self) -> None:
        self._ws = None
        self.connection_id = None
        if self._connected.is_set():
            self._connected = trio.Event()
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = ConnectionLost("connection lost before the answer arrived")
                pending.done.set()

    async def _resubscribe_all(self) -> None:
        """After a reconnect: subscribe again, resuming from the last offset seen."""
        for subscription in list(self._subscriptions.values()):
            resume = subscription.epoch is not None
            try:
                await self._send_subscribe(
                    subscription,
                    since_offset=subscription.offset if resume else None,
                    epoch=subscription.epoch,
                )
            except PubSubError as exc:
                await subscription._put(exc)
            except ConnectionLost:
                return

    async def _apply_subscribe_ack(self, pending: _Pending, ack: Ack) -> None:
        subscription = pending.subscription
        assert subscription is not None
        offset = ack.offset or 0
        if pending.resume and not ack.recovered:
            missed = None
            if ack.epoch == subscription.epoch and offset >= subscription.offset:
                missed = offset - subscription.offset
            await subscription._put(
                Gap(subscription.topic, subscription.offset, "not_recovered", missed)
            )
            subscription.offset = offset
        elif not pending.resume:
            subscription.offset = offset
        subscription.epoch = ack.epoch

    async def _read(self, ws: WebSocketConnection) -> None:
        """Route every server frame: answers to their requests, events to subscriptions."""
        while True:
            try:
                data = await ws.get_message()
            except ConnectionClosed:
                return
            try:
                frame = decode_server_frame(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("ignoring a frame the client cannot read: %.200r", data)
                continue
            match frame:
                case EventFrame():
                    subscription = self._subscriptions.get(frame.topic)
                    if subscription is not None:
                        await subscription._deliver(frame)
                case Ack():
                    pending = self._pending.get(str(frame.request_id))
                    if pending is not None and pending.subscription is not None:
                        await self._apply_subscribe_ack(pending, frame)
                    self._answer(frame.request_id, frame)
                case Pong():
                    self._answer(frame.request_id, frame)
                case ErrorFrame():
                    error = error_for(
                        frame.error.code,
                        frame.error.message,
                        frame.request_id,
                        retry_after_ms=frame.error.retry_after_ms,
                    )
                    if not self._answer(frame.request_id, frame, error):
                        log.warning("server error: %s", error)
                case Info(msg="connected"):
                    self.connection_id = frame.connection_id
                    self.node_id = frame.node_id
                    self._attempt = 0
                    self._welcomed.set()
                case Info(msg="topic_deleted", topic=str(topic)):
                    subscription = self._subscriptions.get(topic)
                    if subscription is not None:
                        await subscription._put(
                            error_for(ErrorCode.TOPIC_NOT_FOUND, f"topic {topic!r} was deleted")
                        )
                case Info():
                    pass  # ping, messages_dropped (gaps show in offsets), shutting_down

    def _answer(
        self,
        request_id: str | int | None,
        frame: AnyServerFrame,
        error: BaseException | None = None,
    ) -> bool:
        pending = self._pending.get(str(request_id)) if request_id is not None else None
        if pending is None:
            return False
        pending.frame = frame
        pending.error = error
        pending.done.set()
        return True


@asynccontextmanager
async def open_client(
    url: str | Sequence[str],
    *,
    client_id: str | None = None,
    api_key: str | None = None,
    reconnect: bool = True,
    backoff_initial: float = 0.1,
    backoff_max: float = 10.0,
    buffer: int = 1000,
) -> AsyncIterator[Client]:
    """Connect to a trio-pubsub server for the duration of the block.

    Args:
        url: The WebSocket endpoint, e.g. ``ws://127.0.0.1:3000/ws``, or several
            (the nodes of a cluster): the first reachable one is used, and each
            reconnect moves on to the next, resuming every subscription there.
        client_id: Label shown in the server's stats and logs (default: random).
        api_key: Sent as ``X-API-Key`` when the server requires one.
        reconnect: Reconnect (and resume subscriptions) when the connection drops.
        backoff_initial, backoff_max: Reconnect delays in seconds, doubled per
            failed attempt up to the maximum, each scaled by a random 0.5-1.0.
        buffer: Events held per subscription before the connection stops being read.

    Raises:
        ServerUnreachable: the first connection could not be made.
        PubSubError: ``Unauthorized`` when the API key is refused.
    """
    client = Client(
        (url,) if isinstance(url, str) else tuple(url),
        client_id=client_id or f"py-{uuid.uuid4().hex[:8]}",
        api_key=api_key,
        reconnect=reconnect,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        buffer=buffer,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                client._closed = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
