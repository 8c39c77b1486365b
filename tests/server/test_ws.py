"""The /ws fast path over real sockets on 127.0.0.1 with trio-websocket clients."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import trio
from support import (
    RawClient,
    close_code,
    create_topics,
    http,
    publish,
    recv,
    recv_skipping_heartbeats,
    request,
    running,
    send,
    subscribe,
    ws_client,
)
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from pubsub import Server
from pubsub._protocol.frames import decode_client_frame


async def test_fan_out_exactly_once_in_order_to_every_subscriber() -> None:
    async with running() as server:
        await create_topics(server, "orders")
        async with (
            ws_client(server) as a,
            ws_client(server) as b,
            ws_client(server) as c,
            ws_client(server) as pub,
        ):
            for ws in (a, b, c):
                assert (await subscribe(ws, "orders"))["offset"] == 0
            for i in range(50):
                await publish(pub, "orders", f"m{i}", {"i": i})
            acks = [await recv(pub) for _ in range(50)]
            assert [ack["offset"] for ack in acks] == list(range(1, 51))
            for ws in (a, b, c):
                events = [await recv(ws) for _ in range(50)]
                assert [e["message"]["id"] for e in events] == [f"m{i}" for i in range(50)]
                assert [e["offset"] for e in events] == list(range(1, 51))
                assert [e["message"]["payload"] for e in events] == [{"i": i} for i in range(50)]
                # Nothing more arrives: a ping's pong is the very next frame.
                assert (await request(ws, type="ping", request_id="end"))["type"] == "pong"


async def test_topics_never_leak_into_each_other() -> None:
    async with running() as server:
        await create_topics(server, "a", "b")
        async with ws_client(server) as sub_a, ws_client(server) as sub_b:
            await subscribe(sub_a, "a")
            await subscribe(sub_b, "b")
            await publish(sub_a, "b", "for-b", 1)
            await publish(sub_b, "a", "for-a", 2)
            got_a = [await recv(sub_a) for _ in range(2)]
            got_b = [await recv(sub_b) for _ in range(2)]
            events_a = [f for f in got_a if f["type"] == "event"]
            events_b = [f for f in got_b if f["type"] == "event"]
            assert [(e["topic"], e["message"]["id"]) for e in events_a] == [("a", "for-a")]
            assert [(e["topic"], e["message"]["id"]) for e in events_b] == [("b", "for-b")]


async def test_last_n_replays_oldest_first_then_live() -> None:
    async with running(max_messages_per_topic=5) as server:
        await create_topics(server, "t")
        async with ws_client(server) as pub, ws_client(server) as sub:
            for i in range(8):
                await publish(pub, "t", f"m{i}", i)
            for _ in range(8):
                await recv(pub)
            ack = await subscribe(sub, "t", last_n=3, request_id="r")
            assert ack["request_id"] == "r" and ack["offset"] == 8
            replay = [await recv(sub) for _ in range(3)]
            assert [e["message"]["id"] for e in replay] == ["m5", "m6", "m7"]
            await publish(pub, "t", "live", None)
            live = await recv(sub)
            assert (live["message"]["id"], live["offset"]) == ("live", 9)
            # Asking for more than is stored replays what is stored (the ring holds 5).
            async with ws_client(server) as late:
                await subscribe(late, "t", last_n=50)
                assert [(await recv(late))["offset"] for _ in range(5)] == [5, 6, 7, 8, 9]


async def test_unsubscribe_stops_delivery() -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as pub, ws_client(server) as sub:
            await subscribe(sub, "t")
            ack = await request(sub, type="unsubscribe", topic="t", client_id="x", request_id=3)
            assert ack == ack | {"type": "ack", "request_id": 3, "topic": "t", "status": "ok"}
            await publish(pub, "t", "m", 1)
            await recv(pub)
            assert (await request(sub, type="ping"))["type"] == "pong"
            not_there = await request(sub, type="unsubscribe", topic="nope", client_id="x")
            assert not_there["error"]["code"] == "TOPIC_NOT_FOUND"


async def test_topic_deletion_notifies_and_keeps_connection_open() -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as sub:
            await subscribe(sub, "t")
            await server.node.delete_topic("t")
            notice = await recv(sub)
            assert notice | {"ts": ""} == {
                "type": "info",
                "topic": "t",
                "msg": "topic_deleted",
                "ts": "",
            }
            assert (await request(sub, type="ping", request_id="p"))["request_id"] == "p"
            error = await request(sub, type="subscribe", topic="t", client_id="x")
            assert error["error"]["code"] == "TOPIC_NOT_FOUND"


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ("{not json", "BAD_REQUEST", None),
        ("[1, 2]", "BAD_REQUEST", None),
        ('{"type": "dance", "request_id": "u1"}', "BAD_REQUEST", "u1"),
        ('{"request_id": "u2"}', "BAD_REQUEST", "u2"),
        ('{"type": "subscribe", "client_id": "x", "request_id": "u3"}', "BAD_REQUEST", "u3"),
        ('{"type": "subscribe", "topic": "bad name", "client_id": "x"}', "BAD_REQUEST", None),
        (
            '{"type": "publish", "topic": "t", "client_id": "x", "message": {"id": "m"},'
            ' "request_id": 9}',
            "BAD_REQUEST",
            9,
        ),
        ('{"type": "publish", "topic": "t", "client_id": "x"}', "BAD_REQUEST", None),
        (
            '{"type": "publish", "topic": "nope", "client_id": "x",'
            ' "message": {"id": "m", "payload": 1}, "request_id": "u4"}',
            "TOPIC_NOT_FOUND",
            "u4",
        ),
    ],
)
async def test_bad_frames_get_errors_and_the_connection_keeps_working(
    raw: str, code: str, request_id: str | int | None
) -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as ws:
            await ws.send_message(raw)
            error = await recv(ws)
            assert error["type"] == "error"
            assert error["error"]["code"] == code
            assert error.get("request_id") == request_id
            assert error["error"]["message"]
            assert (await subscribe(ws, "t"))["type"] == "ack"


async def test_binary_frame_is_bad_request_and_connection_stays() -> None:
    async with running() as server, ws_client(server) as ws:
        await ws.send_message(b'{"type": "ping"}')
        error = await recv(ws)
        assert error["error"]["code"] == "BAD_REQUEST"
        assert (await request(ws, type="ping"))["type"] == "pong"


async def test_oversize_message_is_refused_with_1009() -> None:
    async with running(max_message_size=1000) as server, ws_client(server) as ws:
        await send(ws, type="ping", request_id="x" * 2000)
        error = await recv(ws)
        assert error["error"]["code"] == "MESSAGE_TOO_LARGE"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert close_code(closed.value)[0] == 1009


async def test_many_frames_in_one_write_are_all_answered() -> None:
    async with running() as server, ws_client(server) as ws:
        for i in range(100):
            await send(ws, type="ping", request_id=i)
        assert [(await recv(ws))["request_id"] for _ in range(100)] == list(range(100))


async def test_handshake_needs_the_api_key_by_header_or_query() -> None:
    async with running(api_key="k3y") as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url):
                pass
        assert rejected.value.status_code == 401
        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(url + "?api_key=wrong"):
                pass
        async with ws_client(server, query="?api_key=k3y") as ws:
            assert (await request(ws, type="ping"))["type"] == "pong"
        async with ws_client(server, headers=[(b"X-API-Key", b"k3y")]) as ws:
            assert (await request(ws, type="ping"))["type"] == "pong"


async def test_heartbeat_sends_info_ping() -> None:
    async with running(heartbeat_interval=20) as server, ws_client(server) as ws:
        frame = await recv(ws)
        assert frame["type"] == "info" and frame["msg"] == "ping"


async def test_idle_client_is_closed_with_1001_connection_timeout() -> None:
    settings = {"connection_timeout": 100, "heartbeat_interval": 60_000}
    async with running(**settings) as server, ws_client(server) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert close_code(closed.value) == (1001, "CONNECTION_TIMEOUT")


async def test_max_connections_refuses_with_limit_exceeded_and_1013() -> None:
    async with (
        running(max_connections=1) as server,
        ws_client(server),
        open_websocket_url(f"ws://127.0.0.1:{server.port}/ws") as extra,
    ):
        error = json.loads(await extra.get_message())
        assert error["error"]["code"] == "LIMIT_EXCEEDED"
        with pytest.raises(ConnectionClosed) as closed:
            await extra.get_message()
        assert close_code(closed.value)[0] == 1013


async def test_handshake_timeout_closes_silent_connections() -> None:
    async with running(handshake_timeout=100) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        with trio.fail_after(10):
            assert await stream.receive_some(100) == b""
        await stream.aclose()


async def test_plain_get_on_ws_path_is_rejected_without_upgrade() -> None:
    async with running() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(10):
            answer = await stream.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 400")
        await stream.aclose()


# ---------------------------------------------------------------------------
# Slow consumers: a raw client with a tiny receive buffer that stops reading.


BIG = "x" * 32_000


async def _publish_until(server: Server, pub: Any, done: Any, limit: int = 2000) -> int:
    """Publish 32 KB messages (waiting for each ack) until ``done()``; returns the count."""
    for i in range(limit):
        await publish(pub, "t", f"m{i}", BIG)
        assert (await recv_skipping_heartbeats(pub))["type"] == "ack"
        if done():
            return i + 1
    raise AssertionError(f"condition not reached after {limit} messages")


async def test_slow_consumer_is_disconnected_and_fast_one_loses_nothing() -> None:
    async with running(backpressure_policy="disconnect", max_queue_size=8) as server:
        await create_topics(server, "t")
        counters = server.node.counters
        async with ws_client(server) as fast, ws_client(server) as pub:
            slow = await RawClient.connect(server)
            await slow.send(type="subscribe", topic="t", client_id="slow")
            await slow.read_until_frame(lambda f: f["type"] == "ack")
            await subscribe(fast, "t")
            received: list[int] = []

            async def read_fast() -> None:
                while True:
                    frame = await recv(fast)
                    received.append(frame["offset"])
                    if frame["message"]["id"] == "final":
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                total = await _publish_until(
                    server, pub, lambda: counters.slow_consumer_disconnects == 1
                )
                await publish(pub, "t", "final", 0)
                await recv(pub)
                total += 1
            assert received == list(range(1, total + 1))
            await slow.read_until_closed()
            assert slow.close_code == 1013
            errors = [f for f in slow.frames if f["type"] == "error"]
            assert [e["error"]["code"] for e in errors] == ["SLOW_CONSUMER"]
            await slow.stream.aclose()


async def test_drop_oldest_keeps_slow_consumer_with_newest_messages() -> None:
    async with running(backpressure_policy="drop_oldest", max_queue_size=8) as server:
        await create_topics(server, "t")
        counters = server.node.counters
        async with ws_client(server) as pub:
            slow = await RawClient.connect(server)
            await slow.send(type="subscribe", topic="t", client_id="slow")
            await slow.read_until_frame(lambda f: f["type"] == "ack")
            total = await _publish_until(server, pub, lambda: counters.dropped > 0)
            await publish(pub, "t", "final", "last")
            await recv(pub)
            total += 1
            await slow.read_until_frame(lambda f: f.get("message", {}).get("id") == "final")
            assert slow.close_code is None
            events = [f for f in slow.frames if f["type"] == "event"]
            offsets = [e["offset"] for e in events]
            assert offsets == sorted(set(offsets))
            assert offsets[-1] == total
            dropped = sum(f["dropped"] for f in slow.frames if f.get("msg") == "messages_dropped")
            assert dropped > 0
            # Every message was either delivered or reported as dropped.
            assert len(events) + dropped == total
            await slow.send(type="ping", request_id="alive")
            await slow.read_until_frame(lambda f: f.get("request_id") == "alive")
            await slow.stream.aclose()


async def test_peer_vanishing_mid_stream_does_not_disturb_others() -> None:
    async with running() as server:
        await create_topics(server, "t")
        async with ws_client(server) as pub, ws_client(server) as stays:
            await subscribe(stays, "t")
            gone = await RawClient.connect(server)
            await gone.send(type="subscribe", topic="t", client_id="gone")
            await gone.read_until_frame(lambda f: f["type"] == "ack")
            gone.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            await gone.stream.aclose()  # RST, no close frame
            for i in range(20):
                await publish(pub, "t", f"m{i}", BIG)
                await recv(pub)
            assert [(await recv(stays))["offset"] for _ in range(20)] == list(range(1, 21))


async def test_thousand_clients_all_receive_every_message() -> None:
    async with running() as server:
        await create_topics(server, "wide")
        n_clients, n_messages = 1000, 5
        counts: list[int] = []

        async def client(ready: trio.Event, done: Any) -> None:
            async with ws_client(server) as ws:
                await subscribe(ws, "wide")
                ready.set()
                ids = [
                    (await recv_skipping_heartbeats(ws))["message"]["id"] for _ in range(n_messages)
                ]
                assert ids == [f"m{i}" for i in range(n_messages)]
                counts.append(len(ids))

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                readies = []
                for _ in range(n_clients):
                    ready = trio.Event()
                    readies.append(ready)
                    nursery.start_soon(client, ready, None)
                for ready in readies:
                    await ready.wait()
                assert server.node.local_subscribers("wide") == n_clients
                async with ws_client(server) as pub:
                    for i in range(n_messages):
                        await publish(pub, "wide", f"m{i}", {"i": i})
                        await recv(pub)
        assert counts == [n_messages] * n_clients


async def test_closing_connection_whose_peer_stopped_reading_is_released() -> None:
    settings = {"backpressure_policy": "disconnect", "max_queue_size": 8, "shutdown_timeout": 200}
    async with running(**settings) as server:
        node = server.node
        await node.create_topic("t")
        stuck = await RawClient.connect(server)
        await stuck.send(type="subscribe", topic="t", client_id="stuck")
        await stuck.read_until_frame(lambda f: f["type"] == "ack")
        publisher = node.open_session()  # in-process, so only the stuck one is on the wire
        for i in range(2000):
            message = {"id": f"m{i}", "payload": BIG}
            frame = {"type": "publish", "topic": "t", "client_id": "p", "message": message}
            await node.handle(publisher, decode_client_frame(json.dumps(frame)))
            await publisher.next_batch()
            if node.counters.slow_consumer_disconnects:
                break
        assert node.counters.slow_consumer_disconnects == 1
        node.close_session(publisher)
        # The stuck peer never reads, so its writer can never finish: the
        # connection must still be released after SHUTDOWN_TIMEOUT.
        with trio.fail_after(10):
            await node.wait_sessions_closed()
        await stuck.stream.aclose()


# ---------------------------------------------------------------------------
# /ws upgrade on a connection that already carried REST requests (proxies reuse
# upstream connections): served through ASGI with the same node.


async def _upgrade_after_rest(server: Server, target: str = "/ws") -> tuple[Any, Any]:
    """A raw connection that sends GET /health, reads the answer, then upgrades."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    response = b""
    with trio.fail_after(10):
        while b'"status":"ok"' not in response:
            response += await stream.receive_some(4096)
    assert response.startswith(b"HTTP/1.1 200")
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="x", target=target)))
    return stream, ws


