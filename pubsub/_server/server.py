"""Composition root: one listener, a dispatcher, the node and its engine, REST
and shutdown.

Each accepted connection's request head is read once. A request for ``/ws``
goes to the WebSocket fast path (:mod:`pubsub._server.transport`); every other
connection goes, with the bytes already read put back in front, to
hypercorn's own per-connection handler serving the quart-trio app, so HTTP
keep-alive, errors and 404s stay hypercorn's job (and a ``/ws`` upgrade that
comes later on such a connection is served through ASGI).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from .._core.engine import Engine
from .._core.node import Node, default_node_id, open_node
from .._core.session import CloseReason
from .._engines.memory import MemoryEngine
from .._engines.redis import RedisEngine
from .._protocol.errors import CLOSE_GOING_AWAY, ErrorCode, error_body
from .._protocol.frames import info_frame
from .._protocol.websocket import error_response, text_frame
from .._settings import Settings
from .asgi_ws import HYPERCORN_SIZE_FACTOR
from .http import ServerState, create_app
from .http_conn import HTTP2_PREFACE, HttpStream, http2_refusal, serve_http11_only
from .listen import serve_listeners
from .metrics import Metrics
from .tls import tls_context
from .transport import AnyStream, run_keepalive, serve_websocket

log = logging.getLogger("pubsub.server")

#: Pending connections a listener queues (trio's default for its own listeners).
LISTEN_BACKLOG: Final = 0xFFFF
#: The largest request head the dispatcher reads before handing the
#: connection to hypercorn, which then answers an oversized head itself.
MAX_HEAD: Final = 65536
#: Where every new connection's first bytes are read (then copied out): one
#: 64 KiB allocation per connection, shrunk to the head, fragmented the heap
#: under connection churn (see ``transport._READ_BUFFER``).
_HEAD_BUFFER: Final = memoryview(bytearray(MAX_HEAD))


async def reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A listener on ``host:port`` that other processes may bind too (SO_REUSEPORT):
    the kernel spreads new connections over all of them."""
    family = (await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM))[0][0]
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        await sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def read_head_now(stream: trio.SocketStream) -> bytes | None:
    """What the peer has sent so far, without waiting (usually its whole request
    head: clients send it right after connecting); None if the peer closed."""
    try:
        count = os.readv(stream.socket.fileno(), (_HEAD_BUFFER,))
        return _HEAD_BUFFER[:count].tobytes()
    except BlockingIOError:
        return b""
    except OSError:
        return None


def head_complete(data: bytes) -> bool:
    return b"\r\n\r\n" in data or len(data) >= MAX_HEAD


async def read_head(stream: AnyStream, data: bytes = b"") -> bytes | None:
    """Read until the end of the HTTP request head (or ``MAX_HEAD`` bytes), after
    ``data`` (read already).

    Returns everything read, possibly with bytes after the head, or None if
    the peer closed first.
    """
    while not head_complete(data):
        chunk = await stream.receive_some(MAX_HEAD)
        if not chunk:
            return None
        data += chunk
    return data


