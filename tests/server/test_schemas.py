"""The frame schema and the OpenAPI document: generated from the msgspec types,
shipped in the package unchanged, served without a key, and true of what a
real server sends (real frames and real REST answers validated against them)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from conftest import open_memory_node
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from support import create_topics, http, recv, running, send, ws_client
from trio_websocket import WebSocketConnection, open_websocket_url

from pubsub._server.http import ServerState, create_app
from pubsub._server.metrics import Metrics
from pubsub._server.schemas import (
    FRAMES_FILE,
    OPENAPI_FILE,
    REGENERATE,
    SCHEMA_DIR,
    frames_schema,
    generated,
    openapi_document,
)

FRAMES_URI = "urn:trio-pubsub:frames"
OPENAPI_URI = "urn:trio-pubsub:openapi"
_REGISTRY: Registry[Any] = Registry().with_resources(
    [
        (FRAMES_URI, DRAFT202012.create_resource(frames_schema())),
        (OPENAPI_URI, DRAFT202012.create_resource(openapi_document())),
    ]
)


def validator(ref: str) -> Draft202012Validator:
    """A validator of the schema at ``ref`` (a URI above with a JSON pointer)."""
    return Draft202012Validator({"$ref": ref}, registry=_REGISTRY)


SERVER_FRAME = validator(FRAMES_URI + "#/$defs/ServerFrame")
CLIENT_FRAME = validator(FRAMES_URI + "#/$defs/ClientFrame")


def response_schema_ref(path: str, method: str, status: int) -> str:
    """The JSON pointer of the documented JSON body of ``method path`` answering
    ``status`` (following a response ``$ref``); fails if it is not documented."""
    document = openapi_document()
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}: not documented"
    response = responses[str(status)]
    pointer = f"#/paths/{_escape(path)}/{method.lower()}/responses/{status}"
    if "$ref" in response:
        pointer = response["$ref"]
        response = document["components"]["responses"][pointer.rsplit("/", 1)[1]]
    assert "application/json" in response["content"], f"{method} {path} {status}: not JSON"
    return f"{OPENAPI_URI}{pointer}/content/application~1json/schema"


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


def check_response(response: httpx.Response, path: str) -> dict[str, Any]:
    """Validate a real answer against the document (``path``: its template)."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    schema = validator(response_schema_ref(path, response.request.method, response.status_code))
    schema.validate(body)
    return body  # type: ignore[no-any-return]


# ---------------------------------------------------------------- shipped copies


@pytest.mark.parametrize("name", [FRAMES_FILE, OPENAPI_FILE])
def test_shipped_copy_is_what_the_types_generate(name: str) -> None:
    shipped = (SCHEMA_DIR / name).read_bytes()
    assert shipped == generated()[name], f"pubsub/schema/{name} is stale: run {REGENERATE}"


def test_schemas_are_valid_json_schema() -> None:
    Draft202012Validator.check_schema(frames_schema())
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    # ECMA-262 readers: no Python-only regex syntax is left.
    assert "\\Z" not in json.dumps(frames_schema()) + json.dumps(document)


