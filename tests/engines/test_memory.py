"""Unit tests of the memory engine against the engine interface, with a recording feed.

The engine runs in a nursery with a fake :class:`~pubsub._core.engine.Feed` that
records every call; :func:`running` cancels it at the end. Every method of the
memory engine must complete without yielding (a topic actor relies on it), which
:func:`trio.testing.assert_no_checkpoints` checks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import msgspec
import pytest
import trio
import trio.testing

import pubsub
from pubsub._core.engine import Engine, Feed, History, Publication, Published, TopicInfo
from pubsub._engines.memory import MemoryEngine
from pubsub._protocol.frames import Message

TS_RE: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class RecordingFeed:
    """A feed that records what the engine hands it, in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[Publication]]] = []

    def on_publications(
        self, topic: str, publications: list[Publication], *, repaired: bool = False
    ) -> None:
        assert not repaired, "the memory engine's feed never needs repair"
        self.calls.append(("publications", topic, publications))

    def on_topic_deleted(self, topic: str) -> None:
        self.calls.append(("deleted", topic, []))

    def on_gap(self, topic: str, after: int, missed: int) -> None:
        raise AssertionError("the memory engine's feed never breaks")

    def on_topics_created(self, topics: list[str] | None) -> None:
        raise AssertionError("the memory engine has no other node to hear of topics from")

    def subscriber_counts(self) -> dict[str, int]:
        return {}

    def publications(self, topic: str) -> list[Publication]:
        return [
            pub
            for kind, name, pubs in self.calls
            if kind == "publications" and name == topic
            for pub in pubs
        ]


@asynccontextmanager
async def running(
    max_topics: int = 10, max_messages: int = 100
) -> AsyncIterator[tuple[MemoryEngine, RecordingFeed]]:
    engine = MemoryEngine(max_topics=max_topics, max_messages=max_messages)
    feed = RecordingFeed()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run, feed)
        yield engine, feed
        nursery.cancel_scope.cancel()


def message(n: int) -> Message:
    return Message(id=f"m{n}", payload=msgspec.Raw(b'{"a":%d}' % n))


def messages(*numbers: int) -> list[Message]:
    return [message(n) for n in numbers]


def offsets(history: History) -> list[int]:
    return [pub.offset for pub in history.publications]


def ids(history: History) -> list[str]:
    return [pub.message.id for pub in history.publications]


async def publish_n(engine: MemoryEngine, topic: str, n: int) -> None:
    for i in range(1, n + 1):
        await engine.publish(topic, [message(i)])


def test_memory_engine_implements_the_interfaces() -> None:
    engine: Engine = MemoryEngine(max_topics=1, max_messages=1)
    feed: Feed = RecordingFeed()
    assert engine.kind == "memory"
    assert engine.available
    assert feed is not None


# ------------------------------------------------------------------ registry


async def test_create_topic_and_describe_it() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("orders")
        assert isinstance(info, TopicInfo)
        assert info.name == "orders"
        assert info.offset == 0
        assert info.stored == 0
        assert info.epoch
        assert isinstance(info.created_at, int)
        assert info.created_at > 1_600_000_000_000  # epoch milliseconds
        assert await engine.topic("orders") == info


async def test_topics_sorted_by_name() -> None:
    async with running() as (engine, _):
        assert await engine.topics() == []
        for name in ("b", "c", "a", "a.b"):
            await engine.create_topic(name)
        await engine.publish("c", messages(1, 2))
        topics = await engine.topics()
        assert [t.name for t in topics] == ["a", "a.b", "b", "c"]
        assert [(t.offset, t.stored) for t in topics] == [(0, 0), (0, 0), (0, 0), (2, 2)]
        assert len({t.epoch for t in topics}) == 4


async def test_create_twice_raises_topic_exists() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        with pytest.raises(pubsub.TopicExists):
            await engine.create_topic("t")
        assert await engine.topic("t") == info


async def test_create_twice_at_the_limit_is_still_topic_exists() -> None:
    async with running(max_topics=1) as (engine, _):
        await engine.create_topic("t")
        with pytest.raises(pubsub.TopicExists):
            await engine.create_topic("t")


async def test_max_topics_raises_limit_exceeded() -> None:
    async with running(max_topics=2) as (engine, _):
        await engine.create_topic("a")
        await engine.create_topic("b")
        with pytest.raises(pubsub.LimitExceeded):
            await engine.create_topic("c")
        assert [t.name for t in await engine.topics()] == ["a", "b"]
        await engine.delete_topic("a")
        await engine.create_topic("c")
        assert [t.name for t in await engine.topics()] == ["b", "c"]


