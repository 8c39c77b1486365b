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
"""

from __future__ import annotations

from typing import ClassVar

import trio

from .._protocol.errors import LimitExceeded, PubSubError, TopicNotFound
from .._protocol.frames import Ack, Event, Info, Publish, Subscribe, Unsubscribe, encode
from .._protocol.timestamps import ts_now
from .counters import Counters
from .engine import Engine, Publication, TopicInfo
from .session import Framer, Session


class DeleteTopic:
    """The delete command; :attr:`done` is set once it is carried out (or refused:
    :attr:`error`)."""

    __slots__ = ("done", "error")
    #: Like a client request's (a delete has none), so every command has one.
    request_id: ClassVar[None] = None

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: PubSubError | None = None


#: A command on a topic's inbox: the session (None for a delete), the request,
#: and ``perf_counter()`` when its bytes were received (for the latency histogram).
Command = tuple["Session | None", "Publish | Subscribe | Unsubscribe | DeleteTopic", float]


class TopicActor:
    """One topic on this node: its local subscribers and the task that serves them.

    Attributes:
        offset: The newest offset fanned out on this node.
        epoch: The topic incarnation's epoch (from the engine).
        subscribers: The local sessions subscribed, in subscription order.
        dropped: Events this topic's fan-out dropped from full outboxes.
    """

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
        self._engine = engine
        self._max_subscribers = max_subscribers
        self._max_batch = max_batch
        self._framer = framer
        self._counters = counters
        #: When the publish being stored was received (read by ``fan_out``).
        self._published_at = 0.0
        self._send, self._receive = trio.open_memory_channel[Command](inbox_size)

    def __repr__(self) -> str:
        return (
            f"<TopicActor {self.name!r} offset={self.offset} subscribers={len(self.subscribers)}>"
        )

    # ------------------------------------------------------------ called by others

    async def submit(self, command: Command) -> bool:
        """Queue a command; waits only while the inbox is full. False if the topic is gone."""
        try:
            self._send.send_nowait(command)
        except trio.WouldBlock:
            try:
                await self._send.send(command)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        """Stop the actor once it has carried out what is queued (node shutdown)."""
        self._send.close()

    def detach(self, session: Session) -> None:
        """Forget a session that is going away. Synchronous: the actor never
        awaits while it iterates the subscribers, so this cannot split a fan-out."""
        if session in self.subscribers:
            del self.subscribers[session]
            if not self.subscribers:
                self._engine.unfollow(self.name)

    # ------------------------------------------------------------ the engine's feed

    def fan_out(self, publications: list[Publication]) -> None:
        """Hand newly published messages to every local subscriber (feed, hot path)."""
        frames: list[bytes] = []
        offset = self.offset
        for publication in publications:
            if publication.offset <= offset:
                continue  # already delivered
            frames.append(publication.frame or self._frame(publication))
            offset = publication.offset
        self.offset = offset
        if not frames or not self.subscribers:
            return
        nbytes = sum(map(len, frames))
        published_at = self._published_at
        dropped = 0
        for subscriber in self.subscribers:
            dropped += subscriber.deliver(frames, nbytes, published_at)
        if dropped:
            self.dropped += dropped

    def on_deleted(self) -> None:
        """The topic was deleted (feed): tell the local subscribers and stop; what
        is still queued is answered ``TOPIC_NOT_FOUND``."""
        if self.deleted:
            return
        self.deleted = True
        notice = encode(Info(topic=self.name, msg="topic_deleted", ts=ts_now()))
        for session in self.subscribers:
            session.topics.discard(self.name)
            session.send(notice)
        self.subscribers.clear()
        self._send.close()

    # --------------------------------------------------------------- the actor

    async def run(self) -> None:
        """The actor: carry out commands until deleted or closed."""
        receive = self._receive
        with receive:
            async for first in receive:
                batch = [first]
                try:
                    while len(batch) < self._max_batch:
                        batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    pass  # EndOfChannel: deleted or closed; this batch is the last
                await self._process(batch)

    async def _process(self, batch: list[Command]) -> None:
        """Carry out a batch of commands in order; consecutive publishes together."""
        start = 0
        for index, command in enumerate(batch):
            request = command[1]
            if type(request) is Publish:
                continue
            if start < index:
                await self._publish(batch[start:index])
            start = index + 1
            session = command[0]
            if self.deleted:
                self._not_found(session, request)
            elif type(request) is Subscribe:
                assert session is not None
                await self._subscribe(session, request)
            elif type(request) is Unsubscribe:
                assert session is not None
                self._unsubscribe(session, request)
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
        for _, request, _ in commands:
            assert type(request) is Publish
            messages.append(request.message)
        self._published_at = commands[0][2]
        try:
            published = await self._engine.publish(self.name, messages)
        except PubSubError as exc:
            for session, request, _ in commands:
                if session is not None:
                    session.send_error(exc, request.request_id)
            return
        finally:
            self._published_at = 0.0
        self._counters.published += len(commands)
        # One write per publisher per batch, not one per ack.
        offset = published.first_offset
        replies: dict[Session, list[bytes]] = {}
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
        if session in self.subscribers:
            # Already subscribed: acknowledged, never replayed twice.
            self._ack_subscribe(session, command, self.offset, None)
            return
        if len(self.subscribers) >= self._max_subscribers:
            session.send_error(
                LimitExceeded(
                    f"topic {self.name!r} has the maximum of {self._max_subscribers} subscribers"
                ),
                command.request_id,
            )
            return
        if not self.subscribers:
            await self._engine.follow(self.name)
        try:
            history = await self._engine.history(
                self.name,
                last_n=command.last_n,
                since_offset=command.since_offset,
                epoch=command.epoch,
            )
        except PubSubError as exc:
            if not self.subscribers:
                self._engine.unfollow(self.name)
            session.send_error(exc, command.request_id)
            return
        if session.close_reason is not None:
            return  # closed while the engine answered
        self.subscribers[session] = None
        session.topics.add(self.name)
        self.epoch = history.epoch
        self._ack_subscribe(session, command, history.offset, history.recovered)
        if history.publications:
            session.replay([self._frame(p) for p in history.publications])

    def _ack_subscribe(
        self, session: Session, command: Subscribe, offset: int, recovered: bool | None
    ) -> None:
        ack = Ack(
            request_id=command.request_id,
            topic=self.name,
            status="ok",
            offset=offset,
            epoch=self.epoch,
            recovered=recovered,
            ts=ts_now(),
        )
        session.send(encode(ack))

    def _frame(self, publication: Publication) -> bytes:
        frame = publication.frame
        if frame is None:
            event = Event(
                topic=self.name,
                message=publication.message,
                offset=publication.offset,
                ts=publication.ts,
            )
            frame = publication.frame = self._framer(encode(event))
        return frame

    def _unsubscribe(self, session: Session, command: Unsubscribe) -> None:
        if session in self.subscribers:
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
            # The engine's feed normally said so already (on_deleted is idempotent).
            self.on_deleted()
        finally:
            command.done.set()

    def _not_found(
        self, session: Session | None, request: Publish | Subscribe | Unsubscribe | DeleteTopic
    ) -> None:
        error = TopicNotFound(f"topic {self.name!r} does not exist")
        if isinstance(request, DeleteTopic):
            request.error = error
            request.done.set()
        elif session is not None:
            session.send_error(error, request.request_id)