async def test_every_route_is_documented_and_nothing_else() -> None:
    async with open_memory_node() as node:
        app = create_app(node, ServerState(), Metrics(node.counters, node_id="n", engine="memory"))
        routes = {
            (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules()
            for method in rule.methods or ()
            if method not in ("HEAD", "OPTIONS")
        }
    documented = {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes == documented


async def test_documents_are_served_without_a_key() -> None:
    async with running(api_key="k3y") as server, http(server) as client:
        for path, name in (("/openapi.json", OPENAPI_FILE), ("/schema/frames.json", FRAMES_FILE)):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.content == generated()[name]


# ---------------------------------------------------------------- real frames


async def _exchange(ws: WebSocketConnection, frames: list[dict[str, Any]], **frame: Any) -> None:
    """Send ``frame`` (checked against the client schema), keep the answer."""
    CLIENT_FRAME.validate(frame)
    await send(ws, **frame)
    frames.append(await recv(ws))


async def test_real_frames_match_the_frame_schema() -> None:
    async with running(rate_limit=1) as server:
        await create_topics(server, "orders")
        async with http(server) as client:
            created = await client.post("/topics", json={"name": "ttl", "message_ttl_ms": 60_000})
            assert created.status_code == 201
        frames: list[dict[str, Any]] = []
        async with ws_client(server) as ws, ws_client(server) as other:
            await _exchange(ws, frames, type="subscribe", topic="orders", client_id="c", last_n=5)
            await _exchange(ws, frames, type="subscribe", topic="ttl", client_id="c", request_id=7)
            await _exchange(ws, frames, type="subscribe", topic="orders.*", client_id="c")
            await _exchange(
                ws,
                frames,
                type="subscribe",
                topic="orders",
                client_id="c",
                request_id="f",
                filter={"path": "payload.n", "op": "gt", "value": 0},
            )
            publish = {
                "type": "publish",
                "topic": "ttl",
                "client_id": "p",
                "message": {"id": "m1", "payload": {"n": 1}},
                "request_id": "r1",
            }
            CLIENT_FRAME.validate(publish)
            await send(other, **publish)
            frames.append(await recv(other))  # ack (the publisher is not subscribed)
            frames.append(await recv(ws))  # event with expires_at
            await send(other, **publish)  # over RATE_LIMIT: an error with retry_after_ms
            frames.append(await recv(other))
            await _exchange(ws, frames, type="ping", request_id="p1")
            nowhere = {"id": "x", "payload": None}
            await _exchange(
                ws, frames, type="publish", topic="nope", client_id="c", message=nowhere
            )
            await send(ws, type="bogus")
            frames.append(await recv(ws))
            await _exchange(ws, frames, type="unsubscribe", topic="orders.*", client_id="c")
            async with http(server) as client:
                assert (await client.delete("/topics/ttl")).status_code == 200
            frames.append(await recv(ws))  # topic_deleted
        kinds = {(f["type"], f.get("msg") or (f.get("error") or {}).get("code")) for f in frames}
        assert kinds >= {
            ("ack", None),
            ("event", None),
            ("pong", None),
            ("error", "TOPIC_NOT_FOUND"),
            ("error", "BAD_REQUEST"),
            ("error", "RATE_LIMITED"),
            ("info", "topic_deleted"),
        }, kinds
        assert any("expires_at" in f for f in frames)
        assert any(f.get("pattern") for f in frames) and any(f.get("filtered") for f in frames)
        for frame in frames:
            SERVER_FRAME.validate(frame)
            assert not CLIENT_FRAME.is_valid(frame), frame


async def test_info_frames_match_the_frame_schema() -> None:
    """The welcome, a heartbeat and the shutdown notice."""
    async with (
        running(heartbeat_interval=20) as server,
        open_websocket_url(f"ws://127.0.0.1:{server.port}/ws") as ws,
    ):
        welcome = await recv(ws)
        heartbeat = await recv(ws)
        server.shutdown()
        while (notice := await recv(ws)) == heartbeat | {"ts": notice["ts"]}:
            pass
    assert welcome["msg"] == "connected" and welcome["node_id"]
    assert heartbeat["msg"] == "ping"
    assert notice["msg"] == "shutting_down"
    for frame in (welcome, heartbeat, notice):
        SERVER_FRAME.validate(frame)


def test_the_frame_schema_is_not_vacuous() -> None:
    ts = "2026-11-28T10:00:00.123Z"
    event = {"type": "event", "topic": "t", "message": {"id": "m", "payload": 1}, "offset": 1}
    assert SERVER_FRAME.is_valid(event | {"ts": ts})
    assert not SERVER_FRAME.is_valid(event)  # no ts
    assert not SERVER_FRAME.is_valid(event | {"ts": ts, "message": {"id": "", "payload": 1}})
    assert not SERVER_FRAME.is_valid({"type": "ack", "topic": "t", "status": "ko", "ts": ts})
    assert not SERVER_FRAME.is_valid({"type": "nope", "ts": ts})
    publish = {"type": "publish", "client_id": "c", "message": {"id": "m", "payload": None}}
    assert CLIENT_FRAME.is_valid(publish | {"topic": "orders"})
    assert not CLIENT_FRAME.is_valid(publish | {"topic": "bad name"})
    assert not CLIENT_FRAME.is_valid(publish | {"topic": "orders.*"})  # patterns: subscribe only
    assert CLIENT_FRAME.is_valid({"type": "subscribe", "topic": "orders.>", "client_id": "c"})
    assert not CLIENT_FRAME.is_valid({"type": "ping", "request_id": 1.5})


# ---------------------------------------------------------------- real REST answers


async def test_real_rest_answers_match_the_openapi_document() -> None:
    settings: dict[str, Any] = {"max_topics": 3, "max_message_size": 2048, "rest_rate_limit": 2}
    async with running(api_key="k3y", **settings) as server:
        async with http(server, headers={"X-API-Key": "k3y"}) as client:
            created = await client.post("/topics", json={"name": "orders"})
            assert created.status_code == 201
            check_response(created, "/topics")
            await client.post("/topics", json={"name": "ttl", "message_ttl_ms": 60_000})
            for body in (b'{"name": "bad name"}', b"{", b'{"name": "orders"}'):
                check_response(await client.post("/topics", content=body), "/topics")
            check_response(await client.post("/topics", content=b"x" * 4096), "/topics")
            await client.post("/topics", json={"name": "third"})
            full = await client.post("/topics", json={"name": "fourth"})
            assert full.status_code == 429
            check_response(full, "/topics")

            listed = check_response(await client.get("/topics"), "/topics")
            assert len(listed["topics"]) == 3
            check_response(await client.get("/topics/orders"), "/topics/{name}")
            check_response(await client.get("/topics/missing"), "/topics/{name}")

            messages = "/topics/{name}/messages"
            published = await client.post("/topics/ttl/messages", json={"payload": [1]})
            assert published.status_code == 201
            check_response(published, messages)
            limited = await client.post(
                "/topics/orders/messages", json={"id": "x", "payload": None, "ttl_ms": 5}
            )
            assert limited.status_code == 201
            refused = await client.post("/topics/orders/messages", json={"payload": 1})
            assert refused.status_code == 429
            assert check_response(refused, messages)["retry_after_ms"] >= 1
            history = check_response(await client.get("/topics/ttl/messages"), messages)
            assert "expires_at" in history["messages"][0]
            check_response(await client.get("/topics/ttl/messages?limit=x"), messages)
            check_response(await client.get("/topics/missing/messages"), messages)

            async with ws_client(server, query="?api_key=k3y"):
                check_response(await client.get("/health"), "/health")
                stats = check_response(await client.get("/stats"), "/stats")
                assert stats["websocket"]["total_clients"] == 1
            check_response(await client.get("/info"), "/info")
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "text/plain" in metrics.headers["content-type"]

            check_response(await client.delete("/topics/orders"), "/topics/{name}")
            check_response(await client.delete("/topics/orders"), "/topics/{name}")
        async with http(server) as anonymous:
            check_response(await anonymous.get("/stats"), "/stats")
            check_response(await anonymous.get("/metrics"), "/metrics")
        server.state.draining = True  # as a shutdown does
        async with http(server) as anonymous:
            draining = await anonymous.get("/health")
            assert draining.status_code == 503
            check_response(draining, "/health")