async def _events(stream: Any, ws: WSConnection, count: int) -> list[Any]:
    """The next ``count`` events, answering (and skipping) the server's pings."""
    events: list[Any] = []
    with trio.fail_after(10):
        while len(events) < count:
            data = await stream.receive_some(65536)
            assert data, f"closed after {events}"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Ping):
                    await stream.send_all(ws.send(event.response()))
                else:
                    events.append(event)
    return events


async def test_ws_upgrade_after_rest_on_a_keep_alive_connection_is_served() -> None:
    async with running() as server:
        await create_topics(server, "t")
        stream, ws = await _upgrade_after_rest(server)
        accepted, welcome = await _events(stream, ws, 2)
        assert isinstance(accepted, AcceptConnection)
        assert json.loads(welcome.data)["msg"] == "connected"
        assert json.loads(welcome.data)["node_id"] == server.node.node_id

        await stream.send_all(
            ws.send(TextMessage(json.dumps({"type": "subscribe", "topic": "t", "client_id": "p"})))
        )
        [ack] = await _events(stream, ws, 1)
        assert json.loads(ack.data)["type"] == "ack"
        assert server.node.local_subscribers("t") == 1
        async with ws_client(server) as pub:
            await publish(pub, "t", "m1", {"n": 1})
            [event] = await _events(stream, ws, 1)
            frame = json.loads(event.data)
            assert (frame["type"], frame["message"], frame["offset"]) == (
                "event",
                {"id": "m1", "payload": {"n": 1}},
                1,
            )
            # Bad input on this path gets the same clear errors.
            await stream.send_all(ws.send(TextMessage("{not json")))
            [error] = await _events(stream, ws, 1)
            assert json.loads(error.data)["error"]["code"] == "BAD_REQUEST"
            await stream.send_all(ws.send(BytesMessage(b"\x00")))
            [error] = await _events(stream, ws, 1)
            assert json.loads(error.data)["error"]["code"] == "BAD_REQUEST"
        await stream.send_all(ws.send(CloseConnection(code=1000)))
        [closed] = await _events(stream, ws, 1)
        assert isinstance(closed, CloseConnection)
        await stream.aclose()
        with trio.fail_after(10):
            await server.node.wait_sessions_closed()
        assert server.node.local_subscribers("t") == 0


