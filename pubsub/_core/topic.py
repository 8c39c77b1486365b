"""The topic actor: one task per topic on this node, ordering its commands and
fanning its messages out to the local subscribers.

Every command for a topic (publish, subscribe, unsubscribe, delete) goes
through the actor's bounded inbox and is carried out by :meth:`TopicActor.run`
alone, in arrival order. What is cluster-wide (offsets, epochs, history, the
registry) is the engine's: a run of consecutive publishes becomes one
:meth:`~pubsub._core.engine.Engine.publish` call, and the messages come back
through the engine's feed to :meth:`TopicActor.fan_out`, which frames each one
once for this node and hands the whole run to each subscriber in one
:meth:`~pubsub._core.session.Session.deliver` call.

The inbox is a list the actor's task parks on directly, not a memory channel:
a node may hold thousands of topics that are seldom used, and a channel pair
with its state cost ~1.8 KB per topic, twice the rest of an idle actor's
state (see "Memory per topic" in docs/operations.md).
"""

from __future__ import annotations

from typing import ClassVar, Final

import msgspec
import trio

from .._protocol.errors import LimitExceeded, PubSubError, TopicNotFound
from .._protocol.filters import Filter, any_of, compile_filter
from .._protocol.frames import (
    Ack,
    Event,
    Info,
    Publish,
    RequestId,
    Subscribe,
    Unsubscribe,
    encode,
)
from .._protocol.timestamps import format_ts, ts_now
from .counters import Counters
from .engine import Engine, Publication, TopicInfo
from .outbox import expiring_frame
from .session import Framer, Requester, Session

#: Payload bytes one engine publish call carries at most (one message may be
#: larger). The Redis engine publishes each call's batch as one pub/sub message,
#: and Redis drops subscribers whose output buffer passes 32 MB by default.
MAX_RUN_BYTES: Final = 4 * 1024 * 1024
#: Stored messages a filtered ``last_n`` looks through for the newest matches.
MAX_FILTERED_SCAN: Final = 1_000_000


class DeleteTopic:
    """The delete command; :attr:`done` is set once it is carried out (or refused:
    :attr:`error`)."""

    __slots__ = ("done", "error")
    #: Like a client request's (a delete has none), so every command has one.
    request_id: ClassVar[None] = None

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: PubSubError | None = None


class Attach:
    """A wildcard subscription takes in this topic (the node matched the pattern):
    the session receives its messages from now on, or (``from_start``: the topic
    was created after the pattern subscription) every message it has."""

    __slots__ = ("from_start", "pattern", "request_id", "wanted")

    def __init__(
        self,
        pattern: str,
        wanted: Filter | None,
        request_id: RequestId | None,
        from_start: bool = False,
    ) -> None:
        self.pattern = pattern
        self.wanted = wanted
        #: The pattern subscribe's, for an error (a full topic, the engine away).
        self.request_id = request_id
        self.from_start = from_start


class Detach:
    """A wildcard subscription matching this topic was unsubscribed."""

    __slots__ = ("pattern", "request_id")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.request_id: RequestId | None = None


#: A request on a topic's inbox.
Request = Publish | Subscribe | Unsubscribe | DeleteTopic | Attach | Detach
#: A command on a topic's inbox: who asked (a session, an ``Answer`` for a REST
#: publish, None for a delete), the request,
#: and ``perf_counter()`` when its bytes were received (for the latency histogram).
Command = tuple["Requester | None", Request, float]

#: The key of a connection's own (concrete) subscription among its reasons.
CONCRETE: Final = ""


