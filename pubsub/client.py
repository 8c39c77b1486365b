"""A Python client for trio-pubsub, on trio-websocket.

Example::

    async with open_client("ws://127.0.0.1:3000/ws", client_id="me") as client:
        ack = await client.publish("orders.eu", {"amount": 99.99}, ttl_ms=60_000)
        big = {"path": "payload.amount", "op": "gt", "value": 50}
        async with client.subscribe("orders.*", filter=big) as sub:
            async for item in sub:
                match item:
                    case Event():
                        print(item.topic, item.offset, item.payload)
                    case Gap():
                        print("missed messages", item)

One connection carries every subscription and request. When it drops, the
client reconnects with exponential backoff and jitter, resubscribes, and
resumes each topic subscription from the last offset it saw (``since_offset``
+ ``epoch``). Whatever could not be recovered is reported as a :class:`Gap`
before the next event, so the application always knows when it missed
messages. Every buffer is bounded: an application that reads slowly slows the
connection down (and the server's backpressure policy applies) instead of
growing memory.

Patterns and filters (v1.2). A subscription follows one topic or a pattern
(``orders.*``: ``*`` is exactly one dot-separated segment; ``metrics.>``: a
final ``>`` is one or more), and may carry a content filter. The server sends
each message once per connection however many of its subscriptions match it,
so the client routes it: every subscription of this client whose topic or
pattern matches the event's topic, and whose filter accepts the message, gets
it once. The client evaluates filters itself, with the server's own compiler,
because a message sent for one subscription reaches the client whether or not
an overlapping filtered one wants it; a bad filter therefore raises
``BadRequest`` before anything is sent. A subscription takes events only once
its subscribe was acknowledged, so one that is still subscribing never sees
events that another subscription brought in.

Gaps (the full rule is in :class:`Gap`): an unfiltered topic subscription
infers them from offset jumps, minus what the server said expired; a filtered
or pattern subscription cannot, and gets a ``Gap`` with ``missed=None`` for
every ``messages_dropped`` notice of the connection; expired messages are never
a gap.

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
from ._protocol.filters import Filter, compile_filter
from ._protocol.frames import (
    Ack,
    AnyServerFrame,
    Info,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Unsubscribe,
    check_pattern,
    decode_server_frame,
    encode,
    is_pattern,
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
    """A message delivered on a subscription.

    Attributes:
        topic: The concrete topic it was published to (also on a pattern
            subscription).
        expires_at: When the message expires (ISO timestamp), if it has a TTL.
    """

    topic: str
    id: str
    offset: int
    ts: str
    #: The payload exactly as the publisher sent it (JSON bytes).
    raw_payload: bytes
    expires_at: str | None = None

    @property
    def payload(self) -> Any:
        """The payload decoded from JSON."""
        return msgspec.json.decode(self.raw_payload)


class Gap(msgspec.Struct, frozen=True):
    """Messages were (or may have been) missed on a subscription.

    The rule, by what each subscription can know:

    * An unfiltered subscription to one topic sees every offset of it, so a
      jump from offset ``a`` to ``b`` means ``b - a - 1`` messages did not
      arrive. Expired messages (message TTL) are not missed: the server skips
      them and says so with ``messages_expired`` (N), which adds N to a credit
      of the connection. A jump is first explained by that credit (as much of
      it as the jump needs is used up) and only the rest becomes
      ``Gap(reason="dropped", missed=rest)``. A resume ack saying
      ``expired: K`` gives that subscription K of its own for the jumps of its
      replay, used before the connection's. The notice names no topic, so when
      expiries and drops on different topics coincide a drop may be taken for
      an expiry (a gap under-reported); an expiry is never reported as a drop,
      because its notice comes before the event that shows the jump.
    * A filtered subscription (its offsets skip the messages the filter
      rejects) and a pattern subscription (offsets are per topic) cannot tell
      a drop from a jump, and never infer gaps from offsets. For every
      ``messages_dropped`` notice of the connection each of them gets
      ``Gap(reason="dropped", missed=None)`` with ``after_offset`` its last
      offset (0 for a pattern). This is conservative: the notice does not say
      whose events were dropped, so a subscription may be told of a drop that
      hit another subscription of the same client.
    * Expired messages never cause a gap, on any subscription.
    * After a reconnect a topic subscription resumes from its last offset;
      when the server cannot replay what was missed the gap is
      ``"not_recovered"`` (``missed`` counted for an unfiltered subscription
      of the same topic incarnation). A pattern subscription cannot resume:
      it is subscribed again and gets ``Gap(topic=<the pattern>,
      after_offset=0, reason="not_recovered", missed=None)``, since what was
      published while the client was away is lost to it.

    Attributes:
        topic: The subscription's topic, or its pattern.
        after_offset: The last offset received before the gap (0 for a pattern).
        reason: ``"dropped"`` (the server dropped events for this slow
            connection) or ``"not_recovered"`` (after a reconnect the server
            could not replay what was missed: restarted, topic re-created, the
            messages left its replay ring, or a pattern subscription).
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


