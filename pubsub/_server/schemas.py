"""The JSON Schema of every WebSocket frame and the OpenAPI 3.1 document of
the REST API, generated from the msgspec types the server encodes and decodes
(:mod:`pubsub._protocol.frames`, :mod:`pubsub._server.bodies`), so neither
can drift from what the server does.

The server serves them at ``/schema/frames.json`` and ``/openapi.json``
(without the API key: they describe the API, they hold no data). A copy of
each ships in the package, ``pubsub/schema/``; a test checks that the copy
equals what this module generates. After changing a frame, a body or a
setting, write the copies again with :data:`REGENERATE`.

What a schema cannot say is said in its descriptions or in docs/protocol.md:
rules across fields (``since_offset`` needs ``epoch``; a wildcard pattern takes
neither ``last_n`` nor ``since_offset``), the filter language, and which
``info`` frames carry which fields.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

import msgspec

from .._core.node import MAX_HISTORY_LIMIT
from .._protocol.frames import AnyClientFrame, AnyServerFrame, TopicName
from .._version import __version__
from .bodies import (
    DEFAULT_HISTORY_LIMIT,
    CreateTopic,
    Health,
    MessageHistory,
    NodeList,
    PublishResult,
    RestError,
    RestMessage,
    ServiceInfo,
    StatsReport,
    TopicCreated,
    TopicDeleted,
    TopicDetail,
    TopicList,
)

#: Where the copies ship: ``pubsub/schema/``.
SCHEMA_DIR: Final = Path(__file__).resolve().parent.parent / "schema"
FRAMES_FILE: Final = "frames.json"
OPENAPI_FILE: Final = "openapi.json"
#: The command that writes the shipped copies again.
REGENERATE: Final = 'python -c "from pubsub._server.schemas import write; write()"'
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def _public(node: Any) -> Any:
    """``node`` fit for any JSON Schema reader, in place: a docstring's first
    paragraph only (the rest is for maintainers), and Python's ``\\Z`` (end of
    string) as ``$``, which means the same in the ECMA-262 regular expressions
    of JSON Schema (and in Go's and Rust's). Validators that use Python's ``re``
    (the ``jsonschema`` package) let ``$`` match before a final newline too, so
    they accept a topic name ending in one, which the server refuses."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = " ".join(value.split("\n\n", 1)[0].split())
            elif key == "pattern" and isinstance(value, str) and value.endswith("\\Z"):
                node[key] = value[:-2] + "$"
            else:
                _public(value)
    elif isinstance(node, list):
        for item in node:
            _public(item)
    return node


def _components(types: Sequence[Any], ref_template: str) -> tuple[list[Any], dict[str, Any]]:
    schemas, components = msgspec.json.schema_components(types, ref_template=ref_template)
    return _public(list(schemas)), _public(components)


@cache
def _frames_schema() -> dict[str, Any]:
    (client, server), defs = _components([AnyClientFrame, AnyServerFrame], "#/$defs/{name}")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "trio-pubsub WebSocket frames",
        "description": (
            f"trio-pubsub {__version__}. Each WebSocket text frame carries one JSON "
            "object: a client frame (#/$defs/ClientFrame) or a server frame "
            "(#/$defs/ServerFrame), told apart by `type`. Clients must ignore fields "
            "they do not know; the server ignores unknown fields of client frames. "
            "Server frames leave out fields whose value would be null. Rules across "
            "fields are in docs/protocol.md."
        ),
        "anyOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
        "$defs": {"ClientFrame": client, "ServerFrame": server, **defs},
    }


def frames_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of every frame: ``#/$defs/ClientFrame`` and
    ``#/$defs/ServerFrame`` (a fresh copy; the caller may change it)."""
    return copy.deepcopy(_frames_schema())


# --------------------------------------------------------------------------
# OpenAPI


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestError"}}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "RATE_LIMITED: seconds until a publish may succeed",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