class TopicActor:
    """One topic on this node: its local subscribers and the task that serves them.

    Attributes:
        offset: The newest offset fanned out on this node.
        epoch: The topic incarnation's epoch (from the engine).
        subscribers: The local sessions subscribed, in subscription order.
        dropped: Events this topic's fan-out dropped from full outboxes.
    """

    # Slots: one actor per topic in use, and an instance dict of this many
    # attributes would cost more than the actor's fields themselves.
    __slots__ = (
        "_blocked",
        "_busy",
        "_closed",
        "_counters",
        "_engine",
        "_filters",
        "_framer",
        "_groups",
        "_inbox",
        "_inbox_size",
        "_joining",
        "_max_batch",
        "_max_subscribers",
        "_published_at",
        "_reasons",
        "_receipts",
        "_seen",
        "_waiting",
        "deleted",
        "dropped",
        "epoch",
        "name",
        "offset",
        "subscribers",
    )

    def __init__(
        self,
        info: TopicInfo,
        *,
        engine: Engine,
        max_subscribers: int,
        inbox_size: int,
        max_batch: int,
        framer: Framer,
        counters: Counters,
    ) -> None:
        self.name = info.name
        self.epoch = info.epoch
        self.offset = info.offset
        self.dropped = 0
        self.deleted = False
        self.subscribers: dict[Session, None] = {}
        #: The content filter of each subscribed (or joining) session that has
        #: one. Empty on most topics, whose fan-out then never looks at it.
        self._filters: dict[Session, Filter] = {}
        #: Why each session that receives through a wildcard pattern does: its
        #: patterns (and ``CONCRETE`` for its own subscription), with their
        #: filters. Sessions subscribed only by name are not here; ``_filters``
        #: holds the filter the reasons make together (``any_of``).
        self._reasons: dict[Session, dict[str, Filter | None]] = {}
        #: While some subscribers have filters: the subscribers grouped by filter
        #: (None: no filter), so a fan-out skips a whole group a batch does not
        #: reach. Built on the first filtered fan-out after any change (None).
        self._groups: list[tuple[Filter | None, list[Session]]] | None = None
        #: Subscribed sessions whose ack said an offset the feed has not reached
        #: yet: they get only later messages, and join ``subscribers`` once the
        #: feed catches up (an engine whose feed lags its history, like Redis).
        self._joining: dict[Session, int] = {}
        #: While a subscribe awaits the engine: what the feed fanned out meanwhile.
        self._seen: list[Publication] | None = None
        #: Receipt times of this node's publishes still on their way through the
        #: feed, by first offset (engines whose feed is not synchronous).
        self._receipts: dict[int, float] = {}
        self._engine = engine
        self._max_subscribers = max_subscribers
        self._max_batch = max_batch
        self._framer = framer
        self._counters = counters
        #: When the publish being stored was received (read by ``fan_out``).
        self._published_at = 0.0
        #: Commands submitted and not yet taken, oldest first (at most
        #: ``inbox_size``), and whether a batch is being carried out: together
        #: they say whether the actor is idle.
        self._inbox: list[Command] = []
        self._inbox_size = inbox_size
        self._busy = False
        #: Submitters waiting for room in a full inbox, oldest first, with their
        #: commands (None while nobody waits, as almost always).
        self._blocked: dict[trio.lowlevel.Task, Command] | None = None
        #: The actor's task while it waits for a command.
        self._waiting: trio.lowlevel.Task | None = None
        #: Closed (deleted, node shutdown, or the task ended): nothing more is taken.
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<TopicActor {self.name!r} offset={self.offset} subscribers={len(self.subscribers)}>"
        )

    # ------------------------------------------------------------ called by others

    async def submit(self, command: Command) -> bool:
        """Queue a command; waits only while the inbox is full (in turn with the
        others waiting). False if the topic is gone (or the node closing)."""
        if self._closed:
            return False
        if len(self._inbox) < self._inbox_size:
            self._inbox.append(command)
            waiting = self._waiting
            if waiting is not None:
                self._waiting = None
                trio.lowlevel.reschedule(waiting)
            return True
        task = trio.lowlevel.current_task()
        blocked = self._blocked
        if blocked is None:
            blocked = self._blocked = {}
        blocked[task] = command

        def abort(_: object) -> trio.lowlevel.Abort:
            del blocked[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        # Taken into the inbox (``_take`` removed it), or refused (``_refuse``
        # left it in the dict it detached).
        return blocked.pop(task, None) is None

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being carried out (a command may run now)."""
        return not self._busy and not self._inbox and not self.deleted

    async def run_now(self, commands: list[Command]) -> None:
        """Carry out ``commands`` in the caller's turn (run to completion: no task
        switch). Only while :attr:`idle`, and only with an engine whose every call
        completes without yielding, so nothing can interleave."""
        assert self.idle
        self._busy = True
        try:
            await self._process(commands)
        finally:
            self._busy = False

    def close(self) -> None:
        """Stop the actor once it has carried out what is queued (node shutdown);
        submitters still waiting for room are refused."""
        if self._closed:
            return
        self._closed = True
        self._refuse()
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            trio.lowlevel.reschedule(waiting)

    def _refuse(self) -> None:
        """Wake every submitter waiting for room; their ``submit`` answers False."""
        blocked = self._blocked
        if blocked:
            self._blocked = None
            for task in blocked:
                trio.lowlevel.reschedule(task)

    def detach(self, session: Session) -> None:
        """Forget a session that is going away. Synchronous: the actor never
        awaits while it iterates the subscribers, so this cannot split a fan-out."""
        self._filters.pop(session, None)
        self._reasons.pop(session, None)
        self._groups = None
        if session in self.subscribers:
            del self.subscribers[session]
        elif self._joining.pop(session, None) is None:
            return
        self._unfollow_if_unused()

    def _has_local(self) -> bool:
        """Whether this node needs the topic's feed (subscribers, or one on its way)."""
        return bool(self.subscribers or self._joining) or self._seen is not None

    def _unfollow_if_unused(self) -> None:
        # A deleted actor leaves the feed alone: it may be a new incarnation's now.
        if not self.deleted and not self._has_local():
            self._engine.unfollow(self.name)

    # ------------------------------------------------------------ the engine's feed

    def fan_out(self, publications: list[Publication], repaired: bool = False) -> None:
        """Hand newly published messages to every local subscriber (feed, hot path).

        ``repaired`` messages (read back after the feed broke) are owed to every
        subscriber and queued like a replay, outside the queue bounds."""
        frames: list[bytes] = []
        start = offset = self.offset
        expiring = False
        for publication in publications:
            if publication.offset <= offset:
                continue  # already delivered
            frames.append(publication.frame or self._frame(publication))
            offset = publication.offset
            if publication.expires:
                expiring = True
        if not frames:
            return
        self.offset = offset
        published_at = self._published_at
        if self._receipts and not published_at:
            published_at = self._receipts.pop(offset - len(frames) + 1, 0.0)
        if self._filters and self.subscribers:
            self._fan_out_filtered(publications, start, frames, published_at, repaired, expiring)
        elif self.subscribers:
            if repaired:
                for subscriber in self.subscribers:
                    subscriber.replay(frames, expiring)
            else:
                nbytes = sum(map(len, frames))
                joined = frames[0] if len(frames) == 1 else b"".join(frames)
                dropped = 0
                for subscriber in self.subscribers:
                    dropped += subscriber.deliver(frames, nbytes, published_at, joined, expiring)
                if dropped:
                    self.dropped += dropped
        if self._seen is not None or self._joining:
            fresh = [p for p in publications if p.offset > start]
            if self._seen is not None:
                self._seen.extend(fresh)
            if self._joining:
                self._admit(fresh, published_at, repaired)

    def _fan_out_filtered(
        self,
        publications: list[Publication],
        start: int,
        frames: list[bytes],
        published_at: float,
        repaired: bool,
        expiring: bool,
    ) -> None:
        """Fan-out when some subscribers have filters: each message is decoded once
        and each distinct filter evaluated once per message; the subscribers with
        equal filters (and those without) form a group that shares one joined
        batch, and a group the batch does not reach costs nothing more. ``frames``
        are those of the ``publications`` past ``start``, in order."""
        groups = self._groups
        if groups is None:
            groups = self._groups = self._group_subscribers()
        everything = (frames, frames[0] if len(frames) == 1 else b"".join(frames))
        messages: list[object] | None = None
        dropped = 0
        for wanted, members in groups:
            if wanted is None:
                picked, joined = everything
            else:
                if messages is None:
                    messages = [_message_object(p) for p in publications if p.offset > start]
                picked = [f for f, m in zip(frames, messages, strict=True) if wanted.matches(m)]
                if not picked:
                    continue
                joined = picked[0] if len(picked) == 1 else b"".join(picked)
            if repaired:
                for subscriber in members:
                    subscriber.replay(picked, expiring)
            else:
                nbytes = len(joined)
                for subscriber in members:
                    dropped += subscriber.deliver(picked, nbytes, published_at, joined, expiring)
        if dropped:
            self.dropped += dropped

    def _group_subscribers(self) -> list[tuple[Filter | None, list[Session]]]:
        by_key: dict[str | None, tuple[Filter | None, list[Session]]] = {}
        filters = self._filters
        for subscriber in self.subscribers:
            wanted = filters.get(subscriber)
            key = None if wanted is None else wanted.key
            group = by_key.get(key)
            if group is None:
                group = by_key[key] = (wanted, [])
            group[1].append(subscriber)
        return list(by_key.values())

    def _admit(self, fresh: list[Publication], published_at: float, repaired: bool) -> None:
        """Give joining sessions what is past their ack; full subscribers once caught up."""
        # Decoded for the filters once, not once per joining session.
        messages = [_message_object(p) for p in fresh] if self._filters else []
        for session, acked in list(self._joining.items()):
            wanted = self._filters.get(session)
            frames = [
                p.frame
                for index, p in enumerate(fresh)
                if p.offset > acked
                and p.frame is not None
                and (wanted is None or wanted.matches(messages[index]))
            ]
            expiring = any(p.expires for p in fresh)
            if frames and repaired:
                session.replay(frames, expiring)
            elif frames:
                nbytes = sum(map(len, frames))
                self.dropped += session.deliver(frames, nbytes, published_at, None, expiring)
            if self.offset >= acked:
                del self._joining[session]
                self.subscribers[session] = None
                self._groups = None

    def on_gap(self, after: int, missed: int) -> None:
        """Offsets ``after + 1`` to ``after + missed`` are lost for good: tell each local
        subscriber how many of them it was owed (a joining one: those past its ack)."""
        for session in self.subscribers:
            session.report_dropped(missed)
        for session, acked in self._joining.items():
            session.report_dropped(after + missed - max(after, acked))

    def on_deleted(self) -> None:
        """The topic was deleted (feed): tell the local subscribers and stop; what
        is still queued is answered ``TOPIC_NOT_FOUND``."""
        if self.deleted:
            return
        self.deleted = True
        notice = encode(Info(topic=self.name, msg="topic_deleted", ts=ts_now()))
        for session in (*self.subscribers, *self._joining):
            session.topics.discard(self.name)
            session.send(notice)
        self.subscribers.clear()
        self._groups = None
        self._joining.clear()
        self._filters.clear()
        self._reasons.clear()
        self.close()

    # --------------------------------------------------------------- the actor

    async def run(self) -> None:
        """The actor: carry out commands until deleted or closed (then what is
        queued is carried out first)."""
        try:
            while True:
                if self._inbox:
                    # Let others run between batches, as a channel's receive does.
                    await trio.lowlevel.checkpoint()
                elif self._closed:
                    return
                else:
                    # Parked on the inbox itself: ``submit`` or ``close`` wakes it.
                    self._waiting = trio.lowlevel.current_task()

                    def abort(_: object) -> trio.lowlevel.Abort:
                        self._waiting = None
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)
                    if not self._inbox:
                        continue  # woken by close
                batch = self._take()
                self._busy = True
                try:
                    await self._process(batch)
                finally:
                    self._busy = False
        finally:
            # Cancelled (or done): later submits and those waiting are refused.
            self._closed = True
            self._inbox = []
            self._refuse()

    def _take(self) -> list[Command]:
        """The next batch: at most ``max_batch`` commands, oldest first. Waiting
        submitters' commands follow in turn, into the batch while it has room
        and the inbox is empty, else into the inbox."""
        inbox = self._inbox
        limit = self._max_batch
        if len(inbox) > limit:
            batch = inbox[:limit]
            del inbox[:limit]
        else:
            batch = inbox
            inbox = self._inbox = []
        blocked = self._blocked
        if blocked:
            while blocked and len(inbox) < self._inbox_size:
                task = next(iter(blocked))
                command = blocked.pop(task)
                if inbox or len(batch) >= limit:
                    inbox.append(command)
                else:
                    batch.append(command)
                trio.lowlevel.reschedule(task)
            if not blocked:
                self._blocked = None
        return batch

    async def _process(self, batch: list[Command]) -> None:
        """Carry out a batch of commands in order; consecutive publishes together."""
        start = 0
        size = 0
        for index, command in enumerate(batch):
            request = command[1]
            if type(request) is Publish:
                size += len(request.message.payload)
                if size > MAX_RUN_BYTES and start < index:
                    await self._publish(batch[start:index])
                    start, size = index, len(request.message.payload)
                continue
            if start < index:
                await self._publish(batch[start:index])
            start = index + 1
            size = 0
            session = command[0]
            if self.deleted:
                self._not_found(session, request)
            elif type(request) is Subscribe:
                assert isinstance(session, Session)
                await self._subscribe(session, request)
            elif type(request) is Unsubscribe:
                assert isinstance(session, Session)
                self._unsubscribe(session, request)
            elif type(request) is Attach:
                assert isinstance(session, Session)
                await self._attach(session, request)
            elif type(request) is Detach:
                assert isinstance(session, Session)
                self._detach_pattern(session, request.pattern)
            else:
                assert isinstance(request, DeleteTopic)
                await self._delete(request)
        if start < len(batch):
            await self._publish(batch[start:] if start else batch)

    async def _publish(self, commands: list[Command]) -> None:
        if self.deleted:
            for session, request, _ in commands:
                self._not_found(session, request)
            return
        messages = []
        ttls: list[int] | None = None  # only when some publish has its own TTL
        for index, (_, request, _) in enumerate(commands):
            assert type(request) is Publish
            messages.append(request.message)
            if request.ttl_ms is not None:
                if ttls is None:
                    ttls = [0] * len(commands)
                ttls[index] = request.ttl_ms
        received_at = commands[0][2]
        self._published_at = received_at
        try:
            published = await self._engine.publish(self.name, messages, ttls)
        except PubSubError as exc:
            for session, request, _ in commands:
                if session is not None:
                    session.send_error(exc, request.request_id)
            return
        finally:
            self._published_at = 0.0
        if received_at and published.first_offset > self.offset and self._has_local():
            # The feed hands these over later: remember when they arrived.
            if len(self._receipts) >= 256:
                self._receipts.clear()
            self._receipts[published.first_offset] = received_at
        self._counters.published += len(commands)
        # One write per publisher per batch, not one per ack.
        offset = published.first_offset
        replies: dict[Requester, list[bytes]] = {}
        for session, request, _ in commands:
            if session is not None:
                ack = Ack(
                    request_id=request.request_id,
                    topic=self.name,
                    status="ok",
                    offset=offset,
                    ts=published.ts,
                )
                replies.setdefault(session, []).append(encode(ack))
                session.published += 1
            offset += 1
        for session, answers in replies.items():
            session.send_many(answers)

    async def _subscribe(self, session: Session, command: Subscribe) -> None:
        if not session.is_open:
            return
        wanted: Filter | None = None
        if command.filter is not None:
            try:
                wanted = compile_filter(command.filter)
            except PubSubError as exc:
                session.send_error(exc, command.request_id)
                return
        if session in self.subscribers or session in self._joining:
            # Already receiving (subscribed, or through a pattern): the filter is
            # replaced, nothing replayed twice.
            reasons = self._reasons.get(session)
            if reasons is not None:
                reasons[CONCRETE] = wanted
                self._set_filter(session, any_of(list(reasons.values())))
            else:
                self._set_filter(session, wanted)
            self._ack_subscribe(session, command, self.offset, None, wanted is not None)
            return
        if self._full(session, command.request_id):
            return
        await self._join(
            session,
            wanted,
            command.request_id,
            last_n=command.last_n,
            since_offset=command.since_offset,
            epoch=command.epoch,
            ack=command,
        )

    async def _attach(self, session: Session, command: Attach) -> None:
        """A pattern subscription of ``session`` takes this topic in."""
        if not session.is_open:
            return
        reasons = self._reasons.get(session)
        if session in self.subscribers or session in self._joining:
            if reasons is None:
                reasons = self._reasons[session] = {CONCRETE: self._filters.get(session)}
            reasons[command.pattern] = command.wanted
            self._set_filter(session, any_of(list(reasons.values())))
            return
        if self._full(session, command.request_id):
            return
        start = command.from_start
        joined = await self._join(
            session,
            command.wanted,
            command.request_id,
            since_offset=0 if start else None,
            epoch=self.epoch if start else None,
        )
        if joined:
            self._reasons[session] = {command.pattern: command.wanted}

    def _detach_pattern(self, session: Session, pattern: str) -> None:
        """A pattern subscription of ``session`` matching this topic ended."""
        reasons = self._reasons.get(session)
        if reasons is None or reasons.pop(pattern, 0) == 0:
            return
        if not reasons:
            session.topics.discard(self.name)
            self.detach(session)
        elif list(reasons) == [CONCRETE]:
            del self._reasons[session]
            self._set_filter(session, reasons[CONCRETE])
        else:
            self._set_filter(session, any_of(list(reasons.values())))

    def _full(self, session: Session, request_id: RequestId | None) -> bool:
        if len(self.subscribers) + len(self._joining) < self._max_subscribers:
            return False
        session.send_error(
            LimitExceeded(
                f"topic {self.name!r} has the maximum of {self._max_subscribers} subscribers"
            ),
            request_id,
        )
        return True

    async def _join(
        self,
        session: Session,
        wanted: Filter | None,
        request_id: RequestId | None,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
        ack: Subscribe | None = None,
    ) -> bool:
        """Make ``session`` a subscriber: history first (``last_n``, or everything
        after ``since_offset``), then live messages, with no gap and no duplicate.
        ``ack``: the subscribe to acknowledge (a pattern's attach has none).
        Returns whether it joined."""
        following = self._has_local()
        seen: list[Publication] = []
        self._seen = seen
        try:
            if not following:
                base = await self._engine.follow(self.name)
                if base is not None:
                    self.offset = base  # the feed continues after it
            # A filtered last_n is the newest n that match: look through them all.
            scan = MAX_FILTERED_SCAN if wanted is not None and last_n else last_n
            history = await self._engine.history(
                self.name, last_n=scan, since_offset=since_offset, epoch=epoch
            )
        except BaseException as exc:
            self._seen = None
            self._unfollow_if_unused()
            if not isinstance(exc, PubSubError):
                raise
            session.send_error(exc, request_id)
            return False
        self._seen = None
        if self.deleted:
            # Deleted (through the feed) while the engine answered.
            if ack is not None:
                session.send_error(TopicNotFound(f"topic {self.name!r} was deleted"), request_id)
            return False
        if session.close_reason is not None:
            self._unfollow_if_unused()
            return False  # closed while the engine answered
        self.epoch = history.epoch
        acked = history.offset
        if ack is not None:
            self._ack_subscribe(
                session, ack, acked, history.recovered, wanted is not None, history.expired
            )
        stored = history.publications
        if wanted is not None:
            stored = [p for p in stored if wanted.matches(_message_object(p))]
            if last_n:
                stored = stored[-last_n:]
        replay = [self._frame(p) for p in stored]
        session.topics.add(self.name)
        self._set_filter(session, wanted)
        if self.offset >= acked:
            # Whatever the feed delivered while the history was read, past the ack.
            replay += [
                self._frame(p)
                for p in seen
                if p.offset > acked and (wanted is None or wanted.matches(_message_object(p)))
            ]
            self.subscribers[session] = None
            self._groups = None
        else:
            self._joining[session] = acked
        if replay:
            session.replay(replay, any(type(frame) is not bytes for frame in replay))
        return True

    def _set_filter(self, session: Session, wanted: Filter | None) -> None:
        self._groups = None
        if wanted is None:
            self._filters.pop(session, None)
        else:
            self._filters[session] = wanted

    def _ack_subscribe(
        self,
        session: Session,
        command: Subscribe,
        offset: int,
        recovered: bool | None,
        filtered: bool,
        expired: int = 0,
    ) -> None:
        ack = Ack(
            request_id=command.request_id,
            topic=self.name,
            status="ok",
            offset=offset,
            epoch=self.epoch,
            recovered=recovered,
            filtered=True if filtered else None,
            expired=expired if recovered and expired else None,
            ts=ts_now(),
        )
        session.send(encode(ack))

    def _frame(self, publication: Publication) -> bytes:
        frame = publication.frame
        if frame is None:
            expires = publication.expires
            event = Event(
                topic=self.name,
                message=publication.message,
                offset=publication.offset,
                ts=publication.ts,
                expires_at=format_ts(expires) if expires else None,
            )
            frame = self._framer(encode(event))
            if expires:
                frame = expiring_frame(frame, expires)
            publication.frame = frame
        return frame

    def _unsubscribe(self, session: Session, command: Unsubscribe) -> None:
        reasons = self._reasons.get(session)
        if reasons is not None:
            # Its patterns still match this topic: it keeps receiving through them.
            reasons.pop(CONCRETE, None)
            self._set_filter(session, any_of(list(reasons.values())))
        else:
            if session in self.subscribers or session in self._joining:
                session.topics.discard(self.name)
            self.detach(session)
        session.send(
            encode(Ack(request_id=command.request_id, topic=self.name, status="ok", ts=ts_now()))
        )

    async def _delete(self, command: DeleteTopic) -> None:
        try:
            await self._engine.delete_topic(self.name)
        except PubSubError as exc:
            command.error = exc
        else:
            # Local subscribers get topic_deleted from the feed, after every message
            # published before the delete (the memory engine's feed said so already;
            # on_deleted is idempotent). Without them there is nothing to wait for.
            if not self._has_local():
                self.on_deleted()
        finally:
            command.done.set()

    def _not_found(self, session: Requester | None, request: Request) -> None:
        error = TopicNotFound(f"topic {self.name!r} does not exist")
        if isinstance(request, DeleteTopic):
            request.error = error
            request.done.set()
        elif isinstance(request, Attach | Detach):
            return  # a pattern outlives the topics it matches
        elif session is not None:
            session.send_error(error, request.request_id)


def _message_object(publication: Publication) -> object:
    """The message as a filter sees it: ``{"id", "payload"}``, the payload decoded."""
    message = publication.message
    return {"id": message.id, "payload": msgspec.json.decode(message.payload)}
