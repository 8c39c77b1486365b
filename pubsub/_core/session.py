"""One session per connection: its subscriptions, outbox, writer hand-off and lifecycle.

Topic actors push event frames with :meth:`Session.deliver` (never blocking);
the connection's writer takes everything queued at once with
:meth:`Session.next_batch`. What a full outbox does is the :class:`Outbox`'s
policy; the session carries out its verdict (count drops, or close with
``SLOW_CONSUMER``).

While the writer is parked on an empty outbox, frames are written at once
through the transport's non-blocking ``write_now`` hook instead of waking the
writer: one system call instead of a task switch per subscriber. With a
:class:`Burst` (a node's sessions share one), those writes wait until the end
of the scheduler's pass and leave together, one per connection: a connection
that got several frames in the pass gets one write, and the writes of a pass
come back to back (a write that wakes a sleeping reader costs several times
one that finds it awake).

Control frames (acks, errors, infos) are never dropped: a client waiting for
an ack must get it. They are bounded by the reader, which waits for room
(:meth:`Session.wait_for_room`) before it handles the next request. WebSocket
pongs are bounded without stopping the reader: while frames wait, only the
answer to the latest ping waits with them (:meth:`Session.send_pong`), and a
peer that sends more than ``MAX_QUEUE_SIZE`` pings without reading is closed.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import trio

from .._protocol.errors import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    ErrorCode,
    PubSubError,
    RateLimited,
    SlowConsumer,
)
from .._protocol.frames import RequestId, error_frame, info_frame
from .._protocol.timestamps import now_ms
from .counters import Counters
from .outbox import DISCONNECT, Outbox, Pinned, Policy
from .ratelimit import TokenBucket

if TYPE_CHECKING:
    from .._protocol.filters import Filter

log = logging.getLogger("pubsub.session")

#: Wraps an encoded JSON frame for the wire (the WebSocket transport prepends
#: the frame header); applied once per frame.
Framer = Callable[[bytes], bytes]


class CloseReason:
    """Why a session ends: the WebSocket close code, a short reason (sent in the
    close frame) and the error code, if an error."""

    __slots__ = ("code", "error", "reason")

    def __init__(self, code: int, reason: str, error: ErrorCode | None = None) -> None:
        self.code = code
        self.reason = reason
        self.error = error

    def __repr__(self) -> str:
        return f"CloseReason({self.code}, {self.reason!r}, {self.error})"


class Requester(Protocol):
    """Who made a request and gets its answers: a :class:`Session`, or an
    :class:`~pubsub._core.node.Answer` for a request without a connection (REST)."""

    received: int
    published: int
    client_id: str | None
    #: Its publish rate limit (``RATE_LIMIT``), None when there is none.
    bucket: TokenBucket | None

    def send(self, frame: bytes) -> None: ...

    def send_many(self, frames: list[bytes]) -> None: ...

    def send_error(self, error: PubSubError, request_id: RequestId | None = None) -> None: ...


#: ``Session._waiter`` while no writer task runs (see ``Session.writer_idle``).
_NO_WRITER: Final = object()


def dropped_notice_for(framer: Framer) -> Callable[[int], bytes]:
    """Builds the framed ``messages_dropped`` notice (one per node, not per session:
    a closure per idle connection is memory for nothing)."""

    def notice(count: int) -> bytes:
        return framer(info_frame("messages_dropped", dropped=count))

    return notice


def expired_notice_for(framer: Framer) -> Callable[[int], bytes]:
    """Builds the framed ``messages_expired`` notice (one per node, like
    :func:`dropped_notice_for`)."""

    def notice(count: int) -> bytes:
        return framer(info_frame("messages_expired", expired=count))

    return notice


_ids: Final = itertools.count(1)
_id_prefix: Final = os.urandom(2).hex()


def new_connection_id() -> str:
    """A connection id unique within this process: ``c-<random>-<counter>``."""
    return f"c-{_id_prefix}{next(_ids):x}"


class Burst(trio.abc.Instrument):
    """The direct writes of one scheduler pass, written together just before trio
    waits for I/O (a trio instrument, like Redis's ``beforeSleep``).

    A session holds what it would have written at once (:meth:`Session.deliver`
    with an idle writer) and registers here; :meth:`before_io_wait` writes each
    held session's bytes with one system call. Nothing waits longer than the
    pass that produced it, and a pass never waits on a held write.

    A write the socket takes only in part starts the connection's writer (or
    closes it) from here, after trio chose how long to wait for I/O: with
    nothing else runnable that wait could be long (until the next timer), and
    the new task would wait with it. So the wait is cut short then.
    """

    __slots__ = ("_token", "sessions")

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self._token: trio.lowlevel.TrioToken | None = None

    def before_io_wait(self, timeout: float) -> None:
        sessions = self.sessions
        if not sessions:
            return
        self.sessions = []
        woke = False
        for session in sessions:
            try:
                woke = session.flush_held() or woke
            except Exception:  # an instrument that raises is removed: never let one
                log.exception("writing held frames to %s failed", session.connection_id)
                session.close(CloseReason(CLOSE_ABNORMAL, "internal error"))
                woke = True
        if woke and timeout > 0:
            # A task scheduled now would sleep through the I/O wait: end it at once.
            if self._token is None:
                self._token = trio.lowlevel.current_trio_token()
            self._token.run_sync_soon(_nothing)


def _nothing() -> None:
    """Run by trio to end an I/O wait early (see :class:`Burst`)."""


class Session:
    """The node's view of one connection.

    Attributes:
        connection_id: Server-assigned id, sent in the welcome ``info`` frame.
        client_id: The ``client_id`` of the client's latest frame (a label).
        topics: The names of the topics this connection receives, subscribed
            by name or through a pattern (the topic actors hold the sessions;
            this is the way back).
        close_reason: Set once the session is ending; the writer then sends
            what is queued and closes the connection with ``close_reason.code``.
        received_at: ``perf_counter()`` of the transport's latest read (or the
            session's opening): the keepalive closes sessions silent too long.
        idle_timeout: Whether ``CONNECTION_TIMEOUT`` applies (a transport that
            cannot see the client's pongs turns it off).
        published / delivered / dropped: This connection's counters (see
            :class:`~pubsub._core.counters.Counters`).
        write_now: Set by a transport: a non-blocking write of wire bytes
            returning how many were written (raising ``OSError`` when the peer
            is gone); the second argument is when the data's oldest event was
            received from its publisher (0.0: not an event), for latency sampling.
        on_close: Set by a transport: called once when the session starts closing.
        burst: The node's :class:`Burst`, or None to write at once.
    """

    __slots__ = (
        "_corked",
        "_counters",
        "_drained",
        "_framer",
        "_held",
        "_held_at",
        "_oldest_at",
        "_start_writer",
        "_waiter",
        "batch_published_at",
        "bucket",
        "burst",
        "client_id",
        "close_reason",
        "connected_at",
        "connection_id",
        "delivered",
        "dropped",
        "idle_timeout",
        "on_close",
        "outbox",
        "patterns",
        "published",
        "received",
        "received_at",
        "topics",
        "write_now",
    )

    def __init__(
        self,
        *,
        max_queue_size: int,
        max_queue_bytes: int = 0,
        policy: Policy,
        framer: Framer,
        counters: Counters,
        connection_id: str | None = None,
        dropped_notice: Callable[[int], bytes] | None = None,
        expired_notice: Callable[[int], bytes] | None = None,
        burst: Burst | None = None,
    ) -> None:
        self.connection_id = connection_id or new_connection_id()
        self.client_id: str | None = None
        self.topics: set[str] = set()
        #: Its wildcard subscriptions (v1.2) with their filters; None until it makes one.
        self.patterns: dict[str, Filter | None] | None = None
        self.close_reason: CloseReason | None = None
        self.connected_at = now_ms()
        self.received = 0
        self.received_at = time.perf_counter()
        self.idle_timeout = True
        #: When the oldest event of the last batch was received from its publisher (0.0: unknown).
        self.batch_published_at = 0.0
        self._oldest_at = 0.0
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self._framer = framer
        self._counters = counters
        self.outbox = Outbox(
            max_frames=max_queue_size,
            max_bytes=max_queue_bytes,
            policy=policy,
            dropped_notice=dropped_notice or dropped_notice_for(framer),
            expired_notice=expired_notice or expired_notice_for(framer),
        )
        self.on_close: Callable[[], None] | None = None
        #: The writer task parked for frames, ``_NO_WRITER`` when the transport
        #: starts one on demand and none runs, None while a writer is busy.
        self._waiter: trio.lowlevel.Task | object | None = None
        self._start_writer: Callable[[], object] | None = None
        self.write_now: Callable[[bytes, float], int] | None = None
        self._drained: trio.Event | None = None
        #: While the reader carries out one read's requests: everything for this
        #: connection waits, and goes out in one write at the end (``uncork``).
        self._corked = False
        self.burst = burst
        self.bucket: TokenBucket | None = None
        #: Bytes written "at once" this pass, waiting for the burst (oldest first),
        #: and when the oldest event among them was received (latency sampling).
        #: While any are held, the outbox holds only what came after them.
        self._held: list[bytes] | None = None
        self._held_at = 0.0

    def __repr__(self) -> str:
        return f"<Session {self.connection_id} client_id={self.client_id!r}>"

    @property
    def is_open(self) -> bool:
        return self.close_reason is None

    @property
    def queued(self) -> int:
        """Entries waiting for the writer."""
        return len(self.outbox.queue)

    # ------------------------------------------------------------------ input

    def deliver(
        self,
        frames: list[bytes],
        nbytes: int,
        published_at: float = 0.0,
        joined: bytes | None = None,
        expiring: bool = False,
    ) -> int:
        """Queue live event frames (already framed, ``nbytes`` long together); never
        blocks. Returns how many events the backpressure policy dropped.

        This is the fan-out hot path: one call per subscriber per topic batch.
        ``published_at`` is when the first of them reached the server (for the
        latency histogram; 0.0 when unknown). ``joined``, when given, is the
        frames as one ``bytes`` (built once for every subscriber). ``expiring``:
        some frames are :class:`~pubsub._core.outbox.Expiring` (if queued, the
        outbox checks them when they are taken).
        """
        if self.close_reason is not None:
            return 0
        outbox = self.outbox
        if (
            not outbox.queue
            and self._waiter is not None
            and self.write_now is not None
            and not self._corked
        ):
            self._counters.delivered += len(frames)
            self.delivered += len(frames)
            if joined is None:
                joined = frames[0] if len(frames) == 1 else b"".join(frames)
            self._write_direct(joined, published_at)
            return 0
        if not self._oldest_at:
            self._oldest_at = published_at
        if expiring:
            outbox.expiring = True
        verdict = outbox.enqueue(frames, nbytes)
        if verdict == DISCONNECT:
            self._disconnect_slow()
            return 0
        accepted = len(frames) - verdict
        self._counters.delivered += accepted
        self.delivered += accepted
        if verdict:
            self.dropped += verdict
            self._counters.dropped += verdict
        if self._waiter is not None and not self._corked:
            self._wake()
        return verdict

    def replay(self, frames: list[bytes], expiring: bool = False) -> None:
        """Queue replayed events after a subscribe ack. Not subject to the queue
        bounds, now or later: the client asked for exactly these (unless they
        expire while queued: ``expiring`` as for :meth:`deliver`)."""
        if self.close_reason is not None or not frames:
            return
        self._counters.delivered += len(frames)
        self.delivered += len(frames)
        if (
            not self.outbox.queue
            and self._waiter is not None
            and self.write_now is not None
            and not self._corked
        ):
            self._write_direct(b"".join(frames), 0.0)
            return
        if expiring:
            self.outbox.expiring = True
        self.outbox.replay(frames)
        if not self._corked:
            self._wake()

    def report_dropped(self, count: int) -> None:
        """Tell the client that ``count`` events will never reach it (the node lost
        them): a ``messages_dropped`` notice before its next frame, sent at once if
        the outbox is empty."""
        if self.close_reason is None and count > 0:
            self.outbox.dropped_pending += count
            self._wake()

    def send(self, frame: bytes) -> None:
        """Queue one control frame (unframed JSON); never dropped, never blocks."""
        self.send_raw(self._framer(frame))

    def send_many(self, frames: list[bytes]) -> None:
        """Queue several control frames (unframed JSON); written together when idle."""
        if self.close_reason is None:
            framer = self._framer
            self._put([Pinned(framer(frame)) for frame in frames])

    def send_raw(self, data: bytes) -> None:
        """Queue bytes that are already wire-ready (e.g. a WebSocket ping or pong)."""
        if self.close_reason is None:
            self._put([Pinned(data)])

    def send_pong(self, pong: bytes, pings: int = 1) -> bool:
        """Answer the latest of ``pings`` WebSocket pings with ``pong`` (wire bytes):
        at once when nothing waits, else behind what waits, replacing an answer
        still waiting (see :meth:`Outbox.put_pong`). Returns False when the peer
        has sent more than ``MAX_QUEUE_SIZE`` pings without taking an answer:
        a flood the caller ends."""
        if self.close_reason is not None:
            return True
        outbox = self.outbox
        if not outbox.queue:
            self._put([Pinned(pong)])
            return True
        return outbox.put_pong(pong, pings)

    def send_error(self, error: PubSubError, request_id: RequestId | None = None) -> None:
        """Queue the ``error`` frame for ``error``, answering ``request_id``
        (default: the error's own ``request_id``)."""
        rid = error.request_id if request_id is None else request_id
        retry_after_ms = error.retry_after_ms if isinstance(error, RateLimited) else None
        self.send(error_frame(error.code, error.message, rid, retry_after_ms))

    def _put(self, entries: list[Pinned]) -> None:
        """Write ``entries`` at once if the writer is idle on an empty outbox, else queue them."""
        if (
            not self.outbox.queue
            and self._waiter is not None
            and self.write_now is not None
            and not self._corked
        ):
            self._write_direct(entries[0] if len(entries) == 1 else b"".join(entries), 0.0)
            return
        self.outbox.put(entries)
        if not self._corked:
            self._wake()

    def _write_direct(self, data: bytes, published_at: float) -> None:
        """Write while the writer is idle (at the end of the pass, with a burst);
        whatever does not fit goes to the writer."""
        burst = self.burst
        if burst is not None:
            held = self._held
            if held is None:
                self._held = [data]
                self._held_at = published_at
                burst.sessions.append(self)
            else:
                held.append(data)
                self._held_at = self._held_at or published_at
            return
        self._write(data, published_at)

    def flush_held(self) -> bool:
        """Write what this pass held (the :class:`Burst` calls this). Returns
        whether a task was woken for the rest (the writer, or the close)."""
        held = self._held
        if held is None:
            return False
        self._held = None
        return self._write(held[0] if len(held) == 1 else b"".join(held), self._held_at)

    def _spill(self) -> None:
        """Put held bytes in front of the outbox (the writer takes over now)."""
        held = self._held
        if held is not None:
            self._held = None
            data = held[0] if len(held) == 1 else b"".join(held)
            # Accepted as if written: never dropped, and older than anything queued.
            self.outbox.queue.insert(0, Pinned(data))
            self._oldest_at = self._held_at or self._oldest_at

    def _write(self, data: bytes, published_at: float) -> bool:
        """Write ``data`` now; the rest goes to the writer. Returns whether a task
        was woken (the writer for the rest, or the close)."""
        assert self.write_now is not None
        try:
            written = self.write_now(data, published_at)
        except BlockingIOError:
            written = 0
        except OSError:
            self.close(CloseReason(CLOSE_ABNORMAL, "connection lost"))
            return True
        if written < len(data):
            # Part of a frame may be on the wire already: the rest must never be
            # dropped and nothing may be written before it.
            self.outbox.put_rest(memoryview(data)[written:])
            self._oldest_at = self._oldest_at or published_at
            self._wake()
            return True
        return False

    def cork(self) -> None:
        """Hold everything for this connection until :meth:`uncork` (the reader
        carries out a whole read's requests, then answers them in one write)."""
        self._corked = True

    def uncork(self) -> None:
        """Write what was held at once if the writer is idle, else hand it over."""
        self._corked = False
        outbox = self.outbox
        if not (outbox.queue or outbox.dropped_pending) and self.close_reason is None:
            return
        if self.close_reason is not None or self._waiter is None or self.write_now is None:
            self._wake()  # the writer (if parked) takes it, or is busy and will
            return
        batch = self._take()
        self._write_direct(
            batch[0] if len(batch) == 1 else b"".join(batch), self.batch_published_at
        )

    # -------------------------------------------------------------- lifecycle

    def close(self, reason: CloseReason) -> None:
        """End the session: the writer sends what is queued, then closes with ``reason``."""
        if self.close_reason is None:
            self.close_reason = reason
            self._wake()
            if self.on_close is not None:
                self.on_close()
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    def fail(self, error: PubSubError) -> None:
        """Send the error frame for ``error`` and end the session with its close code."""
        if self.close_reason is not None:
            return
        self.send_error(error)
        code = error.code
        self.close(CloseReason(code.ws_close or CLOSE_GOING_AWAY, code.value, code))

    def _disconnect_slow(self) -> None:
        """The ``disconnect`` verdict: what is queued would only delay the close."""
        self._counters.slow_consumer_disconnects += 1
        discarded = self.outbox.discard()
        self.delivered -= discarded
        self._counters.delivered -= discarded
        limit = self.outbox.max_frames
        log.warning(
            "connection %s (client_id %r) closed as a slow consumer: outbox full (%d frames)",
            self.connection_id,
            self.client_id,
            limit,
            extra={
                "event": "slow_consumer_disconnect",
                "connection_id": self.connection_id,
                "client_id": self.client_id,
                "reason": "outbox_full",
                "max_queue_size": limit,
                "discarded": discarded,
                "received": self.received,
                "published": self.published,
                "delivered": self.delivered,
                "dropped": self.dropped,
            },
        )
        self.fail(
            SlowConsumer(f"outbox full ({limit} frames): the connection is not reading fast enough")
        )

    # ----------------------------------------------------------------- output

    async def next_batch(self) -> list[bytes]:
        """Wait for frames and take all of them, oldest first (a
        ``messages_dropped`` notice first when events were dropped). Returns an
        empty batch once the session is closing and everything queued was taken.
        """
        outbox = self.outbox
        if outbox.queue or outbox.dropped_pending or self.close_reason is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
        while not outbox.queue and not outbox.dropped_pending and self.close_reason is None:
            # Parking is itself a checkpoint.
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
        return self._take()

    def _take(self) -> list[bytes]:
        outbox = self.outbox
        batch = outbox.take()
        if outbox.expired:
            # Counted as delivered when queued; they never will be.
            expired = outbox.expired
            self.delivered -= expired
            self._counters.delivered -= expired
            self._counters.expired += expired
        self.batch_published_at = self._oldest_at
        self._oldest_at = 0.0
        if self._drained is not None:
            self._drained.set()
            self._drained = None
        return batch

    def take_batch(self) -> list[bytes] | None:
        """For a writer started on demand (:meth:`writer_idle`): everything queued,
        as :meth:`next_batch` gives it, or None when nothing is."""
        if not self.outbox.queue and not self.outbox.dropped_pending:
            return None
        return self._take()

    def writer_idle(self, start_writer: Callable[[], object]) -> None:
        """The connection has no writer task now: frames are written at once while
        the outbox is empty, and ``start_writer`` is called when one is needed
        (frames that must wait, or the close). An idle connection then holds no
        task for writing (a parked task is about 2 KB)."""
        self._start_writer = start_writer
        self._waiter = _NO_WRITER
        if self.outbox.queue or self.outbox.dropped_pending or self.close_reason is not None:
            self._wake()  # what came before the connection was ready

    async def wait_for_room(self) -> None:
        """Wait while the outbox holds ``MAX_QUEUE_SIZE`` entries or more (the
        reader calls this before each request, which bounds control frames)."""
        while len(self.outbox.queue) >= self.outbox.max_frames and self.close_reason is None:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
        await trio.lowlevel.checkpoint_if_cancelled()

    def _wake(self) -> None:
        if self._held is not None:
            self._spill()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if isinstance(waiter, trio.lowlevel.Task):
                trio.lowlevel.reschedule(waiter)
            else:
                assert self._start_writer is not None
                self._start_writer()

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED
