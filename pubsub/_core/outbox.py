"""A connection's outbox: its queue of wire-ready frames and the backpressure policy.

Entries are bytes ready for the socket. Live events are plain ``bytes``; every
other entry is :class:`Pinned` and is never removed by a policy: control frames
(acks, errors, infos, pongs, pings: a client waiting for an answer must get
it), replayed events (the client asked for exactly these with ``last_n`` or
``since_offset``), and the unwritten rest of a partly written frame (part of it
is on the wire already). Only live events count against the bounds:
``MAX_QUEUE_SIZE`` frames and, when set, ``MAX_QUEUE_BYTES`` bytes.

:meth:`Outbox.enqueue` returns a verdict the session acts on, as centrifuge's
``writer.go`` does: how many events it dropped to make room (0: accepted as
they are), or :data:`DISCONNECT`. The policies are classes in this module; a
third one is one more class here and its name in ``Settings``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final, Protocol

from .._protocol import timestamps

#: The verdict that the connection must be closed with ``SLOW_CONSUMER``.
DISCONNECT: Final = -1


class Pinned(bytes):
    """A queued entry no policy may remove (control frame, replay, partial rest)."""

    __slots__ = ()


class Expiring(bytes):
    """The event frame of a message with a TTL (v1.2): ``expires`` is when it
    expires (epoch ms). One object per message, shared by every subscriber's
    outbox; a frame that expired while queued is not written (:meth:`Outbox.take`).
    (A ``bytes`` subclass cannot have slots; only frames of expiring messages
    pay for the instance dict.)"""

    expires: int


class PinnedExpiring(Pinned):
    """A replayed :class:`Expiring` frame: pinned, and still not written once expired."""

    expires: int


def expiring_frame(data: bytes, expires: int) -> Expiring:
    frame = Expiring(data)
    frame.expires = expires
    return frame


class Policy(Protocol):
    """What a full outbox does with events that do not fit."""

    name: ClassVar[str]

    def overflow(self, outbox: Outbox, frames: list[bytes], nbytes: int) -> int:
        """Handle ``frames`` (``nbytes`` long together) that would exceed a bound.

        Returns the verdict: how many events were dropped, or :data:`DISCONNECT`.
        """
        ...


class DropOldest:
    """Queue the new events and drop the oldest queued ones until within bounds.

    Drops are reported to the client with ``messages_dropped`` before the next
    frame it is sent (:meth:`Outbox.take`).
    """

    name: ClassVar[str] = "drop_oldest"

    def overflow(self, outbox: Outbox, frames: list[bytes], nbytes: int) -> int:
        outbox.push(frames, nbytes)
        dropped = 0
        while outbox.over_bounds() and outbox.drop_oldest_event():
            dropped += 1
        outbox.dropped_pending += dropped
        return dropped


class Disconnect:
    """Close the connection with ``SLOW_CONSUMER`` (1013): it is not reading."""

    name: ClassVar[str] = "disconnect"

    def overflow(self, outbox: Outbox, frames: list[bytes], nbytes: int) -> int:
        return DISCONNECT


#: Every policy by its ``BACKPRESSURE_POLICY`` name.
POLICIES: Final[dict[str, type[DropOldest | Disconnect]]] = {
    policy.name: policy for policy in (DropOldest, Disconnect)
}


class Outbox:
    """The frames waiting for one connection's writer, with bounds and a policy.

    Args:
        max_frames: ``MAX_QUEUE_SIZE``: live events queued before the policy acts.
        max_bytes: ``MAX_QUEUE_BYTES``: bytes of live events queued before the
            policy acts; 0 for no byte bound. The byte bound acts only when more
            than one event would be queued: one event always fits, however large.
        policy: What to do when a bound would be exceeded.
        dropped_notice: Builds the wire frame telling the client how many
            events were dropped (``messages_dropped``).
        expired_notice: Likewise for events not written because their message
            expired while queued (``messages_expired``).

    Attributes:
        queue: The entries, oldest first. The session reads its truth value on
            the hot path (empty: write directly), so it is public.
        partial: The oldest entry is the unwritten rest of a partly written
            frame: nothing may go in front of it and nothing may remove it.
        dropped_pending: Events dropped since the last :meth:`take`.
        expiring: Whether an :class:`Expiring` frame may be queued (set by the
            session when it queues one): only then does :meth:`take` look.
        expired: Events the latest :meth:`take` left out because they expired.
        pong: The answer to the peer's latest ping while frames wait (at most
            one: RFC 6455 5.5.3 lets an endpoint answer only the latest ping),
            written behind them by the next :meth:`take`.
        unanswered_pings: Pings the peer sent since it last took frames while
            frames waited: what :meth:`put_pong` counts against ``max_frames``.
    """

    __slots__ = (
        "_bytes",
        "_dropped_notice",
        "_events",
        "_expired_notice",
        "_replayed",
        "dropped_pending",
        "expired",
        "expiring",
        "max_bytes",
        "max_frames",
        "partial",
        "policy",
        "pong",
        "queue",
        "unanswered_pings",
    )

    def __init__(
        self,
        *,
        max_frames: int,
        max_bytes: int = 0,
        policy: Policy,
        dropped_notice: Callable[[int], bytes],
        expired_notice: Callable[[int], bytes] | None = None,
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.policy = policy
        self._dropped_notice = dropped_notice
        self._expired_notice = expired_notice
        self.expiring = False
        self.expired = 0
        # A list, not a deque: an empty deque costs ~600 bytes per idle connection,
        # and the only removal from the front is drop_oldest's (rare and small).
        self.queue: list[bytes] = []
        #: Live (droppable) events queued, and their bytes.
        self._events = 0
        self._bytes = 0
        #: Replayed events queued (pinned, but events for the delivery counters).
        self._replayed = 0
        self.partial = False
        self.dropped_pending = 0
        self.pong: bytes | None = None
        self.unanswered_pings = 0

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def live_events(self) -> int:
        """Live events queued: what the bounds count."""
        return self._events

    @property
    def live_bytes(self) -> int:
        return self._bytes

    # ------------------------------------------------------------------ input

    def enqueue(self, frames: list[bytes], nbytes: int) -> int:
        """Queue live event frames (``nbytes`` long together). Never blocks.

        Returns the verdict: the number of events dropped to make room (0 when
        everything fit), or :data:`DISCONNECT`.
        """
        events = self._events + len(frames)
        if events > self.max_frames or (
            self.max_bytes and self._bytes + nbytes > self.max_bytes and events > 1
        ):
            return self.policy.overflow(self, frames, nbytes)
        self.queue.extend(frames)
        self._events = events
        self._bytes += nbytes
        return 0

    def put(self, entries: list[Pinned]) -> None:
        """Queue control frames: never dropped, not counted against the bounds."""
        self.queue.extend(entries)

    def replay(self, frames: list[bytes]) -> None:
        """Queue replayed events: never dropped, not counted against the bounds."""
        if self.expiring:
            self.queue.extend(map(_pin, frames))
        else:
            self.queue.extend(Pinned(frame) for frame in frames)
        self._replayed += len(frames)

    def put_rest(self, data: bytes | memoryview) -> None:
        """Queue the unwritten rest of a direct write, in front of everything (what
        is queued came after it). A memoryview of the rest is copied once."""
        assert not self.partial
        self.queue.insert(0, Pinned(data))
        self.partial = True

    def put_pong(self, pong: bytes, pings: int) -> bool:
        """Queue the answer to the latest of ``pings`` pings behind what waits
        (never empty when this is called), replacing one still waiting: a peer
        that pings and never reads costs one pong, not one per ping. Returns
        False once the peer has sent more than ``max_frames`` pings since it
        last took frames (a flood: the connection should be closed)."""
        self.pong = pong
        self.unanswered_pings += pings
        return self.unanswered_pings <= self.max_frames

    # ------------------------------------------------- used by the policies

    def push(self, frames: list[bytes], nbytes: int) -> None:
        """Queue live events without checking the bounds (a policy then restores them)."""
        self.queue.extend(frames)
        self._events += len(frames)
        self._bytes += nbytes

    def over_bounds(self) -> bool:
        """Whether the live events exceed a bound (the byte bound only counts
        while more than one live event is queued)."""
        return self._events > self.max_frames or bool(
            self.max_bytes and self._events > 1 and self._bytes > self.max_bytes
        )

    def drop_oldest_event(self) -> bool:
        """Remove the oldest live event; False if there is none."""
        if not self._events:
            return False
        queue = self.queue
        if not isinstance(queue[0], Pinned):
            frame = queue.pop(0)
        else:
            # Pinned entries are oldest: remove the oldest event behind them.
            for index, entry in enumerate(queue):  # pragma: no branch
                if not isinstance(entry, Pinned):
                    frame = entry
                    del queue[index]
                    break
        self._events -= 1
        self._bytes -= len(frame)
        return True

    # ----------------------------------------------------------------- output

    def take(self) -> list[bytes]:
        """Everything queued, oldest first, leaving the outbox empty.

        When events were dropped since the last take, a ``messages_dropped``
        notice comes first (after the rest of a partly written frame); events
        whose message expired while queued are left out (:attr:`expired`) and
        announced by a ``messages_expired`` notice after it.
        """
        batch = self.queue
        self.queue = []
        self.expired = 0
        if self.expiring:
            self.expiring = False
            batch = self._without_expired(batch)
        if self.dropped_pending:
            batch.insert(1 if self.partial else 0, self._dropped_notice(self.dropped_pending))
            self.dropped_pending = 0
        self.partial = False
        self._events = self._bytes = self._replayed = 0
        if self.pong is not None:
            batch.append(self.pong)
            self.pong = None
            self.unanswered_pings = 0
        return batch

    def _without_expired(self, batch: list[bytes]) -> list[bytes]:
        now = timestamps.now_ms()
        kept = [
            entry
            for entry in batch
            if not isinstance(entry, Expiring | PinnedExpiring) or entry.expires > now
        ]
        expired = len(batch) - len(kept)
        if expired:
            self.expired = expired
            if self._expired_notice is not None:
                # After a partial rest, before every event (a dropped notice goes
                # in front of it later).
                kept.insert(1 if self.partial else 0, self._expired_notice(expired))
        return kept

    def discard(self) -> int:
        """Forget everything queued except the rest of a partly written frame
        (the connection is closing and its peer is not reading).

        Returns how many events (live and replayed) were discarded.
        """
        head = self.queue[0] if self.partial else None
        discarded = self._events + self._replayed
        self.queue.clear()
        if head is not None:
            self.queue.append(head)
        self._events = self._bytes = self._replayed = 0
        self.dropped_pending = 0
        self.expiring = False
        self.pong = None
        return discarded


def _pin(frame: bytes) -> Pinned:
    if isinstance(frame, Expiring):
        pinned = PinnedExpiring(frame)
        pinned.expires = frame.expires
        return pinned
    return Pinned(frame)
