"""Property: whatever the interleaving, each session gets exactly what a model predicts.

Hypothesis generates a run of operations over a few topics and sessions: subscribe
(with ``last_n``, or a resume), unsubscribe, wildcard subscribe and unsubscribe, each
subscribe with or without a content filter; publish (some messages with their own
TTL); delete, create (some topics with a message TTL); advance the clock; drain;
settle. One ``trio.run`` carries them out against a real node while a plain model
predicts every frame. Nothing may drop (a huge outbox), so each session must receive,
per topic, exactly the messages published while at least one of its subscriptions to
it (its own, or a matching pattern) held it and one of those subscriptions' filters
accepts, once each, in publish order, plus the replays it asked for (never an expired
message), with each request answered once.

Tasks are not settled after every operation on purpose: a topic actor then takes
several commands in one batch. Commands for one topic still reach its inbox in
operation order (a pattern's attach and detach too), so the frames of one (session,
topic) pair are predictable; the interleaving of different topics in one outbox is
not, and is not compared. Publish answers are compared as their own stream: a batch
of publishes answers its publishers after fanning out, so a publisher subscribed to
its own topic may see the events before the acks. Wildcard subscribe and unsubscribe
are answered by the node at once, not by a topic actor: their acks are a stream of
their own per (session, pattern).

Time: the broker reads the clock through ``timestamps.now_ms``, which the test
replaces by the model's clock. Only ``Advance`` moves it, after settling, so every
command is carried out at the time the model gave it. An event whose message expired
while queued is left out when the session's outbox is taken, and counted in a
``messages_expired`` notice at the front of that batch. Drains do not settle, so which
drain takes an event is not fully known: some drain after its operation, at the
latest the session's first drain after the next settling operation. An event can only
be expired at that last one (earlier drains run at the time it was sent); when it
expires by then and an earlier drain could have taken it, either outcome is right, and
the test checks the one that happened: delivered by an earlier drain, or left out and
counted in the notice of that last one.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from unittest import mock

import msgspec
import trio
import trio.testing
from conftest import client_frame, open_memory_node
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pubsub import ErrorCode, PubSubError, Settings
from pubsub._core.node import Node
from pubsub._protocol import timestamps

TOPICS = ("a.x", "a.y", "b.x")
PATTERNS = ("a.*", "*.x", ">", "a.>")
SESSIONS = 3
#: Where the model's clock starts (epoch ms).
START_MS: Final = 1_800_000_000_000
#: The reason a session receives a topic when it subscribed to it by name (its
#: other reasons are the matching patterns it holds).
CONCRETE: Final = ""

Frame = dict[str, Any]
Simple = tuple[Any, ...]
#: A predicted frame, the index of the operation that causes it, and when the
#: message it carries expires (epoch ms; 0: it never does, or not an event).
Expected = tuple[Simple, int, int]
#: A frame received, and the index of the operation whose drain took it.
Received = tuple[Simple, int]
Key = tuple[int, str]


# --------------------------------------------------------------------- filters


def _payload_field(message: Frame, key: str) -> object:
    payload = message["payload"]
    return payload.get(key) if type(payload) is dict else None


def _n(message: Frame) -> int | float | None:
    """``payload.n`` if it is a number (a boolean is not), else None."""
    value = _payload_field(message, "n")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _k(message: Frame) -> str | None:
    """``payload.k`` if it is a string, else None."""
    value = _payload_field(message, "k")
    return value if isinstance(value, str) else None


def _n_above_2(message: Frame) -> bool:
    n = _n(message)
    return n is not None and n > 2


def _n_below_1_or_k_not_x(message: Frame) -> bool:
    n = _n(message)
    return (n is not None and n < 1) or _k(message) != "x"  # ne: true when missing


def _n_from_1_and_k_x_or_y(message: Frame) -> bool:
    n = _n(message)
    return n is not None and n >= 1 and _k(message) in ("x", "y")


#: The filters subscriptions use, by name: the wire form and the model's reading of it.
FILTERS: Final[dict[str, tuple[Frame, Callable[[Frame], bool]]]] = {
    "n>2": ({"path": "payload.n", "op": "gt", "value": 2}, _n_above_2),
    "k=x": ({"path": "payload.k", "op": "eq", "value": "x"}, lambda m: _k(m) == "x"),
    "n<1|k!=x": (
        {
            "or": [
                {"path": "payload.n", "op": "lt", "value": 1},
                {"path": "payload.k", "op": "ne", "value": "x"},
            ]
        },
        _n_below_1_or_k_not_x,
    ),
    "n>=1&k~xy": (
        {
            "and": [
                {"path": "payload.n", "op": "gte", "value": 1},
                {"path": "payload.k", "op": "in", "value": ["x", "y"]},
            ]
        },
        _n_from_1_and_k_x_or_y,
    ),
}


def pattern_matches(pattern: str, topic: str) -> bool:
    """The contract's wildcard rule: ``*`` is one segment, a final ``>`` one or more."""
    wanted, segments = pattern.split("."), topic.split(".")
    if wanted[-1] == ">":
        wanted.pop()
        if len(segments) <= len(wanted):
            return False
        segments = segments[: len(wanted)]
    return len(wanted) == len(segments) and all(
        w in ("*", s) for w, s in zip(wanted, segments, strict=True)
    )


