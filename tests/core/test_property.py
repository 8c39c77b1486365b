"""Property: whatever the interleaving, each session gets exactly what a model predicts.

Hypothesis generates a run of operations (subscribe, resume, unsubscribe, publish,
delete, create, drain, settle) over a few topics and sessions; one ``trio.run`` carries
them out against a real node while a plain model predicts every frame. Nothing may
drop (a huge outbox), so each session must receive, per topic, exactly the messages
published while it was subscribed (plus the replays it asked for), in publish order,
with each request answered once.

Tasks are not settled after every operation on purpose: a topic actor then takes
several commands in one batch. Commands for one topic still reach its inbox in
operation order, so the frames of one (session, topic) pair are predictable; the
interleaving of different topics in one outbox is not, and is not compared. Publish
answers are compared as their own stream: a batch of publishes answers its publishers
after fanning out, so a publisher subscribed to its own topic may see the events
before the acks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
import trio.testing
from conftest import client_frame, open_memory_node
from hypothesis import given, settings
from hypothesis import strategies as st

from pubsub import ErrorCode, PubSubError, Settings
from pubsub._core.node import Node

TOPICS = ("t0", "t1")
SESSIONS = 3

Frame = dict[str, Any]
Simple = tuple[Any, ...]


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Sub:
    session: int
    topic: str
    last_n: int


@dataclass(frozen=True)
class Resume:
    """Subscribe with ``since_offset`` = the topic's offset minus ``behind`` (-1: the future)."""

    session: int
    topic: str
    behind: int
    epoch_ok: bool


@dataclass(frozen=True)
class Unsub:
    session: int
    topic: str


@dataclass(frozen=True)
class Pub:
    """Publish a burst of messages back to back (no checkpoint between them)."""

    session: int
    topic: str
    payloads: tuple[Any, ...]


@dataclass(frozen=True)
class Delete:
    topic: str
    recreate: bool


@dataclass(frozen=True)
class Create:
    topic: str


@dataclass(frozen=True)
class Drain:
    session: int


@dataclass(frozen=True)
class Settle:
    pass


Op = Sub | Resume | Unsub | Pub | Delete | Create | Drain | Settle

sessions_st = st.integers(0, SESSIONS - 1)
topics_st = st.sampled_from(TOPICS)
json_st = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(st.characters(codec="utf-8"), max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=5,
)
publish_st = st.builds(
    Pub, sessions_st, topics_st, st.lists(json_st, min_size=1, max_size=4).map(tuple)
)
ops_st: st.SearchStrategy[Op] = st.one_of(
    # Publishes dominate so topics build up history that rotates out of small rings.
    *[publish_st] * 3,
    st.builds(Sub, sessions_st, topics_st, st.integers(0, 5)),
    st.builds(Sub, sessions_st, topics_st, st.integers(0, 5)),
    st.builds(Resume, sessions_st, topics_st, st.integers(-1, 6), st.booleans()),
    st.builds(Resume, sessions_st, topics_st, st.integers(-1, 6), st.booleans()),
    st.builds(Unsub, sessions_st, topics_st),
    st.builds(Delete, topics_st, st.booleans()),
    st.builds(Create, topics_st),
    st.builds(Drain, sessions_st),
    st.just(Settle()),
)


# ------------------------------------------------------------------------ model


@dataclass
class TopicModel:
    epoch: str
    ring_size: int
    offset: int = 0
    #: The replay ring: (offset, id, payload) of the newest ``ring_size`` messages.
    ring: list[tuple[int, str, Any]] = field(default_factory=list)
    subscribers: set[int] = field(default_factory=set)

    def publish(self, msg_id: str, payload: Any) -> Simple:
        self.offset += 1
        self.ring.append((self.offset, msg_id, payload))
        if len(self.ring) > self.ring_size:
            del self.ring[0]
        return ("event", self.offset, msg_id, payload)


