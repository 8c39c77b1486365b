"""RATE_LIMIT and REST_RATE_LIMIT (v1.2) over real WebSockets and HTTP.

The limits are set low enough (1 publish a second) that a test's own pace never
earns a second token: no timing is asserted, only what a burst gets."""

from __future__ import annotations

import pytest
from support import create_topics, http, recv, request, running, send, subscribe, ws_client
from trio_websocket import WebSocketConnection

from pubsub import RateLimited
from pubsub.client import open_client


async def publish(ws: WebSocketConnection, topic: str, msg_id: str, payload: object) -> None:
    """A publish whose request_id is its message id (errors echo it)."""
    message = {"id": msg_id, "payload": payload}
    await send(ws, type="publish", topic=topic, client_id="t", message=message, request_id=msg_id)


async def test_a_burst_at_exactly_the_bucket_size_passes_and_the_next_publish_is_refused() -> None:
    async with running(rate_limit=1, rate_limit_burst=3) as server, http(server) as client:
        await create_topics(server, "orders")
        async with ws_client(server) as subscriber, ws_client(server) as publisher:
            await subscribe(subscriber, "orders")
            for number in range(1, 6):
                await publish(publisher, "orders", f"m{number}", number)
            answers = [await recv(publisher) for _ in range(5)]
            assert [a["type"] for a in answers] == ["ack", "ack", "ack", "error", "error"]
            assert [a["offset"] for a in answers[:3]] == [1, 2, 3]
            refused = answers[3]
            assert refused["request_id"] == "m4"
            assert refused["error"]["code"] == "RATE_LIMITED"
            assert 0 < refused["error"]["retry_after_ms"] <= 1000
            assert "RATE_LIMIT" in refused["error"]["message"]
            # The connection stays open; pings are not publishes and are answered.
            assert (await request(publisher, type="ping", request_id="p"))["type"] == "pong"
            events = [await recv(subscriber) for _ in range(3)]
            assert [e["message"]["id"] for e in events] == ["m1", "m2", "m3"]
            assert (await request(subscriber, type="ping", request_id="end"))["type"] == "pong"
            # Another connection has a bucket of its own.
            async with ws_client(server) as other:
                await publish(other, "orders", "o1", 1)
                assert (await recv(other))["type"] == "ack"
        stats = (await client.get("/stats")).json()
        assert stats["delivery"]["rate_limited"] == 2
        assert stats["topics"]["orders"]["messages"] == 4
        metrics = (await client.get("/metrics")).text
        assert "pubsub_publishes_rate_limited_total 2.0" in metrics


async def test_the_burst_defaults_to_the_rate() -> None:
    async with running(rate_limit=2) as server:
        await create_topics(server, "orders")
        async with ws_client(server) as publisher:
            for number in range(1, 4):
                await publish(publisher, "orders", f"m{number}", number)
            answers = [await recv(publisher) for _ in range(3)]
            assert [a["type"] for a in answers] == ["ack", "ack", "error"]


async def test_the_client_library_raises_rate_limited_with_retry_after() -> None:
    async with running(rate_limit=1) as server:
        await create_topics(server, "orders")
        async with open_client(f"ws://127.0.0.1:{server.port}/ws") as client:
            await client.publish("orders", {"n": 1})
            with pytest.raises(RateLimited) as refused:
                await client.publish("orders", {"n": 2})
            assert 0 < refused.value.retry_after <= 1.0
            assert refused.value.retry_after_ms == round(refused.value.retry_after * 1000)


async def test_rest_publishes_are_limited_per_client_address() -> None:
    async with running(rest_rate_limit=2, rate_limit=1) as server, http(server) as client:
        await create_topics(server, "orders")
        statuses = []
        for number in range(3):
            posted = await client.post("/topics/orders/messages", json={"payload": number})
            statuses.append(posted.status_code)
        assert statuses == [201, 201, 429]
        body = posted.json()
        assert body["error"] == "RATE_LIMITED"
        assert 0 < body["retry_after_ms"] <= 1000
        assert posted.headers["Retry-After"] == "1"
        # Other REST calls are not publishes: not limited.
        assert (await client.get("/topics/orders/messages")).status_code == 200
        # The WebSocket limit is separate from the REST one.
        async with ws_client(server) as publisher:
            await publish(publisher, "orders", "w1", 1)
            assert (await recv(publisher))["type"] == "ack"
        stats = (await client.get("/stats")).json()
        assert stats["delivery"]["rate_limited"] == 1
        assert stats["topics"]["orders"]["messages"] == 3
