"""Tests of the Redis engine against a real redis-server, through nodes as a client sees them.

Each test opens one or more nodes (``open_node``) on :class:`RedisEngine`\\ s that share a
Redis and a key prefix (``redis_prefix``), as the workers of a cluster do, and talks to them
through sessions: requests go in with :meth:`Node.handle`, frames come out of the session's
outbox (:class:`Client`). What is asserted is what a WebSocket client or an operator would
notice: acks, offsets, epochs, replays, events, errors, ``topic_deleted``,
``messages_dropped`` and the REST figures (``topic()``/``topics()``).

Rules, since these tests do real network I/O:

- No virtual clock (``autojump_clock`` would fire the engine's Redis timeouts at once).
- Nothing waits with a sleep for our own tasks: :meth:`Client.until` parks on the session's
  outbox (:meth:`Session.next_batch`) until the frames it needs arrived. ``trio.fail_after``
  only guards against a hang; no test asserts how long anything took. The one sleep is a
  scenario (a subscriber idle for longer than ``LINGER``), not a synchronisation.
- The only polls (:func:`eventually`) wait for things outside this process or on the
  engine's own fixed period: a redis-server process coming back, glide reconnecting, the
  subscriber-count reports (``REPORT_EVERY``). Each says why it polls.
- A pub/sub connection is broken for sure with ``CLIENT KILL``, and kept broken while
  needed by lowering ``maxclients`` (through :class:`Admin`'s connection, opened first).
- "Then nothing more" is checked with a sentinel: one more message is published, and the
  next frame must be exactly its event.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import msgspec
import pytest
import trio
from conftest import RedisServer, client_frame

import pubsub
from pubsub import Settings
from pubsub._core.node import Node, open_node
from pubsub._engines.redis import AUDIT_EVERY, HEARTBEAT, LINGER, REPORT_EVERY, RedisEngine
from pubsub._protocol.frames import Message
from pubsub._protocol.timestamps import now_ms

Frame = dict[str, Any]

#: Guard for what happens within milliseconds on a local Redis (never a timing assertion).
WAIT: Final = 10.0
#: Guard for what waits for glide to reconnect (its backoff grows while Redis is down).
RECONNECT: Final = 30.0
#: Period of the few polls of external state (see :func:`eventually`).
POLL: Final = 0.05


# ------------------------------------------------------------------ nodes on Redis


def engine(
    redis: RedisServer,
    prefix: str,
    node_id: str,
    *,
    max_topics: int = 100,
    max_messages: int = 100,
    timeout: float = 1.0,
) -> RedisEngine:
    return RedisEngine(
        url=redis.url,
        prefix=prefix,
        node_id=node_id,
        max_topics=max_topics,
        max_messages=max_messages,
        timeout=timeout,
    )


@asynccontextmanager
async def cluster(
    redis: RedisServer,
    prefix: str,
    *node_ids: str,
    max_topics: int = 100,
    max_messages: int = 100,
    redis_timeout: float = 1.0,
) -> AsyncIterator[list[Node]]:
    """One node per id, each with its own engine on the same Redis and prefix."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_node(
                    Settings(node_id=node_id),
                    engine(
                        redis,
                        prefix,
                        node_id,
                        max_topics=max_topics,
                        max_messages=max_messages,
                        timeout=redis_timeout,
                    ),
                )
            )
            for node_id in node_ids
        ]
        yield nodes


async def eventually(check: Callable[[], Awaitable[bool]], guard: float = RECONNECT) -> None:
    """Poll ``check`` until it holds.

    Only for state that changes outside this test's control, where there is no event to
    wait on: a redis-server process coming back and glide reconnecting to it, or the
    engine's periodic subscriber-count report. Never for our own tasks.
    """
    with trio.fail_after(guard):
        for _ in itertools.count():
            if await check():
                return
            await trio.sleep(POLL)


def is_available(node: Node) -> bool:
    """Whether the node's engine says Redis can be reached (``/health``)."""
    return node.engine.available


def available(*nodes: Node) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        await trio.lowlevel.checkpoint()
        return all(map(is_available, nodes))

    return check


# ------------------------------------------------------------------ a client's view


