"""Servers for the client's tests, usable from asyncio and Trio alike.

:class:`LiveServer` is the real trio-pubsub server, run by ``trio.run`` in a
thread of its own; the test reaches into it (sessions, counters) through
``trio.from_thread``. :class:`FakeServer` is a scripted server on AnyIO and
wsproto that runs in the test's own event loop and says exactly what the
protocol lets a server say, when the test wants it.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.abc
import trio
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSListener
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from pubsub import Server, Settings, open_server
from pubsub._core.session import CloseReason
from pubsub._protocol.frames import is_pattern

T = TypeVar("T")

TS = "2026-11-28T10:00:00.000Z"
#: Seconds a server thread gets to start or to stop.
THREAD_TIMEOUT = 30.0


# ------------------------------------------------------------- the real server


class LiveServer:
    """A trio-pubsub server on 127.0.0.1 (``Settings(port=0)`` plus ``settings``)
    in a thread running ``trio.run``. Start and stop it with :func:`serving`
    (async tests) or :func:`serving_sync`."""

    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(port=0).replace(**settings)
        self._thread = threading.Thread(target=self._thread_main, name="live-server", daemon=True)
        self._started: Future[tuple[Server, trio.lowlevel.TrioToken, trio.Event]] = Future()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """The WebSocket endpoint, in the client's normal form."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        self._thread.start()
        self._server, self._token, self._stop = self._started.result(THREAD_TIMEOUT)

    def stop(self) -> None:
        """Shut the server down gracefully (as SIGTERM does) and wait for its
        thread. Stopping again does nothing."""
        if not self._thread.is_alive():
            return
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(THREAD_TIMEOUT)
        assert not self._thread.is_alive(), "the server did not stop"
        if self._error is not None:
            raise self._error

    async def astart(self) -> None:
        """:meth:`start` from a coroutine, without blocking its event loop."""
        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        """:meth:`stop` from a coroutine, without blocking its event loop (the
        clients of the test must answer the server's close frames meanwhile).
        It runs to the end even if the test is cancelled."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    def call(self, function: Callable[[Server], T]) -> T:
        """``function(server)`` run in the server's thread (blocking)."""
        return trio.from_thread.run_sync(function, self._server, trio_token=self._token)

    def run(self, function: Callable[[Server], Awaitable[T]]) -> T:
        """``await function(server)`` run in the server's thread (blocking)."""
        return trio.from_thread.run(function, self._server, trio_token=self._token)

    async def acall(self, function: Callable[[Server], T]) -> T:
        """:meth:`call` from a coroutine, without blocking its event loop."""
        return await anyio.to_thread.run_sync(self.call, function)

    async def create_topics(self, *names: str) -> None:
        await anyio.to_thread.run_sync(self.run, partial(_create_topics, names=names))

    async def drop_connection(self, connection_id: str | None) -> None:
        """Close one client's connection from the server side, as a failing proxy would."""
        await self.acall(partial(_drop, connection_id=connection_id))

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                self._error = exc

    async def _main(self) -> None:
        async with open_server(self.settings) as server:
            stop = trio.Event()
            self._started.set_result((server, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()


async def _create_topics(server: Server, names: tuple[str, ...]) -> None:
    for name in names:
        await server.node.create_topic(name)


def _drop(server: Server, connection_id: str | None) -> None:
    for session in server.node.sessions():
        if session.connection_id == connection_id:
            session.close(CloseReason(1012, "dropped by the test"))


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[LiveServer]:
    """A :class:`LiveServer` for the duration of the block."""
    server = LiveServer(**settings)
    await server.astart()
    try:
        yield server
    finally:
        await server.astop()


@contextmanager
def serving_sync(**settings: Any) -> Iterator[LiveServer]:
    """A :class:`LiveServer` for the duration of the block (synchronous tests)."""
    server = LiveServer(**settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------- a scripted server


class _ServerSide:
    """The server's end of one WebSocket (wsproto), written to by several tasks."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.lock = anyio.Lock()
        self._messages: deque[str] = deque()
        self._parts: list[str] = []
        #: The client's close frame, once it came.
        self.closed: CloseConnection | None = None

    async def _read(self) -> Request | None:
        """Read once; the opening request if it came."""
        self.ws.receive_data(await self.stream.receive())
        request = None
        for event in self.ws.events():
            if isinstance(event, Request):
                request = event
            elif isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self._messages.append("".join(self._parts))
                    self._parts.clear()
            elif isinstance(event, CloseConnection):
                self.closed = event
        return request

    async def handshake(self, refuse_with: int | None) -> Request:
        while (request := await self._read()) is None:
            pass
        if refuse_with is None:
            reply = self.ws.send(AcceptConnection())
        else:
            reply = self.ws.send(RejectConnection(status_code=refuse_with))
        await self.stream.send(reply)
        return request

    async def receive(self) -> str | None:
        """The next text message; ``None`` once the client closed."""
        while not self._messages:
            if self.closed is not None:
                return None
            await self._read()
        return self._messages.popleft()

    async def answer_close(self) -> None:
        """Answer the client's close frame."""
        assert self.closed is not None
        async with self.lock:
            await self.stream.send(self.ws.send(self.closed.response()))

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.stream.send(self.ws.send(Message(data=text)))

    async def close(self, code: int) -> None:
        async with self.lock:
            await self.stream.send(self.ws.send(CloseConnection(code=code)))
        await self.stream.aclose()


class FakeServer:
    """A scripted trio-pubsub server on 127.0.0.1.

    It welcomes each connection and answers every request at once: a subscribe
    with the ack fields in ``acks[topic]`` (default: offset 0 and epoch ``e1``,
    or ``pattern: true``), preceded by the frames in ``before_ack[topic]`` and
    followed by those in ``after_ack[topic]`` (each list is used once). It
    keeps every subscribe frame it got, every opening request (``requests``:
    target, headers) and the code of every close frame it got
    (``close_codes``); :meth:`push` sends a frame on the current connection.
    ``refuse_with`` answers the opening handshake with that HTTP status;
    ``close_with`` closes each connection with that code instead of welcoming
    it.
    """

    def __init__(self) -> None:
        self.port = 0
        self.scheme = "ws"
        self.connections = 0
        self.requests: list[Request] = []
        self.subscribes: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.before_ack: dict[str, list[dict[str, Any]]] = {}
        self.after_ack: dict[str, list[dict[str, Any]]] = {}
        self.refuse_with: int | None = None
        self.close_with: int | None = None
        #: The code of each close frame a client sent.
        self.close_codes: list[int] = []
        self._side: _ServerSide | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ws"

    async def serve(self, stream: anyio.abc.ByteStream) -> None:
        side = _ServerSide(stream)
        try:
            self.requests.append(await side.handshake(self.refuse_with))
            if self.refuse_with is not None:
                return
            if self.close_with is not None:
                await side.close(self.close_with)
                return
            self._side = side
            self.connections += 1
            await self.push(type="info", msg="connected", connection_id=f"c-{self.connections}")
            while (message := await side.receive()) is not None:
                await self._answer(json.loads(message))
            assert side.closed is not None
            self.close_codes.append(side.closed.code)
            await side.answer_close()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _answer(self, frame: dict[str, Any]) -> None:
        request_id = frame.get("request_id")
        if frame["type"] == "ping":
            await self.push(type="pong", request_id=request_id)
            return
        topic = frame["topic"]
        fields: dict[str, Any] = {}
        if frame["type"] == "publish":
            fields = {"offset": 1}
        elif frame["type"] == "subscribe":
            self.subscribes.append(frame)
            for before in self.before_ack.pop(topic, []):
                await self.push(**before)
            default = {"pattern": True} if is_pattern(topic) else {"offset": 0, "epoch": "e1"}
            fields = self.acks.get(topic, default)
        await self.push(type="ack", request_id=request_id, topic=topic, status="ok", **fields)
        if frame["type"] == "subscribe":
            for after in self.after_ack.pop(topic, []):
                await self.push(**after)

    async def push(self, **frame: Any) -> None:
        assert self._side is not None
        await self._side.send(json.dumps({**frame, "ts": TS}))

    async def drop(self) -> None:
        """Close the current connection (the client reconnects)."""
        assert self._side is not None
        await self._side.close(1012)


@asynccontextmanager
async def fake_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[FakeServer]:
    """A :class:`FakeServer` for the duration of the block (TLS with ``ssl_context``)."""
    fake = FakeServer()
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    fake.port = tcp.extra(SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = tcp
    if ssl_context is not None:
        fake.scheme = "wss"
        listener = TLSListener(tcp, ssl_context, standard_compatible=False)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, fake.serve)
        yield fake
        tasks.cancel_scope.cancel()