async def test_unknown_topic_raises_topic_not_found() -> None:
    async with running() as (engine, feed):
        with pytest.raises(pubsub.TopicNotFound):
            await engine.topic("nope")
        with pytest.raises(pubsub.TopicNotFound):
            await engine.delete_topic("nope")
        with pytest.raises(pubsub.TopicNotFound):
            await engine.publish("nope", messages(1))
        with pytest.raises(pubsub.TopicNotFound):
            await engine.history("nope", last_n=5)
        with pytest.raises(pubsub.TopicNotFound):
            await engine.history("nope", since_offset=0, epoch="x")
        assert feed.calls == []


async def test_deleted_topic_is_gone() -> None:
    async with running() as (engine, feed):
        await engine.create_topic("t")
        await engine.delete_topic("t")
        assert feed.calls == [("deleted", "t", [])]
        assert await engine.topics() == []
        with pytest.raises(pubsub.TopicNotFound):
            await engine.topic("t")
        with pytest.raises(pubsub.TopicNotFound):
            await engine.publish("t", messages(1))


# ------------------------------------------------------------------ publish


async def test_publish_assigns_offsets_and_feeds_synchronously() -> None:
    async with running() as (engine, feed):
        await engine.create_topic("t")
        info = await engine.topic("t")
        batch = messages(1, 2, 3)
        with trio.testing.assert_no_checkpoints():
            published = await engine.publish("t", batch)
            # The feed got the batch before publish returned, in one call.
            assert len(feed.calls) == 1
        assert isinstance(published, Published)
        assert published.first_offset == 1
        assert published.epoch == info.epoch
        assert TS_RE.match(published.ts)
        kind, topic, pubs = feed.calls[0]
        assert (kind, topic) == ("publications", "t")
        assert [p.offset for p in pubs] == [1, 2, 3]
        assert [p.message for p in pubs] == batch
        assert all(p.message is m for p, m in zip(pubs, batch, strict=True))
        assert {p.ts for p in pubs} == {published.ts}
        assert all(p.frame is None for p in pubs)

        second = await engine.publish("t", messages(4, 5))
        assert second.first_offset == 4
        assert second.epoch == info.epoch
        assert TS_RE.match(second.ts)
        assert len(feed.calls) == 2
        assert [p.offset for p in feed.calls[1][2]] == [4, 5]
        assert {p.ts for p in feed.calls[1][2]} == {second.ts}
        assert [p.message.id for p in feed.publications("t")] == ["m1", "m2", "m3", "m4", "m5"]

        info = await engine.topic("t")
        assert (info.offset, info.stored) == (5, 5)


async def test_publish_one_by_one_counts_up() -> None:
    async with running() as (engine, feed):
        await engine.create_topic("t")
        firsts = [(await engine.publish("t", [message(i)])).first_offset for i in range(1, 6)]
        assert firsts == [1, 2, 3, 4, 5]
        assert [p.offset for p in feed.publications("t")] == [1, 2, 3, 4, 5]


async def test_topics_have_independent_offsets() -> None:
    async with running() as (engine, feed):
        await engine.create_topic("a")
        await engine.create_topic("b")
        assert (await engine.publish("a", messages(1, 2))).first_offset == 1
        assert (await engine.publish("b", messages(1))).first_offset == 1
        assert (await engine.publish("a", messages(3))).first_offset == 3
        assert [p.offset for p in feed.publications("a")] == [1, 2, 3]
        assert [p.offset for p in feed.publications("b")] == [1]


async def test_publish_without_a_running_feed_still_stores() -> None:
    engine = MemoryEngine(max_topics=1, max_messages=10)
    await engine.create_topic("t")
    published = await engine.publish("t", messages(1, 2))
    assert published.first_offset == 1
    assert ids(await engine.history("t", last_n=10)) == ["m1", "m2"]
    await engine.delete_topic("t")


async def test_feed_is_released_when_run_is_cancelled() -> None:
    engine = MemoryEngine(max_topics=2, max_messages=10)
    feed = RecordingFeed()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run, feed)
        await engine.create_topic("t")
        nursery.cancel_scope.cancel()
    await engine.publish("t", messages(1))
    assert feed.calls == []


# ---------------------------------------------------------------------- ring


async def test_ring_keeps_only_max_messages() -> None:
    async with running(max_messages=3) as (engine, feed):
        await engine.create_topic("t")
        await publish_n(engine, "t", 5)
        info = await engine.topic("t")
        assert (info.offset, info.stored) == (5, 3)
        history = await engine.history("t", last_n=10)
        assert offsets(history) == [3, 4, 5]
        assert history.offset == 5
        # The feed is not bounded by the ring.
        assert [p.offset for p in feed.publications("t")] == [1, 2, 3, 4, 5]