async def test_ws_upgrade_after_rest_needs_the_api_key() -> None:
    async with running(api_key="k3y") as server:
        stream, ws = await _upgrade_after_rest(server)
        [rejected, *_] = await _events(stream, ws, 1)
        assert isinstance(rejected, RejectConnection)
        assert rejected.status_code == 401
        await stream.aclose()

        stream, ws = await _upgrade_after_rest(server, "/ws?api_key=k3y")
        accepted, welcome = await _events(stream, ws, 2)
        assert isinstance(accepted, AcceptConnection)
        assert json.loads(welcome.data)["msg"] == "connected"
        await stream.aclose()


async def test_ws_upgrade_after_rest_message_too_large_closes_with_1009() -> None:
    async with running(max_message_size=100) as server:
        stream, ws = await _upgrade_after_rest(server)
        await _events(stream, ws, 2)
        await stream.send_all(ws.send(TextMessage("x" * 101)))
        error, closed = await _events(stream, ws, 2)
        assert json.loads(error.data)["error"]["code"] == "MESSAGE_TOO_LARGE"
        assert isinstance(closed, CloseConnection) and closed.code == 1009
        await stream.aclose()


async def test_frames_sent_with_the_handshake_are_not_lost() -> None:
    """A client that writes its first frame right behind the request head (without
    waiting for the 101) still gets its answer."""
    async with running() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        # wsproto's client sends frames only once accepted: let it see the 101 the
        # server will send (computed here), then send its head and frame together.
        client = WSConnection(ConnectionType.CLIENT)
        head = client.send(Request(host="x", target="/ws"))
        client.receive_data(_accept_for(head))
        assert [type(e) for e in client.events()] == [AcceptConnection]
        frame = client.send(TextMessage(json.dumps({"type": "ping", "request_id": "early"})))
        await stream.send_all(head + frame)
        raw = b""
        with trio.fail_after(10):
            while b'"early"' not in raw:
                chunk = await stream.receive_some(65536)
                assert chunk, raw
                raw += chunk
        assert b'"type":"pong","request_id":"early"' in raw
        await stream.aclose()