def iso(epoch_ms: int) -> str:
    """A contract timestamp, ``2026-11-28T10:00:00.123Z``."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Sub:
    session: int
    topic: str
    last_n: int
    filter: str | None


@dataclass(frozen=True)
class Resume:
    """Subscribe with ``since_offset`` = the topic's offset minus ``behind`` (-1: the future)."""

    session: int
    topic: str
    behind: int
    epoch_ok: bool
    filter: str | None


@dataclass(frozen=True)
class Unsub:
    session: int
    topic: str


@dataclass(frozen=True)
class SubPattern:
    session: int
    pattern: str
    filter: str | None


@dataclass(frozen=True)
class UnsubPattern:
    session: int
    pattern: str


@dataclass(frozen=True)
class Pub:
    """Publish a burst of messages back to back (no checkpoint between them), each
    with its own TTL or None (the topic's)."""

    session: int
    topic: str
    messages: tuple[tuple[Any, int | None], ...]


@dataclass(frozen=True)
class Delete:
    topic: str
    recreate: bool
    ttl: int


@dataclass(frozen=True)
class Create:
    topic: str
    ttl: int


@dataclass(frozen=True)
class Advance:
    """Settle, then move the clock on by ``ms``."""

    ms: int


@dataclass(frozen=True)
class Drain:
    session: int


@dataclass(frozen=True)
class Settle:
    pass


Op = (
    Sub
    | Resume
    | Unsub
    | SubPattern
    | UnsubPattern
    | Pub
    | Delete
    | Create
    | Advance
    | Drain
    | Settle
)

sessions_st = st.integers(0, SESSIONS - 1)
topics_st = st.sampled_from(TOPICS)
patterns_st = st.sampled_from(PATTERNS)
#: No filter half the time: filters thin the events out.
filters_st = st.sampled_from([None, None, None, None, *FILTERS])
#: A message's own TTL (ms) and a topic's (0: none); clock steps are of the same order.
message_ttl_st = st.none() | st.sampled_from([5, 30])
topic_ttl_st = st.sampled_from([0, 0, 10, 50])
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
#: Payloads the filters look at (a boolean ``n`` is not a number to them), and any JSON.
filtered_payload_st = st.fixed_dictionaries(
    {},
    optional={"n": st.integers(-1, 5) | st.booleans(), "k": st.sampled_from(["x", "y", "z"])},
)
payload_st = filtered_payload_st | filtered_payload_st | json_st
publish_st = st.builds(
    Pub,
    sessions_st,
    topics_st,
    st.lists(st.tuples(payload_st, message_ttl_st), min_size=1, max_size=4).map(tuple),
)


def weight(times: int, strategy: st.SearchStrategy[Op]) -> list[st.SearchStrategy[Op]]:
    """``times`` equal branches for ``st.one_of``, which weights its branches by count
    but drops a branch that is the very same object as an earlier one."""
    return [strategy.map(lambda op: op) for _ in range(times)]


ops_st: st.SearchStrategy[Op] = st.one_of(
    # Publishes dominate so topics build up history that rotates out of small rings.
    *weight(6, publish_st),
    *weight(2, st.builds(Sub, sessions_st, topics_st, st.integers(0, 5), filters_st)),
    *weight(
        2,
        st.builds(Resume, sessions_st, topics_st, st.integers(-1, 6), st.booleans(), filters_st),
    ),
    st.builds(Unsub, sessions_st, topics_st),
    *weight(2, st.builds(SubPattern, sessions_st, patterns_st, filters_st)),
    st.builds(UnsubPattern, sessions_st, patterns_st),
    st.builds(Delete, topics_st, st.booleans(), topic_ttl_st),
    st.builds(Create, topics_st, topic_ttl_st),
    *weight(2, st.builds(Advance, st.sampled_from([1, 5, 20, 60]))),
    *weight(2, st.builds(Drain, sessions_st)),
    st.just(Settle()),
)