class Client:
    """A session on a node as its WebSocket client sees it: requests in, frames out.

    Attributes:
        frames: Every frame the session was sent so far, decoded, in order.
    """

    _request_ids: Final = itertools.count(1)

    def __init__(self, node: Node) -> None:
        self.node = node
        self.session = node.open_session()
        self.frames: list[Frame] = []

    async def send(self, fields: dict[str, Any]) -> None:
        """One request, answered as the WebSocket transport answers it: an error the
        node raises (``UNAVAILABLE`` while it cannot ask Redis) becomes an error frame."""
        frame = client_frame({"client_id": "test", **fields})
        try:
            await self.node.handle(self.session, frame)
        except pubsub.PubSubError as exc:
            self.session.send_error(exc, fields.get("request_id"))

    async def until(
        self, predicate: Callable[[list[Frame]], bool], guard: float = WAIT
    ) -> list[Frame]:
        """Take what the session is sent until ``predicate(self.frames)`` holds
        (``guard``: seconds before giving up, against a hang)."""
        with trio.fail_after(guard):
            while not predicate(self.frames):
                batch = await self.session.next_batch()  # parks until frames are queued
                assert batch or self.session.is_open, "the session was closed"
                self.frames.extend(msgspec.json.decode(frame) for frame in batch)
        return self.frames

    async def request(self, fields: dict[str, Any], guard: float = WAIT) -> Frame:
        """Send a request with a new ``request_id``; the ack or error answering it."""
        request_id = f"r{next(self._request_ids)}"
        await self.send({**fields, "request_id": request_id})
        frames = await self.until(lambda fs: answer_to(fs, request_id) is not None, guard)
        found = answer_to(frames, request_id)
        assert found is not None
        return found

    async def subscribe(self, topic: str, **extra: Any) -> Frame:
        return await self.request({"type": "subscribe", "topic": topic, **extra})

    async def publish(self, topic: str, numbers: Iterable[int]) -> list[Frame]:
        """Publish ``m<n>`` (payload ``{"n": n}``) for each ``n``, back to back (the topic
        actor stores a run of them with one engine call); the answers, in order."""
        request_ids = []
        for number in numbers:
            request_id = f"r{next(self._request_ids)}"
            request_ids.append(request_id)
            await self.send(
                {
                    "type": "publish",
                    "topic": topic,
                    "message": {"id": f"m{number}", "payload": {"n": number}},
                    "request_id": request_id,
                }
            )
        wanted = set(request_ids)
        frames = await self.until(lambda fs: wanted <= {f.get("request_id") for f in fs})
        answers = {f["request_id"]: f for f in frames if f.get("request_id") in wanted}
        return [answers[request_id] for request_id in request_ids]

    def since(self, mark: int) -> list[Frame]:
        return self.frames[mark:]


def answer_to(frames: list[Frame], request_id: str) -> Frame | None:
    return next((f for f in frames if f.get("request_id") == request_id), None)


def events(frames: list[Frame]) -> list[Frame]:
    return [frame for frame in frames if frame["type"] == "event"]


def offsets(frames: list[Frame]) -> list[int]:
    return [frame["offset"] for frame in events(frames)]


def ids(frames: list[Frame]) -> list[str]:
    return [frame["message"]["id"] for frame in events(frames)]


def infos(frames: list[Frame]) -> list[Frame]:
    return [frame for frame in frames if frame["type"] == "info"]


def ack_offsets(frames: list[Frame]) -> list[int]:
    assert all(frame["type"] == "ack" and frame["status"] == "ok" for frame in frames), frames
    return [frame["offset"] for frame in frames]


def error_code(frame: Frame) -> str:
    assert frame["type"] == "error", frame
    code: str = frame["error"]["code"]
    return code


def has_offset(offset: int) -> Callable[[list[Frame]], bool]:
    return lambda frames: offset in offsets(frames)


async def nothing_more(subscriber: Client, publisher: Client, topic: str, number: int) -> None:
    """Publish ``m<number>`` (the next offset): the subscriber's very next frame is its event,
    so nothing else was on its way (no late duplicate, no stray notice)."""
    mark = len(subscriber.frames)
    assert ack_offsets(await publisher.publish(topic, [number])) == [number]
    await subscriber.until(has_offset(number))
    new = subscriber.since(mark)
    assert [(f["type"], f.get("offset")) for f in new] == [("event", number)]
    assert new[0]["message"] == {"id": f"m{number}", "payload": {"n": number}}


def message(number: int) -> Message:
    return Message(id=f"m{number}", payload=msgspec.Raw(b'{"n":%d}' % number))


# ------------------------------------------------------- an operator's Redis connection


class Admin:
    """One plain RESP connection to the Redis under test, for what only an operator does
    (``CLIENT KILL``, ``CONFIG SET``). Opened up front, it stays usable while
    ``maxclients`` refuses new connections."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def command(self, *args: str) -> str | int:
        with trio.fail_after(WAIT):
            parts = [b"*%d\r\n" % len(args)]
            for arg in args:
                data = arg.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
            await self._stream.send_all(b"".join(parts))
            line = await self._read(lambda buffer: buffer.find(b"\r\n"))
            kind, rest = line[:1], line[1:]
            if kind == b"+":
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                if size < 0:
                    return ""
                body = await self._read(lambda buffer: size if len(buffer) >= size + 2 else -1)
                return body.decode()
            raise AssertionError(f"Redis answered {line!r} to {args}")

    async def _read(self, end: Callable[[bytes], int]) -> bytes:
        """Read until ``end(buffer)`` finds where the reply ends (followed by CRLF)."""
        while (stop := end(self._buffer)) < 0:
            chunk = await self._stream.receive_some(65536)
            assert chunk, "Redis closed the admin connection"
            self._buffer += chunk
        data, self._buffer = self._buffer[:stop], self._buffer[stop + 2 :]
        return data

    async def clients(self) -> list[dict[str, str]]:
        """``CLIENT LIST``, one dict per connection."""
        listing = await self.command("CLIENT", "LIST")
        assert isinstance(listing, str)
        return [
            dict(field.split("=", 1) for field in line.split(" ") if "=" in field)
            for line in listing.splitlines()
            if line
        ]

    async def pubsub_connections(self, node_id: str) -> list[dict[str, str]]:
        """The connections of node ``node_id``'s engine that are in pub/sub mode."""
        return [
            client
            for client in await self.clients()
            if client.get("name") == f"trio-pubsub:{node_id}" and "P" in client.get("flags", "")
        ]