@dataclass
class Model:
    ring_size: int
    topics: dict[str, TopicModel | None] = field(default_factory=dict)
    #: Expected frames per (session, topic), publish answers excluded.
    frames: dict[tuple[int, str], list[Simple]] = field(default_factory=dict)
    #: Expected publish answers per (session, topic).
    answers: dict[tuple[int, str], list[Simple]] = field(default_factory=dict)
    published: int = 0

    def expect(self, session: int, topic: str, frame: Simple) -> None:
        self.frames.setdefault((session, topic), []).append(frame)

    def expect_answer(self, session: int, topic: str, frame: Simple) -> None:
        self.answers.setdefault((session, topic), []).append(frame)


def simplify(frame: Frame) -> Simple:
    """The parts of a frame the model predicts (no timestamps)."""
    kind = frame["type"]
    if kind == "event":
        message = frame["message"]
        return ("event", frame["offset"], message["id"], message["payload"])
    if kind == "ack":
        return (
            "ack",
            frame.get("request_id"),
            frame.get("offset"),
            frame.get("epoch"),
            frame.get("recovered"),
        )
    if kind == "info":
        return ("info", frame["msg"])
    if kind == "error":
        return ("error", frame.get("request_id"), frame["error"]["code"])
    raise AssertionError(f"unexpected frame {frame!r}")


# ------------------------------------------------------------------------- run