async def test_ring_with_a_batch_larger_than_max_messages() -> None:
    async with running(max_messages=2) as (engine, _):
        await engine.create_topic("t")
        await engine.publish("t", messages(1, 2, 3, 4))
        assert offsets(await engine.history("t", last_n=10)) == [3, 4]
        assert (await engine.topic("t")).stored == 2


async def test_max_messages_zero_keeps_none() -> None:
    async with running(max_messages=0) as (engine, feed):
        await engine.create_topic("t")
        await publish_n(engine, "t", 3)
        info = await engine.topic("t")
        assert (info.offset, info.stored) == (3, 0)
        history = await engine.history("t", last_n=10)
        assert history.publications == []
        assert history.offset == 3
        assert len(feed.publications("t")) == 3
        resumed = await engine.history("t", since_offset=3, epoch=info.epoch)
        assert (resumed.recovered, resumed.publications) == (True, [])
        missed = await engine.history("t", since_offset=2, epoch=info.epoch)
        assert (missed.recovered, missed.publications) == (False, [])


# ------------------------------------------------------------------- last_n


async def test_history_last_n_returns_the_newest_oldest_first() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        await publish_n(engine, "t", 5)
        history = await engine.history("t", last_n=2)
        assert offsets(history) == [4, 5]
        assert ids(history) == ["m4", "m5"]
        assert history.recovered is None
        assert history.offset == 5
        assert history.epoch == info.epoch


async def test_history_last_n_larger_than_stored_gives_all() -> None:
    async with running() as (engine, _):
        await engine.create_topic("t")
        await publish_n(engine, "t", 3)
        history = await engine.history("t", last_n=1000)
        assert offsets(history) == [1, 2, 3]
        assert history.recovered is None


async def test_history_last_n_zero_gives_none() -> None:
    async with running() as (engine, _):
        await engine.create_topic("t")
        await publish_n(engine, "t", 3)
        history = await engine.history("t", last_n=0)
        assert history.publications == []
        assert history.recovered is None
        assert history.offset == 3
        default = await engine.history("t")
        assert default.publications == []
        assert default.recovered is None


async def test_history_of_an_empty_topic() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        history = await engine.history("t", last_n=5)
        assert history == History(0, info.epoch, None, [])


# --------------------------------------------------------------- since_offset


async def test_history_since_offset_replays_exactly() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        await publish_n(engine, "t", 5)
        history = await engine.history("t", since_offset=2, epoch=info.epoch)
        assert history.recovered is True
        assert offsets(history) == [3, 4, 5]
        assert ids(history) == ["m3", "m4", "m5"]
        assert history.offset == 5
        assert history.epoch == info.epoch
        everything = await engine.history("t", since_offset=0, epoch=info.epoch)
        assert everything.recovered is True
        assert offsets(everything) == [1, 2, 3, 4, 5]


async def test_history_since_offset_ignores_last_n() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        await publish_n(engine, "t", 5)
        history = await engine.history("t", last_n=1, since_offset=2, epoch=info.epoch)
        assert history.recovered is True
        assert offsets(history) == [3, 4, 5]


async def test_history_since_current_offset_is_recovered_and_empty() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        empty = await engine.history("t", since_offset=0, epoch=info.epoch)
        assert (empty.recovered, empty.publications, empty.offset) == (True, [], 0)
        await publish_n(engine, "t", 4)
        history = await engine.history("t", since_offset=4, epoch=info.epoch)
        assert history.recovered is True
        assert history.publications == []
        assert history.offset == 4


async def test_history_wrong_epoch_is_not_recovered() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        await publish_n(engine, "t", 3)
        history = await engine.history("t", since_offset=1, epoch=info.epoch + "x")
        assert history.recovered is False
        assert history.publications == []
        assert history.offset == 3
        assert history.epoch == info.epoch
        none = await engine.history("t", since_offset=1, epoch=None)
        assert (none.recovered, none.publications) == (False, [])


async def test_history_since_beyond_the_ring_is_never_partial() -> None:
    async with running(max_messages=3) as (engine, _):
        info = await engine.create_topic("t")
        await publish_n(engine, "t", 5)
        # Offsets 3..5 are stored: after 2 is complete, after 1 would miss 2.
        complete = await engine.history("t", since_offset=2, epoch=info.epoch)
        assert (complete.recovered, offsets(complete)) == (True, [3, 4, 5])
        for since in (0, 1):
            history = await engine.history("t", since_offset=since, epoch=info.epoch)
            assert history.recovered is False
            assert history.publications == []
            assert history.offset == 5