#: The error answers, by the name an operation's ``responses`` refers to.
_ERRORS: Final = {
    "BadRequest": _error("BAD_REQUEST: malformed JSON, a missing or invalid field"),
    "Unauthorized": _error(
        "UNAUTHORIZED: API key (or, for /metrics, metrics token) missing or wrong"
    ),
    "NotFound": _error("TOPIC_NOT_FOUND: no such topic"),
    "Conflict": _error("TOPIC_EXISTS: a topic of that name exists"),
    "TooLarge": _error("MESSAGE_TOO_LARGE: the body is over MAX_MESSAGE_SIZE"),
    "TooMany": _error(
        "LIMIT_EXCEEDED (MAX_TOPICS) or RATE_LIMITED (REST_RATE_LIMIT, with retry_after_ms)",
        retry_after=True,
    ),
    "Unavailable": _error("UNAVAILABLE: the engine (Redis) cannot be reached or answered late"),
    "Forbidden": _error(
        "FORBIDDEN: a browser page of an origin ALLOWED_ORIGINS does not list (not a contract "
        "code: an HTTP reason, like NOT_FOUND)"
    ),
}
_STATUS_OF: Final = {
    "BadRequest": "400",
    "Unauthorized": "401",
    "Forbidden": "403",
    "NotFound": "404",
    "Conflict": "409",
    "TooLarge": "413",
    "TooMany": "429",
    "Unavailable": "503",
}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    errors: Sequence[str] = (),
    *,
    security: list[dict[str, list[str]]] | None = None,
    **more: Any,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, **more}
    answers = dict(responses)
    if security != []:
        errors = ["Unauthorized", *errors]
    for name in errors:
        answers[_STATUS_OF[name]] = {"$ref": f"#/components/responses/{name}"}
    operation["responses"] = dict(sorted(answers.items()))
    if security is not None:
        operation["security"] = security
    return operation


