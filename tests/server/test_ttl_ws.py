"""Message TTL (v1.2) over real sockets: ``expires_at``, expired messages never
replayed or returned, resume counting them, and expiry while queued for a
stalled subscriber. The wall clock the broker reads is moved by the test
(``clock``), never waited for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import RedisServer
from support import (
    RawClient,
    create_topics,
    http,
    recv,
    recv_skipping_heartbeats,
    redis_settings,
    request,
    running,
    send,
    subscribe,
    ws_client,
)
from trio_websocket import WebSocketConnection

from pubsub import Server, open_server
from pubsub._protocol import timestamps

BIG = "x" * 32_000


class Clock:
    """The broker's wall clock, moved forward by the test."""

    def __init__(self) -> None:
        self._real = timestamps.now_ms
        self.offset = 0

    def now_ms(self) -> int:
        return self._real() + self.offset

    def advance(self, ms: int) -> None:
        self.offset += ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    moved = Clock()
    monkeypatch.setattr(timestamps, "now_ms", moved.now_ms)
    yield moved


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def create(server: Server, name: str, **fields: Any) -> None:
    async with http(server) as client:
        response = await client.post("/topics", json={"name": name, **fields})
        assert response.status_code == 201, response.text


async def publish_acked(
    ws: WebSocketConnection, topic: str, msg_id: str, payload: Any = 0, **extra: Any
) -> dict[str, Any]:
    ack = await request(
        ws,
        type="publish",
        topic=topic,
        client_id="test",
        message={"id": msg_id, "payload": payload},
        request_id=msg_id,
        **extra,
    )
    assert ack["type"] == "ack", ack
    return ack


async def test_events_carry_expires_at_from_the_topic_ttl_or_their_own() -> None:
    async with running(message_ttl=2_000) as server:
        await create(server, "ttl", message_ttl_ms=5_000)
        await create(server, "default")
        await create(server, "never", message_ttl_ms=0)
        async with http(server) as rest:
            shown = {
                name: (await rest.get(f"/topics/{name}")).json()["message_ttl_ms"]
                for name in ("ttl", "default", "never")
            }
            assert shown == {"ttl": 5_000, "default": 2_000, "never": 0}
        async with ws_client(server) as sub, ws_client(server) as pub:
            for name in ("ttl", "default", "never"):
                await subscribe(sub, name)
            await publish_acked(pub, "ttl", "a")
            await publish_acked(pub, "ttl", "b", ttl_ms=1_000)
            await publish_acked(pub, "default", "c")
            await publish_acked(pub, "never", "d")
            await publish_acked(pub, "never", "e", ttl_ms=300)
            events = [await recv_skipping_heartbeats(sub) for _ in range(5)]
            lifetimes = {
                e["message"]["id"]: parse(e["expires_at"]) - parse(e["ts"])
                for e in events
                if "expires_at" in e
            }
            assert lifetimes == {
                "a": timedelta(seconds=5),
                "b": timedelta(seconds=1),
                "c": timedelta(seconds=2),
                "e": timedelta(milliseconds=300),
            }
            assert [e["message"]["id"] for e in events if "expires_at" not in e] == ["d"]


async def test_bad_ttls_are_bad_requests() -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with http(server) as rest:
            refused = await rest.post("/topics", json={"name": "u", "message_ttl_ms": -1})
            assert refused.status_code == 400
            assert "message_ttl_ms" in refused.json()["message"]
        async with ws_client(server) as ws:
            await send(
                ws,
                type="publish",
                topic="t",
                client_id="c",
                message={"id": "m", "payload": 1},
                ttl_ms=0,
                request_id="zero",
            )
            error = await recv(ws)
            assert error["error"]["code"] == "BAD_REQUEST"
            assert error["request_id"] == "zero" and "ttl_ms" in error["error"]["message"]
            await publish_acked(ws, "t", "still-open")


async def test_expired_messages_are_never_replayed_nor_returned_by_history(clock: Clock) -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as pub:
            await publish_acked(pub, "t", "m1")
            await publish_acked(pub, "t", "m2", ttl_ms=1_000)
            await publish_acked(pub, "t", "m3")
            await publish_acked(pub, "t", "m4", ttl_ms=1_000)
            await publish_acked(pub, "t", "m5", ttl_ms=60_000)
        clock.advance(2_000)
        async with ws_client(server) as late:
            # The newest three that have not expired, oldest first.
            await subscribe(late, "t", last_n=3)
            replayed = [await recv(late) for _ in range(3)]
            assert [(e["offset"], e["message"]["id"]) for e in replayed] == [
                (1, "m1"),
                (3, "m3"),
                (5, "m5"),
            ]
        async with http(server) as rest:
            body = (await rest.get("/topics/t/messages")).json()
            assert [m["message"]["id"] for m in body["messages"]] == ["m1", "m3", "m5"]
            assert "expires_at" in body["messages"][2] and "expires_at" not in body["messages"][0]


