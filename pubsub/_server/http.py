"""REST on quart-trio: topic management, health, stats, info and metrics.

No broker logic lives here: every route translates HTTP to one node call and
a typed error to the contract's JSON error body. The app also serves ``/ws``
upgrades that arrive on a connection that already carried HTTP requests
(:mod:`pubsub._server.asgi_ws`).
"""

from __future__ import annotations

import math
import os
import platform
import time
import uuid
from typing import Any, Final, TypeVar

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .._core.engine import TopicInfo
from .._core.node import MAX_HISTORY_LIMIT, Node
from .._core.ratelimit import TokenBucket
from .._protocol.errors import (
    BadRequest,
    MessageTooLarge,
    PubSubError,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_body,
)
from .._protocol.frames import Message, MessageId, NonNegative, Positive
from .._protocol.timestamps import format_ts, ts_now
from .._version import __version__
from .asgi_ws import serve_asgi_websocket
from .auth import allowed
from .metrics import Metrics

JSON: Final = "application/json"
#: Messages a history call returns without ``limit``.
DEFAULT_HISTORY_LIMIT: Final = 100
T = TypeVar("T")
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class CreateTopic(msgspec.Struct, frozen=True):
    name: str
    #: Message TTL (v1.2) of the topic's messages; None: ``MESSAGE_TTL``.
    message_ttl_ms: NonNegative | None = None


class RestMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /topics/{name}/messages``."""

    payload: msgspec.Raw
    id: MessageId | None = None
    #: Message TTL (v1.2): replaces the topic's for this message.
    ttl_ms: Positive | None = None


def decode_body(body: str | bytes, kind: type[T]) -> T:
    """``body`` as ``kind``; ``BAD_REQUEST`` naming what is wrong otherwise."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def query_int(name: str, default: int, *, most: int | None = None) -> int:
    """A non-negative integer query parameter (at most ``most``)."""
    text = request.args.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise BadRequest(f"query parameter {name!r} must be a non-negative integer")
    value = int(text)
    if most is not None and value > most:
        raise BadRequest(f"query parameter {name!r} must be at most {most}")
    return value


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
    """The contract's REST error body with the error's HTTP status (and, for
    ``RATE_LIMITED``, ``retry_after_ms`` and a ``Retry-After`` header in seconds)."""
    if isinstance(error, RateLimited):
        body = error_body(error.code, error.message, error.retry_after_ms)
        headers = {"Retry-After": str(math.ceil(error.retry_after_ms / 1000))}
        return Response(body, error.code.http_status, headers=headers, content_type=JSON)
    return Response(
        error_body(error.code, error.message), error.code.http_status, content_type=JSON
    )


class AddressLimits:
    """``REST_RATE_LIMIT``: a token bucket per client address (burst = rate).

    A bucket that has refilled is the same as none, so those are forgotten now
    and then: the table holds only addresses that published in the last second
    or so, however many come and go."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._next_sweep = 0.0

    def take(self, address: str) -> int:
        """0 if ``address`` may publish now, else the milliseconds to wait."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._buckets = {a: b for a, b in self._buckets.items() if not b.full(now)}
            self._next_sweep = now + 1.0
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.rate, now)
        return bucket.take(now)


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
        body = decode_body(await request.get_data(cache=False), CreateTopic)
        info = await node.create_topic(body.name, body.message_ttl_ms)
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
                "message_ttl_ms": info.message_ttl_ms,
                "created_at": format_ts(info.created_at),
            }
        )

    limits = AddressLimits(settings.rest_rate_limit) if settings.rest_rate_limit else None

    @app.post("/topics/<name>/messages")
    async def publish(name: str) -> Response:
        if limits is not None:
            wait = limits.take(request.remote_addr or "")
            if wait:
                node.counters.rate_limited += 1
                raise node.rate_limited("REST_RATE_LIMIT", wait)
        body = decode_body(await request.get_data(cache=False), RestMessage)
        message = Message(id=body.id or uuid.uuid4().hex, payload=body.payload)
        answer = await node.publish(name, message, body.ttl_ms)
        return _json(
            {
                "status": "published",
                "topic": name,
                "id": message.id,
                "offset": answer.offset,
                "ts": answer.ts,
            },
            201,
        )

    @app.get("/topics/<name>/messages")
    async def history(name: str) -> Response:
        since = query_int("since_offset", 0)
        limit = query_int("limit", DEFAULT_HISTORY_LIMIT, most=MAX_HISTORY_LIMIT)
        found = await node.history(name, since, limit)
        messages = [
            {
                "offset": p.offset,
                "ts": p.ts,
                "message": p.message,
                "expires_at": format_ts(p.expires),
            }
            if p.expires
            else {"offset": p.offset, "ts": p.ts, "message": p.message}
            for p in found.publications
        ]
        return _json(
            {"topic": name, "epoch": found.epoch, "offset": found.offset, "messages": messages}
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