# ------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Stored:
    offset: int
    msg_id: str
    payload: Any
    #: When it expires (epoch ms); 0: never.
    expires: int

    def expired(self, now: int) -> bool:
        return bool(self.expires) and self.expires <= now

    @property
    def message(self) -> Frame:
        return {"id": self.msg_id, "payload": self.payload}

    @property
    def event(self) -> Simple:
        expires_at = iso(self.expires) if self.expires else None
        return ("event", self.offset, self.msg_id, self.payload, expires_at)


def accepts(name: str | None, stored: Stored) -> bool:
    return name is None or FILTERS[name][1](stored.message)


@dataclass
class TopicModel:
    epoch: str
    ring_size: int
    #: Its messages' TTL (ms; 0: none) unless a publish gives its own.
    ttl: int
    offset: int = 0
    #: The replay ring: the newest ``ring_size`` messages, expired ones included.
    ring: list[Stored] = field(default_factory=list)
    #: Why each session that receives the topic does: ``CONCRETE`` and the matching
    #: patterns it holds, each with its filter. Never an empty entry.
    reasons: dict[int, dict[str, str | None]] = field(default_factory=dict)

    def publish(self, msg_id: str, payload: Any, ttl: int | None, now: int) -> Stored:
        self.offset += 1
        lifetime = ttl or self.ttl
        stored = Stored(self.offset, msg_id, payload, now + lifetime if lifetime else 0)
        self.ring.append(stored)
        if len(self.ring) > self.ring_size:
            del self.ring[0]
        return stored

    def wants(self, session: int, stored: Stored) -> bool:
        """Whether any of the session's subscriptions to this topic takes the message."""
        return any(accepts(name, stored) for name in self.reasons[session].values())

    def add_reason(self, session: int, reason: str, name: str | None) -> None:
        self.reasons.setdefault(session, {})[reason] = name

    def drop_reason(self, session: int, reason: str) -> None:
        reasons = self.reasons.get(session)
        if reasons is not None:
            reasons.pop(reason, None)
            if not reasons:
                del self.reasons[session]


@dataclass
class Model:
    ring_size: int
    #: The clock the broker reads (epoch ms).
    now: int = START_MS
    topics: dict[str, TopicModel | None] = field(default_factory=dict)
    #: Each session's patterns with their filters.
    patterns: list[dict[str, str | None]] = field(
        default_factory=lambda: [{} for _ in range(SESSIONS)]
    )
    #: Expected frames per (session, topic or pattern), publish answers excluded.
    frames: dict[Key, list[Expected]] = field(default_factory=dict)
    #: Expected publish answers per (session, topic).
    answers: dict[Key, list[Expected]] = field(default_factory=dict)
    published: int = 0
    #: The index of the operation being carried out.
    op: int = 0

    def clock(self) -> int:
        return self.now

    def expect(self, session: int, stream: str, frame: Simple, expires: int = 0) -> None:
        self.frames.setdefault((session, stream), []).append((frame, self.op, expires))

    def expect_event(self, session: int, topic: str, stored: Stored) -> None:
        self.expect(session, topic, stored.event, stored.expires)

    def expect_answer(self, session: int, topic: str, frame: Simple) -> None:
        self.answers.setdefault((session, topic), []).append((frame, self.op, 0))

    def live(self) -> dict[str, TopicModel]:
        return {name: state for name, state in self.topics.items() if state is not None}


def ack(
    rid: str | None,
    topic: str,
    offset: int | None = None,
    epoch: str | None = None,
    recovered: bool | None = None,
    *,
    filtered: bool | None = None,
    pattern: bool | None = None,
    expired: int | None = None,
) -> Simple:
    return ("ack", rid, topic, offset, epoch, recovered, filtered, pattern, expired)


