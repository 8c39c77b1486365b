"""REST on quart-trio: topic management, health, stats, info and metrics.

No broker logic lives here: every route translates HTTP to one node call and
a typed error to the contract's JSON error body. The app also serves ``/ws``
upgrades that arrive on a connection that already carried HTTP requests
(:mod:`pubsub._server.asgi_ws`).
"""

from __future__ import annotations

import os
import platform
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .._core.engine import TopicInfo
from .._core.node import Node
from .._protocol.errors import (
    BadRequest,
    MessageTooLarge,
    PubSubError,
    Unauthorized,
    Unavailable,
    error_body,
)
from .._protocol.timestamps import format_ts, ts_now
from .._version import __version__
from .asgi_ws import serve_asgi_websocket
from .auth import allowed
from .metrics import Metrics

JSON: Final = "application/json"
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class CreateTopic(msgspec.Struct, frozen=True):
    name: str


class ServerState:
    """What the REST layer needs to know about the server around it."""

    def __init__(self) -> None:
        self.draining = False


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; 0.0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return round(pages * _PAGE_SIZE / 1_048_576, 2)


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, content_type=JSON)


def error_response(error: PubSubError) -> Response:
    """The contract's REST error body with the error's HTTP status."""
    return Response(
        error_body(error.code, error.message), error.code.http_status, content_type=JSON
    )


def _subscribers(node: Node, info: TopicInfo) -> int:
    """Cluster-wide when the engine knows them, else this node's."""
    return info.subscribers if info.subscribers is not None else node.local_subscribers(info.name)


def _engine_status(node: Node) -> dict[str, str]:
    engine = node.engine
    return {"kind": engine.kind, "status": "ok" if engine.available else "unavailable"}


def create_app(node: Node, state: ServerState, metrics: Metrics) -> QuartTrio:
    """The REST application for ``node``."""
    settings = node.settings
    app = QuartTrio("pubsub")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_message_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.before_request
    async def authenticate() -> Response | None:
        if request.path == "/health" or allowed(settings.api_key, request.headers.get("X-API-Key")):
            return None
        return error_response(Unauthorized("missing or wrong X-API-Key header"))

    @app.errorhandler(PubSubError)
    async def on_pubsub_error(exc: PubSubError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return error_response(
                MessageTooLarge(
                    f"request body larger than MAX_MESSAGE_SIZE ({settings.max_message_size} bytes)"
                )
            )
        if status == 400:
            return error_response(BadRequest(exc.description or "bad request"))
        # Not contract errors (unknown path, wrong method): the HTTP reason as the code.
        name = (exc.name or "error").upper().replace(" ", "_")
        return Response(error_body(name, exc.description or ""), status, content_type=JSON)

    @app.post("/topics")
    async def create_topic() -> Response:
        body = await request.get_data(cache=False)
        try:
            name = msgspec.json.decode(body, type=CreateTopic).name
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        info = await node.create_topic(name)
        return _json({"status": "created", "topic": info.name, "ts": ts_now()}, 201)

    @app.delete("/topics/<name>")
    async def delete_topic(name: str) -> Response:
        await node.delete_topic(name)
        return _json({"status": "deleted", "topic": name, "ts": ts_now()})

    @app.get("/topics")
    async def list_topics() -> Response:
        topics = [
            {
                "name": info.name,
                "subscribers": _subscribers(node, info),
                "messages": info.offset,
                "created_at": format_ts(info.created_at),
            }
            for info in await node.topics()
        ]
        return _json({"topics": topics})

    @app.get("/topics/<name>")
    async def show_topic(name: str) -> Response:
        info = await node.topic(name)
        return _json(
            {
                "name": info.name,
                "subscribers": _subscribers(node, info),
                "messages": info.offset,
                "stored": info.stored,
                "offset": info.offset,
                "epoch": info.epoch,
                "created_at": format_ts(info.created_at),
            }
        )

    @app.get("/health")
    async def health() -> Response:
        engine = node.engine
        if state.draining:
            status = "draining"
        elif not engine.available:
            status = "unavailable"
        else:
            status = "ok"
        topics: int | None = None
        if engine.available:
            try:
                topics = await node.topic_count()
            except Unavailable:
                status = "unavailable"
        body = {
            "status": status,
            "uptime_sec": node.uptime_sec(),
            "topics": topics,
            "subscribers": node.total_subscribers(),
            "engine": _engine_status(node),
        }
        return _json(body, 200 if status == "ok" else 503)

    @app.get("/stats")
    async def stats() -> Response:
        body = msgspec.structs.asdict(await node.stats())
        body["memory"] = {"rss_mb": rss_mb()}
        return _json(body)

    @app.get("/info")
    async def info() -> Response:
        return _json(
            {
                "service": "trio-pubsub",
                "version": __version__,
                "python": platform.python_version(),
                "node_id": node.node_id,
                "engine": _engine_status(node),
                "config": settings.public(),
            }
        )

    @app.get("/metrics")
    async def metrics_route() -> Response:
        # Scrapes go on during an engine outage, when they matter most.
        try:
            stats = await node.stats()
        except Unavailable:
            stats = await node.stats(local=True)
        exposition = metrics.exposition(stats, engine_available=node.engine.available)
        return Response(exposition, content_type="text/plain; version=0.0.4")

    @app.websocket("/ws")
    async def websocket_on_reused_connection() -> Response | None:
        return await serve_asgi_websocket(node, state.draining, metrics)

    return app