@asynccontextmanager
async def open_admin(redis: RedisServer) -> AsyncIterator[Admin]:
    stream = await trio.open_tcp_stream("127.0.0.1", redis.port)
    async with stream:
        yield Admin(stream)


# -------------------------------------------- the scripts, through one engine and node


async def test_topics_are_registered_in_redis_with_their_fields(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A") as (node,):
        before = now_ms()
        created = await node.create_topic("orders")
        await node.create_topic("alerts")
        await node.create_topic("metrics.eu")
        after = now_ms()
        assert created.name == "orders"
        assert before <= created.created_at <= after
        assert (created.offset, created.stored) == (0, 0)

        publisher = Client(node)
        assert ack_offsets(await publisher.publish("orders", range(1, 4))) == [1, 2, 3]

        info = await node.topic("orders")
        assert (info.name, info.offset, info.stored, info.subscribers) == ("orders", 3, 3, 0)
        assert info.epoch == created.epoch and isinstance(info.epoch, str) and info.epoch
        assert info.created_at == created.created_at

        listed = await node.topics()
        assert [t.name for t in listed] == ["alerts", "metrics.eu", "orders"]
        assert listed[2] == info
        assert [(t.offset, t.stored) for t in listed[:2]] == [(0, 0), (0, 0)]
        # Every topic is an incarnation of its own.
        assert len({t.epoch for t in listed}) == 3


async def test_creating_an_existing_topic_is_topic_exists(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        created = await a.create_topic("orders")
        with pytest.raises(pubsub.TopicExists):
            await a.create_topic("orders")
        with pytest.raises(pubsub.TopicExists):
            await b.create_topic("orders")  # the registry is cluster-wide
        assert (await b.topic("orders")).epoch == created.epoch


async def test_max_topics_counts_the_topics_of_every_node(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B", max_topics=3) as (a, b):
        await a.create_topic("t1")
        await b.create_topic("t2")
        await a.create_topic("t3")
        for node in (a, b):
            with pytest.raises(pubsub.LimitExceeded):
                await node.create_topic("t4")
        assert [t.name for t in await b.topics()] == ["t1", "t2", "t3"]
        # A deleted topic frees its place, whichever node deleted it.
        await b.delete_topic("t1")
        await a.create_topic("t4")
        assert [t.name for t in await a.topics()] == ["t2", "t3", "t4"]


async def test_an_unknown_topic_is_topic_not_found(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A") as (node,):
        engine = node.engine
        with pytest.raises(pubsub.TopicNotFound):
            await engine.publish("nope", [message(1)])
        with pytest.raises(pubsub.TopicNotFound):
            await engine.history("nope", last_n=5)
        with pytest.raises(pubsub.TopicNotFound):
            await engine.history("nope", since_offset=0, epoch="x")
        with pytest.raises(pubsub.TopicNotFound):
            await engine.delete_topic("nope")
        with pytest.raises(pubsub.TopicNotFound):
            await engine.topic("nope")
        with pytest.raises(pubsub.TopicNotFound):
            await node.delete_topic("nope")
        assert await node.topics() == []

        client = Client(node)
        assert error_code(await client.request(publish_fields("nope", 1))) == "TOPIC_NOT_FOUND"
        assert error_code(await client.subscribe("nope")) == "TOPIC_NOT_FOUND"


def publish_fields(topic: str, number: int) -> dict[str, Any]:
    return {
        "type": "publish",
        "topic": topic,
        "message": {"id": f"m{number}", "payload": {"n": number}},
    }


async def test_publish_gives_offsets_from_one_in_batches_and_acks_carry_them(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        created = await a.create_topic("orders")
        first = await a.engine.publish("orders", [message(1), message(2), message(3)])
        assert first.first_offset == 1
        assert first.epoch == created.epoch
        second = await b.engine.publish("orders", [message(4)])
        assert second.first_offset == 4
        assert second.epoch == created.epoch

        # Through sessions on both nodes: one offset sequence for the topic.
        on_a, on_b = Client(a), Client(b)
        assert ack_offsets(await on_a.publish("orders", range(5, 25))) == list(range(5, 25))
        assert ack_offsets(await on_b.publish("orders", range(25, 30))) == list(range(25, 30))
        assert all(ack["topic"] == "orders" for ack in on_a.frames)

        history = await b.engine.history("orders", last_n=100)
        assert [p.offset for p in history.publications] == list(range(1, 30))
        assert [p.message.id for p in history.publications] == [f"m{n}" for n in range(1, 30)]
        # One batch, one publish time; acks carry it.
        assert len({p.ts for p in history.publications[:3]}) == 1
        assert history.publications[0].ts == first.ts
        assert (await a.topic("orders")).offset == 29


async def test_history_last_n_is_oldest_first_and_bounded_by_the_stream(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", max_messages=10) as (node,):
        await node.create_topic("orders")
        empty = await node.engine.history("orders", last_n=5)
        assert (empty.offset, empty.recovered, empty.publications) == (0, None, [])

        await Client(node).publish("orders", range(1, 13))
        info = await node.topic("orders")
        assert (info.offset, info.stored) == (12, 10)  # the stream was trimmed

        three = await node.engine.history("orders", last_n=3)
        assert [p.offset for p in three.publications] == [10, 11, 12]
        assert [p.message.id for p in three.publications] == ["m10", "m11", "m12"]
        assert [msgspec.json.decode(p.message.payload) for p in three.publications] == [
            {"n": 10},
            {"n": 11},
            {"n": 12},
        ]
        assert (three.offset, three.epoch, three.recovered) == (12, info.epoch, None)
        everything = await node.engine.history("orders", last_n=1000)
        assert [p.offset for p in everything.publications] == list(range(3, 13))
        assert (await node.engine.history("orders", last_n=0)).publications == []

        # A subscriber sees the same: ack with the newest offset, then the stored tail.
        subscriber = Client(node)
        ack = await subscriber.subscribe("orders", last_n=50)
        assert (ack["offset"], ack["epoch"]) == (12, info.epoch)
        frames = await subscriber.until(has_offset(12))
        assert offsets(frames) == list(range(3, 13))


async def test_history_since_offset_recovers_everything_or_nothing(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", max_messages=10) as (node,):
        await node.create_topic("orders")
        await Client(node).publish("orders", range(1, 13))  # the stream holds 3..12
        epoch = (await node.topic("orders")).epoch
        history = node.engine.history

        five = await history("orders", since_offset=5, epoch=epoch)
        assert (five.recovered, five.offset, five.epoch) == (True, 12, epoch)
        assert [p.offset for p in five.publications] == list(range(6, 13))
        assert [p.message.id for p in five.publications] == [f"m{n}" for n in range(6, 13)]
        # The oldest stored message is enough; none missing is recovered too.
        oldest = await history("orders", since_offset=2, epoch=epoch)
        assert oldest.recovered is True
        assert [p.offset for p in oldest.publications] == list(range(3, 13))
        current = await history("orders", since_offset=12, epoch=epoch)
        assert (current.recovered, current.publications) == (True, [])

        # Never a partial replay.
        for since, asked_epoch in [
            (5, epoch + "x"),  # another incarnation
            (5, "1.000000-000000000000"),
            (1, epoch),  # offset 2 is no longer stored
            (0, epoch),
            (13, epoch),  # the future
        ]:
            failed = await history("orders", since_offset=since, epoch=asked_epoch)
            assert (failed.recovered, failed.publications) == (False, []), (since, asked_epoch)
            assert (failed.offset, failed.epoch) == (12, epoch)

        # What a resuming client sees: recovered, then exactly the missed messages.
        client = Client(node)
        ack = await client.subscribe("orders", since_offset=9, epoch=epoch)
        assert (ack["recovered"], ack["offset"], ack["epoch"]) == (True, 12, epoch)
        assert offsets(await client.until(has_offset(12))) == [10, 11, 12]
        late = Client(node)
        ack = await late.subscribe("orders", since_offset=1, epoch=epoch)
        assert (ack["recovered"], ack["offset"]) == (False, 12)
        await nothing_more(late, Client(node), "orders", 13)


async def test_a_recreated_topic_has_a_new_epoch_and_starts_at_offset_one(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        old = await a.create_topic("orders")
        publisher = Client(b)
        await publisher.publish("orders", range(1, 6))
        await a.delete_topic("orders")
        with pytest.raises(pubsub.TopicNotFound):
            await b.topic("orders")
        assert error_code(await publisher.request(publish_fields("orders", 0))) == (
            "TOPIC_NOT_FOUND"
        )

        new = await b.create_topic("orders")
        assert new.epoch != old.epoch
        assert ack_offsets(await publisher.publish("orders", [6])) == [1]
        info = await a.topic("orders")
        assert (info.epoch, info.offset, info.stored) == (new.epoch, 1, 1)
        history = await a.engine.history("orders", last_n=10)
        assert [p.message.id for p in history.publications] == ["m6"]
        stale = await a.engine.history("orders", since_offset=0, epoch=old.epoch)
        assert (stale.recovered, stale.publications) == (False, [])


async def test_the_node_that_deleted_a_topic_serves_it_again_once_re_created(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        publisher = Client(a)
        await publisher.publish("orders", [1])
        await a.delete_topic("orders")
        await b.create_topic("orders")

        assert (await a.topic("orders")).offset == 0  # the topic exists again...
        # ...and node A serves it: a publish and a subscribe through A.
        assert ack_offsets(await publisher.publish("orders", [2])) == [1]
        subscriber = Client(a)
        ack = await subscriber.subscribe("orders", last_n=1)
        assert ack["type"] == "ack", ack
        assert ack["offset"] == 1


# ------------------------------------------------------------------------ two nodes


async def test_a_subscriber_on_another_node_gets_every_message_once_in_order(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        subscriber = Client(b)
        ack = await subscriber.subscribe("orders")
        assert (ack["offset"], ack["epoch"]) == (0, (await a.topic("orders")).epoch)

        publisher = Client(a)
        assert ack_offsets(await publisher.publish("orders", range(1, 201))) == list(range(1, 201))
        frames = await subscriber.until(has_offset(200))
        assert frames[0]["type"] == "ack"
        assert frames[1:] == events(frames[1:])
        assert offsets(frames) == list(range(1, 201))
        assert ids(frames) == [f"m{n}" for n in range(1, 201)]
        assert [f["message"]["payload"] for f in events(frames)] == [
            {"n": n} for n in range(1, 201)
        ]
        assert all(f["topic"] == "orders" for f in frames)
        await nothing_more(subscriber, publisher, "orders", 201)


async def test_a_subscriber_idle_longer_than_linger_keeps_receiving(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A node stops following a topic LINGER seconds after its *last* subscriber left;
    a subscriber that merely waits for its first message must not be dropped."""
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        first, second = Client(b), Client(b)
        await first.subscribe("orders")
        await second.subscribe("orders")
        # The scenario, not a synchronisation: subscribers that wait a while (well past
        # LINGER) for the first message. Nothing is expected to happen meanwhile.
        await trio.sleep(2 * LINGER + 0.5)
        publisher = Client(a)
        await publisher.publish("orders", [1, 2])
        for subscriber in (first, second):
            assert offsets(await subscriber.until(has_offset(2))) == [1, 2]


async def test_subscribe_during_a_stream_replays_then_goes_live_without_gap_or_duplicate(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    total, burst = 300, 10
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        publisher, subscriber = Client(a), Client(b)
        halfway, acked = trio.Event(), trio.Event()

        async def stream() -> None:
            for start in range(1, total + 1, burst):
                numbers = range(start, start + burst)
                assert ack_offsets(await publisher.publish("orders", numbers)) == list(numbers)
                if numbers[-1] == total // 2:
                    halfway.set()
                if numbers[-1] == total - 5 * burst:
                    await acked.wait()  # so that some events are surely live

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream)
            await halfway.wait()
            # Sent while the publisher goes on: the ack may land anywhere in 150..250.
            ack = await subscriber.subscribe("orders", last_n=50)
            acked.set()
        head = ack["offset"]
        assert total // 2 <= head <= total - 5 * burst

        frames = await subscriber.until(has_offset(total))
        assert frames[0] is ack
        assert frames[1:] == events(frames[1:])  # no messages_dropped, nothing else
        # The replay is the 50 newest up to the ack's offset, then live events follow:
        # contiguous to the end, no gap, no duplicate.
        assert offsets(frames) == list(range(head - 49, total + 1))
        assert ids(frames) == [f"m{n}" for n in range(head - 49, total + 1)]
        await nothing_more(subscriber, publisher, "orders", total + 1)


async def test_resume_on_another_node_replays_exactly_the_missed_messages(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        publisher = Client(a)
        first = Client(a)
        ack = await first.subscribe("orders")
        epoch = ack["epoch"]
        await publisher.publish("orders", range(1, 11))
        seen = await first.until(has_offset(10))
        last_seen = offsets(seen)[-1]
        assert last_seen == 10
        a.close_session(first.session)  # the client goes away...

        await publisher.publish("orders", range(11, 21))  # ...and misses these

        resumed = Client(b)  # ...and comes back through another node
        ack = await resumed.subscribe("orders", since_offset=last_seen, epoch=epoch)
        assert (ack["recovered"], ack["offset"], ack["epoch"]) == (True, 20, epoch)
        await publisher.publish("orders", range(21, 26))
        frames = await resumed.until(has_offset(25))
        assert frames[1:] == events(frames[1:])
        assert offsets(frames) == list(range(11, 26))
        assert ids(frames) == [f"m{n}" for n in range(11, 26)]
        await nothing_more(resumed, publisher, "orders", 26)


async def test_a_client_that_comes_back_to_the_same_node_at_once_resumes_without_gap(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Within LINGER of its last subscriber leaving, a node still follows the topic: the
    next subscribe continues that feed instead of starting a new one."""
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        publisher = Client(a)
        first = Client(b)
        epoch = (await first.subscribe("orders"))["epoch"]
        await publisher.publish("orders", range(1, 6))
        assert offsets(await first.until(has_offset(5))) == [1, 2, 3, 4, 5]
        b.close_session(first.session)

        await publisher.publish("orders", range(6, 9))
        again = Client(b)
        ack = await again.subscribe("orders", since_offset=5, epoch=epoch)
        assert (ack["recovered"], ack["offset"]) == (True, 8)
        await publisher.publish("orders", range(9, 12))
        frames = await again.until(has_offset(11))
        assert frames[1:] == events(frames[1:])
        assert offsets(frames) == list(range(6, 12))
        await nothing_more(again, publisher, "orders", 12)


async def test_a_delete_through_one_node_reaches_every_node_after_earlier_messages(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    total = 50
    async with cluster(redis_server, redis_prefix, "A", "B", "C") as (a, b, c):
        await a.create_topic("orders")
        subscriber = Client(b)
        await subscriber.subscribe("orders")
        # C publishes (so it holds the topic's actor) but has no subscriber.
        on_c = Client(c)
        assert ack_offsets(await on_c.publish("orders", [1])) == [1]

        publisher = Client(a)
        for number in range(2, total + 1):  # queued at A's actor before the delete
            await publisher.send({**publish_fields("orders", number), "request_id": number})
        await a.delete_topic("orders")
        acks = await publisher.until(lambda fs: len(fs) == total - 1)
        assert ack_offsets(acks) == list(range(2, total + 1))

        frames = await subscriber.until(lambda fs: bool(infos(fs)))
        assert offsets(frames) == list(range(1, total + 1))
        assert [(f["type"], f.get("msg"), f.get("topic")) for f in frames[-1:]] == [
            ("info", "topic_deleted", "orders")
        ]
        assert frames[1:-1] == events(frames)
        assert "orders" not in subscriber.session.topics

        # C never had a subscriber: it still learns of the delete.
        answer = await on_c.request(publish_fields("orders", 99))
        assert error_code(answer) == "TOPIC_NOT_FOUND"
        with pytest.raises(pubsub.TopicNotFound):
            await c.delete_topic("orders")

        # Re-created through A: C publishes to the new topic, from offset 1.
        await a.create_topic("orders")
        fresh = Client(b)
        await fresh.subscribe("orders")
        assert ack_offsets(await on_c.publish("orders", [100])) == [1]
        assert offsets(await fresh.until(has_offset(1))) == [1]
        # The old subscription ended with topic_deleted: its next frame is nothing old.
        await nothing_more(fresh, on_c, "orders", 2)
        assert subscriber.session.queued == 0


# ------------------------------------------------------------ a broken pub/sub feed


def feed_is_back(
    admin: Admin, node_id: str, killed: str | None = None, channels: int = 2
) -> Callable[[], Awaitable[bool]]:
    """Whether node ``node_id``'s pub/sub connection (not the ``killed`` one) is there with
    its ``channels`` (control, and a topic's). glide reconnects it on its own schedule."""

    async def check() -> bool:
        back = await admin.pubsub_connections(node_id)
        return bool(back) and back[0]["id"] != killed and back[0]["sub"] == str(channels)

    return check


async def test_a_killed_pubsub_connection_loses_no_acknowledged_message(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    total, burst = 300, 10
    async with (
        cluster(restartable_redis, redis_prefix, "A", "B", max_messages=1000) as (a, b),
        open_admin(restartable_redis) as admin,
    ):
        await a.create_topic("orders")
        subscriber, publisher = Client(b), Client(a)
        await subscriber.subscribe("orders")
        halfway, killed, parked, back = trio.Event(), trio.Event(), trio.Event(), trio.Event()

        async def stream() -> None:
            for start in range(1, total + 1, burst):
                numbers = range(start, start + burst)
                assert ack_offsets(await publisher.publish("orders", numbers)) == list(numbers)
                if numbers[-1] == 100:
                    halfway.set()
                elif numbers[-1] == 150:
                    await killed.wait()  # so that 151..200 surely go while B's feed is away
                elif numbers[-1] == 200:
                    parked.set()
                    # The rest once B's feed is back: its first message there shows B
                    # the gap, which B fills from the stream.
                    await back.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream)
            await halfway.wait()
            # In the middle of the stream every pub/sub connection goes, B's among them,
            # and cannot come back (maxclients) until the publisher is at 200.
            [feed] = await admin.pubsub_connections("B")
            others = len(await admin.clients()) - len(await admin.pubsub_connections("A"))
            assert await admin.command("CONFIG", "SET", "maxclients", str(others - 1)) == "OK"
            count = await admin.command("CLIENT", "KILL", "TYPE", "pubsub")
            assert isinstance(count, int) and count >= 1
            assert feed["id"] not in {c["id"] for c in await admin.clients()}
            killed.set()
            await parked.wait()
            assert await admin.command("CONFIG", "SET", "maxclients", "10000") == "OK"
            await eventually(feed_is_back(admin, "B", feed["id"]))  # glide's own schedule
            back.set()

        # B's feed repaired what it missed from the stream: every acknowledged message
        # exactly once, in order, and no messages_dropped.
        frames = await subscriber.until(has_offset(total))
        assert frames[1:] == events(frames[1:])
        assert offsets(frames) == list(range(1, total + 1))
        assert ids(frames) == [f"m{n}" for n in range(1, total + 1)]
        await nothing_more(subscriber, publisher, "orders", total + 1)


async def test_messages_missed_while_the_feed_reconnects_arrive_without_a_later_publish(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    async with (
        cluster(restartable_redis, redis_prefix, "A", "B") as (a, b),
        open_admin(restartable_redis) as admin,
    ):
        await a.create_topic("orders")
        subscriber, publisher = Client(b), Client(a)
        await subscriber.subscribe("orders")
        await publisher.publish("orders", range(1, 4))
        await subscriber.until(has_offset(3))

        # B's pub/sub connection goes and cannot come back (maxclients) while A publishes.
        [feed] = await admin.pubsub_connections("B")
        connections = len(await admin.clients())
        assert await admin.command("CONFIG", "SET", "maxclients", str(connections - 1)) == "OK"
        assert await admin.command("CLIENT", "KILL", "ID", feed["id"]) == 1
        assert ack_offsets(await publisher.publish("orders", range(4, 14))) == list(range(4, 14))
        assert await admin.command("CONFIG", "SET", "maxclients", "10000") == "OK"
        await eventually(feed_is_back(admin, "B", feed["id"]))

        # The topic then goes quiet: the engine must still notice what its feed missed
        # (no heartbeat may have been lost: the audit of the followed topics' offsets,
        # every AUDIT_EVERY seconds, notices).
        frames = await subscriber.until(has_offset(13), guard=4 * AUDIT_EVERY + 10 * HEARTBEAT)
        assert offsets(frames) == list(range(1, 14))
        assert frames[1:] == events(frames[1:])


async def test_messages_the_stream_no_longer_holds_are_reported_as_dropped(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    """B's pub/sub connection is killed and kept from coming back (``maxclients``) while
    A publishes 20 messages into a stream of 5: B cannot get 15 or more of them, and says so."""
    async with (
        cluster(restartable_redis, redis_prefix, "A", "B", max_messages=5) as (a, b),
        open_admin(restartable_redis) as admin,
    ):
        await a.create_topic("orders")
        subscriber, publisher = Client(b), Client(a)
        await subscriber.subscribe("orders")
        await publisher.publish("orders", range(1, 4))
        await subscriber.until(has_offset(3))
        mark = len(subscriber.frames)

        [feed] = await admin.pubsub_connections("B")
        connections = len(await admin.clients())
        assert await admin.command("CONFIG", "SET", "maxclients", str(connections - 1)) == "OK"
        assert await admin.command("CLIENT", "KILL", "ID", feed["id"]) == 1
        assert ack_offsets(await publisher.publish("orders", range(4, 24))) == list(range(4, 24))
        assert await admin.command("CONFIG", "SET", "maxclients", "10000") == "OK"

        await eventually(feed_is_back(admin, "B", feed["id"]))
        assert ack_offsets(await publisher.publish("orders", [24])) == [24]
        await subscriber.until(has_offset(24), guard=RECONNECT)
        assert ack_offsets(await publisher.publish("orders", [25])) == [25]
        await subscriber.until(has_offset(25))

        new = subscriber.since(mark)
        [notice] = infos(new)
        assert notice["msg"] == "messages_dropped"
        dropped = notice["dropped"]
        assert new[0] is notice  # before the first event after the jump
        received = offsets(new)
        # Only what the stream held when B caught up was recoverable: 5 of 4..23.
        assert dropped >= 15
        assert received == list(range(4 + dropped, 26))
        assert len(offsets(subscriber.frames)) + dropped == 25
        await nothing_more(subscriber, publisher, "orders", 26)


# ------------------------------------------------------------------ Redis outages


async def test_while_redis_is_down_requests_are_unavailable_and_nothing_is_lost(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    redis = restartable_redis
    async with cluster(redis, redis_prefix, "A", "B", redis_timeout=0.5) as (a, b):
        await a.create_topic("orders")
        await a.create_topic("spare")
        subscriber, publisher = Client(b), Client(a)
        ack = await subscriber.subscribe("orders")
        old_epoch = ack["epoch"]
        await publisher.publish("orders", range(1, 4))
        await subscriber.until(has_offset(3))
        assert is_available(a) and is_available(b)

        redis.kill()  # SIGKILL: as a crash would

        answer = await publisher.request(publish_fields("orders", 99))
        assert error_code(answer) == "UNAVAILABLE"
        assert not is_available(a)
        # B follows the topic already (its actor asks Redis for the history)...
        assert error_code(await Client(b).subscribe("orders")) == "UNAVAILABLE"
        # ...A has no actor for "spare" yet (it asks Redis whether the topic exists).
        assert error_code(await Client(a).subscribe("spare")) == "UNAVAILABLE"
        with pytest.raises(pubsub.Unavailable):
            await a.create_topic("more")
        with pytest.raises(pubsub.Unavailable):
            await b.delete_topic("orders")
        with pytest.raises(pubsub.Unavailable):
            await a.delete_topic("spare")
        assert not is_available(b)
        assert subscriber.session.is_open and publisher.session.is_open

        redis.start()  # persisting: nothing is lost
        # Each engine notices on its own (its next check, once glide reconnected).
        await eventually(available(a, b))
        async with open_admin(redis) as admin:
            # Publish once B's feed is back, so this test is about the outage alone
            # (a feed that comes back later is test_messages_missed_while_the_feed_...).
            await eventually(feed_is_back(admin, "B"))
            # A follows no topic (its control channel only): until that connection
            # is back, a subscribe through A answers UNAVAILABLE.
            await eventually(feed_is_back(admin, "A", channels=1))
        assert ack_offsets(await publisher.publish("orders", [4, 5])) == [4, 5]
        frames = await subscriber.until(has_offset(5), guard=RECONNECT)
        # The subscription outlived the outage: no topic_deleted, no drop, no duplicate.
        assert frames[1:] == events(frames[1:])
        assert offsets(frames) == [1, 2, 3, 4, 5]
        info = await b.topic("orders")
        assert (info.offset, info.stored) == (5, 5)
        assert [t.name for t in await a.topics()] == ["orders", "spare"]

        # Redis restarted, so it may have lost data: a resume with the old epoch fails
        # closed; one with the new epoch works.
        resumed = Client(a)
        ack = await resumed.subscribe("orders", since_offset=3, epoch=old_epoch)
        assert (ack["recovered"], ack["offset"]) == (False, 5)
        assert ack["epoch"] != old_epoch and ack["epoch"] == info.epoch
        again = Client(b)
        ack = await again.subscribe("orders", since_offset=3, epoch=info.epoch)
        assert ack["recovered"] is True
        assert offsets(await again.until(has_offset(5))) == [4, 5]
        await nothing_more(subscriber, publisher, "orders", 6)


async def test_a_redis_restart_that_lost_the_data_deletes_the_topics(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    redis = restartable_redis
    async with cluster(redis, redis_prefix, "A", "B", redis_timeout=0.5) as (a, b):
        old = await a.create_topic("orders")
        subscriber, publisher = Client(b), Client(a)
        await subscriber.subscribe("orders")
        await publisher.publish("orders", [1, 2])
        await subscriber.until(has_offset(2))

        redis.persist = False
        redis.restart()  # an empty Redis

        frames = await subscriber.until(lambda fs: bool(infos(fs)), guard=RECONNECT)
        assert offsets(frames) == [1, 2]
        assert [(f["msg"], f["topic"]) for f in infos(frames)] == [("topic_deleted", "orders")]

        async def a_answers() -> bool:
            # A's connection to the new Redis comes back on glide's backoff: poll it.
            try:
                return await a.topics() == []
            except pubsub.Unavailable:
                return False

        await eventually(a_answers)
        assert error_code(await publisher.request(publish_fields("orders", 3))) == (
            "TOPIC_NOT_FOUND"
        )
        with pytest.raises(pubsub.TopicNotFound):
            await b.topic("orders")

        new = await a.create_topic("orders")
        assert new.epoch != old.epoch
        assert ack_offsets(await publisher.publish("orders", [4])) == [1]


async def test_a_full_restart_of_every_node_keeps_topics_offsets_and_history(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        await b.create_topic("alerts")
        subscriber, publisher = Client(b), Client(a)
        epoch = (await subscriber.subscribe("orders"))["epoch"]
        await publisher.publish("orders", range(1, 11))
        last_seen = offsets(await subscriber.until(has_offset(10)))[-1]
        await publisher.publish("orders", [11, 12])  # the client will miss these
        before = await a.topics()

    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        assert await b.topics() == before
        info = await a.topic("orders")
        assert (info.offset, info.stored, info.epoch) == (12, 12, epoch)
        history = await b.engine.history("orders", last_n=3)
        assert [p.message.id for p in history.publications] == ["m10", "m11", "m12"]

        publisher = Client(a)
        assert ack_offsets(await publisher.publish("orders", [13])) == [13]
        resumed = Client(b)
        ack = await resumed.subscribe("orders", since_offset=last_seen, epoch=epoch)
        assert (ack["recovered"], ack["offset"], ack["epoch"]) == (True, 13, epoch)
        assert offsets(await resumed.until(has_offset(13))) == [11, 12, 13]
        await nothing_more(resumed, publisher, "orders", 14)


# ------------------------------------------------------------- cluster-wide figures


async def test_topics_count_the_subscribers_of_every_node(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(redis_server, redis_prefix, "A", "B") as (a, b):
        await a.create_topic("orders")
        await a.create_topic("idle")
        subscribers = [Client(a), Client(b), Client(b)]
        for subscriber in subscribers:
            await subscriber.subscribe("orders")

        def counted(expected: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                # Each node reports its counts every REPORT_EVERY seconds on its own
                # schedule: poll until both reports are in, seen from both nodes.
                listed = {t.name: t.subscribers for t in await a.topics()}
                return listed == {"idle": 0, "orders": expected} and (
                    (await b.topic("orders")).subscribers == expected
                )

            return check

        await eventually(counted(3), guard=WAIT + 2 * REPORT_EVERY)
        # The counted subscribers are served, by both nodes.
        publisher = Client(a)
        await publisher.publish("orders", [1])
        for subscriber in subscribers:
            assert offsets(await subscriber.until(has_offset(1))) == [1]

        b.close_session(subscribers[2].session)
        await eventually(counted(2), guard=WAIT + 2 * REPORT_EVERY)


# ------------------------------------------------------------- found by review


async def test_a_control_message_the_node_cannot_read_does_not_take_it_down(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with (
        cluster(redis_server, redis_prefix, "A") as (a,),
        open_admin(redis_server) as admin,
    ):
        await a.create_topic("orders")
        subscriber, publisher = Client(a), Client(a)
        await subscriber.subscribe("orders")
        # From a newer (or broken) node: two fields, bad numbers, garbage.
        for garbage in ("D orders", "H A not-a-number", "\x00\xff", ""):
            await admin.command("PUBLISH", f"{redis_prefix}:ctl", garbage)
        await publisher.publish("orders", [1, 2])
        frames = await subscriber.until(has_offset(2))
        assert offsets(frames) == [1, 2]


async def test_a_topic_gone_without_a_delete_notice_reaches_its_subscribers(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """The data went (FLUSHDB, eviction, an operator) and no delete notice came: the
    audit of the followed topics finds it, and subscribers get topic_deleted."""
    async with (
        cluster(redis_server, redis_prefix, "A") as (a,),
        open_admin(redis_server) as admin,
    ):
        await a.create_topic("orders")
        subscriber = Client(a)
        await subscriber.subscribe("orders")
        for key in ("meta", "log"):
            await admin.command("DEL", f"{redis_prefix}:{{orders}}:{key}")
        await admin.command("HDEL", f"{redis_prefix}:topics", "orders")
        frames = await subscriber.until(
            lambda fs: any(f.get("msg") == "topic_deleted" for f in fs),
            guard=4 * AUDIT_EVERY + WAIT,
        )
        assert frames[-1]["topic"] == "orders"
