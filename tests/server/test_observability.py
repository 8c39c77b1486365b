"""What operators watch, over real sockets: the standard and build metrics in
/metrics, METRICS_TOKEN, and the structured log events (as fields, in JSON)."""

from __future__ import annotations

import json
import logging
import platform
import sys
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from support import (
    RawClient,
    create_topics,
    http,
    publish,
    recv,
    recv_skipping_heartbeats,
    running,
    subscribe,
    ws_client,
)
from trio_websocket import ConnectionRejected, open_websocket_url

from pubsub import Server, __version__
from pubsub._server.logs import JsonFormatter, connection_logging

MiB = 1_048_576
#: A payload that fills a slow reader's socket in a few messages.
BIG = "x" * 32_000


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a Prometheus exposition by its name: (labels, value)."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    entry = json.loads(JsonFormatter().format(record))
    assert isinstance(entry, dict)
    return entry


# ---------------------------------------------------------------- /metrics


async def test_metrics_has_process_platform_gc_and_build_info() -> None:
    async with running() as server, http(server) as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        found = samples(response.text)
    # Linux: the process collector reads /proc.
    if sys.platform == "linux":
        for name in (
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ):
            assert found[name][0][1] > 0, name
    [(labels, value)] = found["python_info"]
    assert labels["version"] == platform.python_version() and value == 1
    assert "python_gc_objects_collected_total" in found
    assert found["trio_pubsub_build_info"] == [
        (
            {
                "version": __version__,
                "python": platform.python_version(),
                "engine": "memory",
                "node_id": server.node.node_id,
            },
            1.0,
        )
    ]
    # The broker's own metrics are still there.
    assert found["pubsub_connections"] == [({}, 0.0)]


@pytest.mark.skipif(sys.platform != "linux", reason="the process collector reads /proc")
async def test_stats_memory_is_the_process_collector_s_resident_memory() -> None:
    async with running() as server, http(server) as client:
        rss_mb = (await client.get("/stats")).json()["memory"]["rss_mb"]
        [(_, rss_bytes)] = samples((await client.get("/metrics")).text)[
            "process_resident_memory_bytes"
        ]
    assert rss_mb > 0
    # Read a moment apart, from the same source: the same order of magnitude.
    assert rss_bytes / 2 < rss_mb * MiB < rss_bytes * 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer t0ken"}, 200),
        ({"Authorization": "bearer t0ken"}, 200),
        ({"X-Metrics-Token": "t0ken"}, 200),
        ({"X-API-Key": "k3y"}, 200),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic t0ken"}, 401),
        ({"X-Metrics-Token": "k3y"}, 401),  # the API key is not a metrics token
        ({"X-API-Key": "t0ken"}, 401),  # nor the other way round
    ],
)
async def test_metrics_open_to_the_api_key_or_the_metrics_token(
    headers: dict[str, str], status: int
) -> None:
    async with running(api_key="k3y", metrics_token="t0ken") as server, http(server) as client:
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == status
        if status == 401:
            assert response.json()["error"] == "UNAUTHORIZED"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            assert "trio_pubsub_build_info" in response.text


async def test_metrics_token_opens_nothing_else() -> None:
    async with running(api_key="k3y", metrics_token="t0ken") as server, http(server) as client:
        for headers in ({"Authorization": "Bearer t0ken"}, {"X-Metrics-Token": "t0ken"}):
            for path in ("/stats", "/info", "/topics"):
                assert (await client.get(path, headers=headers)).status_code == 401, path
            created = await client.post("/topics", json={"name": "t"}, headers=headers)
            assert created.status_code == 401
        url = f"ws://127.0.0.1:{server.port}/ws"
        for query, extra in (("?api_key=t0ken", []), ("", [(b"X-Metrics-Token", b"t0ken")])):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(url + query, extra_headers=extra):
                    pass
            assert rejected.value.status_code == 401
        info = (await client.get("/info", headers={"X-API-Key": "k3y"})).json()
        assert info["config"]["metrics_token"] == "***"
        assert "t0ken" not in json.dumps(info)


async def test_metrics_token_alone_guards_metrics_only() -> None:
    async with running(metrics_token="t0ken") as server, http(server) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"X-Metrics-Token": "t0ken"})).is_success
        assert (await client.get("/stats")).status_code == 200


# ---------------------------------------------------------------- log events


def test_json_formatter_writes_extra_fields_as_top_level_keys() -> None:
    logger = logging.getLogger("pubsub.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "pubsub.test",
            logging.WARNING,
            __file__,
            1,
            "topic %s created",
            ("orders",),
            sys.exc_info(),
            extra={"event": "topic_created", "topic": "orders", "msg_": 1, "when": object()},
        )
    record.__dict__["level"] = "not the level"  # a field named like a base key loses
    entry = as_json(record)
    assert entry["msg"] == "topic orders created"
    assert entry["level"] == "warning"
    assert entry["logger"] == "pubsub.test"
    assert entry["event"] == "topic_created" and entry["topic"] == "orders"
    assert entry["msg_"] == 1
    assert entry["when"].startswith("<object object")
    assert "ValueError: boom" in entry["exc"]
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2026-11-28T10:00:00.123Z")
    # No LogRecord internals leak.
    assert not {"args", "levelno", "pathname", "exc_info", "msecs"} & set(entry)


