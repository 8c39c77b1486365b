"""pubsub.client against a real server on 127.0.0.1, on asyncio and on Trio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import sniffio

from pubsub import BadRequest, MessageTooLarge, TopicNotFound, Unauthorized
from pubsub.client import (
    ConnectionLost,
    Event,
    Gap,
    ServerUnreachable,
    Subscription,
    open_client,
)

from .servers import LiveServer, serving

pytestmark = pytest.mark.anyio


async def take(sub: Subscription, n: int) -> list[Event | Gap]:
    items: list[Event | Gap] = []
    with anyio.fail_after(10):
        async for item in sub:
            items.append(item)
            if len(items) == n:
                break
    return items


async def test_each_test_runs_on_the_event_loop_it_names(anyio_backend: str) -> None:
    # conftest.py keeps pytest-trio's Trio mode off these tests.
    assert sniffio.current_async_library() == anyio_backend


async def test_publish_subscribe_round_trip() -> None:
    async with serving() as server:
        await server.create_topics("orders")
        async with open_client(server.url, client_id="me") as client:
            await client.ping()  # the welcome frame came before the pong
            assert client.connection_id is not None
            assert client.connection_id.startswith("c-")
            async with client.subscribe("orders") as sub:
                ack = await client.publish("orders", {"amount": 99.99}, id="m1")
                assert (ack.topic, ack.id, ack.offset) == ("orders", "m1", 1)
                [event] = await take(sub, 1)
                assert isinstance(event, Event)
                assert (event.id, event.offset, event.payload) == ("m1", 1, {"amount": 99.99})
            rtt = await client.ping()
            assert rtt > 0


async def test_several_subscriptions_share_one_connection() -> None:
    async with serving() as server:
        await server.create_topics("a", "b")
        async with (
            open_client(server.url) as client,
            client.subscribe("a") as sub_a,
            client.subscribe("b") as sub_b,
        ):
            await client.publish("a", 1)
            await client.publish("b", 2)
            await client.publish("a", 3)
            got_a = [e.payload for e in await take(sub_a, 2) if isinstance(e, Event)]
            got_b = [e.payload for e in await take(sub_b, 1) if isinstance(e, Event)]
            assert (got_a, got_b) == ([1, 3], [2])
            assert await server.acall(lambda s: len(s.node.sessions())) == 1
            with pytest.raises(ValueError, match="already subscribed"):
                async with client.subscribe("a"):
                    pass


async def test_last_n_replay_then_live_without_false_gap() -> None:
    async with serving() as server:
        await server.create_topics("t")
        async with open_client(server.url) as client:
            for i in range(5):
                await client.publish("t", i)
            async with client.subscribe("t", last_n=2) as sub:
                await client.publish("t", 5)
                items = await take(sub, 3)
                assert all(isinstance(e, Event) for e in items)
                assert [e.offset for e in items if isinstance(e, Event)] == [4, 5, 6]


async def test_errors_are_typed() -> None:
    async with serving(max_message_size=2000) as server:
        await server.create_topics("t")
        async with open_client(server.url) as client:
            with pytest.raises(TopicNotFound) as missing:
                await client.publish("nope", 1)
            assert missing.value.code.value == "TOPIC_NOT_FOUND"
            with pytest.raises(TopicNotFound):
                async with client.subscribe("nope"):
                    pass
            with pytest.raises(BadRequest):
                await client.publish("bad name", 1)
            # The connection is still good after refusals.
            assert (await client.publish("t", 1)).offset == 1
        async with open_client(server.url, reconnect=False) as client:
            with pytest.raises((MessageTooLarge, ConnectionLost)):
                await client.publish("t", "x" * 5000)


async def test_acks_match_requests_under_concurrent_publishes() -> None:
    async with serving() as server:
        await server.create_topics("t")
        async with open_client(server.url) as client:
            results: dict[str, int] = {}

            async def one(i: int) -> None:
                ack = await client.publish("t", i, id=f"m{i}")
                results[ack.id] = ack.offset

            async with anyio.create_task_group() as tasks:
                for i in range(200):
                    tasks.start_soon(one, i)
            assert len(results) == 200
            assert sorted(results.values()) == list(range(1, 201))
            async with client.subscribe("t", last_n=100) as sub:
                replay = [e for e in await take(sub, 100) if isinstance(e, Event)]
            # Each ack's offset is the offset the server gave that very message.
            assert all(results[e.id] == e.offset for e in replay)


async def test_reconnect_resumes_without_loss_or_duplicate() -> None:
    async with serving() as server:
        await server.create_topics("t")
        async with (
            open_client(server.url, backoff_initial=0.01) as client,
            open_client(server.url) as publisher,
            client.subscribe("t") as sub,
        ):
            for i in range(10):
                await publisher.publish("t", i)
            first = await take(sub, 10)
            await server.drop_connection(client.connection_id)
            for i in range(10, 30):
                await publisher.publish("t", i)
            rest = await take(sub, 20)
            items = first + rest
            assert all(isinstance(e, Event) for e in items), items
            assert [e.payload for e in items if isinstance(e, Event)] == list(range(30))
            assert client.reconnects == 1


async def test_resume_refused_when_ring_no_longer_holds_the_gap() -> None:
    # A ring of one: two publishes before the client is back are enough to lose one.
    async with serving(max_messages_per_topic=1) as server:
        await server.create_topics("t")
        async with (
            open_client(server.url, backoff_initial=0.01) as client,
            open_client(server.url) as publisher,
            client.subscribe("t") as sub,
        ):
            await publisher.publish("t", 0)
            await take(sub, 1)
            await server.drop_connection(client.connection_id)
            for i in range(1, 21):
                await publisher.publish("t", i)
            [gap] = await take(sub, 1)
            assert isinstance(gap, Gap) and gap.missed is not None
            assert (gap.topic, gap.after_offset, gap.reason) == ("t", 1, "not_recovered")
            # The gap counts what was published before the resume; the rest is live.
            await publisher.publish("t", "after")
            resumed_at = 1 + gap.missed
            items = await take(sub, 22 - resumed_at)
            assert [e.offset for e in items if isinstance(e, Event)] == list(
                range(resumed_at + 1, 23)
            )
            assert isinstance(items[-1], Event) and items[-1].payload == "after"


async def test_server_restart_gives_new_epoch_and_a_gap() -> None:
    first = LiveServer()
    await first.astart()
    try:
        await first.create_topics("t")
        async with (
            open_client(first.url, backoff_initial=0.01, backoff_max=0.05) as client,
            client.subscribe("t") as sub,
        ):
            await client.publish("t", "before")
            await take(sub, 1)
            await first.astop()
            # The topic is created again by the client's resume itself, not before
            # it: a new incarnation whatever the timing.
            async with serving(port=first.port, auto_create_topics=True):
                gap, *_ = await take(sub, 1)
                assert isinstance(gap, Gap)
                assert (gap.reason, gap.after_offset, gap.missed) == ("not_recovered", 1, None)
                await client.publish("t", "after")
                [event] = await take(sub, 1)
                assert isinstance(event, Event)
                assert (event.payload, event.offset) == ("after", 1)
    finally:
        await first.astop()


async def test_unreachable_and_unauthorized() -> None:
    async with serving(api_key="k") as server:
        with pytest.raises(Unauthorized):
            async with open_client(server.url):
                pass
        async with open_client(server.url, api_key="k") as client:
            assert await client.ping() > 0
        port = server.port
    with pytest.raises(ServerUnreachable):
        async with open_client(f"ws://127.0.0.1:{port}/ws"):
            pass


async def test_slow_application_applies_backpressure_not_memory() -> None:
    async with serving(max_queue_size=10_000) as server:
        await server.create_topics("t")
        async with (
            open_client(server.url, buffer=4) as client,
            open_client(server.url) as publisher,
            client.subscribe("t") as sub,
        ):
            for i in range(50):
                await publisher.publish("t", i)
            # The subscription holds at most its buffer; the rest waits upstream.
            statistics: Any = sub._receive.statistics()
            assert statistics.current_buffer_used <= 4
            items = await take(sub, 50)
            assert [e.payload for e in items if isinstance(e, Event)] == list(range(50))


async def test_without_reconnect_a_lost_connection_ends_requests_and_subscriptions() -> None:
    async with serving() as server:
        await server.create_topics("t")
        async with (
            open_client(server.url, reconnect=False) as client,
            client.subscribe("t") as sub,
        ):
            await client.publish("t", 1)
            await server.drop_connection(client.connection_id)
            first = await take(sub, 1)
            assert isinstance(first[0], Event)
            with pytest.raises(ConnectionLost):
                await take(sub, 1)
            with pytest.raises(ConnectionLost):
                await client.publish("t", 2)


async def test_several_urls_first_reachable_one_is_used() -> None:
    async with serving(node_id="live") as server:
        port = server.port
        async with serving() as other:
            dead = f"ws://127.0.0.1:{other.port}/ws"
        async with open_client([dead, server.url]) as client:
            assert client.url == server.url
            assert client.node_id == "live"
            assert await client.ping() > 0
    with pytest.raises(ServerUnreachable) as unreachable:
        async with open_client([dead, f"ws://127.0.0.1:{port}/ws"]):
            pass
    # The message names every endpoint it tried.
    assert dead in str(unreachable.value) and str(port) in str(unreachable.value)


async def test_reconnect_moves_on_to_the_next_url() -> None:
    async with serving(node_id="first") as first, serving(node_id="second") as second:
        await first.create_topics("t")
        await second.create_topics("t")
        urls = [first.url, second.url]
        async with (
            open_client(urls, backoff_initial=0.01, backoff_max=0.05) as client,
            client.subscribe("t") as sub,
        ):
            assert client.node_id == "first"
            await first.drop_connection(client.connection_id)
            # Separate memory engines: the resume cannot recover, and says so.
            [gap] = await take(sub, 1)
            assert isinstance(gap, Gap) and gap.reason == "not_recovered"
            assert (client.url, client.node_id) == (urls[1], "second")
            await client.publish("t", "on the second node")
            [event] = await take(sub, 1)
            assert isinstance(event, Event) and event.payload == "on the second node"