async def test_resume_counts_expired_messages_as_recovered(clock: Clock) -> None:
    async with running() as server:
        await create(server, "t", message_ttl_ms=1_000)
        async with ws_client(server) as first:
            ack = await subscribe(first, "t")
        async with ws_client(server) as pub:
            await publish_acked(pub, "t", "gone")
            await publish_acked(pub, "t", "kept", ttl_ms=60_000)
            await publish_acked(pub, "t", "gone-too")
        clock.advance(1_500)
        async with ws_client(server) as again:
            resumed = await subscribe(again, "t", since_offset=ack["offset"], epoch=ack["epoch"])
            assert resumed["recovered"] is True and resumed["expired"] == 2
            event = await recv(again)
            assert (event["offset"], event["message"]["id"]) == (2, "kept")
        async with ws_client(server) as third:
            # Nothing after offset 3: no "expired" field.
            plain = await subscribe(third, "t", since_offset=3, epoch=ack["epoch"])
            assert plain["recovered"] is True and "expired" not in plain


async def test_rest_publish_with_ttl_reaches_subscribers_and_expires(clock: Clock) -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as sub, http(server) as rest:
            await subscribe(sub, "t")
            posted = await rest.post("/topics/t/messages", json={"payload": 1, "ttl_ms": 750})
            assert posted.status_code == 201
            event = await recv(sub)
            assert parse(event["expires_at"]) - parse(event["ts"]) == timedelta(milliseconds=750)
            assert len((await rest.get("/topics/t/messages")).json()["messages"]) == 1
            clock.advance(1_000)
            assert (await rest.get("/topics/t/messages")).json()["messages"] == []


async def test_messages_expiring_while_queued_for_a_stalled_subscriber_are_not_written(
    clock: Clock,
) -> None:
    async with running(max_queue_size=10_000) as server:
        await create_topics(server, "t")
        slow = await RawClient.connect(server)
        await slow.send(type="subscribe", topic="t", client_id="slow")
        await slow.read_until_frame(lambda f: f["type"] == "ack")
        (session,) = [s for s in server.node.sessions() if s.client_id == "slow"]
        async with ws_client(server) as pub:
            total = 0
            while session.outbox.live_events < 5:
                assert total < 2_000, "the stalled subscriber never queued anything"
                total += 1
                await publish_acked(pub, "t", f"m{total}", BIG, ttl_ms=1_000)
            clock.advance(2_000)
            await publish_acked(pub, "t", "final", "last")
            total += 1
        await slow.read_until_frame(lambda f: f.get("message", {}).get("id") == "final")
        events = [f for f in slow.frames if f["type"] == "event"]
        notices = [f for f in slow.frames if f.get("msg") == "messages_expired"]
        expired = sum(f["expired"] for f in notices)
        assert expired >= 5
        offsets = [e["offset"] for e in events]
        assert offsets == sorted(set(offsets)) and offsets[-1] == total
        # Every message was written before it expired, or announced as expired.
        assert len(events) + expired == total
        # The notice comes before the next frame written after the expiry.
        first_notice = slow.frames.index(notices[0])
        assert slow.frames[first_notice + 1]["type"] == "event"
        async with http(server) as rest:
            assert (await rest.get("/stats")).json()["delivery"]["expired"] == expired
        await slow.stream.aclose()


async def test_ttl_on_the_redis_engine_reaches_another_node_and_expires_there(
    redis_server: RedisServer, redis_prefix: str, clock: Clock
) -> None:
    settings = redis_settings(redis_server.url, redis_prefix)
    async with open_server(settings) as one, open_server(settings) as two:
        await create(one, "t", message_ttl_ms=1_000)
        async with http(two) as rest:
            assert (await rest.get("/topics/t")).json()["message_ttl_ms"] == 1_000
        async with ws_client(two) as sub, ws_client(one) as pub:
            ack = await subscribe(sub, "t")
            await publish_acked(pub, "t", "short")
            await publish_acked(pub, "t", "long", ttl_ms=60_000)
            await publish_acked(pub, "t", "plain-topic-ttl")
            events = [await recv_skipping_heartbeats(sub) for _ in range(3)]
            lifetimes = [parse(e["expires_at"]) - parse(e["ts"]) for e in events]
            assert lifetimes == [timedelta(seconds=1), timedelta(seconds=60), timedelta(seconds=1)]
        clock.advance(1_500)
        async with ws_client(one) as late:
            await subscribe(late, "t", last_n=3)
            assert (await recv(late))["message"]["id"] == "long"
        async with ws_client(two) as again:
            resumed = await subscribe(again, "t", since_offset=ack["offset"], epoch=ack["epoch"])
            assert resumed["recovered"] is True and resumed["expired"] == 2
            assert (await recv(again))["message"]["id"] == "long"
        async with http(two) as rest:
            body = (await rest.get("/topics/t/messages")).json()
            assert [m["message"]["id"] for m in body["messages"]] == ["long"]