@cache
def _openapi_document() -> dict[str, Any]:
    types = [
        CreateTopic,
        RestMessage,
        RestError,
        TopicCreated,
        TopicDeleted,
        TopicList,
        TopicDetail,
        PublishResult,
        MessageHistory,
        Health,
        StatsReport,
        NodeList,
        ServiceInfo,
    ]
    refs, schemas = _components(types, "#/components/schemas/{name}")
    ref = dict(zip((t.__name__ for t in types), refs, strict=True))
    topic_name = _public(msgspec.json.schema(TopicName))
    name_parameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "the topic's name",
        "schema": topic_name,
    }
    open_to_all: list[dict[str, list[str]]] = []
    paths: dict[str, Any] = {
        "/topics": {
            "post": _operation(
                "createTopic",
                "Create a topic",
                {"201": _json_body(ref["TopicCreated"], "created")},
                ["BadRequest", "Forbidden", "Conflict", "TooLarge", "TooMany", "Unavailable"],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": ref["CreateTopic"]}},
                },
            ),
            "get": _operation(
                "listTopics",
                "Every topic, sorted by name",
                {"200": _json_body(ref["TopicList"], "the topics")},
                ["Unavailable"],
            ),
        },
        "/topics/{name}": {
            "parameters": [name_parameter],
            "get": _operation(
                "getTopic",
                "One topic",
                {"200": _json_body(ref["TopicDetail"], "the topic")},
                ["Forbidden", "NotFound", "Unavailable"],
            ),
            "delete": _operation(
                "deleteTopic",
                "Delete a topic (its subscribers get `topic_deleted`)",
                {"200": _json_body(ref["TopicDeleted"], "deleted")},
                ["NotFound", "Unavailable"],
            ),
        },
        "/topics/{name}/messages": {
            "parameters": [name_parameter],
            "post": _operation(
                "publishMessage",
                "Publish a message, as a WebSocket publish would",
                {"201": _json_body(ref["PublishResult"], "stored and handed to fan-out")},
                ["BadRequest", "Forbidden", "NotFound", "TooLarge", "TooMany", "Unavailable"],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": ref["RestMessage"]}},
                },
            ),
            "get": _operation(
                "getMessages",
                "Stored, unexpired messages after `since_offset`, oldest first",
                {"200": _json_body(ref["MessageHistory"], "the messages")},
                ["BadRequest", "NotFound", "Unavailable"],
                parameters=[
                    {
                        "name": "since_offset",
                        "in": "query",
                        "description": "only messages with a larger offset",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "at most this many messages",
                        "schema": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_HISTORY_LIMIT,
                            "default": DEFAULT_HISTORY_LIMIT,
                        },
                    },
                ],
            ),
        },
        "/health": {
            "get": _operation(
                "health",
                "Whether the node serves (for load balancers; never needs a key)",
                {
                    "200": _json_body(ref["Health"], "serving"),
                    "503": _json_body(ref["Health"], "draining, or the engine is unreachable"),
                },
                security=open_to_all,
            )
        },
        "/stats": {
            "get": _operation(
                "stats",
                "This node's statistics",
                {"200": _json_body(ref["StatsReport"], "the statistics")},
            )
        },
        "/nodes": {
            "get": _operation(
                "nodes",
                "Every live node of the cluster as it last reported (this one, fresh, first)",
                {"200": _json_body(ref["NodeList"], "the nodes")},
            )
        },
        "/info": {
            "get": _operation(
                "info",
                "Version, node and settings (secrets masked)",
                {"200": _json_body(ref["ServiceInfo"], "the service")},
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus text exposition",
                {
                    "200": {
                        "description": "every metric (text format 0.0.4)",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                security=[{"ApiKey": []}, {"MetricsBearer": []}, {"MetricsToken": []}],
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                {"200": _json_body({"type": "object"}, "the OpenAPI 3.1 document")},
                security=open_to_all,
            )
        },
        "/schema/frames.json": {
            "get": _operation(
                "frameSchema",
                "The JSON Schema (2020-12) of every WebSocket frame",
                {"200": _json_body({"type": "object"}, "the schema")},
                security=open_to_all,
            )
        },
        "/dashboard": {
            "get": _operation(
                "dashboard",
                "The dashboard's page (HTML; it asks for the API key, and holds no data)",
                {"200": {"description": "the page", "content": {"text/html": {}}}},
                security=open_to_all,
            )
        },
        "/dashboard/{name}": {
            "get": _operation(
                "dashboardFile",
                "A file of the dashboard (script, style, vendored chart library)",
                {
                    "200": {"description": "the file"},
                    "404": _error("NOT_FOUND: no such file"),
                },
                security=open_to_all,
                parameters=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/ws": {
            "get": _operation(
                "websocket",
                "Open a WebSocket (RFC 6455); its frames are in /schema/frames.json",
                {
                    "101": {
                        "description": "switching protocols; the first frame is `info`/`connected`"
                    },
                    "400": _error("BAD_REQUEST: not a valid WebSocket upgrade"),
                    "403": _error("FORBIDDEN: an Origin that ALLOWED_ORIGINS does not list"),
                    "426": _error("BAD_REQUEST: a WebSocket version other than 13"),
                    "503": _error("UNAVAILABLE: the server is shutting down"),
                },
                security=[{"ApiKey": []}, {"ApiKeyQuery": []}],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {
            "title": "trio-pubsub",
            "version": __version__,
            "summary": "A real-time WebSocket pub/sub message broker",
            "description": (
                "REST beside the WebSocket endpoint /ws on one port. When API_KEY is set, "
                "every call but /health, /openapi.json and /schema/frames.json needs the "
                "X-API-Key header (/ws also takes the api_key query parameter); /metrics "
                "also opens to METRICS_TOKEN. Without API_KEY and METRICS_TOKEN nothing "
                "needs a key. Every error answers with the RestError body."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "security": [{"ApiKey": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _ERRORS,
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "API_KEY (only when it is set)",
                },
                "ApiKeyQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "api_key",
                    "description": "API_KEY for /ws, where browsers cannot set headers",
                },
                "MetricsBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "METRICS_TOKEN (opens /metrics only)",
                },
                "MetricsToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Metrics-Token",
                    "description": "METRICS_TOKEN (opens /metrics only)",
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API (a fresh copy)."""
    return copy.deepcopy(_openapi_document())


def render(document: dict[str, Any]) -> bytes:
    """``document`` as the shipped files hold it (and the server serves it)."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


@cache
def generated() -> dict[str, bytes]:
    """Each shipped file's name and the bytes it should hold (built once; do not
    change the answer)."""
    return {
        FRAMES_FILE: render(_frames_schema()),
        OPENAPI_FILE: render(_openapi_document()),
    }


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write the generated files to ``directory``; returns the files changed."""
    changed = []
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in generated().items():
        path = directory / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(path)
    return changed