class Runner:
    def __init__(self, node: Node, model: Model) -> None:
        self.node = node
        self.model = model
        self.sessions = [node.open_session() for _ in range(SESSIONS)]
        #: request_id -> (topic, is a publish)
        self.requests: dict[str, tuple[str, bool]] = {}
        self.received: dict[tuple[int, str], list[Simple]] = {}
        self.received_answers: dict[tuple[int, str], list[Simple]] = {}
        self.events_received = 0
        self.epochs: set[str] = set()
        self.next_request = 0

    def request_id(self, topic: str, *, is_publish: bool = False) -> str:
        self.next_request += 1
        rid = f"r{self.next_request}"
        self.requests[rid] = (topic, is_publish)
        return rid

    async def create(self, topic: str) -> None:
        epoch = (await self.node.create_topic(topic)).epoch
        assert epoch not in self.epochs, "a re-created topic needs a new epoch"
        self.epochs.add(epoch)
        self.model.topics[topic] = TopicModel(epoch=epoch, ring_size=self.model.ring_size)

    def take(self, index: int, batch: list[bytes]) -> None:
        for raw in batch:
            frame: Frame = msgspec.json.decode(raw)
            rid = frame.get("request_id")
            if rid is not None:
                topic, is_publish = self.requests[rid]
            else:
                topic, is_publish = frame["topic"], False
            target = self.received_answers if is_publish else self.received
            target.setdefault((index, topic), []).append(simplify(frame))
            if frame["type"] == "event":
                self.events_received += 1

    async def drain(self, index: int) -> None:
        session = self.sessions[index]
        if session.queued:
            self.take(index, list(await session.next_batch()))

    async def run(self, op: Op) -> None:
        model = self.model
        match op:
            case Sub(index, topic, last_n):
                rid = self.request_id(topic)
                await self.handle(index, "subscribe", topic, rid, last_n=last_n)
                state = model.topics[topic]
                if state is None:
                    model.expect(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                    return
                if index in state.subscribers:
                    replay = []
                else:
                    replay = state.ring[max(0, len(state.ring) - last_n) :] if last_n else []
                    state.subscribers.add(index)
                model.expect(index, topic, ("ack", rid, state.offset, state.epoch, None))
                for offset, msg_id, payload in replay:
                    model.expect(index, topic, ("event", offset, msg_id, payload))
            case Resume(index, topic, behind, epoch_ok):
                rid = self.request_id(topic)
                state = model.topics[topic]
                since = max(0, (state.offset if state is not None else 0) - behind)
                epoch = state.epoch if state is not None and epoch_ok else "stale"
                await self.handle(index, "subscribe", topic, rid, since_offset=since, epoch=epoch)
                if state is None:
                    model.expect(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                    return
                recovered: bool | None = None
                replay = []
                if index not in state.subscribers:
                    missing = state.offset - since
                    recovered = epoch_ok and 0 <= missing <= len(state.ring)
                    if recovered and missing:
                        replay = state.ring[-missing:]
                    state.subscribers.add(index)
                model.expect(index, topic, ("ack", rid, state.offset, state.epoch, recovered))
                for offset, msg_id, payload in replay:
                    model.expect(index, topic, ("event", offset, msg_id, payload))
            case Unsub(index, topic):
                rid = self.request_id(topic)
                await self.handle(index, "unsubscribe", topic, rid)
                state = model.topics[topic]
                if state is None:
                    model.expect(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                    return
                state.subscribers.discard(index)
                model.expect(index, topic, ("ack", rid, None, None, None))
            case Pub(index, topic, payloads):
                state = model.topics[topic]
                for payload in payloads:
                    rid = self.request_id(topic, is_publish=True)
                    model.published += 1
                    msg_id = f"m{model.published}"
                    message = {"id": msg_id, "payload": payload}
                    await self.handle(index, "publish", topic, rid, message=message)
                    if state is None:
                        model.expect_answer(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                        continue
                    event = state.publish(msg_id, payload)
                    for subscriber in sorted(state.subscribers):
                        model.expect(subscriber, topic, event)
                    model.expect_answer(index, topic, ("ack", rid, state.offset, None, None))
            case Delete(topic, recreate):
                state = model.topics[topic]
                if state is None:
                    try:
                        await self.node.delete_topic(topic)
                    except PubSubError as exc:
                        assert exc.code is ErrorCode.TOPIC_NOT_FOUND
                    else:
                        raise AssertionError("deleting a missing topic must fail")
                    return
                await self.node.delete_topic(topic)
                # Let the old actor finish, so later answers for this name cannot
                # overtake what it still had queued.
                await trio.testing.wait_all_tasks_blocked()
                for subscriber in sorted(state.subscribers):
                    model.expect(subscriber, topic, ("info", "topic_deleted"))
                model.topics[topic] = None
                if recreate:
                    await self.create(topic)
            case Create(topic):
                if model.topics[topic] is None:
                    await self.create(topic)
                    return
                try:
                    await self.node.create_topic(topic)
                except PubSubError as exc:
                    assert exc.code is ErrorCode.TOPIC_EXISTS
                else:
                    raise AssertionError("creating an existing topic must fail")
            case Drain(index):
                await self.drain(index)
            case Settle():
                await trio.testing.wait_all_tasks_blocked()

    async def handle(self, index: int, kind: str, topic: str, rid: str, **extra: Any) -> None:
        fields = {"type": kind, "topic": topic, "client_id": f"c{index}", "request_id": rid}
        await self.node.handle(self.sessions[index], client_frame({**fields, **extra}))

    async def finish(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        for index in range(SESSIONS):
            await self.drain(index)

        model = self.model
        assert self.received == model.frames
        assert self.received_answers == model.answers

        stats = await self.node.stats()
        live = {name: state for name, state in model.topics.items() if state is not None}
        assert sorted(stats.topics) == sorted(live)
        for name, state in live.items():
            topic_stats = stats.topics[name]
            assert topic_stats.messages == state.offset
            assert topic_stats.stored == len(state.ring)
            assert topic_stats.subscribers == len(state.subscribers)
            assert topic_stats.dropped == 0
        for index, session in enumerate(self.sessions):
            subscribed = {name for name, state in live.items() if index in state.subscribers}
            assert set(session.topics) == subscribed
        assert stats.delivery.dropped == 0
        assert stats.delivery.delivered == self.events_received


async def run_ops(ops: list[Op], ring_size: int, inbox_size: int) -> None:
    broker_settings = Settings(
        max_queue_size=1_000_000,
        max_messages_per_topic=ring_size,
        topic_inbox_size=inbox_size,
    )
    async with open_memory_node(broker_settings) as node:
        runner = Runner(node, Model(ring_size=ring_size))
        for topic in TOPICS:
            await runner.create(topic)
        for op in ops:
            await runner.run(op)
        await runner.finish()


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(ops_st, min_size=15, max_size=80),
    ring_size=st.sampled_from([1, 2, 4, 100]),
    inbox_size=st.sampled_from([1, 4, 1024]),
)
def test_every_session_gets_exactly_what_it_subscribed_to(
    ops: list[Op], ring_size: int, inbox_size: int
) -> None:
    trio.run(run_ops, ops, ring_size, inbox_size)
