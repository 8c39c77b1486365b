"""The topic actor against an engine whose feed lags its history (as Redis's does),
driven step by step: a scripted engine answers ``follow``/``history`` when the test
says so, and the test plays the feed (``Node.on_publications``, ``on_gap``,
``on_topic_deleted``). Virtual time; tasks settle with ``wait_all_tasks_blocked``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
import trio.testing
from conftest import client_frame, drain

from pubsub import Settings, TopicNotFound
from pubsub._core.engine import Feed, History, Publication, Published, TopicInfo
from pubsub._core.node import Node, open_node
from pubsub._core.topic import MAX_RUN_BYTES
from pubsub._protocol.frames import Message

Frame = dict[str, Any]


class ScriptedEngine:
    """An engine whose answers the test controls; it keeps no messages itself."""

    kind = "scripted"
    available = True
    #: Its calls may wait (as Redis's do): commands always go through the inbox.
    immediate = False

    def __init__(self) -> None:
        self.offset = 0
        self.published: list[list[Message]] = []
        #: Set by the test to hold ``history`` until it is set.
        self.history_gate: trio.Event | None = None
        self.history_entered = trio.Event()
        #: What ``follow`` answers: where the feed continues.
        self.follow_base: int | None = 0
        self.followed: list[str] = []

    async def run(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    def report_status(self, status: Callable[[], bytes]) -> None:
        return None

    async def node_statuses(self) -> list[bytes]:
        return []

    async def create_topic(self, name: str, message_ttl_ms: int = 0) -> TopicInfo:
        return TopicInfo(name, "e1", 0, 0, 0)

    async def delete_topic(self, name: str) -> None:
        raise TopicNotFound(name)

    async def topic(self, name: str) -> TopicInfo:
        return TopicInfo(name, "e1", 0, self.offset, 0)

    async def topics(self) -> list[TopicInfo]:
        return []

    async def topic_count(self) -> int:
        return 1

    async def topic_names(self) -> list[str]:
        return ["t"]

    async def publish(
        self, topic: str, messages: list[Message], ttls: list[int] | None = None
    ) -> Published:
        self.published.append(messages)
        first = self.offset + 1
        self.offset += len(messages)
        return Published(first, "e1", "2026-11-29T00:00:00.000Z")

    async def history(
        self,
        topic: str,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
    ) -> History:
        self.history_entered.set()
        if self.history_gate is not None:
            await self.history_gate.wait()
        return History(self.offset, "e1", None, [])

    async def follow(self, topic: str) -> int | None:
        self.followed.append(topic)
        return self.follow_base

    def unfollow(self, topic: str) -> None:
        self.followed.append(f"-{topic}")


def publications(*offsets: int) -> list[Publication]:
    return [
        Publication(offset, "2026-11-29T00:00:00.000Z", Message(f"m{offset}", msgspec.Raw(b"0")))
        for offset in offsets
    ]


def subscribe(topic: str = "t", request_id: str = "s") -> Any:
    return client_frame(
        {"type": "subscribe", "topic": topic, "client_id": "c", "request_id": request_id}
    )


def offsets(frames: list[Frame]) -> list[int]:
    return [frame["offset"] for frame in frames if frame["type"] == "event"]


@asynccontextmanager
async def scripted(settings: Settings | None = None) -> AsyncIterator[tuple[Node, ScriptedEngine]]:
    engine = ScriptedEngine()
    async with open_node(settings or Settings(), engine) as node:
        yield node, engine


async def test_a_subscribe_whose_ack_is_ahead_of_the_feed_joins_when_it_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (node, engine):
        engine.offset = 10  # the history says 10; the feed starts at 5
        engine.follow_base = 5
        session = node.open_session()
        await node.handle(session, subscribe())
        [ack] = await drain(session)
        assert ack["offset"] == 10
        node.on_publications("t", publications(6, 7, 8, 9, 10))  # before its ack
        assert await drain(session) == []
        node.on_publications("t", publications(11, 12))  # after it
        assert offsets(await drain(session)) == [11, 12]
        node.on_publications("t", publications(13))  # a full subscriber now
        assert offsets(await drain(session)) == [13]


async def test_what_the_feed_delivers_while_the_history_is_read_follows_the_replay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (node, engine):
        first = node.open_session()
        await node.handle(first, subscribe())
        await drain(first)
        engine.history_gate, engine.history_entered = trio.Event(), trio.Event()
        second = node.open_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.handle, second, subscribe())
            await engine.history_entered.wait()
            engine.offset = 2  # two messages published; the history will say 2 ...
            node.on_publications("t", publications(1, 2, 3))  # ... the feed is at 3
            engine.history_gate.set()
        frames = await drain(second)
        assert frames[0]["type"] == "ack" and frames[0]["offset"] == 2
        assert offsets(frames) == [3]  # past its ack: once, after the ack
        assert offsets(await drain(first)) == [1, 2, 3]


async def test_a_subscribe_that_races_a_delete_is_refused_not_left_hanging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (node, engine):
        engine.history_gate = trio.Event()
        session = node.open_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.handle, session, subscribe())
            await engine.history_entered.wait()
            node.on_topic_deleted("t")  # the feed says: deleted meanwhile
            engine.history_gate.set()
        [answer] = await drain(session)
        assert (answer["type"], answer["error"]["code"]) == ("error", "TOPIC_NOT_FOUND")
        assert session.topics == set()
        assert node.local_subscribers("t") == 0


async def test_a_gap_is_reported_to_each_subscriber_as_far_as_it_was_owed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (node, engine):
        full = node.open_session()
        await node.handle(full, subscribe())
        await drain(full)
        engine.offset = 10
        engine.follow_base = None  # the feed goes on (at 0) ...
        joining = node.open_session()
        await node.handle(joining, subscribe())  # ... and this ack says 10
        await drain(joining)
        node.on_gap("t", 0, 12)  # offsets 1-12 are lost for good
        node.on_publications("t", publications(13))
        full_frames = await drain(full)
        assert full_frames[0] == full_frames[0] | {"msg": "messages_dropped", "dropped": 12}
        assert offsets(full_frames) == [13]
        joining_frames = await drain(joining)
        # Only 11 and 12 were owed to it (its ack said 10).
        assert joining_frames[0] == joining_frames[0] | {"msg": "messages_dropped", "dropped": 2}
        assert offsets(joining_frames) == [13]


async def test_repaired_messages_are_owed_and_not_cut_by_the_queue_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(max_queue_size=2, backpressure_policy="disconnect")
    async with scripted(settings) as (node, _):
        session = node.open_session()
        await node.handle(session, subscribe())
        await drain(session)
        node.on_publications("t", publications(*range(1, 11)), repaired=True)
        assert session.is_open
        assert offsets(await drain(session)) == list(range(1, 11))


async def test_a_run_of_publishes_is_cut_at_max_run_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (node, engine):
        publisher = node.open_session()
        big = "x" * (MAX_RUN_BYTES // 3)
        for number in range(7):
            frame = {
                "type": "publish",
                "topic": "t",
                "client_id": "c",
                "message": {"id": f"m{number}", "payload": big},
            }
            await node.handle(publisher, client_frame(frame))
        await trio.testing.wait_all_tasks_blocked()
        sizes = [sum(len(m.payload) for m in call) for call in engine.published]
        assert sum(len(call) for call in engine.published) == 7
        assert all(size <= MAX_RUN_BYTES for size in sizes)
        assert [frame["offset"] for frame in await drain(publisher)] == list(range(1, 8))


def publish_frame(msg_id: str) -> Any:
    message = {"id": msg_id, "payload": 0}
    fields = {"type": "publish", "topic": "t", "client_id": "c", "message": message}
    return client_frame(fields | {"request_id": msg_id})


@asynccontextmanager
async def busy_topic(
    node: Node, engine: ScriptedEngine
) -> AsyncIterator[tuple[Node, trio.Nursery]]:
    """The topic's actor held by a subscribe whose history is not answered yet,
    so the inbox fills; it is answered when the block ends."""
    engine.history_gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.handle, node.open_session(), subscribe())
        await engine.history_entered.wait()
        yield node, nursery
        engine.history_gate.set()


async def test_publishers_past_a_full_inbox_wait_and_are_carried_out_in_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """TOPIC_INBOX_SIZE=2 and five publishers: three wait for room, then every
    message is stored in the order its publisher reached the topic."""
    async with scripted(Settings(topic_inbox_size=2)) as (node, engine):
        publishers = [node.open_session() for _ in range(5)]
        async with busy_topic(node, engine) as (_, nursery):
            for number, publisher in enumerate(publishers):
                nursery.start_soon(node.handle, publisher, publish_frame(f"m{number}"))
                await trio.testing.wait_all_tasks_blocked()  # it reached the topic
            assert engine.published == []
        assert [m.id for call in engine.published for m in call] == [f"m{n}" for n in range(5)]
        for number, publisher in enumerate(publishers):
            [ack] = await drain(publisher)
            assert (ack["type"], ack["offset"]) == ("ack", number + 1)


async def test_a_publisher_cancelled_while_waiting_for_room_leaves_no_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(Settings(topic_inbox_size=1)) as (node, engine):
        first, gone, last = (node.open_session() for _ in range(3))
        async with busy_topic(node, engine) as (_, nursery):
            nursery.start_soon(node.handle, first, publish_frame("m1"))  # in the inbox
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as waiting:
                waiting.start_soon(node.handle, gone, publish_frame("gone"))  # waits
                await trio.testing.wait_all_tasks_blocked()
                waiting.cancel_scope.cancel()
            nursery.start_soon(node.handle, last, publish_frame("m2"))  # waits
            await trio.testing.wait_all_tasks_blocked()
        assert [m.id for call in engine.published for m in call] == ["m1", "m2"]
        assert await drain(gone) == []
        assert [frame["offset"] for frame in await drain(last)] == [2]


async def test_a_delete_refuses_what_waits_for_room_and_what_is_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(Settings(topic_inbox_size=2)) as (node, engine):
        publishers = [node.open_session() for _ in range(4)]
        async with busy_topic(node, engine) as (_, nursery):
            for number, publisher in enumerate(publishers):
                nursery.start_soon(node.handle, publisher, publish_frame(f"m{number}"))
                await trio.testing.wait_all_tasks_blocked()
            node.on_topic_deleted("t")  # the feed says: deleted
            await trio.testing.wait_all_tasks_blocked()
        assert engine.published == []
        for publisher in publishers:
            [answer] = await drain(publisher)
            assert (answer["type"], answer["error"]["code"]) == ("error", "TOPIC_NOT_FOUND")
        # The topic's task ended: a new incarnation of the name gets a new actor.
        late = node.open_session()
        await node.handle(late, publish_frame("m9"))
        [ack] = await drain(late)
        assert ack["type"] == "ack"