def is_websocket_request(head: bytes) -> bool:
    """True when the request line targets ``/ws`` (with or without a query)."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return len(parts) == 3 and parts[1].split(b"?", 1)[0] == b"/ws"


def make_engine(settings: Settings) -> Engine:
    """The engine ``settings`` ask for (``settings.node_id`` set)."""
    if settings.engine == "redis":
        assert settings.node_id is not None
        return RedisEngine(
            url=settings.redis_url,
            prefix=settings.redis_prefix,
            node_id=settings.node_id,
            max_topics=settings.max_topics,
            max_messages=settings.max_messages_per_topic,
        )
    return MemoryEngine(
        max_topics=settings.max_topics, max_messages=settings.max_messages_per_topic
    )


class Server:
    """The broker on one TCP port. Use :func:`open_server`, or ``nursery.start(server.serve)``.

    Args:
        settings: Every setting.
        engine: What is cluster-wide; by default the engine ``settings`` name.
        reuse_port: Bind with ``SO_REUSEPORT`` (the workers of ``--workers N``).

    Attributes:
        port: The port actually bound (after ``serve`` has started).
        node: This process's node (after ``serve`` has started).
    """

    def __init__(
        self, settings: Settings, engine: Engine | None = None, *, reuse_port: bool = False
    ) -> None:
        if settings.node_id is None:
            settings = settings.replace(node_id=default_node_id())
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.reuse_port = reuse_port
        self.port = 0
        self.state = ServerState()
        self._node: Node | None = None
        #: Where connection handlers (and their writers, when needed) run.
        self._connections: trio.Nursery | None = None
        self._shutdown = trio.Event()
        #: TLS_CERT / TLS_KEY: every connection speaks TLS (https://, wss://).
        self._tls = (
            tls_context(settings.tls_cert, settings.tls_key)
            if settings.tls_cert is not None and settings.tls_key is not None
            else None
        )

    @property
    def node(self) -> Node:
        assert self._node is not None, "the server is not running"
        return self._node

    def shutdown(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._shutdown.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until :meth:`shutdown`; ``task_status.started`` once the port is bound."""
        settings = self.settings
        async with open_node(settings, self.engine, framer=text_frame) as node:
            self._node = node
            metrics = Metrics(node.counters, node_id=node.node_id, engine=node.engine.kind)
            app = ASGIWrapper(create_app(node, self.state, metrics))
            serve_http11_only()
            config = HypercornConfig()
            config.keep_alive_timeout = settings.seconds("keep_alive_timeout")
            config.graceful_timeout = settings.seconds("shutdown_timeout")
            config.websocket_ping_interval = settings.seconds("heartbeat_interval")
            config.websocket_max_message_size = HYPERCORN_SIZE_FACTOR * settings.max_message_size
            config.accesslog = None
            config.errorlog = logging.getLogger("pubsub.http")
            context = WorkerContext(None)
            lifespan_state: dict[str, Any] = {}
            lifespan = Lifespan(app, config, lifespan_state)
            async with trio.open_nursery() as lifespan_nursery:
                await lifespan_nursery.start(lifespan.handle_lifespan)
                await lifespan.wait_for_startup()
                handler = partial(
                    self._handle_connection, node, metrics, app, config, context, lifespan_state
                )
                await self._run(node, handler, context, task_status)
                await lifespan.wait_for_shutdown()
                lifespan_nursery.cancel_scope.cancel()
        log.info("stopped", extra={"event": "stopped"})

    async def _run(
        self,
        node: Node,
        handler: Any,
        context: WorkerContext,
        task_status: trio.TaskStatus[Server],
    ) -> None:
        settings = self.settings
        if self.reuse_port:
            listeners = [await reuse_port_listener(settings.host, settings.port)]
        else:
            listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as connections:
            self._connections = connections
            async with trio.open_nursery() as services:
                await services.start(
                    partial(serve_listeners, handler, listeners, handler_nursery=connections)
                )
                services.start_soon(run_keepalive, node)
                secure = "s" if self._tls is not None else ""
                log.info(
                    "listening on http%s://%s:%d (WebSocket ws%s://%s:%d/ws)",
                    secure,
                    settings.host,
                    self.port,
                    secure,
                    settings.host,
                    self.port,
                    extra={
                        "event": "listening",
                        "host": settings.host,
                        "port": self.port,
                        "node_id": node.node_id,
                    },
                )
                gc.collect()
                gc.freeze()  # start-up objects never need scanning again
                task_status.started(self)
                await self._shutdown.wait()
                await self._drain(node, context)
                services.cancel_scope.cancel()
            connections.cancel_scope.cancel()

    async def _drain(self, node: Node, context: WorkerContext) -> None:
        """Refuse new WebSockets, tell every client, flush for at most SHUTDOWN_TIMEOUT.

        HTTP is served all along, so ``/health`` says 503 ``draining`` to load
        balancers (old connections and new) until the port closes; hypercorn's
        connections are told to end only once the drain is over (told at the
        start, it closed new ones before they were read)."""
        connections = len(node.sessions())
        log.info(
            "shutting down: draining %d connections",
            connections,
            extra={"event": "draining", "connections": connections},
        )
        self.state.draining = True
        notice = info_frame("shutting_down")
        for session in node.sessions():
            session.send(notice)
            session.close(CloseReason(CLOSE_GOING_AWAY, "server shutting down"))
        with trio.move_on_after(self.settings.seconds("shutdown_timeout")):
            await node.wait_sessions_closed()
        await context.terminated.set()

    async def _handle_connection(
        self,
        node: Node,
        metrics: Metrics,
        app: ASGIWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        lifespan_state: dict[str, Any],
        stream: trio.SocketStream,
    ) -> None:
        try:
            conn: AnyStream = stream
            if self._tls is None:
                head = read_head_now(stream)
                if head is not None and not head_complete(head):
                    read, head = head, None
                    with trio.move_on_after(self.settings.seconds("handshake_timeout")):
                        head = await read_head(stream, read)
            else:
                # The TLS handshake happens in the first read; both within HANDSHAKE_TIMEOUT.
                conn = trio.SSLStream(stream, self._tls, server_side=True)
                head = None
                with trio.move_on_after(self.settings.seconds("handshake_timeout")):
                    head = await read_head(conn)
            if head is None:
                return  # closed, or no complete request head in HANDSHAKE_TIMEOUT
            if head.startswith(HTTP2_PREFACE):
                await conn.send_all(http2_refusal())
            elif not is_websocket_request(head):
                settings = self.settings
                http_stream = HttpStream(
                    conn,
                    head,
                    keep_alive_timeout=settings.seconds("keep_alive_timeout"),
                    request_timeout=settings.seconds("request_timeout"),
                )
                # hypercorn annotates SSLStream but serves plain streams (no do_handshake).
                await TCPServer(app, config, context, lifespan_state, http_stream)  # type: ignore[arg-type]
            elif self.state.draining:
                body = error_body(ErrorCode.UNAVAILABLE, "server shutting down")
                await conn.send_all(error_response(503, body))
            else:
                writers = self._connections
                assert writers is not None
                await serve_websocket(conn, head, node, writers, metrics.sampler.written)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            await stream.aclose()


@asynccontextmanager
async def open_server(settings: Settings | None = None) -> AsyncIterator[Server]:
    """Run a server for the duration of the block (tests, embedding).

    ``Settings(port=0)`` picks a free port; read it from ``server.port``.
    """
    server = Server(settings or Settings(port=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()
