"""The broker: topic registry, sessions, request dispatch and statistics.

Framework-free: it imports trio, msgspec and this package only. Transports
open a :class:`Session` per connection, feed decoded client frames to
:meth:`Broker.handle` and drain the session's outbox; the REST layer calls
the topic-management methods and :meth:`Broker.stats`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import trio

from ._errors import CLOSE_GOING_AWAY, ErrorCode, PubSubError
from ._protocol import (
    AnyClientFrame,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Unsubscribe,
    check_topic_name,
    encode,
    now_ms,
    ts_now,
)
from ._session import CloseReason, Framer, Session
from ._settings import Settings
from ._topic import MAX_BATCH, Topic


def _unframed(data: bytes) -> bytes:
    return data


class Counters:
    """Process-wide delivery counters, shared by the broker, its topics and sessions."""

    __slots__ = (
        "connection_counter",
        "dropped",
        "enqueued",
        "published",
        "slow_consumer_disconnects",
    )

    def __init__(self) -> None:
        #: Messages accepted by topic actors.
        self.published = 0
        #: Event frames handed to subscriber outboxes (replays included).
        self.enqueued = 0
        #: Event frames removed from full outboxes by ``drop_oldest``.
        self.dropped = 0
        self.slow_consumer_disconnects = 0
        #: Connections ever opened.
        self.connection_counter = 0


class TopicStats(msgspec.Struct, frozen=True):
    messages: int
    subscribers: int
    stored: int
    dropped: int


class WebSocketStats(msgspec.Struct, frozen=True):
    total_clients: int
    connection_counter: int


class DeliveryStats(msgspec.Struct, frozen=True):
    #: Events that reached subscriber outboxes and were not dropped there.
    delivered: int
    dropped: int
    slow_consumer_disconnects: int


class Stats(msgspec.Struct, frozen=True):
    """A snapshot for ``/stats`` (the REST layer adds ``memory``)."""

    uptime_sec: int
    topics: dict[str, TopicStats]
    total_topics: int
    total_subscribers: int
    total_messages: int
    websocket: WebSocketStats
    delivery: DeliveryStats


class Broker:
    """Topic registry and dispatcher. Every topic actor runs in ``nursery``.

    Use :func:`open_broker` to get one whose lifetime is an ``async with``.

    Args:
        settings: Limits and policies.
        nursery: Where topic actors run; it must outlive the broker.
        framer: Wraps each encoded JSON frame for the wire, once per frame
            (the WebSocket transport prepends the frame header). Identity by
            default, so in-process users see plain JSON.
    """

    def __init__(
        self,
        settings: Settings,
        nursery: trio.Nursery,
        *,
        framer: Framer = _unframed,
    ) -> None:
        self.settings = settings
        self.framer = framer
        self.counters = Counters()
        self.started_at = now_ms()
        self.closed = False
        self._nursery = nursery
        self._topics: dict[str, Topic] = {}
        self._sessions: dict[Session, None] = {}
        self._no_sessions: trio.Event | None = None
        self._drop_oldest = settings.backpressure_policy == "drop_oldest"

    # ------------------------------------------------------------------ topics

    def create_topic(self, name: str) -> Topic:
        """Create a topic and start its actor.

        Raises:
            PubSubError: ``BAD_REQUEST`` (name), ``TOPIC_EXISTS``, or
                ``LIMIT_EXCEEDED`` when ``MAX_TOPICS`` topics exist.
        """
        check_topic_name(name)
        if name in self._topics:
            raise PubSubError(ErrorCode.TOPIC_EXISTS, f"topic {name!r} already exists")
        if len(self._topics) >= self.settings.max_topics:
            raise PubSubError(
                ErrorCode.LIMIT_EXCEEDED,
                f"the broker has the maximum of {self.settings.max_topics} topics",
            )
        if self.closed:
            raise PubSubError(ErrorCode.INTERNAL, "the broker is shutting down")
        topic = Topic(
            name,
            max_messages=self.settings.max_messages_per_topic,
            max_subscribers=self.settings.max_subscribers_per_topic,
            inbox_size=self.settings.topic_inbox_size,
            # A batch never fills more than half an empty outbox by itself, so a
            # subscriber that keeps up never loses events to batching.
            max_batch=min(MAX_BATCH, max(1, self.settings.max_queue_size // 2)),
            framer=self.framer,
            counters=self.counters,
        )
        self._topics[name] = topic
        self._nursery.start_soon(topic.run, name=f"topic:{name}")
        return topic

    async def delete_topic(self, name: str) -> None:
        """Delete a topic: it disappears at once; its subscribers get ``topic_deleted``
        after every message published before the delete.

        Raises:
            PubSubError: ``TOPIC_NOT_FOUND``.
        """
        topic = self.get_topic(name)
        del self._topics[name]
        await topic.delete()

    def get_topic(self, name: str) -> Topic:
        """The topic called ``name``.

        Raises:
            PubSubError: ``TOPIC_NOT_FOUND``.
        """
        try:
            return self._topics[name]
        except KeyError:
            raise PubSubError(ErrorCode.TOPIC_NOT_FOUND, f"topic {name!r} does not exist") from None

    def topics(self) -> list[Topic]:
        """Every topic, sorted by name."""
        return [self._topics[name] for name in sorted(self._topics)]

    # ---------------------------------------------------------------- sessions

    def open_session(self, connection_id: str | None = None) -> Session:
        """Register a new connection.

        Raises:
            PubSubError: ``LIMIT_EXCEEDED`` when ``MAX_CONNECTIONS`` are open.
        """
        if len(self._sessions) >= self.settings.max_connections:
            raise PubSubError(
                ErrorCode.LIMIT_EXCEEDED,
                f"the broker has the maximum of {self.settings.max_connections} connections",
            )
        session = Session(
            max_queue_size=self.settings.max_queue_size,
            drop_oldest=self._drop_oldest,
            framer=self.framer,
            counters=self.counters,
            connection_id=connection_id,
        )
        self._sessions[session] = None
        self.counters.connection_counter += 1
        return session

    def close_session(self, session: Session) -> None:
        """Forget a connection that has gone: it leaves all its topics at once, and
        requests of it still queued at topics are ignored."""
        session.close(CloseReason(CLOSE_GOING_AWAY, "connection closed"))
        for topic in session.topics.values():
            topic.detach(session)
        session.topics.clear()
        self._sessions.pop(session, None)
        if not self._sessions and self._no_sessions is not None:
            self._no_sessions.set()
            self._no_sessions = None

    async def wait_sessions_closed(self) -> None:
        """Wait until no connection is open."""
        while self._sessions:
            if self._no_sessions is None:
                self._no_sessions = trio.Event()
            await self._no_sessions.wait()
        await trio.lowlevel.checkpoint()

    def sessions(self) -> list[Session]:
        """Every open connection."""
        return list(self._sessions)

    # ---------------------------------------------------------------- requests

    async def handle(self, session: Session, frame: AnyClientFrame) -> None:
        """Carry out one decoded client frame for ``session``.

        Answers (acks, pongs, errors) go to the session's outbox; this only
        waits when the topic's inbox is full, and does not checkpoint otherwise.
        """
        session.received += 1
        if type(frame) is Ping:
            session.send(encode(Pong(request_id=frame.request_id, ts=ts_now())))
            return
        assert isinstance(frame, Publish | Subscribe | Unsubscribe)
        session.client_id = frame.client_id
        topic = self._topics.get(frame.topic)
        if topic is None or not await topic.submit(session, frame):
            session.send_error(
                ErrorCode.TOPIC_NOT_FOUND,
                f"topic {frame.topic!r} does not exist",
                frame.request_id,
            )
        elif type(frame) is Publish:
            session.published += 1

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop accepting topics and let every topic actor finish what it has queued."""
        self.closed = True
        for topic in self._topics.values():
            topic.close()

    def stats(self) -> Stats:
        """A consistent snapshot of the broker's statistics."""
        topics = {
            topic.name: TopicStats(
                messages=topic.offset,
                subscribers=len(topic.subscribers),
                stored=topic.stored,
                dropped=topic.dropped,
            )
            for topic in self.topics()
        }
        counters = self.counters
        return Stats(
            uptime_sec=self.uptime_sec(),
            topics=topics,
            total_topics=len(topics),
            total_subscribers=sum(t.subscribers for t in topics.values()),
            total_messages=sum(t.messages for t in topics.values()),
            websocket=WebSocketStats(
                total_clients=len(self._sessions),
                connection_counter=counters.connection_counter,
            ),
            delivery=DeliveryStats(
                delivered=counters.enqueued - counters.dropped,
                dropped=counters.dropped,
                slow_consumer_disconnects=counters.slow_consumer_disconnects,
            ),
        )

    def uptime_sec(self) -> int:
        return (now_ms() - self.started_at) // 1000

    def total_subscribers(self) -> int:
        return sum(len(topic.subscribers) for topic in self._topics.values())


@asynccontextmanager
async def open_broker(
    settings: Settings | None = None, *, framer: Framer = _unframed
) -> AsyncIterator[Broker]:
    """A broker whose topic actors live inside this ``async with`` block.

    On exit every topic actor carries out what it has queued, then stops.
    """
    try:
        async with trio.open_nursery() as nursery:
            broker = Broker(settings or Settings(), nursery, framer=framer)
            try:
                yield broker
            finally:
                broker.close()
    except BaseExceptionGroup as group:
        # One failure (usually the caller's own) comes out as itself, not as a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