async def test_topic_created_and_deleted_are_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub.node")
    async with running() as server, http(server) as client:
        created = await client.post("/topics", json={"name": "orders", "message_ttl_ms": 5000})
        assert created.status_code == 201
        assert (await client.delete("/topics/orders")).status_code == 200
    [created_record] = events(caplog, "topic_created")
    [deleted_record] = events(caplog, "topic_deleted")
    assert created_record.levelno == deleted_record.levelno == logging.INFO
    assert as_json(created_record) | {"ts": ""} == {
        "ts": "",
        "level": "info",
        "logger": "pubsub.node",
        "msg": "topic orders created",
        "event": "topic_created",
        "topic": "orders",
        "message_ttl_ms": 5000,
    }
    assert as_json(deleted_record)["topic"] == "orders"


async def test_auto_created_topics_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pubsub.node")
    async with running(auto_create_topics=True) as server, ws_client(server) as ws:
        await subscribe(ws, "auto")
    [record] = events(caplog, "topic_created")
    assert as_json(record)["topic"] == "auto"


async def test_auth_failures_are_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pubsub.auth")
    async with running(api_key="k3y") as server, http(server) as client:
        assert (await client.get("/stats")).status_code == 401
        assert (await client.get("/stats", headers={"X-API-Key": "nope"})).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/ws?api_key=nope"):
                pass
        assert (await client.get("/stats", headers={"X-API-Key": "k3y"})).status_code == 200
    records = events(caplog, "auth_failed")
    assert all(r.levelno == logging.WARNING for r in records)
    fields = [
        {k: as_json(r)[k] for k in ("transport", "path", "reason")} | {"peer": r.__dict__["peer"]}
        for r in records
    ]
    assert [f | {"peer": None} for f in fields] == [
        {"transport": "rest", "path": "/stats", "reason": "missing_key", "peer": None},
        {"transport": "rest", "path": "/stats", "reason": "wrong_key", "peer": None},
        {"transport": "rest", "path": "/metrics", "reason": "missing_key", "peer": None},
        {"transport": "ws", "path": "/ws", "reason": "wrong_key", "peer": None},
    ]
    assert all(f["peer"] and f["peer"].startswith("127.0.0.1") for f in fields)
    # The key a client tried is never logged.
    assert "nope" not in caplog.text


async def test_connections_are_logged_at_debug_with_their_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pubsub.connection")
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as ws:
            await subscribe(ws, "t")
            await publish(ws, "t", "m1", {"n": 1})
            assert {(await recv(ws))["type"], (await recv(ws))["type"]} == {"event", "ack"}
            connection_id = server.node.sessions()[0].connection_id
        with trio.fail_after(10):
            await server.node.wait_sessions_closed()
    [opened] = events(caplog, "connection_opened")
    [closed] = events(caplog, "connection_closed")
    assert opened.levelno == closed.levelno == logging.DEBUG
    opened_fields = as_json(opened)
    assert opened_fields["connection_id"] == connection_id
    assert opened_fields["transport"] == "ws"
    assert opened_fields["peer"].startswith("127.0.0.1:")
    fields = as_json(closed)
    assert fields["duration_s"] >= 0
    del fields["ts"], fields["duration_s"], fields["msg"]
    assert fields == {
        "level": "debug",
        "logger": "pubsub.connection",
        "event": "connection_closed",
        "connection_id": connection_id,
        "client_id": "test",
        "close_code": 1000,
        "reason": "",
        "error": None,
        "received": 2,
        "published": 1,
        "delivered": 1,
        "dropped": 0,
    }


async def test_connection_events_are_not_logged_without_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pubsub.connection")
    assert not connection_logging()
    async with running() as server:
        async with ws_client(server) as ws:
            await ws.send_message('{"type": "ping"}')
            assert (await recv(ws))["type"] == "pong"
        with trio.fail_after(10):
            await server.node.wait_sessions_closed()
    assert not [r for r in caplog.records if r.name == "pubsub.connection"]


async def test_slow_consumer_disconnect_is_logged_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pubsub.session")
    async with running(backpressure_policy="disconnect", max_queue_size=4) as server:
        await create_topics(server, "t")
        slow = await RawClient.connect(server)
        await slow.send(type="subscribe", topic="t", client_id="slowpoke")
        await slow.read_until_frame(lambda f: f["type"] == "ack")
        connection_id = next(s.connection_id for s in server.node.sessions())
        async with ws_client(server) as pub:
            await _publish_until_slow_consumer(server, pub)
        await slow.read_until_closed()
        assert slow.close_code == 1013
    [record] = events(caplog, "slow_consumer_disconnect")
    assert record.levelno == logging.WARNING
    fields = as_json(record)
    assert fields["connection_id"] == connection_id
    assert fields["client_id"] == "slowpoke"
    assert fields["reason"] == "outbox_full"
    assert fields["max_queue_size"] == 4
    assert fields["received"] == 1
    assert fields["discarded"] >= 0 and fields["delivered"] >= 0


async def _publish_until_slow_consumer(server: Server, pub: Any, limit: int = 2000) -> None:
    counters = server.node.counters
    for i in range(limit):
        await publish(pub, "t", f"m{i}", BIG)
        assert (await recv_skipping_heartbeats(pub))["type"] == "ack"
        if counters.slow_consumer_disconnects:
            return
    raise AssertionError(f"no slow consumer after {limit} messages")
