"""Unit tests of the node core: topics, sessions, fan-out, backpressure, limits, resume.

Everything runs in-process on the virtual clock (``autojump_clock``); tasks settle
with ``wait_all_tasks_blocked`` (inside ``drain``), never with real sleeps.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from conftest import client_frame, drain, open_memory_node

from pubsub import ErrorCode, PubSubError, Settings, TopicExists
from pubsub._core.node import Node
from pubsub._core.session import Session
from pubsub._protocol.frames import AnyClientFrame
from pubsub._settings import Policy

Frame = dict[str, Any]
RequestId = str | int


# ---------------------------------------------------------------- frame builders


def subscribe(topic: str, **extra: Any) -> AnyClientFrame:
    return client_frame({"type": "subscribe", "topic": topic, "client_id": "test", **extra})


def unsubscribe(topic: str, **extra: Any) -> AnyClientFrame:
    return client_frame({"type": "unsubscribe", "topic": topic, "client_id": "test", **extra})


def publish(topic: str, msg_id: str, payload: Any = None, **extra: Any) -> AnyClientFrame:
    return client_frame(
        {
            "type": "publish",
            "topic": topic,
            "message": {"id": msg_id, "payload": payload},
            "client_id": "test",
            **extra,
        }
    )


def ping(**extra: Any) -> AnyClientFrame:
    return client_frame({"type": "ping", **extra})


def events(frames: list[Frame]) -> list[Frame]:
    return [frame for frame in frames if frame["type"] == "event"]


def offsets(frames: list[Frame]) -> list[int]:
    return [frame["offset"] for frame in events(frames)]


def offsets_of_acks(frames: list[Frame]) -> list[int]:
    return [frame["offset"] for frame in frames if frame["type"] == "ack"]


def ids(frames: list[Frame]) -> list[str]:
    return [frame["message"]["id"] for frame in events(frames)]


async def subscribed(node: Node, topic: str, **extra: Any) -> Session:
    """A new session subscribed to ``topic`` whose ack has been taken."""
    session = node.open_session()
    await node.handle(session, subscribe(topic, **extra))
    [ack] = await drain(session)
    assert ack["type"] == "ack"
    return session


async def publish_many(node: Node, session: Session, topic: str, count: int) -> None:
    """Publish ``count`` messages ``m1``..``mN`` (queued back to back, no checkpoint between)."""
    for number in range(1, count + 1):
        await node.handle(session, publish(topic, f"m{number}", {"n": number}))


# ---------------------------------------------------------------------- delivery


async def test_every_subscriber_gets_every_message_exactly_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    payloads: list[Any] = [{"n": 1, "nested": [1, 2.5, None]}, "text", 3, None, [True, {}]]
    async with open_memory_node() as node:
        await node.create_topic("orders")
        subscribers = [await subscribed(node, "orders") for _ in range(3)]
        publisher = node.open_session()
        for number, payload in enumerate(payloads, 1):
            await node.handle(publisher, publish("orders", f"m{number}", payload))

        for session in subscribers:
            frames = await drain(session)
            assert frames == events(frames)
            assert ids(frames) == ["m1", "m2", "m3", "m4", "m5"]
            assert [frame["message"]["payload"] for frame in frames] == payloads
            assert all(frame["topic"] == "orders" for frame in frames)
            assert await drain(session) == []


async def test_publisher_gets_ack_with_offset_and_request_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await node.handle(publisher, publish("orders", "m1", request_id="r1"))
        await node.handle(publisher, publish("orders", "m2", request_id=2))
        await node.handle(publisher, publish("orders", "m3"))

        acks = await drain(publisher)
        assert [(a["type"], a["topic"], a["status"], a["offset"]) for a in acks] == [
            ("ack", "orders", "ok", 1),
            ("ack", "orders", "ok", 2),
            ("ack", "orders", "ok", 3),
        ]
        assert [a.get("request_id") for a in acks] == ["r1", 2, None]
        assert "request_id" not in acks[2]


async def test_order_per_topic_is_publish_order_with_offsets_from_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        subscriber = await subscribed(node, "orders")
        publishers = [node.open_session() for _ in range(3)]
        sent: list[str] = []
        for round_ in range(20):
            for index, publisher in enumerate(publishers):
                msg_id = f"p{index}-{round_}"
                await node.handle(publisher, publish("orders", msg_id))
                sent.append(msg_id)
            if round_ % 4 == 0:
                await trio.testing.wait_all_tasks_blocked()

        frames = await drain(subscriber)
        assert offsets(frames) == list(range(1, 61))
        assert ids(frames) == sent


async def test_topics_do_not_leak_into_each_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("a")
        await node.create_topic("b")
        on_a = await subscribed(node, "a")
        on_b = await subscribed(node, "b")
        publisher = node.open_session()
        for number in range(1, 4):
            await node.handle(publisher, publish("a", f"a{number}"))
            await node.handle(publisher, publish("b", f"b{number}"))
        await node.handle(publisher, publish("b", "b4"))

        frames_a = await drain(on_a)
        frames_b = await drain(on_b)
        assert {frame["topic"] for frame in frames_a} == {"a"}
        assert ids(frames_a) == ["a1", "a2", "a3"]
        assert offsets(frames_a) == [1, 2, 3]
        assert {frame["topic"] for frame in frames_b} == {"b"}
        assert ids(frames_b) == ["b1", "b2", "b3", "b4"]
        assert offsets(frames_b) == [1, 2, 3, 4]


# --------------------------------------------------------------------- subscribe


async def test_subscribe_ack_then_replay_oldest_first_then_live(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        watcher = await subscribed(node, "orders")
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 5)
        live = await drain(watcher)

        late = node.open_session()
        await node.handle(late, subscribe("orders", last_n=3, request_id="s1"))
        await node.handle(publisher, publish("orders", "m6"))
        frames = await drain(late)

        ack = frames[0]
        assert ack["type"] == "ack"
        assert ack["request_id"] == "s1"
        assert ack["offset"] == 5
        assert isinstance(ack["epoch"], str)
        assert "recovered" not in ack
        assert offsets(frames[1:]) == [3, 4, 5, 6]
        # A replayed event is the very event live subscribers got (same id, payload, ts).
        assert frames[1:4] == live[2:5]
        assert frames[4] == (await drain(watcher))[0]


async def test_subscribe_to_empty_topic_acks_offset_zero_and_replays_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        session = node.open_session()
        await node.handle(session, subscribe("orders", last_n=10))
        [ack] = await drain(session)
        assert (ack["type"], ack["offset"]) == ("ack", 0)


@pytest.mark.parametrize("last_n", [0, 4, 1000])
async def test_subscribe_mid_stream_has_no_gap_and_no_duplicate(
    autojump_clock: trio.testing.MockClock, last_n: int
) -> None:
    ring = 20
    per_publisher = 30
    async with open_memory_node(Settings(max_messages_per_topic=ring)) as node:
        await node.create_topic("orders")
        watcher = await subscribed(node, "orders")
        late = node.open_session()
        publishers = [node.open_session() for _ in range(3)]

        async def publish_stream(index: int, session: Session) -> None:
            for number in range(per_publisher):
                await node.handle(session, publish("orders", f"p{index}-{number}"))
                if number % 3 == 2:
                    await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            for index, session in enumerate(publishers):
                nursery.start_soon(publish_stream, index, session)
            await trio.sleep(4.5)
            await node.handle(late, subscribe("orders", last_n=last_n))

        total = per_publisher * len(publishers)
        everything = await drain(watcher)
        assert offsets(everything) == list(range(1, total + 1))
        for index in range(len(publishers)):
            mine = [i for i in ids(everything) if i.startswith(f"p{index}-")]
            assert mine == [f"p{index}-{number}" for number in range(per_publisher)]

        frames = await drain(late)
        ack = frames[0]
        assert ack["type"] == "ack"
        assert 0 < ack["offset"] < total, "the subscribe must land mid-stream"
        replayed = min(last_n, ack["offset"], ring)
        first = ack["offset"] - replayed + 1
        assert frames[1:] == events(frames[1:])
        assert offsets(frames) == list(range(first, total + 1))
        assert frames[1:] == everything[first - 1 :]


async def test_duplicate_subscribe_is_acked_without_replay_or_double_delivery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 3)
        session = node.open_session()
        await node.handle(session, subscribe("orders", last_n=10))
        assert offsets(await drain(session)) == [1, 2, 3]
        await node.handle(session, subscribe("orders", last_n=10, request_id="again"))
        await node.handle(publisher, publish("orders", "m4"))

        frames = await drain(session)
        assert [frame["type"] for frame in frames] == ["ack", "event"]
        assert frames[0]["request_id"] == "again"
        assert frames[0]["offset"] == 3
        assert ids(frames) == ["m4"]
        assert (await node.stats()).topics["orders"].subscribers == 1


async def test_unsubscribe_stops_delivery(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        await node.create_topic("other")
        session = await subscribed(node, "orders")
        await node.handle(session, subscribe("other"))
        publisher = node.open_session()
        await node.handle(publisher, publish("orders", "m1"))
        await node.handle(session, unsubscribe("orders", request_id="u1"))
        await node.handle(publisher, publish("orders", "m2"))
        await node.handle(publisher, publish("other", "o1"))

        frames = await drain(session)
        on_orders = [frame for frame in frames if frame["topic"] == "orders"]
        assert [frame["type"] for frame in on_orders] == ["event", "ack"]
        assert ids(on_orders) == ["m1"]
        assert on_orders[1]["request_id"] == "u1"
        on_other = [frame for frame in frames if frame["topic"] == "other"]
        assert [frame["type"] for frame in on_other] == ["ack", "event"]
        assert ids(on_other) == ["o1"]
        assert list(session.topics) == ["other"]
        assert (await node.stats()).topics["orders"].subscribers == 0


async def test_unsubscribe_when_not_subscribed_is_acked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        session = node.open_session()
        await node.handle(session, unsubscribe("orders", request_id=11))
        [ack] = await drain(session)
        assert (ack["type"], ack["topic"], ack["status"], ack["request_id"]) == (
            "ack",
            "orders",
            "ok",
            11,
        )


@pytest.mark.parametrize("request_id", ["r2", 7, 0])
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "publish"])
async def test_request_on_missing_topic_is_topic_not_found(
    autojump_clock: trio.testing.MockClock, kind: str, request_id: RequestId
) -> None:
    frames = {
        "subscribe": subscribe("nope", request_id=request_id),
        "unsubscribe": unsubscribe("nope", request_id=request_id),
        "publish": publish("nope", "m1", request_id=request_id),
    }
    async with open_memory_node() as node:
        await node.create_topic("orders")
        session = node.open_session()
        await node.handle(session, frames[kind])
        [error] = await drain(session)
        assert error["type"] == "error"
        assert error["request_id"] == request_id
        assert type(error["request_id"]) is type(request_id)
        assert error["error"]["code"] == "TOPIC_NOT_FOUND"
        assert "nope" in error["error"]["message"]
        assert session.is_open
        assert (await node.stats()).topics["orders"].messages == 0


async def test_error_without_request_id_omits_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        session = node.open_session()
        await node.handle(session, publish("nope", "m1"))
        [error] = await drain(session)
        assert error["type"] == "error"
        assert "request_id" not in error


@pytest.mark.parametrize("request_id", ["r9", 9, None])
async def test_ping_gets_pong_echoing_request_id(
    autojump_clock: trio.testing.MockClock, request_id: RequestId | None
) -> None:
    async with open_memory_node() as node:
        session = node.open_session()
        extra = {} if request_id is None else {"request_id": request_id}
        await node.handle(session, ping(**extra))
        [pong] = await drain(session)
        assert pong["type"] == "pong"
        assert pong.get("request_id") == request_id
        assert ("request_id" in pong) == (request_id is not None)
        assert pong["ts"].endswith("Z")


# ------------------------------------------------------------------------ delete


async def test_delete_sends_topic_deleted_after_earlier_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        await node.create_topic("other")
        subscribers = [await subscribed(node, "orders") for _ in range(2)]
        await node.handle(subscribers[0], subscribe("other"))
        publisher = node.open_session()
        # Still queued in the topic's inbox when the delete is asked for.
        await publish_many(node, publisher, "orders", 3)
        await node.delete_topic("orders")
        await node.handle(publisher, publish("orders", "late", request_id="p-late"))

        for session in subscribers:
            frames = [f for f in await drain(session) if f.get("topic") == "orders"]
            assert [frame["type"] for frame in frames] == ["event"] * 3 + ["info"]
            assert ids(frames) == ["m1", "m2", "m3"]
            assert frames[-1]["msg"] == "topic_deleted"
            assert "orders" not in session.topics
        assert list(subscribers[0].topics) == ["other"]

        answers = await drain(publisher)
        assert offsets_of_acks(answers) == [1, 2, 3]
        [late] = [a for a in answers if a["type"] == "error"]
        assert (late["request_id"], late["error"]["code"]) == ("p-late", "TOPIC_NOT_FOUND")
        assert "orders" not in (await node.stats()).topics
        with pytest.raises(PubSubError) as info:
            await node.delete_topic("orders")
        assert info.value.code is ErrorCode.TOPIC_NOT_FOUND


async def test_recreated_topic_is_a_new_topic(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        old_subscriber = node.open_session()
        await node.handle(old_subscriber, subscribe("orders"))
        [old_ack] = await drain(old_subscriber)
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 3)
        await node.delete_topic("orders")
        old_frames = await drain(old_subscriber)
        assert old_frames[-1]["msg"] == "topic_deleted"

        await node.create_topic("orders")
        new_subscriber = node.open_session()
        await node.handle(new_subscriber, subscribe("orders", last_n=10))
        await node.handle(publisher, publish("orders", "fresh", request_id="p"))

        new_frames = await drain(new_subscriber)
        assert new_frames[0]["type"] == "ack"
        assert new_frames[0]["offset"] == 0, "history of the deleted topic must not survive"
        assert new_frames[0]["epoch"] != old_ack["epoch"]
        assert offsets(new_frames) == [1]
        assert ids(new_frames) == ["fresh"]
        assert (await drain(publisher))[-1]["offset"] == 1
        # The old subscription ended with the delete: nothing from the new topic.
        assert await drain(old_subscriber) == []
        stats = (await node.stats()).topics["orders"]
        assert (stats.messages, stats.subscribers, stats.stored) == (1, 1, 1)


# ------------------------------------------------------------------ backpressure


async def test_drop_oldest_keeps_newest_and_reports_drop_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(max_queue_size=3, backpressure_policy="drop_oldest")
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        slow = await subscribed(node, "orders")
        fast = await subscribed(node, "orders")
        publisher = node.open_session()
        fast_frames: list[Frame] = []
        for number in range(1, 11):
            await node.handle(publisher, publish("orders", f"m{number}"))
            fast_frames += await drain(fast)

        frames = await drain(slow)
        assert frames[0] == {
            "type": "info",
            "msg": "messages_dropped",
            "dropped": 7,
            "ts": frames[0]["ts"],
        }
        assert ids(frames[1:]) == ["m8", "m9", "m10"]
        assert ids(fast_frames) == [f"m{n}" for n in range(1, 11)]

        await node.handle(publisher, publish("orders", "m11"))
        after = await drain(slow)
        assert [frame["type"] for frame in after] == ["event"], "the drop is reported once"
        assert ids(after) == ["m11"]

        stats = await node.stats()
        assert stats.topics["orders"].dropped == 7
        assert stats.delivery.dropped == 7
        assert stats.delivery.delivered == 11 + 4
        assert stats.delivery.slow_consumer_disconnects == 0
        assert slow.is_open


async def test_drop_oldest_never_drops_control_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(max_queue_size=3, backpressure_policy="drop_oldest")
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        session = node.open_session()
        publisher = node.open_session()
        await node.handle(session, subscribe("orders", request_id="s"))
        await publish_many(node, publisher, "orders", 2)
        await trio.testing.wait_all_tasks_blocked()
        await node.handle(session, ping(request_id="p"))
        await node.handle(publisher, publish("orders", "m3"))
        await trio.testing.wait_all_tasks_blocked()
        await node.handle(publisher, publish("orders", "m4"))

        frames = await drain(session)
        # Only events count against MAX_QUEUE_SIZE, and only events are dropped.
        assert [(f["type"], f.get("msg")) for f in frames] == [
            ("info", "messages_dropped"),
            ("ack", None),
            ("event", None),
            ("pong", None),
            ("event", None),
            ("event", None),
        ]
        assert frames[0]["dropped"] == 1
        assert frames[1]["request_id"] == "s"
        assert frames[3]["request_id"] == "p"
        assert ids(frames) == ["m2", "m3", "m4"]


async def test_disconnect_policy_closes_only_the_slow_consumer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(max_queue_size=3, backpressure_policy="disconnect")
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        slow = await subscribed(node, "orders")
        fast = await subscribed(node, "orders")
        publisher = node.open_session()
        fast_frames: list[Frame] = []
        for number in range(1, 4):
            await node.handle(publisher, publish("orders", f"m{number}"))
            fast_frames += await drain(fast)
        assert slow.is_open, "a full outbox is not yet an overflow"

        for number in range(4, 7):
            await node.handle(publisher, publish("orders", f"m{number}"))
            fast_frames += await drain(fast)

        assert ids(fast_frames) == [f"m{n}" for n in range(1, 7)]
        assert fast.is_open
        reason = slow.close_reason
        assert reason is not None
        assert reason.error is ErrorCode.SLOW_CONSUMER
        assert reason.code == 1013
        [error] = [msgspec.json.decode(frame) for frame in await slow.next_batch()]
        assert (error["type"], error["error"]["code"]) == ("error", "SLOW_CONSUMER")
        assert "request_id" not in error
        assert len(await slow.next_batch()) == 0
        assert len(await slow.next_batch()) == 0
        # The publisher never waited on the slow consumer.
        assert offsets_of_acks(await drain(publisher)) == [1, 2, 3, 4, 5, 6]
        assert (await node.stats()).delivery.slow_consumer_disconnects == 1


async def test_events_for_a_disconnected_slow_consumer_are_not_counted_as_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(max_queue_size=1, backpressure_policy="disconnect")
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        slow = await subscribed(node, "orders")
        fast = await subscribed(node, "orders")
        publisher = node.open_session()
        await node.handle(publisher, publish("orders", "m1"))
        assert ids(await drain(fast)) == ["m1"]
        await node.handle(publisher, publish("orders", "m2"))
        assert ids(await drain(fast)) == ["m2"]
        assert not slow.is_open
        before = (await node.stats()).delivery.delivered

        # The transport has not called close_session yet: the slow consumer's
        # connection is still closing. Only the fast subscriber can get m3.
        await node.handle(publisher, publish("orders", "m3"))
        assert ids(await drain(fast)) == ["m3"]
        assert (await node.stats()).delivery.delivered == before + 1


async def test_wait_for_room_blocks_until_the_outbox_is_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node(Settings(max_queue_size=2)) as node:
        session = node.open_session()
        await session.wait_for_room()  # room: returns at once
        await node.handle(session, ping(request_id=1))
        await node.handle(session, ping(request_id=2))
        got_room = trio.Event()

        async def reader() -> None:
            await session.wait_for_room()
            got_room.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(60)
            assert not got_room.is_set(), "the reader must wait while the outbox is full"
            batch = await session.next_batch()
            assert len(batch) == 2
            await trio.testing.wait_all_tasks_blocked()
            assert got_room.is_set()


# ------------------------------------------------------------------------ limits


async def test_max_topics(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node(Settings(max_topics=2)) as node:
        await node.create_topic("a")
        await node.create_topic("b")
        with pytest.raises(PubSubError) as info:
            await node.create_topic("c")
        assert info.value.code is ErrorCode.LIMIT_EXCEEDED
        assert [topic.name for topic in (await node.topics())] == ["a", "b"]
        await node.delete_topic("a")
        await node.create_topic("c")
        assert [topic.name for topic in (await node.topics())] == ["b", "c"]


async def test_max_subscribers_per_topic(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node(Settings(max_subscribers_per_topic=2)) as node:
        await node.create_topic("orders")
        first = await subscribed(node, "orders")
        second = await subscribed(node, "orders")
        third = node.open_session()
        await node.handle(third, subscribe("orders", request_id="s3"))
        [error] = await drain(third)
        assert error["type"] == "error"
        assert error["error"]["code"] == "LIMIT_EXCEEDED"
        assert error["request_id"] == "s3"
        assert third.is_open
        assert third.topics == set()

        # Re-subscribing an existing subscriber is not a new subscriber.
        await node.handle(first, subscribe("orders"))
        assert [f["type"] for f in await drain(first)] == ["ack"]

        publisher = node.open_session()
        await node.handle(publisher, publish("orders", "m1"))
        assert ids(await drain(first)) == ["m1"]
        assert ids(await drain(second)) == ["m1"]
        assert await drain(third) == []

        await node.handle(second, unsubscribe("orders"))
        await node.handle(third, subscribe("orders"))
        assert [f["type"] for f in await drain(third)] == ["ack"]
        assert (await node.stats()).topics["orders"].subscribers == 2


async def test_max_connections(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node(Settings(max_connections=2)) as node:
        first = node.open_session()
        node.open_session()
        with pytest.raises(PubSubError) as info:
            node.open_session()
        assert info.value.code is ErrorCode.LIMIT_EXCEEDED
        assert len(node.sessions()) == 2
        node.close_session(first)
        node.open_session()
        assert len(node.sessions()) == 2


async def test_replay_ring_holds_max_messages_per_topic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node(Settings(max_messages_per_topic=3)) as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 5)
        await trio.testing.wait_all_tasks_blocked()
        stats = (await node.stats()).topics["orders"]
        assert (stats.messages, stats.stored) == (5, 3)

        session = node.open_session()
        await node.handle(session, subscribe("orders", last_n=50))
        frames = await drain(session)
        assert frames[0]["offset"] == 5
        assert offsets(frames) == [3, 4, 5]
        assert ids(frames) == ["m3", "m4", "m5"]


async def test_no_replay_ring_when_max_messages_is_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node(Settings(max_messages_per_topic=0)) as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 2)
        session = node.open_session()
        await node.handle(session, subscribe("orders", last_n=5))
        frames = await drain(session)
        assert [(f["type"], f["offset"]) for f in frames] == [("ack", 2)]
        assert (await node.stats()).topics["orders"].stored == 0


async def test_creating_an_existing_topic_is_topic_exists(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        first = await node.create_topic("orders")
        # The typed error: ``except pubsub.TopicExists`` catches what the node raises.
        with pytest.raises(TopicExists) as info:
            await node.create_topic("orders")
        assert info.value.code is ErrorCode.TOPIC_EXISTS
        assert await node.topic("orders") == first


@pytest.mark.parametrize(
    "name", ["", "a" * 129, "has space", "slash/es", "caf\u00e9", "star*", "new\nline"]
)
async def test_bad_topic_name_is_bad_request(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    async with open_memory_node() as node:
        with pytest.raises(PubSubError) as info:
            await node.create_topic(name)
        assert info.value.code is ErrorCode.BAD_REQUEST
        assert (await node.topics()) == []


@pytest.mark.parametrize("name", ["a", "A-z_0.9:x", "x" * 128])
async def test_good_topic_names_are_accepted(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    async with open_memory_node() as node:
        await node.create_topic(name)
        session = await subscribed(node, name)
        await node.handle(session, publish(name, "m1"))
        assert ids(await drain(session)) == ["m1"]


def test_bad_topic_name_in_a_frame_is_bad_request_echoing_request_id() -> None:
    with pytest.raises(PubSubError) as info:
        subscribe("no spaces", request_id="r5")
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.request_id == "r5"


# ------------------------------------------------------------------------ resume


async def _topic_with_history(node: Node, count: int) -> tuple[str, Session]:
    """Create ``orders`` with ``count`` messages; returns its epoch and the publisher."""
    await node.create_topic("orders")
    probe = node.open_session()
    await node.handle(probe, subscribe("orders"))
    [ack] = await drain(probe)
    node.close_session(probe)
    publisher = node.open_session()
    await publish_many(node, publisher, "orders", count)
    return ack["epoch"], publisher


@pytest.mark.parametrize(("since", "expected"), [(2, [3, 4, 5]), (0, [1, 2, 3, 4, 5]), (5, [])])
async def test_resume_with_matching_epoch_replays_exactly_the_later_messages(
    autojump_clock: trio.testing.MockClock, since: int, expected: list[int]
) -> None:
    async with open_memory_node() as node:
        epoch, publisher = await _topic_with_history(node, 5)
        session = node.open_session()
        await node.handle(session, subscribe("orders", since_offset=since, epoch=epoch, last_n=1))
        await node.handle(publisher, publish("orders", "m6"))

        frames = await drain(session)
        ack = frames[0]
        assert (ack["type"], ack["recovered"], ack["offset"], ack["epoch"]) == (
            "ack",
            True,
            5,
            epoch,
        )
        assert offsets(frames) == [*expected, 6]
        assert ids(frames) == [f"m{n}" for n in [*expected, 6]]


@pytest.mark.parametrize(
    ("ring", "since", "epoch_ok"),
    [
        (100, 2, False),  # another epoch: a restart or a re-created topic
        (3, 2, True),  # offsets 3..5 needed, only 4..6 held
        (100, 9, True),  # an offset from the future
    ],
)
async def test_resume_that_cannot_be_honoured_replays_nothing(
    autojump_clock: trio.testing.MockClock, ring: int, since: int, epoch_ok: bool
) -> None:
    async with open_memory_node(Settings(max_messages_per_topic=ring)) as node:
        epoch, publisher = await _topic_with_history(node, 6)
        session = node.open_session()
        await node.handle(
            session,
            subscribe("orders", since_offset=since, epoch=epoch if epoch_ok else "other", last_n=2),
        )
        await node.handle(publisher, publish("orders", "m7"))

        frames = await drain(session)
        assert (frames[0]["type"], frames[0]["recovered"], frames[0]["offset"]) == (
            "ack",
            False,
            6,
        )
        assert frames[0]["epoch"] == epoch
        # Never a partial replay; the subscription itself still stands.
        assert offsets(frames) == [7]


async def test_resume_from_the_oldest_stored_message_is_recovered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node(Settings(max_messages_per_topic=3)) as node:
        epoch, _ = await _topic_with_history(node, 6)
        session = node.open_session()
        await node.handle(session, subscribe("orders", since_offset=3, epoch=epoch))
        frames = await drain(session)
        assert frames[0]["recovered"] is True
        assert offsets(frames) == [4, 5, 6]


async def test_resume_after_recreate_is_not_recovered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        epoch, publisher = await _topic_with_history(node, 3)
        await node.delete_topic("orders")
        await node.create_topic("orders")
        await publish_many(node, publisher, "orders", 4)
        session = node.open_session()
        await node.handle(session, subscribe("orders", since_offset=1, epoch=epoch))
        frames = await drain(session)
        assert frames[0]["recovered"] is False
        assert frames[0]["epoch"] != epoch
        assert offsets(frames) == []


# -------------------------------------------------------------------- statistics


async def test_stats_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node() as node:
        await node.create_topic("b")
        await node.create_topic("a")
        both = await subscribed(node, "a")
        await node.handle(both, subscribe("b"))
        only_a = await subscribed(node, "a")
        publisher = node.open_session()
        await publish_many(node, publisher, "a", 3)
        await publish_many(node, publisher, "b", 2)
        late = node.open_session()
        await node.handle(late, subscribe("a", last_n=2))
        await trio.testing.wait_all_tasks_blocked()

        stats = await node.stats()
        assert list(stats.topics) == ["a", "b"]
        a, b = stats.topics["a"], stats.topics["b"]
        assert (a.messages, a.subscribers, a.stored, a.dropped) == (3, 3, 3, 0)
        assert (b.messages, b.subscribers, b.stored, b.dropped) == (2, 1, 2, 0)
        assert stats.total_topics == 2
        assert stats.total_subscribers == 4
        assert stats.total_messages == 5
        assert stats.websocket.total_clients == 4
        assert stats.websocket.connection_counter == 4
        # 3 to two subscribers of a, 2 to the one of b, 2 replayed to late.
        assert stats.delivery.delivered == 3 * 2 + 2 + 2
        assert stats.delivery.dropped == 0
        assert stats.delivery.slow_consumer_disconnects == 0
        assert stats.uptime_sec >= 0
        received = [len(events(await drain(session))) for session in (both, only_a, late)]
        assert sum(received) == stats.delivery.delivered

        node.close_session(only_a)
        node.close_session(late)
        stats = await node.stats()
        assert stats.websocket.total_clients == 2
        assert stats.websocket.connection_counter == 4
        assert stats.topics["a"].subscribers == 1
        assert stats.total_subscribers == 2
        node.open_session()
        assert (await node.stats()).websocket.connection_counter == 5


async def test_close_session_leaves_every_topic(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_node() as node:
        await node.create_topic("a")
        await node.create_topic("b")
        gone = await subscribed(node, "a")
        await node.handle(gone, subscribe("b"))
        staying = await subscribed(node, "a")
        await drain(gone)

        node.close_session(gone)
        assert gone.topics == set()
        assert gone not in node.sessions()
        publisher = node.open_session()
        await node.handle(publisher, publish("a", "m1"))
        await node.handle(publisher, publish("b", "m1"))
        await trio.testing.wait_all_tasks_blocked()

        assert gone.queued == 0
        assert ids(await drain(staying)) == ["m1"]
        stats = await node.stats()
        assert (stats.topics["a"].subscribers, stats.topics["b"].subscribers) == (1, 0)
        assert stats.delivery.delivered == 1


async def test_close_session_with_a_subscribe_in_flight_leaves_no_subscriber(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        gone = node.open_session()
        # The reader handed the frame over (queued for the topic actor), then the
        # connection dropped before the actor carried it out.
        await node.handle(gone, subscribe("orders"))
        node.close_session(gone)
        await trio.testing.wait_all_tasks_blocked()

        assert gone.topics == set()
        assert (await node.stats()).topics["orders"].subscribers == 0


# ------------------------------------------------ defects found by the design review


async def test_disconnect_does_not_count_discarded_events_as_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber closed with SLOW_CONSUMER before its writer took anything
    received no event: neither its counter nor the node's may say otherwise."""
    settings = Settings(max_queue_size=2, backpressure_policy="disconnect")
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        slow = await subscribed(node, "orders")  # its writer never takes anything now
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 3)
        await trio.testing.wait_all_tasks_blocked()

        assert slow.close_reason is not None and slow.close_reason.error is ErrorCode.SLOW_CONSUMER
        frames = [msgspec.json.decode(frame) for frame in await slow.next_batch()]
        assert [f["type"] for f in frames] == ["error"]
        assert slow.delivered == 0
        stats = await node.stats()
        assert stats.delivery.delivered == 0
        assert stats.delivery.slow_consumer_disconnects == 1