async def test_history_since_offset_in_the_future_is_not_recovered() -> None:
    async with running() as (engine, _):
        info = await engine.create_topic("t")
        await publish_n(engine, "t", 2)
        history = await engine.history("t", since_offset=3, epoch=info.epoch)
        assert history.recovered is False
        assert history.publications == []
        assert history.offset == 2


# ------------------------------------------------------------------- epochs


async def test_recreated_topic_gets_a_new_epoch_and_restarts_offsets() -> None:
    async with running() as (engine, feed):
        old = await engine.create_topic("t")
        await publish_n(engine, "t", 3)
        await engine.delete_topic("t")
        assert feed.calls[-1] == ("deleted", "t", [])
        new = await engine.create_topic("t")
        assert new.epoch != old.epoch
        assert (new.offset, new.stored) == (0, 0)
        assert (await engine.history("t", last_n=10)).publications == []
        published = await engine.publish("t", messages(9))
        assert published.first_offset == 1
        assert published.epoch == new.epoch
        assert feed.calls[-1][2][0].offset == 1
        # A client resuming the old incarnation at a now valid offset is not recovered.
        history = await engine.history("t", since_offset=0, epoch=old.epoch)
        assert history.recovered is False
        assert history.publications == []
        assert history.epoch == new.epoch
        assert (await engine.history("t", since_offset=0, epoch=new.epoch)).recovered is True


async def test_epochs_are_unique_across_engines() -> None:
    first = MemoryEngine(max_topics=1, max_messages=1)
    second = MemoryEngine(max_topics=1, max_messages=1)
    assert (await first.create_topic("t")).epoch != (await second.create_topic("t")).epoch


async def test_delete_calls_the_feed_after_earlier_publications() -> None:
    async with running() as (engine, feed):
        await engine.create_topic("t")
        await engine.publish("t", messages(1))
        with trio.testing.assert_no_checkpoints():
            await engine.delete_topic("t")
            assert [(kind, topic) for kind, topic, _ in feed.calls] == [
                ("publications", "t"),
                ("deleted", "t"),
            ]


# ---------------------------------------------------------- shared objects


async def test_history_returns_the_publications_the_feed_got() -> None:
    async with running() as (engine, feed):
        info = await engine.create_topic("t")
        await engine.publish("t", messages(1, 2, 3))
        fed = feed.publications("t")
        fed[1].frame = b"cached frame"
        by_last_n = (await engine.history("t", last_n=3)).publications
        by_since = (await engine.history("t", since_offset=1, epoch=info.epoch)).publications
        assert all(a is b for a, b in zip(by_last_n, fed, strict=True))
        assert all(a is b for a, b in zip(by_since, fed[1:], strict=True))
        assert by_last_n[1].frame == b"cached frame"
        assert by_since[0].frame == b"cached frame"


async def test_history_lists_are_fresh() -> None:
    async with running() as (engine, _):
        await engine.create_topic("t")
        await engine.publish("t", messages(1, 2))
        history = await engine.history("t", last_n=2)
        history.publications.clear()
        assert offsets(await engine.history("t", last_n=2)) == [1, 2]


# ---------------------------------------------------------------- no yields


async def test_every_method_completes_without_yielding() -> None:
    async with running(max_messages=3) as (engine, _):
        with trio.testing.assert_no_checkpoints():
            info = await engine.create_topic("t")
            await engine.topic("t")
            await engine.topics()
            await engine.follow("t")
            await engine.publish("t", messages(1, 2))
            await engine.publish("t", messages(3, 4, 5))
            await engine.history("t", last_n=2)
            await engine.history("t", since_offset=3, epoch=info.epoch)
            await engine.history("t", since_offset=0, epoch=info.epoch)
            await engine.history("t", since_offset=3, epoch="other")
            engine.unfollow("t")
            await engine.delete_topic("t")


async def test_errors_are_raised_without_yielding() -> None:
    async with running(max_topics=1) as (engine, _):
        await engine.create_topic("t")
        with trio.testing.assert_no_checkpoints():
            with pytest.raises(pubsub.TopicExists):
                await engine.create_topic("t")
            with pytest.raises(pubsub.LimitExceeded):
                await engine.create_topic("u")
            with pytest.raises(pubsub.TopicNotFound):
                await engine.publish("u", messages(1))
            with pytest.raises(pubsub.TopicNotFound):
                await engine.history("u", last_n=1)
