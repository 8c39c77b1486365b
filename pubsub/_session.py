"""One session per connection: its bounded outbox, subscriptions and counters.

Topic actors push event frames into the outbox with :meth:`Session.deliver`
(never blocking); the connection's writer takes everything queued at once
with :meth:`Session.next_batch`. A full outbox applies the backpressure
policy: ``drop_oldest`` removes the oldest queued *event* and later reports
how many it removed; ``disconnect`` ends the session with ``SLOW_CONSUMER``.

Control frames (acks, errors, pongs, infos) are never dropped: a client
waiting for an ack must get it. They are bounded by the reader, which waits
for room (:meth:`Session.wait_for_room`) before it handles the next request.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from ._errors import CLOSE_ABNORMAL, CLOSE_GOING_AWAY, ErrorCode
from ._protocol import RequestId, error_frame, info_frame, now_ms

if TYPE_CHECKING:
    from ._broker import Counters
    from ._topic import Topic

Framer = Callable[[bytes], bytes]


class _Control(bytes):
    """A queued frame that the drop policy must not remove (ack, error, info, pong)."""

    __slots__ = ()


class CloseReason:
    """Why a session ends: the WebSocket close code, a short reason (at most
    123 bytes, sent in the close frame) and the error code, if an error."""

    __slots__ = ("code", "error", "reason")

    def __init__(self, code: int, reason: str, error: ErrorCode | None = None) -> None:
        self.code = code
        self.reason = reason
        self.error = error

    def __repr__(self) -> str:
        return f"CloseReason({self.code}, {self.reason!r}, {self.error})"


_ids: Final = itertools.count(1)
_id_prefix: Final = os.urandom(2).hex()


def new_connection_id() -> str:
    """A connection id unique within this process: ``c-<random>-<counter>``."""
    return f"c-{_id_prefix}{next(_ids):x}"


class Session:
    """The broker's view of one connection.

    Attributes:
        connection_id: Server-assigned id, sent in the welcome ``info`` frame.
        client_id: The ``client_id`` of the client's latest frame (a label).
        topics: The topics this connection is subscribed to, by name.
        close_reason: Set once the session is ending; the writer then sends
            what is queued and closes the connection with ``close_reason.code``.
    """

    __slots__ = (
        "_counters",
        "_drained",
        "_drop_oldest",
        "_dropped_pending",
        "_framer",
        "_limit",
        "_oldest_at",
        "_partial",
        "_queue",
        "_waiter",
        "batch_published_at",
        "client_id",
        "close_reason",
        "connected_at",
        "connection_id",
        "delivered",
        "dropped",
        "on_close",
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
        drop_oldest: bool,
        framer: Framer,
        counters: Counters,
        connection_id: str | None = None,
    ) -> None:
        self.connection_id = connection_id or new_connection_id()
        self.client_id: str | None = None
        self.topics: dict[str, Topic] = {}
        self.close_reason: CloseReason | None = None
        self.connected_at = now_ms()
        self.received = 0
        #: perf_counter() when the transport last received bytes (or the session opened).
        self.received_at = time.perf_counter()
        #: When the oldest event of the last batch was received from its publisher (0.0: unknown).
        self.batch_published_at = 0.0
        self._oldest_at = 0.0
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self._limit = max_queue_size
        self._drop_oldest = drop_oldest
        self._framer = framer
        self._counters = counters
        self._queue: deque[bytes] = deque()
        self._dropped_pending = 0
        #: The oldest queued entry is the unwritten rest of a partly written frame:
        #: nothing may go in front of it and nothing may remove it.
        self._partial = False
        #: Set by a transport: called once when the session starts closing.
        self.on_close: Callable[[], None] | None = None
        self._waiter: trio.lowlevel.Task | None = None
        #: Set by a transport: a non-blocking write of wire bytes returning how many
        #: were written (raising ``OSError`` when the peer is gone). While the
        #: writer is idle, frames go out through it at once instead of waking the
        #: writer task: one system call instead of a task switch per subscriber.
        #: The second argument is when the data's oldest event was received (0.0:
        #: not an event), for latency sampling.
        self.write_now: Callable[[bytes, float], int] | None = None
        self._drained: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<Session {self.connection_id} client_id={self.client_id!r}>"

    @property
    def is_open(self) -> bool:
        return self.close_reason is None

    @property
    def queued(self) -> int:
        """Frames waiting for the writer."""
        return len(self._queue)

    # ------------------------------------------------------------------ input

    def deliver(self, frames: list[bytes], published_at: float = 0.0) -> int:
        """Queue event frames (already framed); never blocks. Returns how many were dropped.

        This is the fan-out hot path: one call per subscriber per topic batch.
        ``published_at`` is when the first of them reached the server (for the
        latency histogram; 0.0 when unknown).
        """
        if self.close_reason is not None:
            return 0
        queue = self._queue
        if not queue and self._waiter is not None and self.write_now is not None:
            self._counters.enqueued += len(frames)
            self.delivered += len(frames)
            self._write_direct(frames[0] if len(frames) == 1 else b"".join(frames), published_at)
            return 0
        if not self._oldest_at:
            self._oldest_at = published_at
        if len(queue) + len(frames) > self._limit:
            dropped = self._overflow(frames)
        else:
            queue.extend(frames)
            self._counters.enqueued += len(frames)
            dropped = 0
        self.delivered += len(frames) - dropped
        if self._waiter is not None:
            self._wake()
        return dropped

    def replay(self, frames: list[bytes]) -> None:
        """Queue replayed events after a subscribe ack. Not subject to the queue
        limit: the client asked for exactly these (``last_n`` / ``since_offset``)."""
        if self.close_reason is not None or not frames:
            return
        self._counters.enqueued += len(frames)
        self.delivered += len(frames)
        self._put(frames)

    def send(self, frame: bytes) -> None:
        """Queue one control frame (unframed JSON); never dropped, never blocks."""
        self.send_raw(self._framer(frame))

    def send_many(self, frames: list[bytes]) -> None:
        """Queue several control frames (unframed JSON); written together when idle."""
        if self.close_reason is None:
            framer = self._framer
            self._put([_Control(framer(frame)) for frame in frames])

    def send_raw(self, data: bytes) -> None:
        """Queue bytes that are already wire-ready (e.g. a WebSocket ping or pong)."""
        if self.close_reason is None:
            self._put([_Control(data)])

    def _put(self, entries: list[bytes], published_at: float = 0.0) -> None:
        """Write ``entries`` at once if the writer is idle on an empty outbox, else queue them.

        ``deliver`` inlines this test (it is the per-subscriber hot path).
        """
        if not self._queue and self._waiter is not None and self.write_now is not None:
            self._write_direct(entries[0] if len(entries) == 1 else b"".join(entries), published_at)
            return
        self._queue.extend(entries)
        if self._waiter is not None:
            self._wake()

    def _write_direct(self, data: bytes, published_at: float) -> None:
        """Write while the writer is idle; whatever does not fit goes to the writer."""
        assert self.write_now is not None
        try:
            written = self.write_now(data, published_at)
        except BlockingIOError:
            written = 0
        except OSError:
            self.close(CloseReason(CLOSE_ABNORMAL, "connection lost"))
            return
        if written < len(data):
            # Part of a frame may be on the wire already: the rest must never be dropped
            # and nothing may be written before it.
            self._queue.append(_Control(data[written:]))
            self._partial = True
            self._oldest_at = self._oldest_at or published_at
            self._wake()

    def send_error(self, code: ErrorCode, message: str, request_id: RequestId | None) -> None:
        """Queue an ``error`` frame answering ``request_id``."""
        self.send(error_frame(code, message, request_id))

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

    def fail(self, code: ErrorCode, message: str, request_id: RequestId | None = None) -> None:
        """Send an error frame and end the session with the code's close code."""
        if self.close_reason is not None:
            return
        self.send_error(code, message, request_id)
        self.close(CloseReason(code.ws_close or CLOSE_GOING_AWAY, code.value, code))

    def _overflow(self, frames: list[bytes]) -> int:
        if not self._drop_oldest:
            self._counters.slow_consumer_disconnects += 1
            # The peer is not reading: what is queued would only delay the close
            # (but a partly written frame must be completed first).
            head = self._queue[0] if self._partial else None
            self._queue.clear()
            if head is not None:
                self._queue.append(head)
            self.fail(
                ErrorCode.SLOW_CONSUMER,
                f"outbox full ({self._limit} frames): the connection is not reading fast enough",
            )
            # Not dropped by the policy: the connection is going away.
            self.delivered -= len(frames)
            return 0
        queue = self._queue
        queue.extend(frames)
        self._counters.enqueued += len(frames)
        excess = len(queue) - self._limit
        dropped = 0
        while excess > 0:
            if type(queue[0]) is bytes:
                queue.popleft()
            else:
                # A control frame is oldest: remove the oldest event behind it.
                for index, frame in enumerate(queue):
                    if type(frame) is bytes:
                        del queue[index]
                        break
                else:
                    break  # only control frames left; the reader bounds those
            dropped += 1
            excess -= 1
        self._dropped_pending += dropped
        self.dropped += dropped
        self._counters.dropped += dropped
        return dropped

    # ----------------------------------------------------------------- output

    async def next_batch(self) -> deque[bytes]:
        """Wait for frames and take all of them, oldest first.

        When events were dropped since the last batch, a ``messages_dropped``
        info frame comes first. Returns an empty batch once the session is
        closing and everything queued has been taken.
        """
        if self._queue or self.close_reason is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
        while not self._queue and self.close_reason is None:
            # Parking is itself a checkpoint.
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
        batch = self._queue
        self._queue = deque()
        self.batch_published_at = self._oldest_at
        self._oldest_at = 0.0
        if self._dropped_pending:
            notice = self._framer(info_frame("messages_dropped", dropped=self._dropped_pending))
            batch.insert(1 if self._partial else 0, notice)
            self._dropped_pending = 0
        self._partial = False
        if self._drained is not None:
            self._drained.set()
            self._drained = None
        return batch

    async def wait_for_room(self) -> None:
        """Wait while the outbox is full (the reader calls this before each request)."""
        while len(self._queue) >= self._limit and self.close_reason is None:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
        await trio.lowlevel.checkpoint_if_cancelled()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED
