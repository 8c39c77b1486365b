"""Wildcard subscriptions (v1.2) over real sockets: matching, topics created
later, at most one delivery per connection, deletes, unsubscribes, refusals,
and a cluster on a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import RedisServer
from support import (
    create_topics,
    http,
    publish,
    recv,
    recv_skipping_heartbeats,
    redis_settings,
    request,
    running,
    subscribe,
    ws_client,
)
from trio_websocket import WebSocketConnection

from pubsub import open_server


async def publish_each(ws: WebSocketConnection, *topics: str) -> None:
    """Publish one message to each topic (id = the topic), waiting for each ack."""
    for topic in topics:
        await publish(ws, topic, topic, 0)
        ack = await recv(ws)
        assert ack["type"] == "ack", ack


async def events_until_pong(ws: WebSocketConnection) -> list[tuple[str, int]]:
    """(topic, offset) of every event before the answer to a ping."""
    await ws.send_message('{"type":"ping","request_id":"end"}')
    got: list[tuple[str, int]] = []
    while True:
        frame = await recv_skipping_heartbeats(ws)
        if frame["type"] == "pong":
            return got
        assert frame["type"] == "event", frame
        got.append((frame["topic"], frame["offset"]))


async def test_star_matches_one_segment_and_a_final_gt_one_or_more() -> None:
    names = ("orders", "orders.eu", "orders.us", "orders.eu.de", "other.eu")
    async with running() as server:
        await create_topics(server, *names)
        async with ws_client(server) as star, ws_client(server) as gt, ws_client(server) as pub:
            ack = await subscribe(star, "orders.*")
            assert ack["pattern"] is True and ack["topic"] == "orders.*"
            assert "offset" not in ack and "epoch" not in ack
            await subscribe(gt, "orders.>")
            await publish_each(pub, *names)
            assert await events_until_pong(star) == [("orders.eu", 1), ("orders.us", 1)]
            assert await events_until_pong(gt) == [
                ("orders.eu", 1),
                ("orders.us", 1),
                ("orders.eu.de", 1),
            ]


async def test_a_topic_created_after_the_pattern_is_received_from_its_first_message() -> None:
    async with running() as server, ws_client(server) as sub, ws_client(server) as pub:
        # No matching topic needs to exist.
        await subscribe(sub, "metrics.*.cpu")
        await create_topics(server, "metrics.eu.cpu", "metrics.eu.mem")
        await publish_each(pub, "metrics.eu.cpu", "metrics.eu.mem", "metrics.eu.cpu")
        assert await events_until_pong(sub) == [("metrics.eu.cpu", 1), ("metrics.eu.cpu", 2)]


async def test_overlapping_patterns_and_the_topic_itself_deliver_each_message_once() -> None:
    async with running() as server:
        await create_topics(server, "a.b.c", "a.x.c")
        async with ws_client(server) as sub, ws_client(server) as pub:
            for topic in ("a.>", "a.*.c", "a.b.*", "a.b.c"):
                await subscribe(sub, topic)
            await publish_each(pub, "a.b.c", "a.x.c", "a.b.c")
            assert await events_until_pong(sub) == [("a.b.c", 1), ("a.x.c", 1), ("a.b.c", 2)]
            # Leaving some of them changes nothing while another still matches.
            for topic in ("a.b.c", "a.>", "a.b.*"):
                ack = await request(
                    sub, type="unsubscribe", topic=topic, client_id="t", request_id=topic
                )
                assert ack["type"] == "ack" and ack["request_id"] == topic
            await publish_each(pub, "a.b.c", "a.x.c")
            assert await events_until_pong(sub) == [("a.b.c", 3), ("a.x.c", 2)]
            await request(sub, type="unsubscribe", topic="a.*.c", client_id="t")
            await publish_each(pub, "a.b.c")
            assert await events_until_pong(sub) == []


async def test_unsubscribing_a_pattern_keeps_the_concrete_subscription() -> None:
    async with running() as server:
        await create_topics(server, "s.one", "s.two")
        async with ws_client(server) as sub, ws_client(server) as pub:
            await subscribe(sub, "s.*")
            await subscribe(sub, "s.one")
            await request(sub, type="unsubscribe", topic="s.*", client_id="t")
            await publish_each(pub, "s.one", "s.two")
            assert await events_until_pong(sub) == [("s.one", 1)]


@pytest.mark.parametrize(
    ("frame", "mentions"),
    [
        ({"topic": "orders.*", "last_n": 5}, "pattern"),
        ({"topic": "orders.>", "since_offset": 0, "epoch": "e"}, "pattern"),
        ({"topic": "orders.>.eu"}, "last segment"),
        ({"topic": "ord*"}, "whole segment"),
        ({"topic": "orders.*", "filter": {"path": "payload", "op": "near", "value": 1}}, "op"),
    ],
)
async def test_bad_pattern_subscriptions_are_refused_and_the_connection_stays(
    frame: dict[str, Any], mentions: str
) -> None:
    async with running() as server:
        await create_topics(server, "orders.eu")
        async with ws_client(server) as ws, ws_client(server) as pub:
            error = await request(ws, type="subscribe", client_id="c", request_id="bad", **frame)
            assert error["type"] == "error" and error["request_id"] == "bad"
            assert error["error"]["code"] == "BAD_REQUEST"
            assert mentions in error["error"]["message"]
            await publish_each(pub, "orders.eu")
            assert await events_until_pong(ws) == []  # nothing was subscribed


async def test_deleting_a_matching_topic_says_so_and_the_pattern_stays() -> None:
    async with running() as server:
        await create_topics(server, "t.a", "t.b")
        async with ws_client(server) as sub, ws_client(server) as pub, http(server) as rest:
            await subscribe(sub, "t.*")
            await publish_each(pub, "t.a")
            assert (await recv(sub))["topic"] == "t.a"
            assert (await rest.delete("/topics/t.a")).status_code == 200
            deleted = await recv(sub)
            assert (deleted["type"], deleted["msg"], deleted["topic"]) == (
                "info",
                "topic_deleted",
                "t.a",
            )
            await create_topics(server, "t.a")
            await publish_each(pub, "t.b", "t.a")
            assert await events_until_pong(sub) == [("t.b", 1), ("t.a", 1)]


async def test_a_pattern_with_a_filter_gets_only_matching_messages() -> None:
    wanted = {"path": "payload.level", "op": "eq", "value": "error"}
    async with running() as server:
        await create_topics(server, "logs.api", "logs.db")
        async with ws_client(server) as sub, ws_client(server) as pub:
            ack = await subscribe(sub, "logs.*", filter=wanted)
            assert ack["filtered"] is True and ack["pattern"] is True
            for topic, level in [("logs.api", "info"), ("logs.db", "error"), ("logs.api", "error")]:
                await publish(pub, topic, level, {"level": level})
                await recv(pub)
            assert await events_until_pong(sub) == [("logs.db", 1), ("logs.api", 2)]


async def test_patterns_on_the_redis_engine_take_in_topics_created_on_another_node(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    settings = redis_settings(redis_server.url, redis_prefix)
    async with open_server(settings) as one, open_server(settings) as two:
        await create_topics(one, "jobs.old")
        async with ws_client(two) as sub, ws_client(one) as pub:
            await subscribe(sub, "jobs.*")
            # Created through the other node, and published to at once: every
            # message of it reaches the pattern, however late the node hears of it.
            await create_topics(one, "jobs.new")
            await publish_each(pub, "jobs.new", "jobs.old", "jobs.new")
            got = sorted([await recv_skipping_heartbeats(sub) for _ in range(3)], key=str)
            seen = sorted((e["topic"], e["offset"]) for e in got)
            assert seen == [("jobs.new", 1), ("jobs.new", 2), ("jobs.old", 1)]
            assert await events_until_pong(sub) == []
