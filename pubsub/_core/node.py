"""The node: this process's part of the broker.

It owns the sessions (one per connection) and a topic actor per topic in use
here, dispatches decoded client frames to them, and is the engine's
:class:`~pubsub._core.engine.Feed`: messages the engine hands over go to the
topic's actor for fan-out. What is cluster-wide (the registry, offsets,
history) it asks the engine; it never knows which engine it has.

Framework-free: it imports trio, msgspec and this package only. Transports
open a :class:`Session` per connection, feed decoded client frames to
:meth:`Node.handle` and drain the session's outbox; the REST layer calls the
topic-management methods and :meth:`Node.stats`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import msgspec
import trio

from .._protocol.errors import (
    CLOSE_GOING_AWAY,
    InternalError,
    LimitExceeded,
    PubSubError,
    RateLimited,
    TopicExists,
    TopicNotFound,
)
from .._protocol.filters import Filter, compile_filter
from .._protocol.frames import (
    Ack,
    AnyClientFrame,
    Message,
    Ping,
    Pong,
    Publish,
    RequestId,
    Subscribe,
    Unsubscribe,
    check_topic_name,
    encode,
    is_pattern,
)
from .._protocol.timestamps import now_ms, ts_now
from .._settings import Settings
from .counters import Counters, DeliveryStats, Stats, TopicStats, WebSocketStats
from .engine import Engine, History, Publication, TopicInfo
from .outbox import POLICIES
from .patterns import PatternIndex, pattern_matcher
from .ratelimit import TokenBucket
from .session import (
    Burst,
    CloseReason,
    Framer,
    Requester,
    Session,
    dropped_notice_for,
    expired_notice_for,
)
from .topic import Attach, Command, DeleteTopic, Detach, Request, TopicActor

log = logging.getLogger("pubsub.node")

#: The most commands a topic actor takes from its inbox in one wake-up.
MAX_BATCH: Final = 512


def _unframed(data: bytes) -> bytes:
    return data


def default_node_id() -> str:
    """``<host>-<pid>``: unique among the processes of a cluster at any one time."""
    host = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}"


#: The ``client_id`` of publishes made over REST (a label, like any client's).
REST_CLIENT_ID: Final = "rest"
#: The most messages one REST history call returns.
MAX_HISTORY_LIMIT: Final = 1000


class _AckFields(msgspec.Struct):
    offset: int
    ts: str


class Answer:
    """The :class:`~pubsub._core.session.Requester` of a request made without a
    connection (a REST publish): it keeps the ack's offset and time, or the error,
    and :attr:`done` is set once either came."""

    __slots__ = ("bucket", "client_id", "done", "error", "offset", "published", "received", "ts")

    def __init__(self) -> None:
        #: REST rate limits are per client address, checked before the publish.
        self.bucket: TokenBucket | None = None
        self.received = 0
        self.published = 0
        self.client_id: str | None = None
        self.done = trio.Event()
        self.error: PubSubError | None = None
        self.offset = 0
        self.ts = ""

    def send(self, frame: bytes) -> None:
        ack = msgspec.json.decode(frame, type=_AckFields)
        self.offset, self.ts = ack.offset, ack.ts
        self.done.set()

    def send_many(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.send(frame)

    def send_error(self, error: PubSubError, request_id: RequestId | None = None) -> None:
        self.error = error
        self.done.set()


class Node:
    """Sessions, topic actors and request dispatch on this node.

    Use :func:`open_node` to get one whose lifetime is an ``async with``.

    Args:
        settings: Limits and policies.
        engine: What is cluster-wide; :meth:`Engine.run` must be serving this
            node as its feed (``open_node`` does that).
        nursery: Where topic actors run; it must outlive the node.
        framer: Wraps each encoded JSON frame for the wire, once per frame
            (the WebSocket transport prepends the frame header). Identity by
            default, so in-process users see plain JSON.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        nursery: trio.Nursery,
        *,
        framer: Framer = _unframed,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.node_id = settings.node_id or default_node_id()
        self.framer = framer
        self.counters = Counters()
        self.started_at = now_ms()
        self.closed = False
        self._nursery = nursery
        self._actors: dict[str, TopicActor] = {}
        #: The wildcard subscriptions of this node's connections.
        self._patterns: PatternIndex[Session] = PatternIndex()
        self._sessions: dict[Session, None] = {}
        self._no_sessions: trio.Event | None = None
        self._policy = POLICIES[settings.backpressure_policy]()
        self._dropped_notice = dropped_notice_for(framer)
        self._expired_notice = expired_notice_for(framer)
        #: The sessions' direct writes of a scheduler pass, written together at
        #: its end (``open_node`` installs it as a trio instrument).
        self.burst = Burst()
        # A batch never fills more than half an empty outbox by itself, so a
        # subscriber that keeps up never loses events to batching.
        self._max_batch = min(MAX_BATCH, max(1, settings.max_queue_size // 2))

    # ------------------------------------------------------------------ topics

    async def create_topic(self, name: str, message_ttl_ms: int | None = None) -> TopicInfo:
        """Create a topic whose messages expire after ``message_ttl_ms`` (None:
        ``MESSAGE_TTL``; 0: never) unless a publish gives its own TTL.

        Raises:
            BadRequest: the name breaks the topic-name rule.
            TopicExists, LimitExceeded: from the engine.
            InternalError: the node is shutting down.
        """
        check_topic_name(name)
        if self.closed:
            raise InternalError("the broker is shutting down")
        if message_ttl_ms is None:
            message_ttl_ms = self.settings.message_ttl
        info = await self.engine.create_topic(name, message_ttl_ms)
        log.info(
            "topic %s created",
            name,
            extra={"event": "topic_created", "topic": name, "message_ttl_ms": message_ttl_ms},
        )
        await self._take_in(name)
        return info

    async def delete_topic(self, name: str) -> None:
        """Delete a topic once every command queued before this one is carried
        out: its subscribers get every message published before the delete,
        then ``topic_deleted``.

        Raises:
            TopicNotFound: there is no such topic.
        """
        actor = await self._actor(name)
        command = DeleteTopic()
        if actor is None or not await actor.submit((None, command, 0.0)):
            raise TopicNotFound(f"topic {name!r} does not exist")
        await command.done.wait()
        self._forget_if_deleted(name, actor)
        if command.error is not None:
            raise command.error
        log.info("topic %s deleted", name, extra={"event": "topic_deleted", "topic": name})

    async def topic(self, name: str) -> TopicInfo:
        """One topic as the engine knows it. Raises ``TopicNotFound``."""
        return await self.engine.topic(name)

    async def topics(self) -> list[TopicInfo]:
        """Every topic, sorted by name."""
        return await self.engine.topics()

    async def topic_count(self) -> int:
        return await self.engine.topic_count()

    def rate_limited(
        self, setting: str, wait_ms: int, request_id: RequestId | None = None
    ) -> RateLimited:
        """The error for a publish over a rate limit (``setting`` names it)."""
        rate = getattr(self.settings, setting.lower())
        return RateLimited(
            f"over {setting} ({rate} publishes/s): retry after {wait_ms} ms",
            request_id,
            retry_after_ms=wait_ms,
        )

    async def publish(self, topic: str, message: Message, ttl_ms: int | None = None) -> Answer:
        """Publish ``message`` without a connection (REST): in order with the topic's
        other requests, delivered like any publish (``ttl_ms``: its own TTL).
        Returns the answer with the message's offset and time.

        Raises:
            TopicNotFound, Unavailable: as a WebSocket publish would be answered.
        """
        answer = Answer()
        frame = Publish(topic=topic, message=message, client_id=REST_CLIENT_ID, ttl_ms=ttl_ms)
        await self.handle_many(answer, [frame], time.perf_counter())
        await answer.done.wait()
        if answer.error is not None:
            raise answer.error
        return answer

    async def history(self, topic: str, since_offset: int, limit: int) -> History:
        """The stored messages of ``topic`` after ``since_offset``, oldest first, at
        most ``limit`` (REST history: whatever the ring still holds, unlike a
        resume, which wants all of them or nothing)."""
        stored = await self.engine.history(topic, last_n=self.settings.max_messages_per_topic)
        after = [p for p in stored.publications if p.offset > since_offset][:limit]
        return History(stored.offset, stored.epoch, None, after)

    def local_subscribers(self, name: str) -> int:
        """Subscribers of topic ``name`` on this node."""
        actor = self._actors.get(name)
        return len(actor.subscribers) if actor is not None else 0

    def total_subscribers(self) -> int:
        """Subscriptions on this node over all topics."""
        return sum(len(actor.subscribers) for actor in self._actors.values())

    def _forget_if_deleted(self, name: str, actor: TopicActor) -> None:
        if actor.deleted and self._actors.get(name) is actor:
            del self._actors[name]

    async def _actor(self, name: str) -> TopicActor | None:
        """The topic's actor on this node, started on first use; None if no such topic.

        An actor whose topic was deleted is replaced: the name may have a new
        incarnation (engines whose feed is not synchronous tell the node later)."""
        actor = self._actors.get(name)
        if actor is not None:
            if not actor.deleted:
                return actor
            self._forget_if_deleted(name, actor)
        if self.closed:
            return None
        try:
            info = await self.engine.topic(name)
        except TopicNotFound:
            return None
        actor = self._actors.get(name)  # another task may have started it meanwhile
        if actor is None or actor.deleted:
            actor = self._actors[name] = TopicActor(
                info,
                engine=self.engine,
                max_subscribers=self.settings.max_subscribers_per_topic,
                inbox_size=self.settings.topic_inbox_size,
                max_batch=self._max_batch,
                framer=self.framer,
                counters=self.counters,
            )
            self._nursery.start_soon(actor.run, name=f"topic:{name}")
        return actor

    # ------------------------------------------------------------ engine feed

    def on_publications(
        self, topic: str, publications: list[Publication], *, repaired: bool = False
    ) -> None:
        actor = self._actors.get(topic)
        if actor is not None:
            actor.fan_out(publications, repaired)

    def on_topic_deleted(self, topic: str) -> None:
        actor = self._actors.pop(topic, None)
        if actor is not None:
            actor.on_deleted()

    def on_topics_created(self, topics: list[str] | None) -> None:
        if len(self._patterns) and not self.closed:
            self._nursery.start_soon(self._take_in_all, topics)

    def on_gap(self, topic: str, after: int, missed: int) -> None:
        actor = self._actors.get(topic)
        if actor is not None:
            actor.on_gap(after, missed)

    def subscriber_counts(self) -> dict[str, int]:
        return {name: len(actor.subscribers) for name, actor in self._actors.items()}

    # ---------------------------------------------------------------- sessions

    def open_session(self, connection_id: str | None = None) -> Session:
        """Register a new connection.

        Raises:
            LimitExceeded: ``MAX_CONNECTIONS`` are open.
        """
        if len(self._sessions) >= self.settings.max_connections:
            raise LimitExceeded(
                f"the broker has the maximum of {self.settings.max_connections} connections"
            )
        session = Session(
            max_queue_size=self.settings.max_queue_size,
            max_queue_bytes=self.settings.max_queue_bytes,
            policy=self._policy,
            framer=self.framer,
            counters=self.counters,
            connection_id=connection_id,
            dropped_notice=self._dropped_notice,
            expired_notice=self._expired_notice,
            burst=self.burst,
        )
        if self.settings.rate_limit:
            limit = self.settings.rate_limit
            session.bucket = TokenBucket(limit, self.settings.rate_limit_burst or limit)
        self._sessions[session] = None
        self.counters.connection_counter += 1
        return session

    def close_session(self, session: Session) -> None:
        """Forget a connection that has gone: it leaves all its topics at once, and
        requests of it still queued at topics are ignored."""
        session.close(CloseReason(CLOSE_GOING_AWAY, "connection closed"))
        for name in session.topics:
            actor = self._actors.get(name)
            if actor is not None:
                actor.detach(session)
        session.topics.clear()
        if session.patterns:
            for pattern in session.patterns:
                self._patterns.remove(pattern, session)
            session.patterns = None
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

    async def handle(
        self, session: Session, frame: AnyClientFrame, received_at: float = 0.0
    ) -> None:
        """Carry out one decoded client frame for ``session``.

        ``received_at`` is ``perf_counter()`` when the frame's bytes were read
        (the start of its publish-to-write latency). Answers (acks, pongs,
        errors) go to the session's outbox; this only waits when the topic's
        inbox is full, and does not checkpoint otherwise. It always goes through
        the topic's inbox (see :meth:`handle_many` for the turn-saving way).
        """
        await self.handle_many(session, [frame], received_at, inline=False)

    async def handle_many(
        self,
        session: Requester,
        frames: list[AnyClientFrame],
        received_at: float = 0.0,
        *,
        inline: bool = True,
    ) -> None:
        """Carry out the decoded client frames of one read for ``session``.

        Like :meth:`handle` for each, but a topic's requests go to it together,
        in order; an idle topic actor carries them out in this turn when the
        engine allows it (no task switch, one fan-out for the run of publishes).
        Requests to different topics may be answered in another order than sent.
        ``inline=False`` always goes through the topic's inbox.
        """
        by_topic: dict[str, list[Command]] = {}
        for frame in frames:
            session.received += 1
            if type(frame) is Ping:
                session.send(encode(Pong(request_id=frame.request_id, ts=ts_now())))
                continue
            assert not isinstance(frame, Ping)
            session.client_id = frame.client_id
            if type(frame) is Publish:
                if session.bucket is not None:
                    wait = session.bucket.take()
                    if wait:
                        self.counters.rate_limited += 1
                        session.send_error(self.rate_limited("RATE_LIMIT", wait, frame.request_id))
                        continue
            elif is_pattern(frame.topic):
                assert isinstance(session, Session)
                # In order with what came before it in this read.
                await self._dispatch(session, by_topic, inline)
                by_topic = {}
                if type(frame) is Subscribe:
                    await self._subscribe_pattern(session, frame)
                else:
                    assert isinstance(frame, Unsubscribe)
                    await self._unsubscribe_pattern(session, frame)
                continue
            by_topic.setdefault(frame.topic, []).append((session, frame, received_at))
        await self._dispatch(session, by_topic, inline)

    async def _dispatch(
        self, session: Requester, by_topic: dict[str, list[Command]], inline: bool
    ) -> None:
        """Hand each topic its requests (see :meth:`handle_many`)."""
        immediate = inline and self.engine.immediate
        for name, commands in by_topic.items():
            try:
                actor = self._actors.get(name)
                if actor is None or actor.deleted:
                    actor = await self._actor(name)
                if actor is None and self.settings.auto_create_topics:
                    actor = await self._auto_create(name, commands)
            except PubSubError as exc:
                for _, request, _ in commands:
                    session.send_error(exc, request.request_id)
                continue
            if actor is None:
                for _, request, _ in commands:
                    error = TopicNotFound(f"topic {name!r} does not exist")
                    session.send_error(error, request.request_id)
                continue
            if immediate and actor.idle:
                for start in range(0, len(commands), self._max_batch):
                    await actor.run_now(commands[start : start + self._max_batch])
                continue
            for command in commands:
                if not await actor.submit(command):
                    request = command[1]
                    error = TopicNotFound(f"topic {name!r} does not exist")
                    session.send_error(error, request.request_id)

    async def _auto_create(self, name: str, commands: list[Command]) -> TopicActor | None:
        """``AUTO_CREATE_TOPICS``: a publish or subscribe creates its topic (an
        unsubscribe does not). Raises ``LimitExceeded`` at ``MAX_TOPICS``."""
        if not any(type(request) in (Publish, Subscribe) for _, request, _ in commands):
            return None
        with contextlib.suppress(TopicExists):  # another request created it meanwhile
            await self.create_topic(name)
        return await self._actor(name)

    # ----------------------------------------------------- wildcard patterns

    async def _subscribe_pattern(self, session: Session, frame: Subscribe) -> None:
        """Acknowledge a wildcard subscription, then have every topic it matches
        take the connection in (topics created later do so when created)."""
        pattern = frame.topic
        wanted: Filter | None = None
        patterns = session.patterns
        if patterns is None:
            patterns = session.patterns = {}
        previous = patterns.get(pattern, 0)
        try:
            if frame.filter is not None:
                wanted = compile_filter(frame.filter)
            # In the index before the topics are listed: a topic created meanwhile
            # is taken in by its creation (twice is harmless), never by neither.
            self._patterns.add(pattern, session, wanted)
            patterns[pattern] = wanted
            names = await self.engine.topic_names()
        except PubSubError as exc:
            if previous == 0:
                patterns.pop(pattern, None)
                self._patterns.remove(pattern, session)
            else:
                assert not isinstance(previous, int)
                patterns[pattern] = previous
                self._patterns.add(pattern, session, previous)
            session.send_error(exc, frame.request_id)
            return
        ack = Ack(
            request_id=frame.request_id,
            topic=pattern,
            status="ok",
            filtered=True if wanted is not None else None,
            pattern=True,
            ts=ts_now(),
        )
        session.send(encode(ack))
        matches = pattern_matcher(pattern)
        for name in names:
            if matches(name):
                await self._submit(session, name, Attach(pattern, wanted, frame.request_id))

    async def _unsubscribe_pattern(self, session: Session, frame: Unsubscribe) -> None:
        pattern = frame.topic
        patterns = session.patterns
        if patterns is not None and patterns.pop(pattern, 0) != 0:
            self._patterns.remove(pattern, session)
            # Every matching topic, not only those already received: an attach may
            # still wait in a topic's inbox, and the detach must follow it there.
            names = set(session.topics)
            with contextlib.suppress(PubSubError):  # the engine is away: what is known
                names.update(await self.engine.topic_names())
            matches = pattern_matcher(pattern)
            for name in sorted(filter(matches, names)):
                await self._submit(session, name, Detach(pattern))
        session.send(
            encode(Ack(request_id=frame.request_id, topic=pattern, status="ok", ts=ts_now()))
        )

    async def _submit(self, session: Session, name: str, request: Request) -> None:
        """Queue a pattern's request at a topic (none: the topic is gone, nothing to do)."""
        try:
            actor = await self._actor(name)
        except PubSubError as exc:
            session.send_error(exc, request.request_id)
            return
        if actor is not None:
            await actor.submit((session, request, 0.0))

    async def _take_in(self, name: str) -> None:
        """A topic was created: the pattern subscriptions matching it take it in,
        from its first message."""
        if not len(self._patterns):
            return
        for pattern, session, wanted in list(self._patterns.match(name)):
            try:
                actor = await self._actor(name)
            except PubSubError:
                return  # the engine is away: a rescan follows its return
            # Still held? (The session may have unsubscribed while this task
            # waited; its detach went to the topics then, before this attach.)
            if actor is not None and session.is_open and pattern in (session.patterns or ()):
                await actor.submit((session, Attach(pattern, wanted, None, from_start=True), 0.0))

    async def _take_in_all(self, topics: list[str] | None) -> None:
        """Topics created through other nodes (None: any might have been)."""
        if topics is None:
            try:
                topics = await self.engine.topic_names()
            except PubSubError:
                return  # the engine is away: it says so again when it is back
        for name in topics:
            await self._take_in(name)

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop accepting topics and let every topic actor finish what it has queued."""
        self.closed = True
        for actor in self._actors.values():
            actor.close()

    async def stats(self, *, local: bool = False) -> Stats:
        """A snapshot of this node's statistics, topic figures from the engine.

        With ``local`` (the engine is unavailable) the topics are those this node
        has actors for, with the newest offset it saw and nothing stored.
        """
        if local:
            rows = [(name, actor.offset, 0) for name, actor in sorted(self._actors.items())]
        else:
            rows = [(info.name, info.offset, info.stored) for info in await self.engine.topics()]
        topics: dict[str, TopicStats] = {}
        for name, offset, stored in rows:
            actor = self._actors.get(name)
            topics[name] = TopicStats(
                messages=offset,
                subscribers=len(actor.subscribers) if actor is not None else 0,
                stored=stored,
                dropped=actor.dropped if actor is not None else 0,
            )
        counters = self.counters
        return Stats(
            node_id=self.node_id,
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
                delivered=counters.delivered,
                dropped=counters.dropped,
                slow_consumer_disconnects=counters.slow_consumer_disconnects,
                rate_limited=counters.rate_limited,
                expired=counters.expired,
            ),
        )

    def uptime_sec(self) -> int:
        return (now_ms() - self.started_at) // 1000


@asynccontextmanager
async def open_node(
    settings: Settings, engine: Engine, *, framer: Framer = _unframed
) -> AsyncIterator[Node]:
    """A node serving ``engine``'s feed, whose topic actors live inside this block.

    On exit every topic actor carries out what it has queued, then the engine
    stops serving the feed.
    """
    try:
        async with trio.open_nursery() as engine_nursery:
            async with trio.open_nursery() as actors:
                node = Node(settings, engine, actors, framer=framer)
                trio.lowlevel.add_instrument(node.burst)
                try:
                    await engine_nursery.start(engine.run, node)
                    try:
                        yield node
                    finally:
                        node.close()
                finally:
                    # Whatever is held goes out now (the instrument sees no more passes).
                    trio.lowlevel.remove_instrument(node.burst)
                    node.burst.before_io_wait(0.0)
            engine_nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One failure (usually the caller's own) comes out as itself, not as a
        # group (of a group: two nurseries wrap it).
        single: BaseException = group
        while isinstance(single, BaseExceptionGroup) and len(single.exceptions) == 1:
            single = single.exceptions[0]
        if single is not group:
            raise single from None
        raise
