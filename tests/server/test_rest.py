"""REST over real HTTP on 127.0.0.1: topics CRUD, health, stats, info, metrics, auth.

(Metrics' standard collectors, METRICS_TOKEN and log events: test_observability;
the OpenAPI document and the frame schema: test_schemas.)"""

from __future__ import annotations

import re
import time

import pytest
from support import create_topics, http, publish, recv, running, subscribe, ws_client

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_topic_lifecycle() -> None:
    async with running() as server, http(server) as client:
        created = await client.post("/topics", json={"name": "orders"})
        assert created.status_code == 201
        body = created.json()
        assert body["status"] == "created" and body["topic"] == "orders"
        assert TS.match(body["ts"])

        await client.post("/topics", json={"name": "alerts"})
        listed = (await client.get("/topics")).json()["topics"]
        assert [t["name"] for t in listed] == ["alerts", "orders"]
        assert set(listed[0]) == {"name", "subscribers", "messages", "created_at"}

        shown = (await client.get("/topics/orders")).json()
        assert shown["name"] == "orders"
        assert shown["messages"] == shown["stored"] == shown["offset"] == 0

        deleted = await client.delete("/topics/orders")
        assert deleted.status_code == 200
        assert deleted.json()["status"] == "deleted"
        assert (await client.get("/topics/orders")).status_code == 404
        assert [t["name"] for t in (await client.get("/topics")).json()["topics"]] == ["alerts"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/topics", b'{"name": "bad name"}', 400, "BAD_REQUEST"),
        ("POST", "/topics", b'{"name": ""}', 400, "BAD_REQUEST"),
        ("POST", "/topics", b"{not json", 400, "BAD_REQUEST"),
        ("POST", "/topics", b'{"title": "x"}', 400, "BAD_REQUEST"),
        ("POST", "/topics", b'{"name": 5}', 400, "BAD_REQUEST"),
        ("POST", "/topics", b"[]", 400, "BAD_REQUEST"),
        ("POST", "/topics", b'{"name": "exists"}', 409, "TOPIC_EXISTS"),
        ("DELETE", "/topics/missing", b"", 404, "TOPIC_NOT_FOUND"),
        ("GET", "/topics/missing", b"", 404, "TOPIC_NOT_FOUND"),
    ],
)
async def test_errors_use_contract_body(
    method: str, path: str, body: bytes, status: int, code: str
) -> None:
    async with running() as server, http(server) as client:
        await create_topics(server, "exists")
        response = await client.request(method, path, content=body)
        assert response.status_code == status
        error = response.json()
        assert error["error"] == code
        assert error["message"]
        assert TS.match(error["ts"])


async def test_body_over_max_message_size_is_413() -> None:
    async with running(max_message_size=1024) as server, http(server) as client:
        response = await client.post("/topics", content=b'{"name": "' + b"x" * 2000 + b'"}')
        assert response.status_code == 413
        assert response.json()["error"] == "MESSAGE_TOO_LARGE"


async def test_max_topics_is_429() -> None:
    async with running(max_topics=2) as server, http(server) as client:
        await create_topics(server, "a", "b")
        response = await client.post("/topics", json={"name": "c"})
        assert response.status_code == 429
        assert response.json()["error"] == "LIMIT_EXCEEDED"


async def test_unknown_path_and_method_are_json_http_errors() -> None:
    async with running() as server, http(server) as client:
        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "NOT_FOUND"
        wrong = await client.put("/topics")
        assert wrong.status_code == 405


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with running() as server, http(server) as client:
        for _ in range(5):
            assert (await client.get("/health")).status_code == 200
        stats = (await client.get("/stats")).json()
        # Plain HTTP connections never count as WebSocket clients.
        assert stats["websocket"]["connection_counter"] == 0


