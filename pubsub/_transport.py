"""The ``/ws`` fast path: wsproto over a trio stream, one session per connection.

The reader task decodes client frames into broker calls; the writer task
takes everything the session has queued and writes it with one ``send_all``.
Event frames arrive already framed (:func:`ws_text_frame` runs once per
message in the topic actor; server frames are unmasked, so the same bytes
serve every subscriber).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qs, urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WSProtocol
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from ._broker import Broker
from ._errors import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    ErrorCode,
    ProtocolError,
    PubSubError,
)
from ._protocol import decode_client_frame, encode, error_frame, info_frame, now_ms, ts_now
from ._session import CloseReason, Session

log = logging.getLogger("pubsub.transport")

RECEIVE_SIZE: Final = 65536
#: How long a closing connection waits for the peer's close frame.
CLOSE_TIMEOUT: Final = 2.0
#: An unmasked WebSocket ping frame with no payload.
PING_FRAME: Final = b"\x89\x00"
#: The writer observes the latency of one batch in this many.
LATENCY_SAMPLE: Final = 16


def ws_text_frame(data: bytes) -> bytes:
    """One final, unmasked WebSocket text frame carrying ``data`` (RFC 6455 5.2).

    Server-to-client frames are never masked, so these bytes can be written
    to every subscriber as they are.
    """
    length = len(data)
    if length < 126:
        return bytes((0x81, length)) + data
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + data
    return b"\x81\x7f" + length.to_bytes(8, "big") + data


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time API key comparison."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def _request_key(request: Request) -> str | None:
    for name, value in request.extra_headers:
        if name.lower() == b"x-api-key":
            return bytes(value).decode("latin-1")
    keys = parse_qs(urlsplit(request.target).query).get("api_key")
    return keys[0] if keys else None


def _json_error_body(code: ErrorCode, message: str) -> bytes:
    return encode({"error": code.value, "message": message, "ts": ts_now()})


async def _reject(stream: trio.abc.Stream, ws: WSConnection, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
    data += ws.send(RejectData(data=body, body_finished=True))
    await stream.send_all(data)


async def serve_websocket(
    stream: trio.SocketStream,
    head: bytes,
    broker: Broker,
    observe_latency: Callable[[float], object] | None = None,
) -> None:
    """Run one ``/ws`` connection whose request head (``head``) was already read.

    Performs the handshake (auth, ``MAX_CONNECTIONS``), then serves the
    connection until either side closes it. Never raises for network errors.
    ``observe_latency`` receives sampled publish-to-write latencies in seconds.
    """
    settings = broker.settings
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(head)
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
    except RemoteProtocolError as exc:
        body = _json_error_body(ErrorCode.BAD_REQUEST, f"bad WebSocket handshake: {exc}")
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        await _reject(stream, ws, status, body)
        return
    if request is None:
        return
    if settings.api_key is not None and not key_matches(settings.api_key, _request_key(request)):
        body = _json_error_body(ErrorCode.UNAUTHORIZED, "missing or wrong API key")
        await _reject(stream, ws, 401, body)
        return
    accept = ws.send(AcceptConnection())
    try:
        session = broker.open_session()
    except PubSubError as exc:
        # Accept, say why, and close with 1013 so the client knows to retry later.
        await stream.send_all(
            accept
            + ws_text_frame(error_frame(exc.code, exc.message))
            + ws.send(CloseConnection(CLOSE_TRY_AGAIN_LATER, exc.code.value))
        )
        return
    # Keep only the frame-level connection: the handshake's HTTP state is done with,
    # and an idle connection should cost as little memory as possible.
    connection = ws.connection
    assert connection is not None
    del ws
    try:
        welcome = info_frame("connected", connection_id=session.connection_id)
        await stream.send_all(accept + ws_text_frame(welcome))
        await Connection(stream, connection, session, broker, observe_latency).run()
    finally:
        broker.close_session(session)
        reason = session.close_reason
        log.debug(
            "%s (client_id %r) closed after %.1f s: %s; received %d, published %d, "
            "delivered %d, dropped %d",
            session.connection_id,
            session.client_id,
            (now_ms() - session.connected_at) / 1000,
            reason,
            session.received,
            session.published,
            session.delivered,
            session.dropped,
        )


class Connection:
    """An accepted WebSocket connection: a reader and a writer around one session."""

    def __init__(
        self,
        stream: trio.SocketStream,
        ws: WSProtocol,
        session: Session,
        broker: Broker,
        observe_latency: Callable[[float], object] | None = None,
    ) -> None:
        self.stream = stream
        self.observe_latency = observe_latency
        self.ws = ws
        self.session = session
        self.broker = broker
        self._peer_closed = trio.Event()
        self._cancel = trio.CancelScope()
        self._fd = stream.socket.fileno()
        self._direct_writes = 0
        session.write_now = self._write_now
        # A closing connection gets SHUTDOWN_TIMEOUT (at least CLOSE_TIMEOUT) to flush
        # and close; a peer that stopped reading cannot keep it open longer.
        grace = max(CLOSE_TIMEOUT, broker.settings.shutdown_timeout / 1000)
        session.on_close = lambda: self._give_up_after(grace)

    def _give_up_after(self, seconds: float) -> None:
        self._cancel.deadline = min(self._cancel.deadline, trio.current_time() + seconds)

    def _write_now(self, data: bytes, published_at: float) -> int:
        """Non-blocking write for the session while the writer is idle."""
        written = os.write(self._fd, data)
        if published_at and self.observe_latency is not None:
            self._direct_writes += 1
            if not self._direct_writes % LATENCY_SAMPLE:
                self.observe_latency(time.perf_counter() - published_at)
        return written

    async def _receive(self) -> bytes:
        """The next bytes from the peer, b"" once it is gone.

        Like ``receive_some`` but with one scheduler round trip instead of two
        when the peer is quiet (trio yields again after every successful recv):
        a read that has to wait yields in ``wait_readable``; one that succeeds
        at once yields explicitly, so a flooding peer cannot starve the others.
        """
        try:
            data = os.read(self._fd, RECEIVE_SIZE)
        except BlockingIOError:
            pass
        except OSError:
            return b""
        else:
            await trio.lowlevel.checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(self.stream.socket)
            try:
                return os.read(self._fd, RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    async def run(self) -> None:
        with self._cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                await self._read()

    async def _read(self) -> None:
        settings = self.broker.settings
        session = self.session
        ws = self.ws
        max_size = settings.max_message_size
        parts: list[str] = []
        size = 0
        binary = False
        while True:
            # No timeout here: run_keepalive closes connections that stay silent.
            data = await self._receive()
            if not data:
                self._abort()  # peer vanished without a close frame
                return
            session.received_at = time.perf_counter()
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    if not session.is_open:
                        continue
                    size += len(event.data)
                    if size > max_size:
                        session.fail(
                            ErrorCode.MESSAGE_TOO_LARGE,
                            f"message larger than MAX_MESSAGE_SIZE ({max_size} bytes)",
                        )
                        continue
                    if isinstance(event, BytesMessage):
                        binary = True
                    elif not binary:
                        parts.append(event.data)
                    if not event.message_finished:
                        continue
                    if binary:
                        session.send_error(
                            ErrorCode.BAD_REQUEST,
                            "binary frames are not supported: send JSON in text frames",
                            None,
                        )
                    else:
                        text = parts[0] if len(parts) == 1 else "".join(parts)
                        if len(text) * 4 > max_size and len(text.encode()) > max_size:
                            session.fail(
                                ErrorCode.MESSAGE_TOO_LARGE,
                                f"message larger than MAX_MESSAGE_SIZE ({max_size} bytes)",
                            )
                        else:
                            await self._handle_text(text)
                    parts.clear()
                    size = 0
                    binary = False
                elif isinstance(event, Ping):
                    if ws.state is ConnectionState.OPEN:
                        session.send_raw(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    # The peer's close (or our close's reply, or a framing error
                    # wsproto turned into a close with 1002/1007): answer and stop.
                    session.close(CloseReason(event.code, event.reason or ""))
                    self._peer_closed.set()
                    return

    async def _handle_text(self, text: str) -> None:
        session = self.session
        try:
            frame = decode_client_frame(text)
        except ProtocolError as exc:
            session.send_error(exc.code, exc.message, exc.request_id)
            return
        await session.wait_for_room()
        try:
            await self.broker.handle(session, frame)
        except PubSubError as exc:
            session.send_error(exc.code, exc.message, getattr(frame, "request_id", None))
        except Exception:
            log.exception("request failed on %s", session.connection_id)
            session.fail(ErrorCode.INTERNAL, "internal error", getattr(frame, "request_id", None))

    async def _write(self) -> None:
        session = self.session
        stream = self.stream
        fd = self._fd
        observe = self.observe_latency
        batches = 0
        try:
            while True:
                batch = await session.next_batch()
                if not batch:
                    break
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                # Try the socket directly first: trio's send_all would add a
                # scheduler round trip even when the kernel takes it all at once.
                try:
                    written = os.write(fd, data)
                except BlockingIOError:
                    written = 0
                if written < len(data):
                    await stream.send_all(memoryview(data)[written:])
                batches += 1
                # Sampled: observing every batch would cost more than the delivery.
                if (
                    observe is not None
                    and not batches % LATENCY_SAMPLE
                    and session.batch_published_at
                ):
                    observe(time.perf_counter() - session.batch_published_at)
            reason = session.close_reason
            assert reason is not None
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                # 1005 (no status) and 1006 (abnormal) must never be sent: answer those with 1000.
                code = reason.code if reason.code not in (CLOSE_ABNORMAL, 1005) else CLOSE_NORMAL
                await stream.send_all(self.ws.send(CloseConnection(code, reason.reason[:120])))
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._peer_closed.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._abort()

    def _abort(self) -> None:
        self.session.write_now = None
        if self.session.is_open:
            self.session.close(CloseReason(CLOSE_ABNORMAL, "connection lost"))
        self._cancel.cancel()


async def run_keepalive(broker: Broker) -> None:
    """One task for every connection: a WebSocket ping and an ``info``/``ping`` frame
    every ``HEARTBEAT_INTERVAL`` (the frame built once), and close with 1001
    ``CONNECTION_TIMEOUT`` whoever sent nothing for ``CONNECTION_TIMEOUT``."""
    settings = broker.settings
    interval = settings.heartbeat_interval / 1000
    timeout = settings.connection_timeout / 1000
    # Check often enough that a timeout is late by at most a quarter of itself.
    tick = min(interval, timeout) / 4
    next_beat = trio.current_time() + interval
    while True:
        await trio.sleep(tick)
        now = time.perf_counter()
        for session in broker.sessions():
            if session.is_open and now - session.received_at > timeout:
                # Close politely; the writer waits a little for the peer's reply.
                session.close(CloseReason(CLOSE_GOING_AWAY, "CONNECTION_TIMEOUT"))
        if trio.current_time() >= next_beat:
            next_beat += interval
            beat = PING_FRAME + ws_text_frame(info_frame("ping"))
            for session in broker.sessions():
                session.send_raw(beat)
