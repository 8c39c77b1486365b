"""A Python client for trio-pubsub, on AnyIO: the same client under Trio
(``trio.run``) and asyncio (``asyncio.run``), plus a blocking one for scripts.

Example::

    async with open_client("ws://127.0.0.1:3000", client_id="me") as client:
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

URLs: ``ws://`` or ``http://`` (plain TCP), ``wss://`` or ``https://`` (TLS,
checked against the system's CAs unless ``ssl_context`` says otherwise). A URL
without a path means the broker's ``/ws`` endpoint, so ``ws://host:3000``,
``http://host:3000`` and ``ws://host:3000/ws`` are the same; another path is
kept as given. The WebSocket is wsproto over :func:`anyio.connect_tcp`
(``pubsub._client_ws``).

Scripts that have no event loop use :func:`connect_sync`: a
:class:`SyncClient` runs the client on an event loop in a background thread
(its docstring has the threading model)::

    with connect_sync("http://127.0.0.1:3000") as client:
        client.publish("orders.eu", {"amount": 99.99})
        with client.subscribe("orders.*", timeout=5) as sub:
            for item in sub:  # ends after 5 s without an event
                print(item)

Requests may be cancelled (a timeout around ``publish``, say): one cancelled
while its frame was being written drops the connection rather than leave half
a frame on it, and the client reconnects as after any loss.

Because the buffers are shared by one connection, a subscription whose buffer
is full holds up every answer on that connection: do not ``await`` a request
(``publish``, ``ping``) from inside an ``async for`` over a subscription of the
same client unless its ``buffer`` is large enough for the burst; use a second
client for that instead.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Final, Literal

import anyio
import anyio.abc
import msgspec
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._client_ws import (
    CLOSE_ABNORMAL,
    ConnectionClosed,
    Endpoint,
    HandshakeFailed,
    WebSocket,
    open_websocket,
    parse_url,
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
    "SyncClient",
    "SyncSubscription",
    "connect_sync",
    "open_client",
]

log = logging.getLogger("pubsub.client")

#: Largest frame the client accepts from the server (events may exceed the
#: server's own MAX_MESSAGE_SIZE by their envelope).
MAX_FRAME: Final = 64 * 1024 * 1024
#: Seconds a subscription's block waits, on leaving, for its unsubscribe's ack.
UNSUBSCRIBE_TIMEOUT: Final = 5.0


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
        self._send, self._receive = anyio.create_memory_object_stream[Event | Gap | PubSubError](
            buffer
        )

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Gap:
        try:
            item = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._ending() from None
        if isinstance(item, PubSubError):
            raise item
        return item

    def _next_nowait(self) -> Event | Gap:
        """The next item if one is buffered, else ``anyio.WouldBlock``; ends as
        ``__anext__`` does."""
        try:
            item = self._receive.receive_nowait()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._ending() from None
        if isinstance(item, PubSubError):
            raise item
        return item

    def _ending(self) -> Exception:
        """What iteration raises once nothing more will come."""
        return self._error if self._error is not None else StopAsyncIteration()

    def _close(self) -> None:
        """The application left the subscription's block: nothing more is kept."""
        self._send.close()
        self._receive.close()

    def _end(self, error: Exception) -> None:
        """No more events will come: iteration raises ``error`` once the buffer is read."""
        self._error = error
        self._send.close()

    async def _put(self, item: Event | Gap | PubSubError) -> None:
        # Closed: the application left this subscription's block.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
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
        self.done = anyio.Event()
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

    def __init__(self, read: Callable[[WebSocket], Awaitable[None]], ws: WebSocket) -> None:
        self._read = read
        self._ws = ws
        #: Set by the welcome frame, or when the connection ended without one.
        self.welcomed = anyio.Event()
        self.done = anyio.Event()
        #: How the connection ended.
        self.closed: ConnectionClosed | None = None

    async def run(self) -> None:
        try:
            await self._read(self._ws)
        except ConnectionClosed as exc:
            self.closed = exc
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
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not urls:
            raise ValueError("open_client needs at least one URL")
        self._endpoints: tuple[Endpoint, ...] = tuple(parse_url(url) for url in urls)
        #: Every endpoint, in normal form (``ws://host:port/ws``); the client moves
        #: to the next one when it reconnects.
        self.urls = tuple(endpoint.url for endpoint in self._endpoints)
        if ssl_context is None and any(endpoint.tls for endpoint in self._endpoints):
            ssl_context = ssl.create_default_context()
        self._ssl_context = ssl_context
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
        self._ws: WebSocket | None = None
        self._connected = anyio.Event()
        self._closed = False
        #: Every subscription by its topic or pattern, in subscribe order.
        self._subscriptions: dict[str, Subscription] = {}
        #: The pattern subscriptions among them, matched against each event's topic.
        self._patterns: dict[str, Subscription] = {}
        #: This connection's ``messages_expired`` not yet matched to offset jumps.
        self._expired = _ExpiredCredit()
        self._pending: dict[str, _Pending] = {}
        self._request_ids = itertools.count(1)
        self._welcomed = anyio.Event()
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
            subscription._close()
            if subscribed and self._ws is not None and not self._closed:
                with anyio.move_on_after(UNSUBSCRIBE_TIMEOUT):
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
                await ws.send(encode(frame).decode())
            except ConnectionClosed:
                raise ConnectionLost("connection lost before the request was sent") from None
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        assert pending.frame is not None
        return pending.frame

    async def _connection(self) -> WebSocket:
        while self._ws is None:
            if self._closed:
                raise ConnectionLost("the client is closed")
            await self._connected.wait()
        return self._ws

    # -------------------------------------------------------------- connection

    async def _run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect; on loss, reconnect with backoff and resubscribe (forever).

        The first connection tries each URL in turn; every reconnect moves on to
        the next URL, so a client of a node that died resumes on another.
        """
        first = True
        unreachable: list[str] = []
        while True:
            welcomed = False
            try:
                async with (
                    open_websocket(
                        self._endpoints[self._url_index],
                        headers=self._headers,
                        max_message_size=MAX_FRAME,
                        ssl_context=self._ssl_context,
                    ) as ws,
                    anyio.create_task_group() as tasks,
                ):
                    self._ws = ws
                    self._connected.set()
                    read = _Reading(self._read, ws)
                    self._welcomed = read.welcomed
                    tasks.start_soon(read.run)
                    # The welcome frame names the connection and the node first.
                    await read.welcomed.wait()
                    welcomed = self.connection_id is not None
                    if welcomed:
                        if first:
                            first = False
                            task_status.started()
                        else:
                            self.reconnects += 1
                            tasks.start_soon(self._resubscribe_all)
                        await read.done.wait()
                    tasks.cancel_scope.cancel()
                if not welcomed:
                    # Closed before the welcome frame: at MAX_CONNECTIONS, say (1013).
                    raise read.closed or ConnectionClosed(CLOSE_ABNORMAL, "no welcome frame")
                log.info("connection to %s lost: %s", self.url, read.closed)
            except HandshakeFailed as exc:
                error: Exception = ServerUnreachable(str(exc))
                if exc.status == 401:
                    error = error_for(ErrorCode.UNAUTHORIZED, "the server refused the API key")
                    if first:
                        raise error from None
                elif first:
                    self._first_attempt_failed(unreachable, str(exc))
                    continue
                log.warning("reconnect to %s failed: %s", self.url, error)
            except ConnectionClosed as exc:
                if first:
                    reason = f"closed before the welcome frame: {exc}"
                    self._first_attempt_failed(unreachable, reason)
                    continue
                log.warning("connection to %s closed before the welcome frame: %s", self.url, exc)
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
            await anyio.sleep(delay * random.uniform(0.5, 1.0))

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
            self._connected = anyio.Event()
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

    async def _read(self, ws: WebSocket) -> None:
        """Route every server frame, answers to their requests and events to
        subscriptions, until the connection ends (``ConnectionClosed``)."""
        while True:
            data = await ws.receive()
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
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Connect to a trio-pubsub server for the duration of the block (under Trio
    or asyncio).

    Args:
        url: The server, e.g. ``ws://127.0.0.1:3000`` (``http://``, ``https://``
            and ``wss://`` too; no path means ``/ws``), or several (the nodes of
            a cluster): the first reachable one is used, and each reconnect
            moves on to the next, resuming every subscription there.
        client_id: Label shown in the server's stats and logs (default: random).
        api_key: Sent as ``X-API-Key`` when the server requires one.
        reconnect: Reconnect (and resume subscriptions) when the connection drops.
        backoff_initial, backoff_max: Reconnect delays in seconds, doubled per
            failed attempt up to the maximum, each scaled by a random 0.5-1.0.
        buffer: Events held per subscription before the connection stops being read.
        ssl_context: Checks the server's certificate for ``wss://`` URLs
            (default: :func:`ssl.create_default_context`, the system's CAs).

    Raises:
        ValueError: a URL is not ws(s):// or http(s)://.
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
        ssl_context=ssl_context,
    )
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(client._run)
            try:
                yield client
            finally:
                client._closed = True
                tasks.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One error (ours, or the application's from the block) is raised as itself.
        error = _single(group)
        if error is group:
            raise
        raise error from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside ``group`` (and inside nested groups of one), or
    ``group`` itself when it holds several."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


# ------------------------------------------------------------ blocking client


class _Closed:
    """What :meth:`SyncSubscription._next` gives for a closed subscription."""


_CLOSED: Final = _Closed()


class SyncSubscription:
    """A subscription of a :class:`SyncClient`. Iterate it, or call :meth:`get`;
    close it (or leave its ``with`` block) to unsubscribe.

    Iteration ends once no item arrived for ``timeout`` seconds (``None``:
    it waits for ever), as ``consumer_timeout_ms`` ends a kafka-python
    consumer's; like :class:`Subscription` it raises ``TopicNotFound`` if the
    topic is deleted and ``ConnectionLost`` if the connection is lost for good.

    Attributes:
        topic: The topic, or the pattern, subscribed to.
        pattern: Whether :attr:`topic` is a wildcard pattern.
        filter: The content filter sent with the subscribe, if any.
        timeout: Seconds without an item after which iteration ends (``None``: never).
    """

    def __init__(
        self,
        portal: BlockingPortal,
        scope: contextlib.AbstractContextManager[Subscription],
        subscription: Subscription,
        timeout: float | None,
        on_close: Callable[[SyncSubscription], None],
    ) -> None:
        self._portal = portal
        self._scope: contextlib.AbstractContextManager[Subscription] | None = scope
        self._subscription = subscription
        self._on_close = on_close
        self.topic = subscription.topic
        self.pattern = subscription.pattern
        self.filter = subscription.filter
        self.timeout = timeout

    def get(self, timeout: float | None = None) -> Event | Gap | None:
        """The next item, or ``None`` if none arrived within ``timeout`` seconds
        (``None``: wait for one).

        Raises:
            PubSubError: ``TopicNotFound``: the topic was deleted.
            ConnectionLost: the connection was lost for good.
            RuntimeError: the subscription is closed.
        """
        item = self._portal.call(self._next, timeout) if self._scope is not None else _CLOSED
        if isinstance(item, _Closed):
            raise RuntimeError(f"the subscription to {self.topic!r} is closed")
        return item

    def __iter__(self) -> Iterator[Event | Gap]:
        return self

    def __next__(self) -> Event | Gap:
        item = self._portal.call(self._next, self.timeout)
        if item is None or isinstance(item, _Closed):
            raise StopIteration
        return item

    async def _next(self, seconds: float | None) -> Event | Gap | _Closed | None:
        """The next item; ``None`` after ``seconds`` without one (0: only what
        is buffered)."""
        try:
            with contextlib.suppress(anyio.WouldBlock):
                return self._subscription._next_nowait()
            with anyio.move_on_after(seconds):
                return await self._subscription.__anext__()
        except StopAsyncIteration:
            return _CLOSED
        return None

    def close(self) -> None:
        """Unsubscribe (waiting up to ``UNSUBSCRIBE_TIMEOUT`` for the server's ack)."""
        scope, self._scope = self._scope, None
        if scope is not None:
            self._on_close(self)
            scope.__exit__(None, None, None)

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SyncClient:
    """A blocking client for scripts and threads, as redis-py users know one.
    Create it with :func:`connect_sync`; close it with :meth:`close` or a
    ``with`` block.

    Threading model: the client is a :class:`Client` running on an asyncio
    event loop in a background thread of its own (an AnyIO blocking portal),
    started by :func:`connect_sync` and stopped by :meth:`close`. Each method
    hands its call to that loop and blocks the calling thread until it is
    done; its result or exception comes back to the caller. Any number of
    threads may call methods at once: each call is a task on the loop, and all
    share the one connection. Reading the connection, reconnecting and
    resuming happen on the background thread, between calls too. Do not call
    these methods from a coroutine: they would block its event loop (use
    :func:`open_client` there). The background thread is a daemon thread: a
    script that forgets :meth:`close` still exits.
    """

    def __init__(self, stack: ExitStack, portal: BlockingPortal, client: Client) -> None:
        self._stack = stack
        self._portal = portal
        self._client = client
        self._subscriptions: list[SyncSubscription] = []

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def url(self) -> str:
        """The endpoint in use (or tried next)."""
        return self._client.url

    @property
    def node_id(self) -> str | None:
        """The node serving the connection."""
        return self._client.node_id

    def publish(
        self, topic: str, payload: Any, *, id: str | None = None, ttl_ms: int | None = None
    ) -> PublishAck:
        """Publish ``payload``; as :meth:`Client.publish` (same arguments, ack and errors)."""
        return self._portal.call(
            functools.partial(self._client.publish, topic, payload, id=id, ttl_ms=ttl_ms)
        )

    def ping(self) -> float:
        """Round-trip time to the server in seconds."""
        return self._portal.call(self._client.ping)

    def subscribe(
        self,
        topic_or_pattern: str,
        *,
        last_n: int = 0,
        filter: dict[str, Any] | None = None,
        buffer: int | None = None,
        timeout: float | None = None,
    ) -> SyncSubscription:
        """Subscribe now; as :meth:`Client.subscribe` (same arguments and errors).

        Args:
            timeout: Iterating the subscription ends after this many seconds
                without an item (``None``: iteration never ends by itself).

        Returns the subscription, open until it is closed or its ``with`` block ends.
        """
        scope = self._portal.wrap_async_context_manager(
            self._client.subscribe(topic_or_pattern, last_n=last_n, filter=filter, buffer=buffer)
        )
        subscription = scope.__enter__()
        sync = SyncSubscription(
            self._portal, scope, subscription, timeout, self._subscriptions.remove
        )
        self._subscriptions.append(sync)
        return sync

    def close(self) -> None:
        """Unsubscribe what is still subscribed, close the connection and stop the
        background thread. Closing again does nothing."""
        for subscription in list(self._subscriptions):
            subscription.close()
        self._stack.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def connect_sync(
    url: str | Sequence[str],
    *,
    client_id: str | None = None,
    api_key: str | None = None,
    reconnect: bool = True,
    backoff_initial: float = 0.1,
    backoff_max: float = 10.0,
    buffer: int = 1000,
    ssl_context: ssl.SSLContext | None = None,
) -> SyncClient:
    """Connect a blocking :class:`SyncClient` (for code without an event loop).

    The arguments are those of :func:`open_client`, and so are the errors.

    Example::

        with connect_sync("http://127.0.0.1:3000") as client:
            ack = client.publish("orders", {"amount": 99.99})
    """
    stack = ExitStack()
    try:
        portal = stack.enter_context(start_blocking_portal("asyncio"))
        client = stack.enter_context(
            portal.wrap_async_context_manager(
                open_client(
                    url,
                    client_id=client_id,
                    api_key=api_key,
                    reconnect=reconnect,
                    backoff_initial=backoff_initial,
                    backoff_max=backoff_max,
                    buffer=buffer,
                    ssl_context=ssl_context,
                )
            )
        )
    except BaseException:
        stack.close()  # stops the background thread
        raise
    return SyncClient(stack, portal, client)
