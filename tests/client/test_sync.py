"""The blocking client (:func:`pubsub.client.connect_sync`) as a script uses it:
no event loop of its own, calls from several threads, errors raised in the
caller's thread, and a background thread that ends with the client.

These tests are synchronous: the client's event loop is its own (asyncio, in
its background thread), whatever the rest of the suite runs on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pubsub import TopicNotFound
from pubsub.client import (
    ConnectionLost,
    Event,
    Gap,
    ServerUnreachable,
    SyncClient,
    connect_sync,
)

from .servers import LiveServer, serving_sync


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with serving_sync() as live:
        live.run(lambda server: server.node.create_topic("orders"))
        yield live


def portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "portal" in t.name]


def test_publish_ping_and_subscribe_without_an_event_loop(server: LiveServer) -> None:
    before = portal_threads()
    with connect_sync(f"http://127.0.0.1:{server.port}", client_id="script") as client:
        assert isinstance(client, SyncClient)
        assert (client.client_id, client.url) == ("script", server.url)
        assert client.ping() > 0
        with client.subscribe("orders", timeout=10) as sub:
            acks = [client.publish("orders", {"n": n}, id=f"m{n}") for n in range(3)]
            assert [(a.topic, a.id, a.offset) for a in acks] == [
                ("orders", f"m{n}", n + 1) for n in range(3)
            ]
            items: list[Event | Gap] = []
            for item in sub:
                items.append(item)
                if len(items) == 3:
                    break
            assert [(e.offset, e.payload) for e in items if isinstance(e, Event)] == [
                (n + 1, {"n": n}) for n in range(3)
            ]
            # Nothing else is on its way.
            assert sub.get(timeout=0) is None
            ack = client.publish("orders", "last", ttl_ms=60_000)
            last = sub.get()
            assert isinstance(last, Event) and last.offset == ack.offset
            assert last.expires_at is not None
        # Iteration ends once nothing came for ``timeout`` seconds.
        with client.subscribe("orders.*", timeout=0.01) as quiet:
            assert list(quiet) == []
        with pytest.raises(RuntimeError, match="closed"):
            sub.get(timeout=0)
        assert len(portal_threads()) == len(before) + 1
    # The background thread ended with the client.
    assert portal_threads() == before
    client.close()  # again: nothing happens


def test_calls_from_several_threads_share_one_connection(server: LiveServer) -> None:
    with connect_sync(server.url) as client, ThreadPoolExecutor(8) as pool:
        acks = list(pool.map(lambda n: client.publish("orders", n), range(100)))
        assert sorted(ack.offset for ack in acks) == list(range(1, 101))
        assert server.call(lambda s: len(s.node.sessions())) == 1


def test_errors_are_raised_in_the_calling_thread(server: LiveServer) -> None:
    before = portal_threads()
    with connect_sync(server.url, reconnect=False) as client:
        with pytest.raises(TopicNotFound):
            client.publish("missing", 1)
        with pytest.raises(TopicNotFound):
            client.subscribe("missing")
        with pytest.raises(ValueError, match="ttl_ms"):
            client.publish("orders", 1, ttl_ms=0)
        sub = client.subscribe("orders")
        server.run(lambda s: s.node.delete_topic("orders"))
        with pytest.raises(TopicNotFound):
            sub.get(timeout=10)
        sub.close()
        # A lost connection ends what is still subscribed and every later request.
        server.stop()
        with pytest.raises(ConnectionLost):
            client.ping()
    port = server.port
    with pytest.raises(ServerUnreachable):
        connect_sync(f"ws://127.0.0.1:{port}")
    # A failed connect leaves no thread behind.
    assert portal_threads() == before


def test_close_unsubscribes_what_is_left_open(server: LiveServer) -> None:
    client = connect_sync(server.url)
    subs = [client.subscribe("orders"), client.subscribe("orders.*")]
    client.publish("orders", 1)
    client.close()
    for sub in subs:
        with pytest.raises(RuntimeError):
            sub.get(timeout=0)