@pytest.mark.parametrize("policy", ["drop_oldest", "disconnect"])
async def test_a_replay_does_not_count_against_the_queue_limit_later(
    autojump_clock: trio.testing.MockClock, policy: Policy
) -> None:
    """MAX_QUEUE_SIZE=4 and last_n=10 while the writer is busy: the first live event
    fits (the 10 replayed frames are the client's own request, never policed)."""
    settings = Settings(max_queue_size=4, backpressure_policy=policy)
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 10)
        session = node.open_session()
        await node.handle(session, subscribe("orders", last_n=10))
        await trio.testing.wait_all_tasks_blocked()
        await node.handle(publisher, publish("orders", "live"))
        await trio.testing.wait_all_tasks_blocked()

        assert session.is_open
        frames = await drain(session)
        assert [f["type"] for f in frames] == ["ack"] + ["event"] * 11
        assert ids(frames) == [f"m{n}" for n in range(1, 11)] + ["live"]
        stats = await node.stats()
        assert (stats.delivery.dropped, stats.delivery.slow_consumer_disconnects) == (0, 0)
        assert stats.delivery.delivered == session.delivered == 11


async def test_the_latency_sample_starts_when_the_publish_itself_was_received(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The writer is told when the publish was read, not when its publisher's
    connection last read anything (which later reads overwrite)."""
    async with open_memory_node() as node:
        await node.create_topic("orders")
        subscriber = await subscribed(node, "orders")
        written: list[float] = []

        async def writer() -> None:
            while True:
                await subscriber.next_batch()
                written.append(subscriber.batch_published_at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()

            def write_now(data: bytes, published_at: float) -> int:
                written.append(published_at)
                return len(data)

            publisher = node.open_session()
            await node.handle(publisher, publish("orders", "direct"), 100.0)
            publisher.received_at = 200.0  # the publisher's connection read again
            await trio.testing.wait_all_tasks_blocked()
            assert written == [100.0]  # woke the parked writer: its batch says 100.0

            subscriber.write_now = write_now
            await trio.testing.wait_all_tasks_blocked()
            await node.handle(publisher, publish("orders", "written directly"), 300.0)
            publisher.received_at = 400.0
            await trio.testing.wait_all_tasks_blocked()
            assert written == [100.0, 300.0]
            nursery.cancel_scope.cancel()


async def test_a_publish_the_topic_never_accepted_is_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A publish still queued when the topic is deleted elsewhere (another node, or
    the engine directly) is answered TOPIC_NOT_FOUND and not counted as published."""
    async with open_memory_node(Settings(topic_inbox_size=4)) as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await node.handle(publisher, publish("orders", "m1", request_id="p1"))
        # Queued at the actor, not carried out yet: the engine deletes the topic now.
        await node.engine.delete_topic("orders")
        await trio.testing.wait_all_tasks_blocked()

        [answer] = await drain(publisher)
        assert (answer["type"], answer["request_id"]) == ("error", "p1")
        assert answer["error"]["code"] == "TOPIC_NOT_FOUND"
        assert publisher.published == 0
        assert node.counters.published == 0


async def test_a_publish_counts_once_the_engine_stored_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("orders")
        publisher = node.open_session()
        await publish_many(node, publisher, "orders", 3)
        assert publisher.published == 0  # queued at the topic, not stored yet
        await trio.testing.wait_all_tasks_blocked()
        assert publisher.published == node.counters.published == 3
        assert offsets_of_acks(await drain(publisher)) == [1, 2, 3]


async def test_max_queue_bytes_bounds_a_slow_subscriber_by_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1,000 frames of 1 KB fit MAX_QUEUE_SIZE but not a 4 KB byte bound."""
    settings = Settings(max_queue_size=1000, max_queue_bytes=4096)
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        slow = await subscribed(node, "orders")
        publisher = node.open_session()
        for number in range(1, 11):
            await node.handle(publisher, publish("orders", f"m{number}", "x" * 1000))
        await trio.testing.wait_all_tasks_blocked()

        frames = await drain(slow)
        assert frames[0]["msg"] == "messages_dropped"
        kept = ids(frames)
        assert kept == [f"m{n}" for n in range(11 - len(kept), 11)]  # the newest
        assert frames[0]["dropped"] == 10 - len(kept)
        assert sum(len(msgspec.json.encode(f)) for f in frames[1:]) <= 4096
        assert slow.is_open


async def test_max_queue_bytes_with_disconnect_closes_the_slow_subscriber(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(max_queue_bytes=4096, backpressure_policy="disconnect")
    async with open_memory_node(settings) as node:
        await node.create_topic("orders")
        slow = await subscribed(node, "orders")
        publisher = node.open_session()
        for number in range(1, 11):
            await node.handle(publisher, publish("orders", f"m{number}", "x" * 1000))
        await trio.testing.wait_all_tasks_blocked()
        assert slow.close_reason is not None
        assert slow.close_reason.error is ErrorCode.SLOW_CONSUMER


# ------------------------------------------- one read's requests, carried out together


def written_by(session: Session) -> list[bytes]:
    """Make ``session`` look like a connection whose writer is parked: every direct
    write is recorded (one entry per system call)."""
    writes: list[bytes] = []

    def write_now(data: bytes, published_at: float) -> int:
        writes.append(data)
        return len(data)

    session.write_now = write_now
    return writes


async def park(session: Session, nursery: trio.Nursery) -> None:
    async def writer() -> None:
        await session.next_batch()

    nursery.start_soon(writer)
    await trio.testing.wait_all_tasks_blocked()


async def test_an_idle_topic_carries_out_a_reads_publishes_in_the_callers_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        for name in ("a", "b"):
            await node.create_topic(name)
        subscriber = await subscribed(node, "a")
        publisher = node.open_session()
        frames = [publish("a", "m1"), publish("b", "m2"), publish("a", "m3"), ping(request_id=9)]
        with trio.testing.assert_no_checkpoints():
            await node.handle_many(publisher, frames)
        # Done already: no topic actor had to be woken.
        assert ids(await drain(subscriber)) == ["m1", "m3"]
        answers = await drain(publisher)
        assert sorted(f["type"] for f in answers) == ["ack", "ack", "ack", "pong"]
        assert sorted(f["offset"] for f in answers if f["type"] == "ack") == [1, 1, 2]


async def test_a_busy_topic_gets_the_reads_requests_after_what_it_has_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node:
        await node.create_topic("a")
        subscriber = await subscribed(node, "a")
        publisher = node.open_session()
        await node.handle(publisher, publish("a", "queued"))  # the actor has work now
        await node.handle_many(publisher, [publish("a", "m1"), publish("a", "m2")])
        await trio.testing.wait_all_tasks_blocked()
        assert ids(await drain(subscriber)) == ["queued", "m1", "m2"]


async def test_a_reads_answers_leave_in_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_node() as node, trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            await node.create_topic(name)
        publisher = node.open_session()
        writes = written_by(publisher)
        await park(publisher, nursery)
        publisher.cork()
        await node.handle_many(
            publisher, [publish(name, f"m-{name}", request_id=name) for name in "abc"]
        )
        assert writes == []  # held while the read's requests are carried out
        publisher.uncork()
        assert writes == []  # and until the scheduler's pass ends
        await trio.lowlevel.checkpoint()
        [write] = writes
        assert write.count(b'"type":"ack"') == 3
        nursery.cancel_scope.cancel()