class _ExpiredCredit:
    """Messages the server said expired (``messages_expired``) that no offset
    jump has accounted for yet. One per connection, or per resumed subscription."""

    __slots__ = ("count",)

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def take(self, wanted: int) -> int:
        """Use up to ``wanted`` of the credit; returns how much was used."""
        taken = min(wanted, self.count)
        self.count -= taken
        return taken


def _matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the wildcard ``pattern``: ``*`` is exactly one
    dot-separated segment, a final ``>`` is one or more."""
    wanted = pattern.split(".")
    segments = topic.split(".")
    if wanted[-1] == ">":
        if len(segments) < len(wanted):
            return False
        wanted.pop()
        del segments[len(wanted) :]
    elif len(segments) != len(wanted):
        return False
    return all(w in ("*", s) for w, s in zip(wanted, segments, strict=True))


class Subscription:
    """Events of one topic, or of every topic matching a pattern, in order per
    topic. Iterate it with ``async for``.

    Iteration ends when the subscription is closed; it raises
    :class:`~pubsub.PubSubError` (``TOPIC_NOT_FOUND``) if its topic is deleted
    (a pattern subscription outlives the deletion of a matching topic).

    Attributes:
        topic: The topic, or the pattern, subscribed to.
        pattern: Whether :attr:`topic` is a wildcard pattern.
        filter: The content filter sent with the subscribe, if any.
    """

    def __init__(self, topic: str, buffer: int, *, filter: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self.pattern = is_pattern(topic)
        self.filter = filter
        self._filter: Filter | None = compile_filter(filter) if filter is not None else None
        #: Offset of the newest event received (or of the topic when
        #: subscribed); always 0 for a pattern.
        self.offset = 0
        #: The topic incarnation this subscription follows (None for a pattern).
        self.epoch: str | None = None
        self._replayed = 0
        #: Acknowledged on the current connection: only then are events routed here.
        self._active = False
        #: A resume's expired messages (ack ``expired``), for its replay's jumps.
        self._resume_credit = _ExpiredCredit()
        #: The topic's offset in the resume ack: the replay ends there.
        self._resume_end = 0
        #: A pattern's newest offset per topic, to skip what it already had.
        self._offsets: dict[str, int] = {}
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

    # The rules below are sans-IO: frames in, what the application gets out.

    def _wants(self, message: object) -> bool:
        """Whether the filter (if any) accepts the decoded message object."""
        return self._filter is None or self._filter.matches(message)

    def _acknowledged(self, ack: Ack, *, resumed: bool, reconnected: bool) -> list[Gap]:
        """Apply a subscribe ack (``resumed``: it answers a ``since_offset``;
        ``reconnected``: a subscribe sent again after a reconnect)."""
        self._active = True
        if self.pattern:
            return [Gap(self.topic, 0, "not_recovered")] if reconnected else []
        offset = ack.offset or 0
        gaps: list[Gap] = []
        if not resumed:
            self.offset = offset
        elif ack.recovered:
            self._resume_credit.count = ack.expired or 0
            self._resume_end = offset
        else:
            missed = None
            if self._filter is None and ack.epoch == self.epoch and offset >= self.offset:
                missed = offset - self.offset
            gaps.append(Gap(self.topic, self.offset, "not_recovered", missed))
            self.offset = offset
        self.epoch = ack.epoch
        return gaps

    def _accept(self, event: Event, credit: _ExpiredCredit) -> list[Event | Gap]:
        """What an event routed here gives the application: nothing (already
        had), the event, or a gap then the event. ``credit`` is the connection's."""
        offset = event.offset
        if self.pattern:
            if offset <= self._offsets.get(event.topic, 0):
                return []
            self._offsets[event.topic] = offset
            return [event]
        if offset <= self.offset:
            # A ``last_n`` replay of messages from before the subscribe.
            if offset <= self._replayed:
                return []  # already seen (cannot happen with a correct server)
            self._replayed = offset
            return [event]
        items: list[Event | Gap] = []
        jump = offset - self.offset - 1
        if jump and self._filter is None:
            # The resume's expired messages lie within its replay, up to its ack's offset.
            in_replay = max(0, min(offset - 1, self._resume_end) - self.offset)
            jump -= self._resume_credit.take(in_replay)
            jump -= credit.take(jump)
            if jump:
                items.append(Gap(self.topic, self.offset, "dropped", jump))
        self.offset = offset
        items.append(event)
        return items

    def _dropped(self) -> Gap | None:
        """The connection said ``messages_dropped``: the gap this subscription
        reports, if it cannot see drops in its offsets."""
        if self.pattern:
            return Gap(self.topic, 0, "dropped")
        if self._filter is not None:
            return Gap(self.topic, self.offset, "dropped")
        return None

    def _topic_deleted(self, topic: str) -> None:
        """A topic matching this pattern was deleted: a re-created one starts at 1."""
        self._offsets.pop(topic, None)

    def _disconnected(self) -> None:
        """The connection is gone; nothing is routed here until subscribed again.
        A pattern forgets its offsets: the next server may have restarted them."""
        self._active = False
        self._offsets.clear()
        self._resume_credit.count = 0