def simplify(frame: Frame) -> Simple:
    """The parts of a frame the model predicts (no timestamps but ``expires_at``)."""
    kind = frame["type"]
    if kind == "event":
        message = frame["message"]
        expires_at = frame.get("expires_at")
        return ("event", frame["offset"], message["id"], message["payload"], expires_at)
    if kind == "ack":
        return ack(
            frame.get("request_id"),
            frame["topic"],
            frame.get("offset"),
            frame.get("epoch"),
            frame.get("recovered"),
            filtered=frame.get("filtered"),
            pattern=frame.get("pattern"),
            expired=frame.get("expired"),
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
        #: request_id -> (topic or pattern, is a publish)
        self.requests: dict[str, tuple[str, bool]] = {}
        self.received: dict[Key, list[Received]] = {}
        self.received_answers: dict[Key, list[Received]] = {}
        #: The ``messages_expired`` count of each (session, operation of the drain).
        self.notices: dict[tuple[int, int], int] = {}
        self.events_received = 0
        self.epochs: set[str] = set()
        self.next_request = 0
        #: Indices of the operations after which every task had settled.
        self.settled: list[int] = []
        #: Indices of each session's drains, and the clock at each drain.
        self.drains: list[list[int]] = [[] for _ in range(SESSIONS)]
        self.drain_clock: dict[int, int] = {}

    def request_id(self, stream: str, *, is_publish: bool = False) -> str:
        self.next_request += 1
        rid = f"r{self.next_request}"
        self.requests[rid] = (stream, is_publish)
        return rid

    async def create(self, topic: str, ttl: int) -> None:
        model = self.model
        epoch = (await self.node.create_topic(topic, ttl)).epoch
        assert epoch not in self.epochs, "a re-created topic needs a new epoch"
        self.epochs.add(epoch)
        state = model.topics[topic] = TopicModel(epoch=epoch, ring_size=model.ring_size, ttl=ttl)
        # Patterns take a new topic in from its first message.
        for index, patterns in enumerate(model.patterns):
            for pattern, name in patterns.items():
                if pattern_matches(pattern, topic):
                    state.add_reason(index, pattern, name)

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        self.settled.append(self.model.op)

    def take(self, index: int, batch: list[bytes]) -> None:
        at = self.model.op
        for position, raw in enumerate(batch):
            frame: Frame = msgspec.json.decode(raw)
            if frame["type"] == "info" and frame["msg"] == "messages_expired":
                assert position == 0, f"messages_expired must come first: {batch!r}"
                self.notices[(index, at)] = frame["expired"]
                continue
            rid = frame.get("request_id")
            if rid is not None:
                stream, is_publish = self.requests[rid]
            else:
                stream, is_publish = frame["topic"], False
            target = self.received_answers if is_publish else self.received
            target.setdefault((index, stream), []).append((simplify(frame), at))
            if frame["type"] == "event":
                self.events_received += 1

    async def drain(self, index: int) -> None:
        self.drains[index].append(self.model.op)
        self.drain_clock[self.model.op] = self.model.now
        session = self.sessions[index]
        if session.queued:
            self.take(index, list(await session.next_batch()))

    async def run(self, op: Op) -> None:
        model = self.model
        match op:
            case Sub(index, topic, last_n, name):
                rid = self.request_id(topic)
                await self.handle(index, "subscribe", topic, rid, filter_name=name, last_n=last_n)
                state = model.topics[topic]
                if state is None:
                    model.expect(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                    return
                filtered = True if name is not None else None
                replay: list[Stored] = []
                if index not in state.reasons:
                    # The n newest stored messages that match and have not expired.
                    matching = [
                        stored
                        for stored in state.ring
                        if not stored.expired(model.now) and accepts(name, stored)
                    ]
                    replay = matching[-last_n:] if last_n else []
                # Otherwise already receiving (by name or a pattern): the filter is
                # replaced and nothing is replayed.
                state.add_reason(index, CONCRETE, name)
                model.expect(
                    index, topic, ack(rid, topic, state.offset, state.epoch, filtered=filtered)
                )
                for stored in replay:
                    model.expect_event(index, topic, stored)
            case Resume(index, topic, behind, epoch_ok, name):
                rid = self.request_id(topic)
                state = model.topics[topic]
                since = max(0, (state.offset if state is not None else 0) - behind)
                epoch = state.epoch if state is not None and epoch_ok else "stale"
                await self.handle(
                    index,
                    "subscribe",
                    topic,
                    rid,
                    filter_name=name,
                    since_offset=since,
                    epoch=epoch,
                )
                if state is None:
                    model.expect(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                    return
                filtered = True if name is not None else None
                recovered: bool | None = None
                expired = 0
                replay = []
                if index not in state.reasons:
                    missing = state.offset - since
                    recovered = epoch_ok and 0 <= missing <= len(state.ring)
                    if recovered and missing:
                        after = state.ring[-missing:]
                        unexpired = [s for s in after if not s.expired(model.now)]
                        expired = len(after) - len(unexpired)
                        replay = [s for s in unexpired if accepts(name, s)]
                state.add_reason(index, CONCRETE, name)
                model.expect(
                    index,
                    topic,
                    ack(
                        rid,
                        topic,
                        state.offset,
                        state.epoch,
                        recovered,
                        filtered=filtered,
                        expired=expired or None,
                    ),
                )
                for stored in replay:
                    model.expect_event(index, topic, stored)
            case Unsub(index, topic):
                rid = self.request_id(topic)
                await self.handle(index, "unsubscribe", topic, rid)
                state = model.topics[topic]
                if state is None:
                    model.expect(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                    return
                # Its patterns that match keep it receiving.
                state.drop_reason(index, CONCRETE)
                model.expect(index, topic, ack(rid, topic))
            case SubPattern(index, pattern, name):
                rid = self.request_id(pattern)
                await self.handle(index, "subscribe", pattern, rid, filter_name=name)
                filtered = True if name is not None else None
                model.expect(index, pattern, ack(rid, pattern, filtered=filtered, pattern=True))
                model.patterns[index][pattern] = name
                for topic, state in model.live().items():
                    if pattern_matches(pattern, topic):
                        state.add_reason(index, pattern, name)
            case UnsubPattern(index, pattern):
                rid = self.request_id(pattern)
                await self.handle(index, "unsubscribe", pattern, rid)
                model.expect(index, pattern, ack(rid, pattern))
                if pattern in model.patterns[index]:
                    del model.patterns[index][pattern]
                    for topic, state in model.live().items():
                        if pattern_matches(pattern, topic):
                            state.drop_reason(index, pattern)
            case Pub(index, topic, messages):
                state = model.topics[topic]
                for payload, ttl in messages:
                    rid = self.request_id(topic, is_publish=True)
                    model.published += 1
                    msg_id = f"m{model.published}"
                    message = {"id": msg_id, "payload": payload}
                    await self.handle(index, "publish", topic, rid, message=message, ttl_ms=ttl)
                    if state is None:
                        model.expect_answer(index, topic, ("error", rid, "TOPIC_NOT_FOUND"))
                        continue
                    stored = state.publish(msg_id, payload, ttl, model.now)
                    for subscriber in sorted(state.reasons):
                        if state.wants(subscriber, stored):
                            model.expect_event(subscriber, topic, stored)
                    model.expect_answer(index, topic, ack(rid, topic, state.offset))
            case Delete(topic, recreate, ttl):
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
                await self.settle()
                for subscriber in sorted(state.reasons):
                    model.expect(subscriber, topic, ("info", "topic_deleted"))
                model.topics[topic] = None
                if recreate:
                    await self.create(topic, ttl)
            case Create(topic, ttl):
                if model.topics[topic] is None:
                    await self.create(topic, ttl)
                    return
                try:
                    await self.node.create_topic(topic, ttl)
                except PubSubError as exc:
                    assert exc.code is ErrorCode.TOPIC_EXISTS
                else:
                    raise AssertionError("creating an existing topic must fail")
            case Advance(ms):
                # Everything asked so far is carried out at the time the model gave it.
                await self.settle()
                model.now += ms
            case Drain(index):
                await self.drain(index)
            case Settle():
                await self.settle()

    async def handle(
        self,
        index: int,
        kind: str,
        topic: str,
        rid: str,
        *,
        filter_name: str | None = None,
        **extra: Any,
    ) -> None:
        """Send a client frame; ``extra`` fields left at None are not sent."""
        fields: dict[str, Any] = {
            "type": kind,
            "topic": topic,
            "client_id": f"c{index}",
            "request_id": rid,
        }
        if filter_name is not None:
            fields["filter"] = FILTERS[filter_name][0]
        fields.update((name, value) for name, value in extra.items() if value is not None)
        await self.node.handle(self.sessions[index], client_frame(fields))

    async def finish(self) -> None:
        await self.settle()
        for index in range(SESSIONS):
            await self.drain(index)

        model = self.model
        left_out: Counter[tuple[int, int]] = Counter()
        for expected, received in (
            (model.frames, self.received),
            (model.answers, self.received_answers),
        ):
            for key in sorted(expected.keys() | received.keys()):
                self.compare(key, expected.get(key, []), received.get(key, []), left_out)
        assert self.notices == dict(left_out), "messages_expired notices"

        stats = await self.node.stats()
        live = model.live()
        assert sorted(stats.topics) == sorted(live)
        for name, state in live.items():
            topic_stats = stats.topics[name]
            assert topic_stats.messages == state.offset
            assert topic_stats.stored == len(state.ring)
            assert topic_stats.subscribers == len(state.reasons)
            assert topic_stats.dropped == 0
        for index, session in enumerate(self.sessions):
            receiving = {name for name, state in live.items() if index in state.reasons}
            assert set(session.topics) == receiving
            assert (session.patterns or {}).keys() == model.patterns[index].keys()
        assert stats.delivery.dropped == 0
        assert stats.delivery.delivered == self.events_received
        assert stats.delivery.expired == sum(left_out.values())

    def last_drain(self, index: int, at: int) -> int:
        """The first drain of session ``index`` once everything operation ``at`` caused
        is queued: after the first settling operation from ``at`` on."""
        settled = self.settled[bisect.bisect_left(self.settled, at)]
        drains = self.drains[index]
        return drains[bisect.bisect_left(drains, settled)]

    def compare(
        self,
        key: Key,
        expected: list[Expected],
        received: list[Received],
        left_out: Counter[tuple[int, int]],
    ) -> None:
        """Check one stream: every expected frame in order, taken by a drain that may
        take it, except events whose message expired before that drain took them."""
        index = key[0]
        position = 0

        def mismatch(problem: str) -> str:
            return (
                f"{key}: {problem}\n  expected (frame, operation, expires): {expected}"
                f"\n  received (frame, drain's operation): {received}"
            )

        for frame, at, expires in expected:
            last = self.last_drain(index, at)
            if position < len(received) and received[position][0] == frame:
                taken = received[position][1]
                assert at < taken <= last, mismatch(f"{frame} taken by drain {taken}")
                assert not expires or self.drain_clock[taken] < expires, mismatch(
                    f"{frame} taken after it expired"
                )
                position += 1
            else:
                # Left out: only an event that expired before the last drain that can
                # take it (an earlier drain would have written it); that drain's
                # messages_expired notice counts it.
                assert expires and expires <= self.drain_clock[last], mismatch(
                    f"{frame} missing at {position}"
                )
                left_out[(index, last)] += 1
        assert position == len(received), mismatch(f"unexpected {received[position:]}")


async def run_ops(ops: list[Op], model: Model, inbox_size: int, ttls: tuple[int, ...]) -> None:
    broker_settings = Settings(
        max_queue_size=1_000_000,
        max_messages_per_topic=model.ring_size,
        topic_inbox_size=inbox_size,
    )
    async with open_memory_node(broker_settings) as node:
        runner = Runner(node, model)
        for topic, ttl in zip(TOPICS, ttls, strict=True):
            await runner.create(topic, ttl)
        for index, op in enumerate(ops):
            model.op = index
            await runner.run(op)
        model.op = len(ops)
        await runner.finish()


@settings(max_examples=100, deadline=None)
@example(
    # A pattern unsubscribed before the topic's actor took its attach in (one read
    # with both frames does it): the session must not receive the topic.
    ops=[SubPattern(1, "a.*", None), UnsubPattern(1, "a.*"), Pub(0, "a.x", (({}, None),))],
    ring_size=1,
    inbox_size=1024,
    ttls=(0, 0, 0),
)
@given(
    ops=st.lists(ops_st, min_size=30, max_size=120),
    ring_size=st.sampled_from([1, 2, 4, 100]),
    inbox_size=st.sampled_from([1, 4, 1024]),
    ttls=st.tuples(*[topic_ttl_st] * len(TOPICS)),
)
def test_every_session_gets_exactly_what_it_subscribed_to(
    ops: list[Op], ring_size: int, inbox_size: int, ttls: tuple[int, ...]
) -> None:
    model = Model(ring_size=ring_size)
    # Every expiry check reads the clock through the module: the model's clock.
    with mock.patch.object(timestamps, "now_ms", model.clock):
        trio.run(run_ops, ops, model, inbox_size, ttls)
