"""``/ws`` on a connection that already carried HTTP requests, served through ASGI.

The dispatcher sends a connection to the fast path only when its *first*
request is the ``/ws`` upgrade. A proxy that keeps upstream connections alive
may send the upgrade after REST requests on the same connection; hypercorn then
has the connection, and this module serves the WebSocket through the ASGI
websocket interface with the same node and session as the fast path.

What differs (docs/protocol.md): each frame costs more (ASGI sends messages,
not bytes, so the writer takes each queued frame apart again); the server's
WebSocket pings are hypercorn's (every ``HEARTBEAT_INTERVAL``) and their pongs
never reach the node, so ``CONNECTION_TIMEOUT`` does not apply here; a message
over four times ``MAX_MESSAGE_SIZE`` is closed by hypercorn with 1009 without
the ``MESSAGE_TOO_LARGE`` error frame (smaller oversize messages get it).
"""

from __future__ import annotations

import time
from typing import Final

import trio
from quart import Response, websocket

from .._core.node import Node
from .._core.session import Session
from .._protocol.errors import (
    CLOSE_TRY_AGAIN_LATER,
    BadRequest,
    ErrorCode,
    MessageTooLarge,
    PubSubError,
    error_body,
)
from .._protocol.frames import error_frame, info_frame
from .._protocol.websocket import (
    OPCODE_TEXT,
    close_reason,
    iter_server_frames,
    sendable_close_code,
)
from .auth import allowed, refused
from .logs import connection_closed, connection_logging, connection_opened
from .metrics import Metrics
from .origins import FORBIDDEN, Origins, origin_refusal, refused_origin
from .transport import handle_texts

#: hypercorn's own limit, as a multiple of MAX_MESSAGE_SIZE (see the module docstring).
HYPERCORN_SIZE_FACTOR: Final = 4


def _refuse(status: int, code: ErrorCode | str, message: str) -> Response:
    return Response(error_body(code, message), status, content_type="application/json")


async def serve_asgi_websocket(
    node: Node, draining: bool, metrics: Metrics, origins: Origins
) -> Response | None:
    """Serve the current quart ``websocket`` until it closes (or refuse it with
    the HTTP response returned)."""
    settings = node.settings
    if draining:
        return _refuse(503, ErrorCode.UNAVAILABLE, "server shutting down")
    origin = websocket.headers.get("Origin")
    if not origins.allows(origin, websocket.headers.get("Host")):
        assert origin is not None
        refused_origin("asgi", "/ws", websocket.remote_addr, origin)
        return _refuse(403, FORBIDDEN, origin_refusal(origin))
    header, query = websocket.headers.get("X-API-Key"), websocket.args.get("api_key")
    if not allowed(settings.api_key, header, query):
        given = header is not None or query is not None
        refused("asgi", "/ws", websocket.remote_addr, key_given=given)
        return _refuse(401, ErrorCode.UNAUTHORIZED, "missing or wrong API key")
    await websocket.accept()
    try:
        session = node.open_session()
    except PubSubError as exc:
        await websocket.send(error_frame(exc.code, exc.message).decode())
        await websocket.close(CLOSE_TRY_AGAIN_LATER, exc.code.value)
        return None
    session.idle_timeout = False
    logged = connection_logging()
    if logged:
        connection_opened(session, websocket.remote_addr, "asgi")
    try:
        welcome = info_frame("connected", connection_id=session.connection_id, node_id=node.node_id)
        await websocket.send(welcome.decode())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write, session, metrics, nursery.cancel_scope)
            await _read(node, session)
    finally:
        node.close_session(session)
        if logged:
            connection_closed(session)
    return None


async def _read(node: Node, session: Session) -> None:
    max_size = node.settings.max_message_size
    while True:
        data = await websocket.receive()
        received_at = session.received_at = time.perf_counter()
        if not session.is_open:
            continue
        if isinstance(data, bytes):
            session.send_error(
                BadRequest("binary frames are not supported: send JSON in text frames")
            )
        elif len(data) * 4 > max_size and len(data.encode()) > max_size:
            session.fail(
                MessageTooLarge(f"message larger than MAX_MESSAGE_SIZE ({max_size} bytes)")
            )
        else:
            await handle_texts(node, session, [data], received_at)


async def _write(session: Session, metrics: Metrics, done: trio.CancelScope) -> None:
    while True:
        batch = await session.next_batch()
        if not batch:
            break
        for opcode, payload in iter_server_frames(b"".join(batch)):
            # Pings are hypercorn's to send: ASGI has no ping message.
            if opcode == OPCODE_TEXT:
                await websocket.send(payload.decode())
        if session.batch_published_at:
            metrics.sampler.written(session.batch_published_at)
    reason = session.close_reason
    assert reason is not None
    await websocket.close(sendable_close_code(reason.code), close_reason(reason.reason))
    done.cancel()