def _accept_for(head: bytes) -> bytes:
    """The server's 101 for a request head (wsproto as the server)."""
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(head)
    assert [type(e) for e in server.events()] == [Request]
    return server.send(AcceptConnection())


async def test_welcome_frame_names_the_connection_and_the_node() -> None:
    async with running(node_id="node-a") as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with open_websocket_url(url) as ws:
            welcome = json.loads(await ws.get_message())
        assert welcome["msg"] == "connected"
        assert welcome["connection_id"].startswith("c-")
        assert welcome["node_id"] == "node-a"


async def test_a_read_full_of_bad_frames_is_answered_even_with_a_small_outbox() -> None:
    """Every answer of one read waits in a held outbox; more of them than
    MAX_QUEUE_SIZE must not stall the connection."""
    async with running(max_queue_size=4) as server, ws_client(server) as ws:
        bad = [f"{{not json {i}" for i in range(20)]
        await ws.send_message(bad[0])  # warm: one answer
        assert (await recv(ws))["error"]["code"] == "BAD_REQUEST"
        for text in bad:  # many in flight; the server may read them in one go
            await ws.send_message(text)
        for _ in bad:
            assert (await recv(ws))["error"]["code"] == "BAD_REQUEST"
        assert (await request(ws, type="ping", request_id="after"))["type"] == "pong"


