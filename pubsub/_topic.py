"""The topic actor: one task per topic that orders, stores and fans out messages.

Every command for a topic (publish, subscribe, unsubscribe, delete) goes
through its bounded inbox and is carried out by :meth:`Topic.run` alone, so
a subscribe's ack and replay are atomic with respect to publishes: no gap
and no duplicate between replay and live delivery.

When busy the actor takes everything queued in its inbox at once, encodes
each published message once, and hands the whole run of consecutive
publishes to each subscriber in one :meth:`Session.deliver` call.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from ._errors import ErrorCode
from ._protocol import (
    Ack,
    Event,
    Info,
    Publish,
    Subscribe,
    Unsubscribe,
    encode,
    now_ms,
    ts_now,
)

if TYPE_CHECKING:
    from ._broker import Counters
    from ._session import Framer, Session

#: A command on a topic's inbox. ``None`` (delete) travels as ``(None, None)``.
Command = tuple["Session | None", "Publish | Subscribe | Unsubscribe | None"]

#: The most commands one wake-up takes from the inbox before fanning out.
MAX_BATCH: Final = 512

_epochs: Final = itertools.count(1)
_epoch_prefix: Final = os.urandom(4).hex()


def new_epoch() -> str:
    """An epoch unique to this topic incarnation: random per process, counted within it."""
    return f"{_epoch_prefix}-{next(_epochs)}"


class Topic:
    """One topic: its replay ring, offsets, subscribers and the actor that owns them.

    Attributes:
        offset: Offset of the newest message (0 before the first); equals the
            number of messages ever published to the topic.
        subscribers: The sessions subscribed, in subscription order.
        dropped: Events this topic's fan-out dropped from full outboxes.
    """

    def __init__(
        self,
        name: str,
        *,
        max_messages: int,
        max_subscribers: int,
        inbox_size: int,
        max_batch: int = MAX_BATCH,
        framer: Framer,
        counters: Counters,
    ) -> None:
        self.name = name
        self.epoch = new_epoch()
        self.created_at = now_ms()
        self.offset = 0
        self.dropped = 0
        self.subscribers: dict[Session, None] = {}
        self._ring: deque[bytes] = deque(maxlen=max_messages)
        self._max_subscribers = max_subscribers
        self._max_batch = max_batch
        self._framer = framer
        self._counters = counters
        self._send, self._receive = trio.open_memory_channel[Command](inbox_size)

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} offset={self.offset} subscribers={len(self.subscribers)}>"

    @property
    def stored(self) -> int:
        """Messages held in the replay ring."""
        return len(self._ring)

    # ------------------------------------------------------------ called by others

    async def submit(
        self, session: Session | None, command: Publish | Subscribe | Unsubscribe | None
    ) -> bool:
        """Queue a command; waits only while the inbox is full. False if the topic is gone."""
        try:
            self._send.send_nowait((session, command))
        except trio.WouldBlock:
            try:
                await self._send.send((session, command))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def delete(self) -> None:
        """Ask the actor to notify subscribers with ``topic_deleted`` and stop."""
        await self.submit(None, None)

    def close(self) -> None:
        """Stop the actor once it has carried out what is queued (broker shutdown)."""
        self._send.close()

    def detach(self, session: Session) -> None:
        """Forget a session that is going away. Synchronous: the actor never
        awaits while it holds the subscriber set, so this cannot split a batch."""
        self.subscribers.pop(session, None)

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
                except trio.WouldBlock:
                    pass
                if not self._process(batch):
                    break
            # Deleted: answer whatever still arrives so no request goes unanswered.
            self._send.close()
            while True:
                try:
                    session, command = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if session is not None and command is not None:
                    self._not_found(session, command)

    def _process(self, batch: list[Command]) -> bool:
        """Carry out a batch of commands in order. False once the topic is deleted."""
        frames: list[bytes] = []
        acks: list[tuple[Session, Publish, int]] = []
        ts = ""
        for session, command in batch:
            if type(command) is Publish:
                if not ts:
                    ts = ts_now()
                self.offset += 1
                frame = self._framer(
                    encode(
                        Event(topic=self.name, message=command.message, offset=self.offset, ts=ts)
                    )
                )
                self._ring.append(frame)
                frames.append(frame)
                if session is not None:
                    acks.append((session, command, self.offset))
                continue
            if frames:
                self._fan_out(frames, acks, ts)
                frames, acks = [], []
            if type(command) is Subscribe:
                assert session is not None
                self._subscribe(session, command)
            elif type(command) is Unsubscribe:
                assert session is not None
                self._unsubscribe(session, command)
            else:
                self._delete()
                return False
        if frames:
            self._fan_out(frames, acks, ts)
        return True

    def _fan_out(
        self, frames: list[bytes], acks: list[tuple[Session, Publish, int]], ts: str
    ) -> None:
        counters = self._counters
        counters.published += len(frames)
        # When the run's first message reached the server, for the latency histogram.
        published_at = acks[0][0].received_at if acks else 0.0
        dropped = 0
        for subscriber in self.subscribers:
            dropped += subscriber.deliver(frames, published_at)
        if dropped:
            self.dropped += dropped
        # One write per publisher per batch, not one per ack.
        replies: dict[Session, list[bytes]] = {}
        for session, command, offset in acks:
            ack = Ack(
                request_id=command.request_id, topic=self.name, status="ok", offset=offset, ts=ts
            )
            replies.setdefault(session, []).append(encode(ack))
        for session, answers in replies.items():
            session.send_many(answers)

    def _subscribe(self, session: Session, command: Subscribe) -> None:
        if not session.is_open:
            return
        recovered: bool | None = None
        replay: list[bytes] = []
        if session in self.subscribers:
            pass  # already subscribed: acknowledged, never replayed twice
        elif len(self.subscribers) >= self._max_subscribers:
            session.send_error(
                ErrorCode.LIMIT_EXCEEDED,
                f"topic {self.name!r} has the maximum of {self._max_subscribers} subscribers",
                command.request_id,
            )
            return
        else:
            if command.since_offset is not None:
                since = self._since(command.since_offset, command.epoch)
                recovered = since is not None
                replay = since or []
            elif command.last_n and self._ring:
                start = max(0, len(self._ring) - command.last_n)
                replay = list(itertools.islice(self._ring, start, None))
            self.subscribers[session] = None
            session.topics[self.name] = self
        session.send(
            encode(
                Ack(
                    request_id=command.request_id,
                    topic=self.name,
                    status="ok",
                    offset=self.offset,
                    epoch=self.epoch,
                    recovered=recovered,
                    ts=ts_now(),
                )
            )
        )
        session.replay(replay)

    def _since(self, since_offset: int, epoch: str | None) -> list[bytes] | None:
        """The stored messages after ``since_offset``, or None when the epoch
        differs or the ring no longer holds all of them (never a partial replay)."""
        if epoch != self.epoch or since_offset > self.offset:
            return None
        missing = self.offset - since_offset
        if missing > len(self._ring):
            return None
        return list(itertools.islice(self._ring, len(self._ring) - missing, None))

    def _unsubscribe(self, session: Session, command: Unsubscribe) -> None:
        self.subscribers.pop(session, None)
        if session.topics.get(self.name) is self:
            del session.topics[self.name]
        session.send(
            encode(Ack(request_id=command.request_id, topic=self.name, status="ok", ts=ts_now()))
        )

    def _delete(self) -> None:
        notice = encode(Info(topic=self.name, msg="topic_deleted", ts=ts_now()))
        for session in self.subscribers:
            if session.topics.get(self.name) is self:
                del session.topics[self.name]
            session.send(notice)
        self.subscribers.clear()
        self._ring.clear()

    def _not_found(self, session: Session, command: Publish | Subscribe | Unsubscribe) -> None:
        session.send_error(
            ErrorCode.TOPIC_NOT_FOUND,
            f"topic {self.name!r} does not exist",
            command.request_id,
        )
