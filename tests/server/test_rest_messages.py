"""REST publish and history (v1.2) over real HTTP and WebSockets on 127.0.0.1."""

from __future__ import annotations

import re

import pytest
from support import create_topics, http, publish, recv, request, running, subscribe, ws_client

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_a_rest_publish_is_delivered_like_a_websocket_one() -> None:
    async with running() as server, http(server) as client:
        await create_topics(server, "orders")
        async with ws_client(server) as subscriber, ws_client(server) as publisher:
            await subscribe(subscriber, "orders")
            await publish(publisher, "orders", "ws-1", {"n": 1})
            assert (await recv(publisher))["offset"] == 1
            posted = await client.post(
                "/topics/orders/messages", json={"id": "rest-2", "payload": {"n": 2}}
            )
            assert posted.status_code == 201
            body = posted.json()
            assert body == {
                "status": "published",
                "topic": "orders",
                "id": "rest-2",
                "offset": 2,
                "ts": body["ts"],
            }
            assert TS.match(body["ts"])
            await publish(publisher, "orders", "ws-3", {"n": 3})
            events = [await recv(subscriber) for _ in range(3)]
            assert [(e["offset"], e["message"]["id"]) for e in events] == [
                (1, "ws-1"),
                (2, "rest-2"),
                (3, "ws-3"),
            ]
            assert events[1]["message"]["payload"] == {"n": 2}
            assert events[1]["ts"] == body["ts"]
            # Nothing else arrives (no ack of the REST publish on any socket).
            assert (await request(subscriber, type="ping", request_id="end"))["type"] == "pong"
        stats = (await client.get("/stats")).json()
        assert stats["topics"]["orders"]["messages"] == 3
        assert stats["delivery"]["delivered"] == 3


async def test_a_rest_publish_without_an_id_gets_one() -> None:
    async with running() as server, http(server) as client:
        await create_topics(server, "orders")
        ids = set()
        for payload in ("text", 5, None, [1, 2]):
            posted = await client.post("/topics/orders/messages", json={"payload": payload})
            assert posted.status_code == 201
            ids.add(posted.json()["id"])
        assert len(ids) == 4 and all(ids)
        stored = (await client.get("/topics/orders/messages")).json()["messages"]
        assert [m["message"]["payload"] for m in stored] == ["text", 5, None, [1, 2]]
        assert {m["message"]["id"] for m in stored} == ids


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/topics/missing/messages", b'{"payload": 1}', 404, "TOPIC_NOT_FOUND"),
        ("/topics/orders/messages", b"{not json", 400, "BAD_REQUEST"),
        ("/topics/orders/messages", b'{"id": "x"}', 400, "BAD_REQUEST"),
        ("/topics/orders/messages", b'{"id": "", "payload": 1}', 400, "BAD_REQUEST"),
        ("/topics/orders/messages", b'{"id": 7, "payload": 1}', 400, "BAD_REQUEST"),
        ("/topics/orders/messages", b'{"payload": 1, "extra": 1}', 400, "BAD_REQUEST"),
        ("/topics/orders/messages", b'{"payload": 1, "ttl_ms": 0}', 400, "BAD_REQUEST"),
        ("/topics/orders/messages", b"[]", 400, "BAD_REQUEST"),
        (
            "/topics/orders/messages",
            b'{"payload": "' + b"x" * 2048 + b'"}',
            413,
            "MESSAGE_TOO_LARGE",
        ),
    ],
)
async def test_a_bad_rest_publish_gets_the_contract_error_and_publishes_nothing(
    path: str, body: bytes, status: int, code: str
) -> None:
    async with running(max_message_size=1024) as server, http(server) as client:
        await create_topics(server, "orders")
        response = await client.post(path, content=body)
        assert response.status_code == status
        assert response.json()["error"] == code
        assert (await client.get("/topics/orders")).json()["messages"] == 0
        ok = await client.post("/topics/orders/messages", json={"payload": "after"})
        assert ok.status_code == 201 and ok.json()["offset"] == 1


async def test_rest_publish_needs_the_api_key() -> None:
    async with running(api_key="k") as server, http(server) as client:
        headers = {"X-API-Key": "k"}
        await client.post("/topics", json={"name": "orders"}, headers=headers)
        refused = await client.post("/topics/orders/messages", json={"payload": 1})
        assert refused.status_code == 401
        assert refused.json()["error"] == "UNAUTHORIZED"
        assert (await client.get("/topics/orders/messages")).status_code == 401
        posted = await client.post("/topics/orders/messages", json={"payload": 1}, headers=headers)
        assert posted.status_code == 201
        history = await client.get("/topics/orders/messages", headers=headers)
        assert [m["offset"] for m in history.json()["messages"]] == [1]


async def test_history_pages_through_what_the_ring_holds() -> None:
    async with running(max_messages_per_topic=5) as server, http(server) as client:
        await create_topics(server, "orders")
        for n in range(1, 9):
            await client.post("/topics/orders/messages", json={"id": f"m{n}", "payload": n})
        shown = (await client.get("/topics/orders")).json()
        body = (await client.get("/topics/orders/messages")).json()
        assert body["topic"] == "orders"
        assert body["epoch"] == shown["epoch"]
        assert body["offset"] == 8
        # The ring holds the newest 5: offsets 4..8, oldest first.
        assert [m["offset"] for m in body["messages"]] == [4, 5, 6, 7, 8]
        first = body["messages"][0]
        assert first["message"] == {"id": "m4", "payload": 4}
        assert TS.match(first["ts"])

        async def offsets(query: str) -> list[int]:
            response = await client.get(f"/topics/orders/messages?{query}")
            assert response.status_code == 200
            return [m["offset"] for m in response.json()["messages"]]

        assert await offsets("since_offset=5") == [6, 7, 8]
        assert await offsets("since_offset=5&limit=2") == [6, 7]
        assert await offsets("since_offset=0&limit=1") == [4]
        assert await offsets("since_offset=8") == []
        assert await offsets("since_offset=100") == []
        assert await offsets("limit=0") == []
        assert await offsets("limit=1000") == [4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("since_offset=-1", 400, "BAD_REQUEST"),
        ("since_offset=x", 400, "BAD_REQUEST"),
        ("limit=1001", 400, "BAD_REQUEST"),
        ("limit=1.5", 400, "BAD_REQUEST"),
    ],
)
async def test_bad_history_queries_are_refused(query: str, status: int, code: str) -> None:
    async with running() as server, http(server) as client:
        await create_topics(server, "orders")
        response = await client.get(f"/topics/orders/messages?{query}")
        assert response.status_code == status
        assert response.json()["error"] == code
        missing = await client.get("/topics/missing/messages")
        assert missing.status_code == 404
        assert missing.json()["error"] == "TOPIC_NOT_FOUND"