async def raw_client(server: Server) -> tuple[trio.SocketStream, WSConnection]:
    """A WebSocket connection driven by wsproto by hand, past its welcome frame."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="x", target="/ws")))
    while not any(isinstance(event, TextMessage) for event in client.events()):
        data = await stream.receive_some(65536)
        assert data
        client.receive_data(data)  # the 101, then the welcome
    return stream, client


async def test_a_flood_bigger_than_any_read_is_carried_out_in_order() -> None:
    """Megabytes of publishes written at once (reads grow to their largest size
    and back): every one acknowledged and delivered, in order, none twice."""
    count = 12_000
    async with running(max_queue_size=count) as server:  # a slow reader here loses nothing
        await create_topics(server, "flood", "other")
        async with ws_client(server) as subscriber:
            await subscribe(subscriber, "flood")
            stream, client = await raw_client(server)
            payload = "x" * 200

            def frame(i: int) -> bytes:
                topic = "flood" if i % 3 else "other"
                message = {"id": f"m{i}", "payload": payload}
                text = json.dumps(
                    {"type": "publish", "topic": topic, "client_id": "f", "request_id": i}
                    | {"message": message}
                )
                return client.send(TextMessage(text))

            frames = b"".join(frame(i) for i in range(count))
            assert len(frames) > 2 * 1048576
            acks: list[dict[str, Any]] = []

            async def read_acks() -> None:
                parts: list[str] = []
                while len(acks) < count:
                    data = await stream.receive_some(65536)
                    assert data
                    client.receive_data(data)
                    for event in client.events():
                        if isinstance(event, TextMessage):
                            parts.append(event.data)
                            if event.message_finished:
                                frame = json.loads("".join(parts))
                                parts.clear()
                                if frame["type"] == "ack":
                                    acks.append(frame)

            flooded = [i for i in range(count) if i % 3]
            events: list[dict[str, Any]] = []

            async def read_events() -> None:
                while len(events) < len(flooded):
                    events.append(await recv(subscriber))

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_acks)
                    nursery.start_soon(read_events)
                    await stream.send_all(frames)
            assert [ack["request_id"] for ack in acks if ack["topic"] == "flood"] == flooded
            assert [ack["offset"] for ack in acks if ack["topic"] == "flood"] == list(
                range(1, len(flooded) + 1)
            )
            assert [event["message"]["id"] for event in events] == [f"m{i}" for i in flooded]
            assert (await request(subscriber, type="ping", request_id="end"))["type"] == "pong"
            await stream.aclose()


async def test_an_error_in_the_serving_block_ends_it_with_that_error() -> None:
    """The server is cancelled (its block raised) while a connection sits open: the
    cancelled connection must not break the shutdown drain that runs meanwhile."""
    with pytest.raises(BaseExceptionGroup) as raised:
        async with running() as server:
            stream, _ = await raw_client(server)
            raise KeyError("the block's own error")
    await stream.aclose()
    rest = raised.value.split(KeyError)[1]
    assert raised.value.subgroup(KeyError) is not None
    assert rest is None, rest.exceptions  # nothing else went wrong


async def test_auto_create_topics_creates_on_first_publish_or_subscribe_only() -> None:
    async with (
        running(auto_create_topics=True, max_topics=2) as server,
        ws_client(server) as ws,
        http(server) as rest,
    ):
        gone = await request(ws, type="unsubscribe", topic="never", client_id="c")
        assert gone["error"]["code"] == "TOPIC_NOT_FOUND"  # an unsubscribe creates nothing
        ack = await subscribe(ws, "made.by.subscribe")
        assert ack["offset"] == 0 and "epoch" in ack
        await publish(ws, "made.by.publish", "m1", 1)
        assert (await recv(ws))["type"] == "ack"
        names = [t["name"] for t in (await rest.get("/topics")).json()["topics"]]
        assert names == ["made.by.publish", "made.by.subscribe"]
        await publish(ws, "one.too.many", "m2", 1)
        error = await recv(ws)
        assert error["error"]["code"] == "LIMIT_EXCEEDED"
    async with running() as server, ws_client(server) as ws:
        await publish(ws, "nope", "m", 1)
        assert (await recv(ws))["error"]["code"] == "TOPIC_NOT_FOUND"


@pytest.mark.parametrize("where", ["payload", "request_id"])
async def test_deeply_nested_json_is_a_bad_request_and_the_connection_stays(where: str) -> None:
    """2 KB of ``[[[[...`` once took the connection down (msgspec's RecursionError)."""
    deep = "[" * 1000 + "]" * 1000
    payload = deep if where == "payload" else "1"
    request_id = deep if where == "request_id" else '"deep"'
    text = (
        '{"type":"publish","topic":"t","client_id":"c","request_id":' + request_id + ","
        '"message":{"id":"m","payload":' + payload + "}}"
    )
    async with running(max_json_depth=50) as server:
        await create_topics(server, "t")
        async with ws_client(server) as ws:
            await ws.send_message(text)
            error = await recv(ws)
            assert error["error"]["code"] == "BAD_REQUEST"
            assert "50 levels" in error["error"]["message"]
            assert "MAX_JSON_DEPTH" in error["error"]["message"]
            # At the limit is fine (the frame and its message are 2 of the 50
            # levels), and the connection still works.
            at_limit = "[" * 48 + "]" * 48
            await publish(ws, "t", "ok", json.loads(at_limit))
            assert (await recv(ws))["type"] == "ack"
