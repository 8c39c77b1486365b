"""What a topic costs the server in Python memory, over real sockets: topics made
over REST stay under a stated number of bytes each, so do the same topics once a
connection has used them (each then has its actor and the actor's task), and
deleting them gives the memory back.

Measured with tracemalloc in this process, which runs the server and its clients;
the clients keep nothing per topic. The figures include what the HTTP stack keeps
a while (trio's deadline heap, bounded caches), hence margins. Not RSS: whether
the allocator hands freed memory back to the system is another matter
(docs/operations.md, "Memory per topic"). Bounds in bytes per topic, with what
was measured (Python 3.11, 500 topics).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import trio
from support import http, recv_skipping_heartbeats, running, ws_client
from trio_websocket import WebSocketConnection

TOPICS = 500
#: A topic made over REST and never used: the engine's record (~270 B of it).
#: ~590 B measured; ~1,500 B when every topic got its empty replay ring at once.
MAX_UNUSED_TOPIC_BYTES = 900
#: The same topic once a connection subscribed and left: its actor too, a parked
#: task included. ~3,250 B measured; ~6,900 B when the actor's inbox was a
#: memory channel and it had an instance dict.
MAX_USED_TOPIC_BYTES = 4_500
#: Left after deleting them: what the node's and trio's tables grew by (a dict or
#: set keeps its size). ~650 B measured; an actor or task kept would add 2,400 B.
MAX_LEFT_BYTES = 1_200
#: Requests in flight at once, so the run stays short.
CHUNK = 100


@contextmanager
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def allocated() -> int:
    """Bytes Python holds now (traced), after collecting whatever is garbage."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def create(client: httpx.AsyncClient, names: list[str]) -> None:
    for name in names:
        response = await client.post("/topics", json={"name": name})
        assert response.status_code == 201, response.text


async def delete(client: httpx.AsyncClient, names: list[str]) -> None:
    for name in names:
        response = await client.delete(f"/topics/{name}")
        assert response.status_code == 200, response.text


async def use(ws: WebSocketConnection, names: list[str]) -> None:
    """Subscribe to each topic and leave it: the topic keeps its actor, and no
    subscriber."""
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        for name in chunk:
            for kind in ("subscribe", "unsubscribe"):
                frame = {"type": kind, "topic": name, "client_id": "m"}
                await ws.send_message(json.dumps(frame))
        for _ in range(2 * len(chunk)):
            answer = await recv_skipping_heartbeats(ws)
            assert answer["type"] == "ack", answer


async def test_a_topic_costs_a_bounded_number_of_bytes_and_deleting_it_frees_them() -> None:
    names = [f"memory.{number}" for number in range(TOPICS)]
    # Enough names to fill the bounded caches on the way (urllib's, msgspec's).
    warm = [f"warm.{number}" for number in range(200)]
    with trio.fail_after(60):
        async with (
            running(max_topics=TOPICS + len(warm), heartbeat_interval=600_000) as server,
            http(server) as client,
            ws_client(server) as ws,
        ):
            # Every path once first: caches and lazily built objects are not topics.
            await create(client, warm)
            await use(ws, warm)
            await delete(client, warm)
            with traced():
                before = allocated()
                await create(client, names)
                unused = (allocated() - before) / TOPICS
                await use(ws, names)
                used = (allocated() - before) / TOPICS
                await delete(client, names)
                left = (allocated() - before) / TOPICS
    assert unused <= MAX_UNUSED_TOPIC_BYTES, f"{unused:.0f} B per topic made over REST"
    assert used <= MAX_USED_TOPIC_BYTES, f"{used:.0f} B per topic once used"
    assert left <= MAX_LEFT_BYTES, f"{left:.0f} B per topic left after deleting them"
