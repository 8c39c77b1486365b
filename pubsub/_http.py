"""REST on quart-trio: topic management, health, stats, info and metrics.

No broker logic lives here: every route translates HTTP to one broker call
and a broker error to the contract's JSON error body.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Final

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ._broker import Broker
from ._errors import ErrorCode, PubSubError
from ._metrics import Metrics
from ._protocol import check_topic_name, format_ts, ts_now
from ._transport import key_matches
from ._version import __version__

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


def error_response(code: ErrorCode, message: str, status: int | None = None) -> Response:
    """The contract's REST error body with the code's HTTP status."""
    body = {"error": code.value, "message": message, "ts": ts_now()}
    return _json(body, status or code.http_status)


def create_app(broker: Broker, state: ServerState, metrics: Metrics) -> QuartTrio:
    """The REST application for ``broker``."""
    settings = broker.settings
    app = QuartTrio("pubsub")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_message_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.before_request
    async def authenticate() -> Response | None:
        if settings.api_key is None or request.path == "/health":
            return None
        if key_matches(settings.api_key, request.headers.get("X-API-Key")):
            return None
        return error_response(ErrorCode.UNAUTHORIZED, "missing or wrong X-API-Key header")

    @app.errorhandler(PubSubError)
    async def on_pubsub_error(exc: PubSubError) -> Response:
        return error_response(exc.code, exc.message)

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return error_response(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"request body larger than MAX_MESSAGE_SIZE ({settings.max_message_size} bytes)",
            )
        if status == 400:
            return error_response(ErrorCode.BAD_REQUEST, exc.description or "bad request")
        # Not contract errors (unknown path, wrong method): the HTTP reason as the code.
        name = (exc.name or "error").upper().replace(" ", "_")
        return _json({"error": name, "message": exc.description, "ts": ts_now()}, status)

    @app.post("/topics")
    async def create_topic() -> Response:
        body = await request.get_data(cache=False)
        try:
            name = msgspec.json.decode(body, type=CreateTopic).name
        except msgspec.ValidationError as exc:
            raise PubSubError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PubSubError(ErrorCode.BAD_REQUEST, f"malformed JSON: {exc}") from None
        topic = broker.create_topic(check_topic_name(name))
        return _json({"status": "created", "topic": topic.name, "ts": ts_now()}, 201)

    @app.delete("/topics/<name>")
    async def delete_topic(name: str) -> Response:
        await broker.delete_topic(name)
        return _json({"status": "deleted", "topic": name, "ts": ts_now()})

    @app.get("/topics")
    async def list_topics() -> Response:
        topics = [
            {
                "name": topic.name,
                "subscribers": len(topic.subscribers),
                "messages": topic.offset,
                "created_at": format_ts(topic.created_at),
            }
            for topic in broker.topics()
        ]
        return _json({"topics": topics})

    @app.get("/topics/<name>")
    async def show_topic(name: str) -> Response:
        topic = broker.get_topic(name)
        return _json(
            {
                "name": topic.name,
                "subscribers": len(topic.subscribers),
                "messages": topic.offset,
                "stored": topic.stored,
                "offset": topic.offset,
                "epoch": topic.epoch,
                "created_at": format_ts(topic.created_at),
            }
        )

    @app.get("/health")
    async def health() -> Response:
        body = {
            "status": "draining" if state.draining else "ok",
            "uptime_sec": broker.uptime_sec(),
            "topics": len(broker.topics()),
            "subscribers": broker.total_subscribers(),
        }
        return _json(body, 503 if state.draining else 200)

    @app.get("/stats")
    async def stats() -> Response:
        body = msgspec.structs.asdict(broker.stats())
        body["memory"] = {"rss_mb": rss_mb()}
        return _json(body)

    @app.get("/info")
    async def info() -> Response:
        return _json(
            {
                "service": "trio-pubsub",
                "version": __version__,
                "python": platform.python_version(),
                "config": settings.public(),
            }
        )

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.exposition(), content_type="text/plain; version=0.0.4")

    return app
