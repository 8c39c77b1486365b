"""The broker as a cluster on a real redis-server: ``serve --workers N``, a node
killed under load, Redis going away and coming back, a full restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import RedisServer
from support import (
    create_topics,
    http,
    publish,
    recv,
    recv_skipping_heartbeats,
    redis_settings,
    running,
    ws_client,
)
from support import subscribe as ws_subscribe

from pubsub import Settings, open_server
from pubsub.client import ConnectionLost, Event, Gap, Subscription, open_client

SCRIPT = str(Path(sys.executable).with_name("trio-pubsub"))


class Cluster:
    """``trio-pubsub serve --workers N`` as a subprocess whose log is collected."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = b""
        self.port = 0
        self._changed = trio.Event()

    async def collect(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some(65536):
            self.log += chunk
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, pattern: bytes, count: int = 1) -> list[re.Match[bytes]]:
        """The log's matches of ``pattern`` once there are ``count`` of them."""
        with trio.fail_after(30):
            while len(matches := list(re.finditer(pattern, self.log))) < count:
                if self.process.returncode is not None:
                    raise AssertionError(self.log.decode())
                await self._changed.wait()
        return matches


@asynccontextmanager
async def cluster(workers: int, **env: str) -> AsyncIterator[Cluster]:
    process = await trio.lowlevel.open_process(
        [SCRIPT, "serve", "--port", "0", "--workers", str(workers)],
        stderr=subprocess.PIPE,
        env={**os.environ, "LOG_FORMAT": "text", **env},
    )
    running_cluster = Cluster(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running_cluster.collect)
            [started] = await running_cluster.wait_for(rb"workers on http://127\.0\.0\.1:(\d+)")
            running_cluster.port = int(started.group(1))
            await running_cluster.wait_for(rb"listening on http://", workers)
            yield running_cluster
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def redis_env(redis: RedisServer, prefix: str) -> dict[str, str]:
    return {"ENGINE": "redis", "REDIS_URL": redis.url, "REDIS_PREFIX": prefix}


def test_more_than_one_worker_needs_the_redis_engine() -> None:
    done = subprocess.run(
        [SCRIPT, "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ENGINE": "memory"},
    )
    assert done.returncode == 2
    assert "WORKERS" in done.stderr and "ENGINE=redis" in done.stderr


async def take(sub: Subscription, until_offset: int) -> list[Event | Gap]:
    """Items of ``sub`` until an event with ``until_offset`` (or later) arrives."""
    items: list[Event | Gap] = []
    with trio.fail_after(60):
        async for item in sub:
            items.append(item)
            if isinstance(item, Event) and item.offset >= until_offset:
                break
    return items


