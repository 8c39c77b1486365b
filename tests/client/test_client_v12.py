"""pubsub.client and the v1.2 extensions: patterns, content filters, message TTL,
and the Gap rule that goes with them.

Three kinds of tests: the sans-IO rules of a :class:`Subscription` driven with
frames directly; the client against a scripted server (``servers.FakeServer``),
which says exactly what the contract lets a server say, when the test wants it
(drops, expiries, replays, reconnects); and the client against a real server.
The last two run on asyncio and on Trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from pubsub import BadRequest, Server, TopicNotFound
from pubsub._protocol.frames import Ack
from pubsub.client import (
    Client,
    Event,
    Gap,
    Subscription,
    _ExpiredCredit,
    _matches,
    open_client,
)

from .servers import TS, FakeServer, fake_server, serving

pytestmark = pytest.mark.anyio

BIG_AMOUNT = {"path": "payload.amount", "op": "gt", "value": 100}


async def take(sub: Subscription, n: int) -> list[Event | Gap]:
    items: list[Event | Gap] = []
    with anyio.fail_after(10):
        async for item in sub:
            items.append(item)
            if len(items) == n:
                break
    return items


def summary(items: list[Event | Gap]) -> list[Any]:
    """Events as (topic, offset), gaps as they are: what the application can tell apart."""
    return [(i.topic, i.offset) if isinstance(i, Event) else i for i in items]


# ------------------------------------------------------------- sans-IO rules


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.eu.paris", False),
        ("*.eu", "orders.eu", True),
        ("*.eu", "orders.us", False),
        ("orders.>", "orders.eu", True),
        ("orders.>", "orders.eu.paris", True),
        ("orders.>", "orders", False),
        ("orders.>", "ordersX.eu", False),
        (">", "anything.at.all", True),
        ("a.*.c.>", "a.b.c.d.e", True),
        ("a.*.c.>", "a.b.x.d", False),
        ("orders.eu", "orders.eu", True),
    ],
)
def test_pattern_matching(pattern: str, topic: str, matches: bool) -> None:
    assert _matches(pattern, topic) is matches


@pytest.fixture
def new_subscription() -> Iterator[Callable[..., Subscription]]:
    """Makes subscriptions, each closed when the test ends."""
    made: list[Subscription] = []

    def make(topic: str, *, filter: dict[str, Any] | None = None) -> Subscription:
        made.append(Subscription(topic, 100, filter=filter))
        return made[-1]

    yield make
    for subscription in made:
        subscription._close()


def ack(**fields: Any) -> Ack:
    return Ack(topic="t", status="ok", ts=TS, **fields)


def event(topic: str, offset: int, payload: Any = None) -> Event:
    return Event(topic, f"{topic}-{offset}", offset, TS, json.dumps(payload).encode())


def test_expired_messages_explain_offset_jumps_before_the_rest_is_a_gap(
    new_subscription: Callable[..., Subscription],
) -> None:
    sub = new_subscription("t")
    assert sub._acknowledged(ack(offset=3, epoch="e"), resumed=False, reconnected=False) == []
    credit = _ExpiredCredit(3)  # messages_expired 3
    # 4 and 5 expired: no gap, one expiry left.
    assert sub._accept(event("t", 6), credit) == [event("t", 6)]
    # Of 7, 8 and 9 one expired and two were dropped.
    assert sub._accept(event("t", 10), credit) == [Gap("t", 6, "dropped", 2), event("t", 10)]
    # The credit is used up: the next jump is all gap.
    assert sub._accept(event("t", 12), credit) == [Gap("t", 10, "dropped", 1), event("t", 12)]

    # Reconnected: the resume replays 13..20, of which 13, 16 and 17 expired.
    sub._disconnected()
    credit = _ExpiredCredit()
    recovered = ack(offset=20, epoch="e", recovered=True, expired=3)
    assert sub._acknowledged(recovered, resumed=True, reconnected=True) == []
    replay = [sub._accept(event("t", offset), credit) for offset in (14, 15, 18, 19, 20)]
    assert replay == [[event("t", offset)] for offset in (14, 15, 18, 19, 20)]
    # The resume's leftover (none here) never explains a jump after its replay.
    assert sub._accept(event("t", 22), credit) == [Gap("t", 20, "dropped", 1), event("t", 22)]


def test_a_resume_credit_covers_the_tail_of_its_replay_only(
    new_subscription: Callable[..., Subscription],
) -> None:
    sub = new_subscription("t")
    sub._acknowledged(ack(offset=5, epoch="e"), resumed=False, reconnected=False)
    sub._disconnected()
    # 7 and 8, the last two of the replay (6..8), expired; 9 and 10 were dropped live.
    recovered = ack(offset=8, epoch="e", recovered=True, expired=2)
    sub._acknowledged(recovered, resumed=True, reconnected=True)
    credit = _ExpiredCredit()
    assert sub._accept(event("t", 6), credit) == [event("t", 6)]
    assert sub._accept(event("t", 11), credit) == [Gap("t", 6, "dropped", 2), event("t", 11)]


def test_filtered_and_pattern_subscriptions_never_infer_gaps_from_offsets(
    new_subscription: Callable[..., Subscription],
) -> None:
    filtered = new_subscription("t", filter=BIG_AMOUNT)
    plain = new_subscription("t")
    pattern = new_subscription("orders.*")
    for sub in (filtered, plain):
        sub._acknowledged(ack(offset=0, epoch="e"), resumed=False, reconnected=False)
    pattern._acknowledged(ack(pattern=True), resumed=False, reconnected=False)
    credit = _ExpiredCredit()
    assert filtered._accept(event("t", 3), credit) == [event("t", 3)]
    assert filtered._accept(event("t", 9), credit) == [event("t", 9)]
    assert pattern._accept(event("orders.eu", 4), credit) == [event("orders.eu", 4)]
    assert pattern._accept(event("orders.us", 9), credit) == [event("orders.us", 9)]
    # messages_dropped: they cannot tell whose events went, so each reports a gap.
    assert filtered._dropped() == Gap("t", 9, "dropped", None)
    assert pattern._dropped() == Gap("orders.*", 0, "dropped", None)
    # The unfiltered one sees its drops in its offsets instead.
    assert plain._dropped() is None


def test_a_pattern_skips_offsets_it_had_and_starts_afresh_when_it_must(
    new_subscription: Callable[..., Subscription],
) -> None:
    sub = new_subscription("orders.*")
    assert sub.pattern
    sub._acknowledged(ack(pattern=True), resumed=False, reconnected=False)
    credit = _ExpiredCredit()
    assert sub._accept(event("orders.eu", 5), credit) == [event("orders.eu", 5)]
    assert sub._accept(event("orders.eu", 4), credit) == []
    assert sub._accept(event("orders.eu", 5), credit) == []
    assert sub._accept(event("orders.us", 1), credit) == [event("orders.us", 1)]
    # A deleted topic may be created again, from offset 1.
    sub._topic_deleted("orders.eu")
    assert sub._accept(event("orders.eu", 1), credit) == [event("orders.eu", 1)]
    # A reconnect may reach a restarted server: every topic starts afresh, after a gap.
    sub._disconnected()
    gaps = sub._acknowledged(ack(pattern=True), resumed=False, reconnected=True)
    assert gaps == [Gap("orders.*", 0, "not_recovered", None)]
    assert sub._accept(event("orders.us", 1), credit) == [event("orders.us", 1)]


# ------------------------------------------------------------ a scripted server


@asynccontextmanager
async def fake_client() -> AsyncIterator[tuple[FakeServer, Client]]:
    async with (
        fake_server() as fake,
        open_client(fake.url, backoff_initial=0.001, backoff_max=0.01) as client,
    ):
        yield fake, client


def wire_event(topic: str, offset: int, payload: Any = None) -> dict[str, Any]:
    """An event frame of the message :func:`event` describes."""
    message = {"id": f"{topic}-{offset}", "payload": payload}
    return {"type": "event", "topic": topic, "message": message, "offset": offset}


async def test_one_event_reaches_every_matching_subscription_once() -> None:
    async with (
        fake_client() as (fake, client),
        client.subscribe("orders.eu") as exact,
        client.subscribe("orders.*") as star,
        client.subscribe("orders.>") as tail,
        client.subscribe("*.eu") as region,
        client.subscribe("orders.*.x") as deeper,
        client.subscribe("metrics.>") as other,
    ):
        # The server sends each message once per connection.
        await fake.push(**wire_event("orders.eu", 1))
        await fake.push(**wire_event("orders.eu", 2))
        await fake.push(**wire_event("metrics.cpu", 1))
        await fake.push(**wire_event("orders.eu.x", 1))
        for sub in (exact, star, region):
            assert summary(await take(sub, 2)) == [("orders.eu", 1), ("orders.eu", 2)]
        assert summary(await take(tail, 3)) == [
            ("orders.eu", 1),
            ("orders.eu", 2),
            ("orders.eu.x", 1),
        ]
        assert summary(await take(other, 1)) == [("metrics.cpu", 1)]
        assert summary(await take(deeper, 1)) == [("orders.eu.x", 1)]


async def test_where_subscriptions_overlap_each_filter_is_applied_by_the_client() -> None:
    async with (
        fake_client() as (fake, client),
        client.subscribe("orders.eu", filter=BIG_AMOUNT) as big,
        client.subscribe("orders.*") as everything,
    ):
        assert fake.subscribes[0]["filter"] == BIG_AMOUNT
        assert fake.subscribes[1]["filter"] is None
        # Sent once, for the unfiltered pattern; only one matches the filter.
        for offset, amount in enumerate((50, 150, 100, 101), start=1):
            await fake.push(**wire_event("orders.eu", offset, {"amount": amount}))
        assert summary(await take(everything, 4)) == [("orders.eu", n) for n in (1, 2, 3, 4)]
        # No gap either: a filtered subscription's offsets skip by design.
        items = await take(big, 2)
        assert summary(items) == [("orders.eu", 2), ("orders.eu", 4)]
        assert [e.payload for e in items if isinstance(e, Event)] == [
            {"amount": 150},
            {"amount": 101},
        ]


async def test_messages_dropped_is_a_gap_for_filtered_and_pattern_subscriptions() -> None:
    async with (
        fake_client() as (fake, client),
        client.subscribe("a") as plain,
        client.subscribe("b", filter=BIG_AMOUNT) as filtered,
        client.subscribe("c.*") as pattern,
    ):
        big = {"amount": 1000}
        for topic in ("a", "b", "c.x"):
            await fake.push(**wire_event(topic, 1, big))
        await fake.push(type="info", msg="messages_dropped", dropped=5)
        for topic, offset in (("a", 7), ("b", 4), ("c.x", 3)):
            await fake.push(**wire_event(topic, offset, big))
        assert summary(await take(plain, 3)) == [("a", 1), Gap("a", 1, "dropped", 5), ("a", 7)]
        assert summary(await take(filtered, 3)) == [("b", 1), Gap("b", 1, "dropped"), ("b", 4)]
        assert summary(await take(pattern, 3)) == [
            ("c.x", 1),
            Gap("c.*", 0, "dropped"),
            ("c.x", 3),
        ]


async def test_messages_expired_explains_a_jump_instead_of_a_gap() -> None:
    async with fake_client() as (fake, client), client.subscribe("t") as sub:
        await fake.push(**wire_event("t", 1))
        await fake.push(type="info", msg="messages_expired", expired=2)
        await fake.push(**wire_event("t", 4))
        await fake.push(**wire_event("t", 6))
        assert summary(await take(sub, 4)) == [
            ("t", 1),
            ("t", 4),
            Gap("t", 4, "dropped", 1),
            ("t", 6),
        ]


async def test_reconnect_resumes_topics_resends_filters_and_patterns_report_a_gap() -> None:
    async with (
        fake_client() as (fake, client),
        client.subscribe("u") as plain,
        client.subscribe("f", filter=BIG_AMOUNT) as filtered,
        client.subscribe("p.*") as pattern,
    ):
        big = {"amount": 1000}
        await fake.push(**wire_event("u", 1))
        await fake.push(**wire_event("f", 1, big))
        await fake.push(**wire_event("p.x", 5))
        assert summary(await take(plain, 1)) == [("u", 1)]
        assert summary(await take(filtered, 1)) == [("f", 1)]
        assert summary(await take(pattern, 1)) == [("p.x", 5)]

        # What the next connection answers: u and f recovered, with expired messages.
        fake.acks["u"] = {"offset": 5, "epoch": "e1", "recovered": True, "expired": 2}
        fake.after_ack["u"] = [wire_event("u", 3), wire_event("u", 5)]
        fake.acks["f"] = {"offset": 9, "epoch": "e1", "recovered": True, "filtered": True}
        fake.after_ack["f"] = [wire_event("f", 6, big)]
        await fake.drop()

        # Offsets 2 and 4 expired: not a gap. A filtered replay skips offsets anyway.
        assert summary(await take(plain, 2)) == [("u", 3), ("u", 5)]
        assert summary(await take(filtered, 1)) == [("f", 6)]
        # A pattern cannot resume: what was published meanwhile is lost to it.
        assert summary(await take(pattern, 1)) == [Gap("p.*", 0, "not_recovered")]
        # It starts afresh: a restarted server numbers p.x from 1 again.
        await fake.push(**wire_event("p.x", 1))
        assert summary(await take(pattern, 1)) == [("p.x", 1)]

        assert client.reconnects == 1
        resent = {frame["topic"]: frame for frame in fake.subscribes[3:]}
        assert (resent["u"]["since_offset"], resent["u"]["epoch"]) == (1, "e1")
        assert (resent["f"]["since_offset"], resent["f"]["filter"]) == (1, BIG_AMOUNT)
        assert (resent["p.*"]["since_offset"], resent["p.*"]["epoch"]) == (None, None)
        assert resent["p.*"]["last_n"] == 0


async def test_a_subscription_takes_events_only_once_its_subscribe_is_acknowledged() -> None:
    async with fake_client() as (fake, client), client.subscribe("orders.*") as pattern:
        # Brought in by the pattern while the topic's own subscribe is under way.
        fake.before_ack["orders.eu"] = [wire_event("orders.eu", 5)]
        fake.acks["orders.eu"] = {"offset": 5, "epoch": "e1"}
        async with client.subscribe("orders.eu") as exact:
            await fake.push(**wire_event("orders.eu", 6))
            assert summary(await take(exact, 1)) == [("orders.eu", 6)]
            assert summary(await take(pattern, 2)) == [("orders.eu", 5), ("orders.eu", 6)]


async def test_a_replay_for_a_topic_is_not_repeated_to_a_pattern_that_had_it() -> None:
    async with fake_client() as (fake, client), client.subscribe("orders.*") as pattern:
        await fake.push(**wire_event("orders.eu", 1))
        await fake.push(**wire_event("orders.eu", 2))
        assert summary(await take(pattern, 2)) == [("orders.eu", 1), ("orders.eu", 2)]
        fake.acks["orders.eu"] = {"offset": 2, "epoch": "e1"}
        # The replay, then a live event.
        fake.after_ack["orders.eu"] = [wire_event("orders.eu", n) for n in (1, 2, 3)]
        async with client.subscribe("orders.eu", last_n=2) as exact:
            assert summary(await take(exact, 3)) == [("orders.eu", n) for n in (1, 2, 3)]
            assert summary(await take(pattern, 1)) == [("orders.eu", 3)]

            # Deleting a topic ends its own subscription, not the pattern's.
            await fake.push(type="info", msg="topic_deleted", topic="orders.eu")
            with pytest.raises(TopicNotFound):
                await take(exact, 1)
        # Created again, the topic's offsets start at 1.
        await fake.push(**wire_event("orders.eu", 1))
        assert summary(await take(pattern, 1)) == [("orders.eu", 1)]


async def test_what_the_server_would_refuse_is_refused_before_sending() -> None:
    async with fake_client() as (fake, client):
        with pytest.raises(ValueError, match="last_n"):
            async with client.subscribe("orders.*", last_n=5):
                pass
        with pytest.raises(ValueError, match="whole segment"):
            async with client.subscribe("orders.eu*"):
                pass
        with pytest.raises(ValueError, match="last segment"):
            async with client.subscribe("orders.>.eu"):
                pass
        with pytest.raises(BadRequest, match=r"filter\.op"):
            async with client.subscribe("orders", filter={"path": "payload.n", "op": "bigger"}):
                pass
        with pytest.raises(ValueError, match="ttl_ms"):
            await client.publish("orders", 1, ttl_ms=0)
        assert fake.subscribes == []
        assert await client.ping() > 0


# ------------------------------------------------------------ a real server


async def test_a_filtered_subscription_gets_only_matching_events_and_no_gap() -> None:
    async with serving() as server:
        await server.create_topics("orders")
        async with (
            open_client(server.url) as client,
            client.subscribe("orders", filter=BIG_AMOUNT) as sub,
        ):
            for amount in (50, 150, 20, 300, 100, 101):
                await client.publish("orders", {"amount": amount})
            # Offsets skip what the filter rejects, and no gap says otherwise.
            items = await take(sub, 3)
            assert summary(items) == [("orders", 2), ("orders", 4), ("orders", 6)]
    async with serving() as server:
        await server.create_topics("orders")
        async with open_client(server.url) as client:
            for amount in (500, 50, 150, 20):
                await client.publish("orders", {"amount": amount})
            # last_n counts matching messages only.
            async with client.subscribe("orders", last_n=1, filter=BIG_AMOUNT) as sub:
                await client.publish("orders", {"amount": 1000})
                assert summary(await take(sub, 2)) == [("orders", 3), ("orders", 5)]


def dropped(server: Server) -> int:
    return server.node.counters.dropped


async def test_messages_dropped_gives_a_filtered_subscription_a_gap() -> None:
    async with serving(backpressure_policy="drop_oldest", max_queue_size=8) as server:
        await server.create_topics("t")
        keep = {"path": "payload.keep", "op": "eq", "value": True}
        pad = "x" * 32_000
        async with (
            open_client(server.url, buffer=1) as slow,
            open_client(server.url) as publisher,
            slow.subscribe("t", filter=keep, buffer=1) as sub,
        ):
            # Nobody reads ``sub``: the client stops reading, the server's queue fills.
            total = 0
            while await server.acall(dropped) == 0:
                total += 1
                assert total < 2000, "no drop after 2000 messages"
                await publisher.publish("t", {"keep": True, "pad": pad})
            await publisher.publish("t", {"keep": True}, id="final")
            items: list[Event | Gap] = []
            with anyio.fail_after(30):
                async for item in sub:
                    items.append(item)
                    if isinstance(item, Event) and item.id == "final":
                        break
        gaps = [item for item in items if isinstance(item, Gap)]
        events = [item for item in items if isinstance(item, Event)]
        assert gaps
        assert all((g.reason, g.missed) == ("dropped", None) for g in gaps)
        assert [e.offset for e in events] == sorted({e.offset for e in events})
        # Every message was either delivered or dropped (and so announced).
        assert len(events) + await server.acall(dropped) == total + 1


async def test_overlapping_patterns_and_the_topic_each_get_an_event_once() -> None:
    async with serving() as server:
        await server.create_topics("orders.eu", "orders.us", "orders.eu.paris", "stock")
        async with (
            open_client(server.url) as client,
            client.subscribe("orders.*") as star,
            client.subscribe("orders.>") as tail,
            client.subscribe("orders.eu") as exact,
        ):
            assert (star.pattern, tail.pattern, exact.pattern) == (True, True, False)
            for topic in ("orders.eu", "stock", "orders.eu.paris", "orders.us", "orders.eu"):
                await client.publish(topic, topic)
            assert summary(await take(star, 3)) == [
                ("orders.eu", 1),
                ("orders.us", 1),
                ("orders.eu", 2),
            ]
            assert summary(await take(tail, 4)) == [
                ("orders.eu", 1),
                ("orders.eu.paris", 1),
                ("orders.us", 1),
                ("orders.eu", 2),
            ]
            assert summary(await take(exact, 2)) == [("orders.eu", 1), ("orders.eu", 2)]
            # Nothing else was queued for any of them.
            await client.publish("orders.us", "last")
            assert summary(await take(star, 1)) == [("orders.us", 2)]
            assert summary(await take(tail, 1)) == [("orders.us", 2)]


async def test_a_pattern_follows_topics_created_after_it_subscribed() -> None:
    async with (
        serving() as server,
        open_client(server.url) as client,
        client.subscribe("metrics.>") as sub,
    ):
        # No matching topic exists yet.
        await server.create_topics("metrics.eu.cpu")
        await client.publish("metrics.eu.cpu", {"load": 0.5})
        [item] = await take(sub, 1)
        assert isinstance(item, Event)
        assert (item.topic, item.offset, item.payload) == ("metrics.eu.cpu", 1, {"load": 0.5})


async def test_a_message_published_with_a_ttl_carries_its_expiry() -> None:
    async with serving() as server:
        await server.create_topics("t")
        async with open_client(server.url) as client, client.subscribe("t") as sub:
            await client.publish("t", "lasting", ttl_ms=60_000)
            await client.publish("t", "forever")
            first, second = await take(sub, 2)
            assert isinstance(first, Event) and isinstance(second, Event)
            assert first.expires_at is not None
            # The same ISO format: text order is time order.
            assert first.expires_at > first.ts
            assert second.expires_at is None


async def test_after_a_reconnect_topics_resume_and_patterns_report_a_gap() -> None:
    async with serving() as server:
        await server.create_topics("orders.eu")
        async with (
            open_client(server.url, backoff_initial=0.01) as client,
            open_client(server.url) as publisher,
            # The pattern first: resubscribing it first would spoil the topic's resume.
            client.subscribe("orders.*") as pattern,
            client.subscribe("orders.eu") as exact,
        ):
            await publisher.publish("orders.eu", 0)
            assert summary(await take(exact, 1)) == [("orders.eu", 1)]
            assert summary(await take(pattern, 1)) == [("orders.eu", 1)]
            await server.drop_connection(client.connection_id)
            for i in range(1, 21):
                await publisher.publish("orders.eu", i)
            items = await take(exact, 20)
            assert summary(items) == [("orders.eu", n) for n in range(2, 22)]
            # The pattern cannot resume: subscribed again, it says so first ...
            assert await take(pattern, 1) == [Gap("orders.*", 0, "not_recovered")]
            # ... then gets what follows (a topic resumed meanwhile may replay
            # some of it after the pattern's subscribe: in order and once, too).
            await publisher.publish("orders.eu", "after")
            assert summary(await take(exact, 1)) == [("orders.eu", 22)]
            seen: list[Event | Gap] = []
            with anyio.fail_after(10):
                async for item in pattern:
                    seen.append(item)
                    if isinstance(item, Event) and item.payload == "after":
                        break
            assert not [item for item in seen if isinstance(item, Gap)]
            offsets = [item.offset for item in seen if isinstance(item, Event)]
            assert offsets == sorted(set(offsets))
            assert offsets[-1] == 22
