"""The ``/ws`` fast path: a thin I/O loop around the sans-IO WebSocket rules.

The reader task feeds the socket's bytes to
:class:`~pubsub._protocol.websocket.MessageReader` and hands each message it
returns to the node; the writer task takes everything the session has queued
and writes it at once. Event frames arrive already framed (built once per
message in the topic actor; server frames are unmasked, so the same bytes
serve every subscriber).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Final

import trio

from .._core.node import Node
from .._core.session import CloseReason, Session
from .._protocol.errors import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    ErrorCode,
    InternalError,
    PubSubError,
)
from .._protocol.frames import AnyClientFrame, decode_client_frame, error_frame, info_frame
from .._protocol.websocket import (
    PING_FRAME,
    Closed,
    Handshake,
    MessageReader,
    Refused,
    Reply,
    Text,
    text_frame,
)
from .auth import allowed, refused
from .logs import connection_closed, connection_logging, connection_opened, peer_name
from .origins import FORBIDDEN, allowed_origins, origin_refusal, refused_origin

log = logging.getLogger("pubsub.transport")

#: A read takes at most this much; a connection whose reads fill it reads more
#: at once next time (times 4, up to :data:`MAX_RECEIVE_SIZE`), one whose read
#: comes back small starts over. A flooding publisher's requests are then
#: carried out many at a time (fewer topic runs, and each subscriber's events
#: of the pass leave in one write), while a pass stays bounded (about 10 ms of
#: requests at 1 MiB) and a quiet connection never allocates more than 64 KiB.
RECEIVE_SIZE: Final = 65536
MAX_RECEIVE_SIZE: Final = 1048576
#: Every connection reads into this one buffer and copies out what came (a reader
#: copies before it yields, so none sees another's bytes). ``os.read(fd, 65536)``
#: allocated 64 KiB per read and shrank it to what arrived: under connection
#: churn that left glibc's heap full of free holes it neither reused nor gave
#: back (the soak benchmark: RSS +25% in 4 minutes, +7% with this buffer).
_READ_BUFFER: Final = memoryview(bytearray(MAX_RECEIVE_SIZE))

#: A connection: a plain socket stream (the fast path), or TLS over one (``wss://``).
AnyStream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


def raw_socket(stream: AnyStream) -> trio.socket.SocketType:
    """The TCP socket under ``stream``."""
    if isinstance(stream, trio.SSLStream):
        return stream.transport_stream.socket
    return stream.socket


#: Called after each write that carried events, with the ``perf_counter()`` time
#: the oldest of them was received from its publisher (see ``LatencySampler``).
LatencyObserver = Callable[[float], object]


async def serve_websocket(
    stream: AnyStream,
    head: bytes,
    node: Node,
    writers: trio.Nursery,
    observe_latency: LatencyObserver | None = None,
) -> None:
    """Run one ``/ws`` connection whose request head (``head``) was already read.

    Performs the handshake (``ALLOWED_ORIGINS``, auth, ``MAX_CONNECTIONS``), then serves the
    connection until either side closes it; a writer task, when one is needed,
    runs in ``writers`` (the nursery of the connections' handlers). Never
    raises for network errors.
    """
    settings = node.settings
    handshake = Handshake(head)
    if handshake.request is None:
        await stream.send_all(handshake.refusal)
        return
    origin = handshake.header(b"origin")
    if origin is not None and not allowed_origins(settings.allowed_origins).allows(
        origin, handshake.request.host
    ):
        refused_origin("ws", "/ws", _peer(stream), origin)
        await stream.send_all(handshake.reject(403, FORBIDDEN, origin_refusal(origin)))
        return
    header, query = handshake.header(b"x-api-key"), handshake.query("api_key")
    if not allowed(settings.api_key, header, query):
        refused("ws", "/ws", _peer(stream), key_given=header is not None or query is not None)
        await stream.send_all(
            handshake.reject(401, ErrorCode.UNAUTHORIZED, "missing or wrong API key")
        )
        return
    accept, early = handshake.accept()
    del handshake
    reader = MessageReader(settings.max_message_size, early)
    try:
        session = node.open_session()
    except PubSubError as exc:
        # Accept, say why, and close with 1013 so the client knows to retry later.
        await stream.send_all(
            accept
            + text_frame(error_frame(exc.code, exc.message))
            + reader.close(CLOSE_TRY_AGAIN_LATER, exc.code.value)
        )
        return
    # Asked once per connection: with debug off, connection events cost nothing more.
    logged = connection_logging()
    if logged:
        connection_opened(session, _peer(stream), "ws")
    try:
        welcome = info_frame("connected", connection_id=session.connection_id, node_id=node.node_id)
        await send_all(stream, accept + text_frame(welcome))
        await Connection(stream, reader, session, node, writers, observe_latency).run()
    finally:
        node.close_session(session)
        if logged:
            connection_closed(session)


def _peer(stream: AnyStream) -> str | None:
    """The peer's ``host:port`` (None once the socket is gone)."""
    try:
        return peer_name(raw_socket(stream).getpeername())
    except OSError:
        return None


def write_at_once(fd: int, data: bytes) -> memoryview | None:
    """Write what the socket takes without waiting; the rest, or None if nothing is
    left. The socket is writable almost always, and trio's ``send_all`` costs a
    scheduler round trip even when the kernel takes everything at once."""
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    return memoryview(data)[written:] if written < len(data) else None


async def send_all(stream: AnyStream, data: bytes) -> None:
    """``stream.send_all(data)``, trying one plain write first (not under TLS)."""
    if isinstance(stream, trio.SSLStream):
        await stream.send_all(data)
        return
    try:
        rest = write_at_once(stream.socket.fileno(), data)
    except OSError as exc:
        raise trio.BrokenResourceError from exc
    if rest is not None:
        await stream.send_all(rest)


async def handle_texts(node: Node, session: Session, texts: list[str], received_at: float) -> None:
    """Decode the client messages of one read and carry them out together; every
    failure becomes an error frame (an unexpected one closes the connection with
    ``INTERNAL``/1011). Their answers leave in one write."""
    frames: list[AnyClientFrame] = []
    max_depth = node.settings.max_json_depth
    # Before corking: a full outbox must be drained by the writer first.
    await session.wait_for_room()
    session.cork()
    try:
        for text in texts:
            try:
                frames.append(decode_client_frame(text, max_depth))
            except PubSubError as exc:
                session.send_error(exc)
        if not frames:
            return
        try:
            await node.handle_many(session, frames, received_at)
        except PubSubError as exc:
            session.send_error(exc, getattr(frames[0], "request_id", None))
        except Exception:
            log.exception("request failed on %s", session.connection_id)
            session.fail(InternalError("internal error", getattr(frames[0], "request_id", None)))
    finally:
        session.uncork()


class Connection:
    """An accepted WebSocket connection: a reader and a writer around one session.

    The reader is the connection's handler task. A writer task is started only
    when frames must wait (the socket is full) or for the close, in the
    handlers' nursery: a nursery and a cancel scope per connection would cost
    more than a tenth of a connection's set-up. So nothing here is cancelled as
    a whole: a writer that gives up (its peer stopped reading, or never
    answered the close) stops the reader by telling trio the socket is closing,
    and the reader returns only once no writer runs.
    """

    # Slots: one per open connection, so its size is memory per idle connection.
    __slots__ = (
        "_aborted",
        "_blocked",
        "_close_timeout",
        "_fd",
        "_give_up_at",
        "_latency",
        "_peer_closed",
        "_peer_closed_event",
        "_reading",
        "_receive_size",
        "_socket",
        "_write_inline",
        "_write_pending",
        "_writer_done",
        "_writers",
        "node",
        "reader",
        "session",
        "stream",
    )

    def __init__(
        self,
        stream: AnyStream,
        reader: MessageReader,
        session: Session,
        node: Node,
        writers: trio.Nursery,
        observe_latency: LatencyObserver | None = None,
    ) -> None:
        self.stream = stream
        self.reader = reader
        self.session = session
        self.node = node
        self._writers = writers
        self._latency = observe_latency
        # Whether the peer's close frame came; the writer waits for it after
        # sending ours (an Event only then: most connections never need one).
        self._peer_closed = False
        self._peer_closed_event: trio.Event | None = None
        self._socket = raw_socket(stream)
        #: The descriptor for plain writes and reads; None under TLS, where every
        #: byte goes through the SSL stream (and every write through the writer).
        self._fd: int | None = None if isinstance(stream, trio.SSLStream) else self._socket.fileno()
        self._receive_size = RECEIVE_SIZE
        self._reading = True
        self._aborted = False
        #: Set while a writer task runs; the reader waits for it before returning.
        self._writer_done: trio.Event | None = None
        #: The scope of a send that waits for the peer to read (the only waits
        #: bounded by the close deadline), while one does.
        self._blocked: trio.CancelScope | None = None
        self._write_inline = False
        self._write_pending = False
        # A closing connection gets SHUTDOWN_TIMEOUT (at least CLOSE_TIMEOUT) to flush
        # and close; a peer that stopped reading cannot keep it open longer.
        settings = node.settings
        self._close_timeout = settings.seconds("close_timeout")
        self._give_up_at = math.inf
        if self._fd is not None:
            session.write_now = self._write_now
        grace = max(self._close_timeout, settings.seconds("shutdown_timeout"))
        session.on_close = lambda: self._give_up_after(grace)

    def _give_up_after(self, seconds: float) -> None:
        self._give_up_at = min(self._give_up_at, trio.current_time() + seconds)
        if self._blocked is not None:
            self._blocked.deadline = self._give_up_at

    def _write_now(self, data: bytes, published_at: float) -> int:
        """Non-blocking write for the session while the writer is idle."""
        assert self._fd is not None
        written = os.write(self._fd, data)
        if published_at and self._latency is not None:
            self._latency(published_at)
        return written

    async def _receive(self) -> bytes:
        """The next bytes from the peer, b"" once it is gone (or the writer gave up).

        Like ``receive_some`` but with one scheduler round trip instead of two
        when the peer is quiet (trio yields again after every successful recv):
        a read that has to wait yields in ``wait_readable``; one that succeeds
        at once yields explicitly, so a flooding peer cannot starve the others.
        Under TLS the SSL stream reads.
        """
        if self._fd is None:
            assert isinstance(self.stream, trio.SSLStream)
            try:
                return bytes(await self.stream.receive_some(self._receive_size))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        try:
            data = self._read_now()
        except BlockingIOError:
            pass
        except OSError:
            return b""
        else:
            await trio.lowlevel.checkpoint()
            return data
        while not self._aborted:
            try:
                await trio.lowlevel.wait_readable(self._socket)
            except trio.ClosedResourceError:
                return b""  # the writer gave up (_abort)
            try:
                return self._read_now()
            except BlockingIOError:
                continue
            except OSError:
                return b""
        return b""

    def _read_now(self) -> bytes:
        assert self._fd is not None
        size = self._receive_size
        count = os.readv(self._fd, (_READ_BUFFER[:size],))
        if count == size:
            self._receive_size = min(size * 4, MAX_RECEIVE_SIZE)
        elif count < RECEIVE_SIZE:
            self._receive_size = RECEIVE_SIZE
        return _READ_BUFFER[:count].tobytes()

    async def run(self) -> None:
        # No writer task until one is needed: frames go out at once while
        # nothing waits (an idle connection holds no task for writing).
        self.session.writer_idle(self._start_writer)
        try:
            await self._read()
        finally:
            # Once reading is over no writer is started: the session is closed
            # (its writer started by the close), or the connection is failing.
            self._reading = False
            if self._writer_done is not None:
                await self._writer_done.wait()

    def _start_writer(self) -> None:
        if self._write_inline:
            self._write_pending = True
        elif self._reading and not self._aborted:
            self._writer_done = trio.Event()
            self._writers.start_soon(self._writer_task)

    async def _writer_task(self) -> None:
        try:
            await self._write()
        except Exception:  # a bug must not take the other connections' handlers down
            log.exception("writer of %s failed", self.session.connection_id)
            self._abort()
        finally:
            done, self._writer_done = self._writer_done, None
            if done is not None:
                done.set()

    async def _read(self) -> None:
        session = self.session
        reader = self.reader
        # First whatever frames came with the handshake (the reader holds them).
        data = b""
        received_at = session.received_at
        while True:
            texts: list[str] = []
            events = reader.receive_data(data)
            if reader.progressed:
                # A whole frame is a sign of life; a byte of one is not.
                session.received_at = received_at
            pong: bytes | None = None
            pings = 0
            for event in events:
                if type(event) is Text:
                    if session.is_open:
                        texts.append(event.text)
                    continue
                if type(event) is Reply:
                    # Only the latest ping of a read is answered (RFC 6455 5.5.3).
                    pong = event.data
                    pings += 1
                    continue
                if texts:  # answered in order with what follows
                    await handle_texts(self.node, session, texts, received_at)
                    texts = []
                if type(event) is Refused:
                    if event.error.code.ws_close is not None:
                        session.fail(event.error)
                    else:
                        session.send_error(event.error)
                elif type(event) is Closed:
                    # The peer's close (or our close's reply, or a framing error
                    # wsproto turned into a close with 1002/1007): answer and stop.
                    self._peer_closed = True
                    if self._peer_closed_event is not None:
                        self._peer_closed_event.set()
                    if pong is not None:
                        session.send_pong(pong, pings)
                    # If the close needs a writer and none runs, the reader is it
                    # (no task for the last frames of a connection).
                    self._write_inline = True
                    session.close(CloseReason(event.code, event.reason))
                    self._write_inline = False
                    if self._write_pending:
                        self._write_pending = False
                        await self._write()
                    return
            if texts:
                await handle_texts(self.node, session, texts, received_at)
            if pong is not None and not session.send_pong(pong, pings):
                self._ping_flood()
                return
            # No timeout here: the keepalive closes connections that stay silent.
            data = await self._receive()
            if not data:
                self._abort()  # peer vanished without a close frame
                return
            received_at = time.perf_counter()

    def _ping_flood(self) -> None:
        """The peer sent more than ``MAX_QUEUE_SIZE`` pings without reading the
        answers: close with 1008 and read no more (the writer sends the close
        while the close deadline allows)."""
        session = self.session
        log.warning(
            "connection %s (client_id %r) closed: %d WebSocket pings sent without "
            "reading the answers (more than MAX_QUEUE_SIZE)",
            session.connection_id,
            session.client_id,
            session.outbox.unanswered_pings,
            extra={
                "event": "ping_flood",
                "connection_id": session.connection_id,
                "client_id": session.client_id,
                "unanswered_pings": session.outbox.unanswered_pings,
            },
        )
        session.close(CloseReason(CLOSE_POLICY_VIOLATION, "too many pings without reading"))

    async def _write(self) -> None:
        session = self.session
        fd = self._fd
        latency = self._latency
        try:
            while True:
                batch = session.take_batch()
                if batch is None:
                    if session.close_reason is None:
                        session.writer_idle(self._start_writer)  # until needed again
                        return
                    break  # closing, and everything queued is written
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                rest = write_at_once(fd, data) if fd is not None else memoryview(data)
                if rest is not None:
                    await self._send_blocking(rest)
                if latency is not None and session.batch_published_at:
                    latency(session.batch_published_at)
            reason = session.close_reason
            assert reason is not None
            close = self.reader.close(reason.code, reason.reason)
            rest = (
                (write_at_once(fd, close) if fd is not None else memoryview(close))
                if close
                else None
            )
            if rest is not None:
                await self._send_blocking(rest)
            if not self._peer_closed:
                self._peer_closed_event = trio.Event()
                wait_until = min(trio.current_time() + self._close_timeout, self._give_up_at)
                with trio.move_on_at(wait_until):
                    await self._peer_closed_event.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._abort()

    async def _send_blocking(self, data: memoryview) -> None:
        """Send what the socket did not take at once, for as long as the close
        deadline allows (none while the session is open)."""
        with trio.CancelScope(deadline=self._give_up_at) as scope:
            self._blocked = scope
            try:
                await self.stream.send_all(data)
            finally:
                self._blocked = None
        if scope.cancelled_caught:
            raise trio.BrokenResourceError("the peer stopped reading")

    def _abort(self) -> None:
        """The connection is lost or given up: stop writing and reading."""
        if self._aborted:
            return
        self._aborted = True  # first: the close below then starts no writer
        self.session.write_now = None
        if self._blocked is not None:
            self._blocked.cancel()
        if self._peer_closed_event is not None:
            # A writer waiting for the peer's close frame: none will come now.
            self._peer_closed_event.set()
        # Wakes the reader if it waits for data (the handler closes the socket).
        trio.lowlevel.notify_closing(self._socket)
        if self.session.is_open:
            self.session.close(CloseReason(CLOSE_ABNORMAL, "connection lost"))


async def run_keepalive(node: Node) -> None:
    """One task for every connection: a WebSocket ping and an ``info``/``ping`` frame
    every ``HEARTBEAT_INTERVAL`` (the frame built once), and close with 1001
    ``CONNECTION_TIMEOUT`` whoever sent nothing for ``CONNECTION_TIMEOUT``."""
    settings = node.settings
    interval = settings.seconds("heartbeat_interval")
    timeout = settings.seconds("connection_timeout")
    # Check often enough that a timeout is late by at most a quarter of itself.
    tick = min(interval, timeout) / 4
    next_beat = trio.current_time() + interval
    while True:
        await trio.sleep(tick)
        now = time.perf_counter()
        for session in node.sessions():
            if session.idle_timeout and session.is_open and now - session.received_at > timeout:
                # Close politely; the writer waits a little for the peer's reply.
                session.close(CloseReason(CLOSE_GOING_AWAY, "CONNECTION_TIMEOUT"))
        if trio.current_time() >= next_beat:
            next_beat += interval
            beat = PING_FRAME + text_frame(info_frame("ping"))
            for session in node.sessions():
                session.send_raw(beat)