class _Pending:
    __slots__ = ("done", "error", "frame", "reconnected", "resume", "subscription")

    def __init__(
        self,
        subscription: Subscription | None = None,
        *,
        resume: bool = False,
        reconnected: bool = False,
    ) -> None:
        self.done = trio.Event()
        self.frame: AnyServerFrame | None = None
        self.error: BaseException | None = None
        #: For a subscribe: whose ack this is, applied by the reader before the
        #: replayed events that follow it are routed.
        self.subscription = subscription
        #: The subscribe carried ``since_offset``.
        self.resume = resume
        #: The subscribe was sent again after a reconnect.
        self.reconnected = reconnected


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
        #: Every subscription by its topic or pattern, in subscribe order.
        self._subscriptions: dict[str, Subscription] = {}
        #: The pattern subscriptions among them, matched against each event's topic.
        self._patterns: dict[str, Subscription] = {}
        #: This connection's ``messages_expired`` not yet matched to offset jumps.
        self._expired = _ExpiredCredit()
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

    async def publish(
        self, topic: str, payload: Any, *, id: str | None = None, ttl_ms: int | None = None
    ) -> PublishAck:
        """Publish ``payload`` (anything msgspec can encode as JSON, or ``msgspec.Raw``).

        Args:
            id: The message id (default: a random UUID).
            ttl_ms: The message expires this many milliseconds after it is
                published (replacing the topic's TTL): it is no longer replayed
                nor delivered to a subscriber that has not received it yet.

        Returns the ack with the offset the message got.

        Raises:
            ValueError: ``ttl_ms`` is below 1.
            PubSubError: ``TopicNotFound``, ``BadRequest``, ``MessageTooLarge``,
                ``RateLimited`` (its ``retry_after`` says when to try again), ...
            ConnectionLost: the connection dropped before the ack arrived.
        """
        if ttl_ms is not None and ttl_ms < 1:
            raise ValueError(f"ttl_ms must be at least 1 (milliseconds), not {ttl_ms}")
        raw = payload if isinstance(payload, msgspec.Raw) else msgspec.Raw(encode(payload))
        message_id = id or uuid.uuid4().hex
        request_id = self._next_id()
        frame = Publish(
            topic=topic,
            message=WireMessage(message_id, raw),
            client_id=self.client_id,
            request_id=request_id,
            ttl_ms=ttl_ms,
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
        self,
        topic_or_pattern: str,
        *,
        last_n: int = 0,
        filter: dict[str, Any] | None = None,
        buffer: int | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to a topic, or to a pattern, for the duration of the block.

        Args:
            topic_or_pattern: A topic name, or a pattern of dot-separated
                segments where ``*`` is exactly one segment and a final ``>``
                one or more (``orders.*``, ``metrics.eu.>``): events of every
                existing and future matching topic, each naming its topic.
            last_n: Replay up to that many stored messages first (a topic only).
            filter: A content filter (PROTOCOL.md "Content filters"): only the
                messages it accepts are delivered. Sent again on every resubscribe.
            buffer: Bounds the events held for this subscription before the
                connection stops being read.

        Raises:
            PubSubError: ``TopicNotFound``, ``BadRequest`` (a bad filter, checked
                before anything is sent) and other refusals of the subscribe.
            ValueError: this client is already subscribed to ``topic_or_pattern``,
                the pattern is malformed, or ``last_n`` is given with a pattern.
        """
        topic = topic_or_pattern
        if is_pattern(topic):
            check_pattern(topic)
            if last_n:
                raise ValueError(f"last_n cannot be used with a pattern ({topic!r})")
        if topic in self._subscriptions:
            raise ValueError(f"already subscribed to {topic!r} on this client")
        subscription = Subscription(topic, buffer or self._buffer, filter=filter)
        self._subscriptions[topic] = subscription
        if subscription.pattern:
            self._patterns[topic] = subscription
        subscribed = False
        try:
            await self._send_subscribe(subscription, last_n=last_n)
            subscribed = True
            yield subscription
        finally:
            del self._subscriptions[topic]
            self._patterns.pop(topic, None)
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
        reconnected: bool = False,
    ) -> Ack:
        request_id = self._next_id()
        frame = Subscribe(
            topic=subscription.topic,
            client_id=self.client_id,
            last_n=last_n,
            request_id=request_id,
            since_offset=since_offset,
            epoch=epoch,
            filter=subscription.filter,
        )
        pending = _Pending(subscription, resume=since_offset is not None, reconnected=reconnected)
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
        self._expired = _ExpiredCredit()
        for subscription in self._subscriptions.values():
            subscription._disconnected()
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = ConnectionLost("connection lost before the answer arrived")
                pending.done.set()

    async def _resubscribe_all(self) -> None:
        """After a reconnect: subscribe again, each topic resuming from the last
        offset seen; patterns cannot resume (their acks report the gap).

        Topics go first: the server replays nothing to a topic subscribe when the
        connection already receives that topic through a pattern, so a pattern
        subscribed first would turn every matching topic's resume into a gap.
        """
        topics_first = sorted(self._subscriptions.values(), key=lambda s: s.pattern)
        for subscription in topics_first:
            # A pattern has no epoch: it is subscribed again plainly.
            resume = subscription.epoch is not None
            try:
                await self._send_subscribe(
                    subscription,
                    since_offset=subscription.offset if resume else None,
                    epoch=subscription.epoch,
                    reconnected=True,
                )
            except PubSubError as exc:
                await subscription._put(exc)
            except ConnectionLost:
                return

    async def _apply_subscribe_ack(self, pending: _Pending, ack: Ack) -> None:
        subscription = pending.subscription
        assert subscription is not None
        gaps = subscription._acknowledged(
            ack, resumed=pending.resume, reconnected=pending.reconnected
        )
        for gap in gaps:
            await subscription._put(gap)

    async def _route(self, frame: EventFrame) -> None:
        """Hand one event to every acknowledged subscription whose topic or pattern
        matches and whose filter accepts it (the server sent it once for all)."""
        topic = frame.topic
        exact = self._subscriptions.get(topic)
        targets = [exact] if exact is not None and exact._active else []
        targets += [s for s in self._patterns.values() if s._active and _matches(s.topic, topic)]
        if not targets:
            return
        message = frame.message
        event = Event(
            topic, message.id, frame.offset, frame.ts, bytes(message.payload), frame.expires_at
        )
        decoded: object = None  # the message object filters see, decoded once if needed
        for subscription in targets:
            if subscription._filter is not None:
                if decoded is None:
                    decoded = {"id": message.id, "payload": msgspec.json.decode(message.payload)}
                if not subscription._wants(decoded):
                    continue
            for item in subscription._accept(event, self._expired):
                await subscription._put(item)

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
                    await self._route(frame)
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
                    for pattern in self._patterns.values():
                        pattern._topic_deleted(topic)
                    subscription = self._subscriptions.get(topic)
                    if subscription is not None:
                        await subscription._put(
                            error_for(ErrorCode.TOPIC_NOT_FOUND, f"topic {topic!r} was deleted")
                        )
                case Info(msg="messages_expired", expired=int(expired)):
                    self._expired.count += expired
                case Info(msg="messages_dropped"):
                    # Unfiltered topic subscriptions see the drop in their offsets.
                    for subscription in list(self._subscriptions.values()):
                        gap = subscription._dropped() if subscription._active else None
                        if gap is not None:
                            await subscription._put(gap)
                case Info():
                    pass  # ping, shutting_down

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