async def test_killing_the_worker_that_serves_the_subscribers_loses_nothing(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Subscribers (client library) on one worker, a paced publisher; SIGKILL that
    worker: every acknowledged message reaches every subscriber exactly once, in
    order, with no Gap, and the supervisor starts the worker again."""
    async with cluster(2, **redis_env(redis_server, redis_prefix)) as running_cluster:
        base = f"http://127.0.0.1:{running_cluster.port}"
        async with httpx.AsyncClient(base_url=base) as rest:
            assert (await rest.post("/topics", json={"name": "orders"})).status_code == 201
        url = f"ws://127.0.0.1:{running_cluster.port}/ws"
        acked: list[int] = []
        async with (
            open_client(url, backoff_initial=0.05, backoff_max=0.2) as first,
            first.subscribe("orders") as first_sub,
        ):
            victim = first.node_id
            assert victim is not None
            # More subscribers on the same worker (the kernel spreads connections).
            async with (
                open_client(url, backoff_initial=0.05, backoff_max=0.2) as second,
                second.subscribe("orders") as second_sub,
                open_client(url, backoff_initial=0.05, backoff_max=0.2) as publisher,
            ):
                killed = trio.Event()

                async def publish_paced() -> None:
                    for number in range(300):
                        if number == 100:
                            pid = int(victim.rsplit("-", 1)[1])
                            os.kill(pid, signal.SIGKILL)
                            killed.set()
                        while True:
                            try:
                                ack = await publisher.publish("orders", {"n": number})
                                break
                            except ConnectionLost:
                                continue  # the publisher was on the killed worker
                        acked.append(ack.offset)
                        await trio.sleep(0.002)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish_paced)
                    first_items = await take(first_sub, 300)
                    second_items = await take(second_sub, 300)
                assert killed.is_set()
        assert acked == sorted(acked)
        for items in (first_items, second_items):
            assert not [item for item in items if isinstance(item, Gap)]
            offsets = [item.offset for item in items if isinstance(item, Event)]
            # Exactly once, in order: contiguous offsets with no repeat ...
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
            # ... covering every acknowledged message.
            assert set(acked) <= set(offsets)
        # The supervisor started the killed worker again.
        pid = int(victim.rsplit("-", 1)[1])
        await running_cluster.wait_for(rb"worker \d+ \(pid " + str(pid).encode() + rb"\) died")
        await running_cluster.wait_for(rb"worker \d+ started", 3)


async def test_port_0_gives_every_worker_the_same_port(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with cluster(2, **redis_env(redis_server, redis_prefix)) as running_cluster:
        ports = {
            int(match.group(1))
            for match in await running_cluster.wait_for(
                rb"listening on http://127\.0\.0\.1:(\d+)", 2
            )
        }
        assert ports == {running_cluster.port}
        # Both workers serve: different connections reach different nodes.
        nodes = set()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_cluster.port}") as rest:
            for _ in range(40):
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{running_cluster.port}"
                ) as fresh:
                    nodes.add((await fresh.get("/info")).json()["node_id"])
            health = (await rest.get("/health")).json()
        assert len(nodes) == 2
        assert health["engine"] == {"kind": "redis", "status": "ok"}


async def test_redis_outage_is_unavailable_then_subscribers_catch_up(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    settings = Settings(port=0, engine="redis", redis_url=restartable_redis.url).replace(
        redis_prefix=redis_prefix
    )
    async with open_server(settings) as server, http(server) as rest:
        await create_topics(server, "t")
        async with ws_client(server) as sub, ws_client(server) as pub:
            await ws_subscribe(sub, "t")
            await publish(pub, "t", "before", 1)
            assert (await recv(pub))["type"] == "ack"
            assert (await recv(sub))["message"]["id"] == "before"

            restartable_redis.kill()
            await publish(pub, "t", "during", 2)
            error = await recv_skipping_heartbeats(pub)
            assert error["error"]["code"] == "UNAVAILABLE"
            health = await rest.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            assert health.json()["engine"] == {"kind": "redis", "status": "unavailable"}
            created = await rest.post("/topics", json={"name": "other"})
            assert (created.status_code, created.json()["error"]) == (503, "UNAVAILABLE")
            posted = await rest.post("/topics/t/messages", json={"id": "rest", "payload": 0})
            assert (posted.status_code, posted.json()["error"]) == (503, "UNAVAILABLE")
            history = await rest.get("/topics/t/messages")
            assert (history.status_code, history.json()["error"]) == (503, "UNAVAILABLE")
            # Metrics go on during the outage, saying so.
            metrics = await rest.get("/metrics")
            assert metrics.status_code == 200
            assert "pubsub_engine_available 0.0" in metrics.text
            assert "pubsub_connections 2.0" in metrics.text

            restartable_redis.start()  # persisting: nothing was lost
            # Waits for the engine to notice an external process, not for our tasks.
            with trio.fail_after(20):
                while (await rest.get("/health")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            while True:
                await publish(pub, "t", "after", 3)
                answer = await recv_skipping_heartbeats(pub)
                if answer["type"] == "ack":
                    break
                assert answer["error"]["code"] == "UNAVAILABLE"
            # The subscriber stayed connected and gets what is published now.
            event = await recv_skipping_heartbeats(sub)
            assert (event["message"]["id"], event["offset"]) == ("after", 2)


async def test_full_restart_with_a_persisting_redis_keeps_topics_offsets_and_history(
    restartable_redis: RedisServer, redis_prefix: str
) -> None:
    settings = Settings(port=0, engine="redis", redis_url=restartable_redis.url).replace(
        redis_prefix=redis_prefix
    )
    async with open_server(settings) as server:
        await create_topics(server, "t")
        async with ws_client(server) as ws:
            ack = await ws_subscribe(ws, "t")
            for number in range(1, 6):
                await publish(ws, "t", f"m{number}", number)
            frames = [await recv(ws) for _ in range(10)]
            seen = max(f["offset"] for f in frames if f["type"] == "event")
    assert seen == 5
    epoch = ack["epoch"]
    async with open_server(settings) as server:  # every node restarted
        async with http(server) as rest:
            shown = (await rest.get("/topics/t")).json()
            assert (shown["messages"], shown["stored"], shown["epoch"]) == (5, 5, epoch)
        async with ws_client(server) as ws:
            await publish(ws, "t", "m6", 6)
            assert (await recv(ws))["offset"] == 6
            resumed = await ws_subscribe(ws, "t", since_offset=3, epoch=epoch)
            assert resumed["recovered"] is True
            replay = [await recv(ws) for _ in range(3)]
            assert [f["offset"] for f in replay] == [4, 5, 6]


async def test_memory_engine_health_reports_its_engine() -> None:
    async with running() as server, http(server) as rest:
        body: dict[str, Any] = (await rest.get("/health")).json()
        assert body["engine"] == {"kind": "memory", "status": "ok"}


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_must_be_positive(workers: str) -> None:
    done = subprocess.run(
        [SCRIPT, "serve", "--workers", workers], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "WORKERS" in done.stderr


async def test_rest_publish_and_history_on_the_redis_engine_reach_another_node(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A REST publish on one node is delivered to a subscriber of another and is in
    the history either node reads (both through Redis)."""
    settings = redis_settings(redis_server.url, redis_prefix)
    async with open_server(settings) as one, open_server(settings) as two:
        await create_topics(one, "t")
        async with ws_client(two) as subscriber, http(one) as rest_one, http(two) as rest_two:
            await ws_subscribe(subscriber, "t")
            for number in (1, 2):
                posted = await rest_one.post(
                    "/topics/t/messages", json={"id": f"m{number}", "payload": number}
                )
                assert posted.status_code == 201
                assert posted.json()["offset"] == number
            events = [await recv_skipping_heartbeats(subscriber) for _ in range(2)]
            assert [(e["offset"], e["message"]["payload"]) for e in events] == [(1, 1), (2, 2)]
            for rest in (rest_one, rest_two):
                body = (await rest.get("/topics/t/messages?since_offset=1")).json()
                assert [m["message"]["id"] for m in body["messages"]] == ["m2"]
            missing = await rest_two.post("/topics/nope/messages", json={"payload": 1})
            assert missing.status_code == 404


async def test_a_filtered_subscriber_on_the_redis_engine_gets_only_matching_messages(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    settings = redis_settings(redis_server.url, redis_prefix)
    big = {"path": "payload.n", "op": "gte", "value": 3}
    async with open_server(settings) as one, open_server(settings) as two:
        await create_topics(one, "t")
        async with ws_client(one) as pub:
            for number in (1, 2, 3):
                await publish(pub, "t", f"m{number}", {"n": number})
                assert (await recv(pub))["type"] == "ack"
            async with ws_client(two) as sub:
                ack = await ws_subscribe(sub, "t", filter=big, last_n=10)
                assert ack["filtered"] is True
                for number in (4, 1, 5):
                    await publish(pub, "t", f"m{number}", {"n": number})
                    assert (await recv(pub))["type"] == "ack"
                got = [await recv_skipping_heartbeats(sub) for _ in range(3)]
                assert [(e["offset"], e["message"]["id"]) for e in got] == [
                    (3, "m3"),
                    (4, "m4"),
                    (6, "m5"),
                ]


async def test_nodes_lists_every_node_of_the_cluster(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    settings = redis_settings(redis_server.url, redis_prefix)
    async with (
        open_server(settings.replace(node_id="node-a")) as one,
        open_server(settings.replace(node_id="node-b")) as two,
        http(one) as rest,
    ):
        expected = sorted([one.node.node_id, two.node.node_id])
        with trio.fail_after(30):
            while True:  # each node reports every few seconds (REPORT_EVERY)
                nodes = (await rest.get("/nodes")).json()["nodes"]
                if sorted(n["node_id"] for n in nodes) == expected:
                    break
                await trio.sleep(0.1)
        assert nodes[0]["node_id"] == one.node.node_id and nodes[0]["self"] is True
        assert nodes[1]["node_id"] == two.node.node_id and nodes[1]["self"] is False
        assert set(nodes[1]) == set(nodes[0])