async def test_health_stats_info_metrics() -> None:
    async with running(api_key=None) as server, http(server) as client:
        await create_topics(server, "orders")
        async with ws_client(server) as ws:
            await subscribe(ws, "orders")
            await publish(ws, "orders", "m1", {"n": 1})
            assert (await ws.get_message()) is not None  # event
            assert (await ws.get_message()) is not None  # ack

            health = await client.get("/health")
            assert health.status_code == 200
            assert health.json() | {"uptime_sec": 0} == {
                "status": "ok",
                "uptime_sec": 0,
                "topics": 1,
                "subscribers": 1,
                "engine": {"kind": "memory", "status": "ok"},
                "api_key_required": False,
            }

            stats = (await client.get("/stats")).json()
            assert stats["node_id"] == server.node.node_id
            assert stats["topics"] == {
                "orders": {"messages": 1, "subscribers": 1, "stored": 1, "dropped": 0}
            }
            assert stats["total_topics"] == 1
            assert stats["total_subscribers"] == 1
            assert stats["total_messages"] == 1
            assert stats["websocket"] == {"total_clients": 1, "connection_counter": 1}
            assert stats["delivery"] == {
                "delivered": 1,
                "dropped": 0,
                "slow_consumer_disconnects": 0,
                "rate_limited": 0,
                "expired": 0,
            }
            assert stats["memory"]["rss_mb"] > 0

            info = (await client.get("/info")).json()
            assert info["service"] == "trio-pubsub"
            assert info["config"]["max_queue_size"] == 1000
            assert info["node_id"] == stats["node_id"]
            assert info["engine"] == {"kind": "memory", "status": "ok"}

            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            text = metrics.text
            assert "pubsub_connections 1.0" in text
            assert "pubsub_messages_published_total 1.0" in text
            assert "pubsub_publish_to_write_seconds_bucket" in text


async def test_api_key_guards_everything_but_health_and_the_api_descriptions() -> None:
    async with running(api_key="s3cret") as server, http(server) as client:
        for path in ("/health", "/openapi.json", "/schema/frames.json"):
            assert (await client.get(path)).status_code == 200, path
        for path in ("/topics", "/topics/t", "/topics/t/messages", "/stats", "/info", "/metrics"):
            denied = await client.get(path)
            assert denied.status_code == 401
            assert denied.json()["error"] == "UNAUTHORIZED"
        wrong = await client.get("/topics", headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        allowed = await client.post("/topics", json={"name": "t"}, headers={"X-API-Key": "s3cret"})
        assert allowed.status_code == 201
        info = (await client.get("/info", headers={"X-API-Key": "s3cret"})).json()
        assert "s3cret" not in str(info)


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_metrics_histogram_records_the_real_publish_to_write_latency() -> None:
    """The first event written is observed (a quiet broker still shows latency), and
    the value lies within what the client measured around the round trip."""
    async with running() as server, http(server) as client:
        await create_topics(server, "t")
        async with ws_client(server) as sub, ws_client(server) as pub:
            await subscribe(sub, "t")
            started = time.perf_counter()
            await publish(pub, "t", "m1", 1)
            assert (await recv(sub))["type"] == "event"
            elapsed = time.perf_counter() - started
            assert (await recv(pub))["type"] == "ack"
        text = (await client.get("/metrics")).text
        assert _metric(text, "pubsub_publish_to_write_seconds_count") == 1
        observed = _metric(text, "pubsub_publish_to_write_seconds_sum")
        assert 0 < observed <= elapsed


async def test_metrics_histogram_samples_busy_traffic() -> None:
    async with running() as server, http(server) as client:
        await create_topics(server, "t")
        async with ws_client(server) as ws:
            await subscribe(ws, "t")
            for i in range(64):
                await publish(ws, "t", f"m{i}", i)
                kinds = {(await recv(ws))["type"], (await recv(ws))["type"]}
                assert kinds == {"event", "ack"}
        text = (await client.get("/metrics")).text
        # One write in 16 node-wide, the first always: writes 1, 17, 33, 49.
        assert _metric(text, "pubsub_publish_to_write_seconds_count") == 4


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b'{"name":"\xff\xfe"}', "UTF-8"),
        (b'{"name":"t","x":' + b"[" * 5000 + b"]" * 5000 + b"}", "MAX_JSON_DEPTH"),
    ],
)
async def test_bodies_that_are_not_utf8_or_too_deep_are_400_not_500(
    body: bytes, mentions: str
) -> None:
    async with running() as server, http(server) as client:
        for path in ("/topics", "/topics/t/messages"):
            response = await client.post(path, content=body)
            assert response.status_code == 400, response.text
            assert mentions in response.json()["message"]
