"""Content filters (v1.2) over real WebSockets: who gets which message."""

from __future__ import annotations

from typing import Any

from support import create_topics, recv, request, running, send, subscribe, ws_client
from trio_websocket import WebSocketConnection

BIG = {"path": "payload.amount", "op": "gt", "value": 100}


async def publish_all(ws: WebSocketConnection, topic: str, payloads: list[Any]) -> None:
    for number, payload in enumerate(payloads, 1):
        message = {"id": f"m{number}", "payload": payload}
        await send(ws, type="publish", topic=topic, client_id="p", message=message)
    offsets = [(await recv(ws))["offset"] for _ in payloads]
    assert offsets == list(range(offsets[0], offsets[0] + len(payloads)))


async def events_until_pong(ws: WebSocketConnection) -> list[tuple[int, str]]:
    """Every event that arrives before the answer to a ping (nothing is left over)."""
    await send(ws, type="ping", request_id="end")
    events = []
    while (frame := await recv(ws))["type"] != "pong":
        assert frame["type"] == "event", frame
        events.append((frame["offset"], frame["message"]["id"]))
    return events


PAYLOADS = [
    {"amount": 50},
    {"amount": 150},
    {"amount": 100.0},
    {"other": 1},
    {"amount": "200"},
    {"amount": 101, "currency": "EUR"},
]


async def test_a_filtered_subscriber_gets_only_matching_messages_with_their_offsets() -> None:
    async with running() as server:
        await create_topics(server, "orders")
        async with (
            ws_client(server) as big_one,
            ws_client(server) as big_two,
            ws_client(server) as euro,
            ws_client(server) as everyone,
            ws_client(server) as publisher,
        ):
            for ws in (big_one, big_two):
                ack = await subscribe(ws, "orders", filter=BIG)
                assert ack["filtered"] is True
            eur = {"and": [BIG, {"path": "payload.currency", "op": "in", "value": ["EUR"]}]}
            await subscribe(euro, "orders", filter=eur)
            assert "filtered" not in await subscribe(everyone, "orders")
            await publish_all(publisher, "orders", PAYLOADS)
            for ws in (big_one, big_two):
                assert await events_until_pong(ws) == [(2, "m2"), (6, "m6")]
            assert await events_until_pong(euro) == [(6, "m6")]
            assert [o for o, _ in await events_until_pong(everyone)] == [1, 2, 3, 4, 5, 6]


async def test_numbers_compare_by_value_and_missing_paths_follow_the_contract() -> None:
    async with running() as server:
        await create_topics(server, "orders")
        async with (
            ws_client(server) as exact,
            ws_client(server) as absent,
            ws_client(server) as publisher,
        ):
            await subscribe(
                exact, "orders", filter={"path": "payload.amount", "op": "eq", "value": 100}
            )
            missing = {"path": "payload.amount", "op": "ne", "value": 50}
            await subscribe(absent, "orders", filter=missing)
            await publish_all(publisher, "orders", PAYLOADS)
            assert await events_until_pong(exact) == [(3, "m3")]  # 100 == 100.0
            # ne is true for a missing path and for another type.
            assert [o for o, _ in await events_until_pong(absent)] == [2, 3, 4, 5, 6]


async def test_a_bad_filter_is_refused_by_name_and_subscribes_nothing() -> None:
    async with running() as server:
        await create_topics(server, "orders")
        async with ws_client(server) as ws, ws_client(server) as publisher:
            bad = {"and": [BIG, {"path": "payload..x", "op": "eq", "value": 1}]}
            refused = await request(ws, type="subscribe", topic="orders", client_id="c",
                                    filter=bad, request_id="s")  # fmt: skip
            assert refused["type"] == "error"
            assert refused["request_id"] == "s"
            assert refused["error"]["code"] == "BAD_REQUEST"
            assert refused["error"]["message"].startswith("filter.and[1].path:")
            not_object = await request(ws, type="subscribe", topic="orders", client_id="c",
                                       filter=[1], request_id="t")  # fmt: skip
            assert not_object["error"]["message"].startswith("filter:")
            await publish_all(publisher, "orders", PAYLOADS[:2])
            assert await events_until_pong(ws) == []  # not subscribed, still connected


async def test_replay_is_filtered_and_last_n_counts_matching_messages() -> None:
    async with running() as server:
        await create_topics(server, "orders")
        async with ws_client(server) as publisher:
            await publish_all(publisher, "orders", PAYLOADS)
        async with ws_client(server) as ws:
            ack = await subscribe(ws, "orders", filter=BIG, last_n=1)
            assert (ack["offset"], ack["filtered"]) == (6, True)
            assert await events_until_pong(ws) == [(6, "m6")]
        async with ws_client(server) as ws:
            await subscribe(ws, "orders", filter=BIG, last_n=5)
            assert await events_until_pong(ws) == [(2, "m2"), (6, "m6")]
        async with ws_client(server) as ws:
            epoch = (await subscribe(ws, "orders"))["epoch"]
        async with ws_client(server) as ws:
            resumed = await subscribe(ws, "orders", filter=BIG, since_offset=2, epoch=epoch)
            assert resumed["recovered"] is True
            assert await events_until_pong(ws) == [(6, "m6")]


async def test_subscribing_again_replaces_the_filter_and_never_delivers_twice() -> None:
    async with running() as server:
        await create_topics(server, "orders")
        async with ws_client(server) as ws, ws_client(server) as publisher:
            await subscribe(ws, "orders", filter=BIG)
            await publish_all(publisher, "orders", PAYLOADS[:2])
            assert await events_until_pong(ws) == [(2, "m2")]
            again = await subscribe(ws, "orders")  # no filter now
            assert "filtered" not in again
            await send(publisher, type="publish", topic="orders", client_id="p",
                       message={"id": "m3", "payload": {"amount": 1}})  # fmt: skip
            assert (await recv(publisher))["offset"] == 3
            assert await events_until_pong(ws) == [(3, "m3")]
            small = {"path": "payload.amount", "op": "lt", "value": 10}
            assert (await subscribe(ws, "orders", filter=small))["filtered"] is True
            await publish_all(publisher, "orders", [{"amount": 5}, {"amount": 500}])
            assert await events_until_pong(ws) == [(4, "m1")]
