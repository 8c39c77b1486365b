"""Helpers for tests that talk to a real server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from pubsub import Server, Settings, open_server

RECV_TIMEOUT = 10.0


def close_code(exc: ConnectionClosed) -> tuple[int, str | None]:
    """The close code and reason a ConnectionClosed carries."""
    assert exc.reason is not None
    return exc.reason.code, exc.reason.reason


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Server]:
    """A server on a free port with ``settings`` applied."""
    async with open_server(Settings(port=0).replace(**settings)) as server:
        yield server


def redis_settings(url: str, prefix: str) -> Settings:
    """Settings of a node on the Redis engine at ``url`` with key prefix ``prefix``."""
    return Settings(port=0, engine="redis", redis_url=url).replace(redis_prefix=prefix)


def base_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


@asynccontextmanager
async def http(server: Server, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(server), timeout=10, **kwargs) as client:
        yield client


@asynccontextmanager
async def ws_client(
    server: Server, query: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client whose welcome frame has been read and checked."""
    url = f"ws://127.0.0.1:{server.port}/ws{query}"
    async with open_websocket_url(url, extra_headers=headers or []) as ws:
        welcome = await recv(ws)
        assert welcome["type"] == "info" and welcome["msg"] == "connected"
        yield ws


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    """The next frame, decoded. Fails the test instead of hanging."""
    with trio.fail_after(RECV_TIMEOUT):
        message = await ws.get_message()
    frame = json.loads(message)
    assert isinstance(frame, dict)
    return frame


async def recv_skipping_heartbeats(ws: WebSocketConnection) -> dict[str, Any]:
    while True:
        frame = await recv(ws)
        if frame != {"type": "info", "msg": "ping", "ts": frame.get("ts")}:
            return frame


async def send(ws: WebSocketConnection, **frame: Any) -> None:
    await ws.send_message(json.dumps(frame))


async def request(ws: WebSocketConnection, **frame: Any) -> dict[str, Any]:
    """Send a frame and return the next frame (its answer, when nothing else is due)."""
    await send(ws, **frame)
    return await recv(ws)


async def subscribe(ws: WebSocketConnection, topic: str, **extra: Any) -> dict[str, Any]:
    ack = await request(ws, type="subscribe", topic=topic, client_id="test", **extra)
    assert ack["type"] == "ack", ack
    return ack


async def publish(ws: WebSocketConnection, topic: str, msg_id: str, payload: Any) -> None:
    await send(
        ws,
        type="publish",
        topic=topic,
        client_id="test",
        message={"id": msg_id, "payload": payload},
    )


async def create_topics(server: Server, *names: str) -> None:
    async with http(server) as client:
        for name in names:
            response = await client.post("/topics", json={"name": name})
            assert response.status_code == 201, response.text


class RawClient:
    """A WebSocket client on a plain socket whose reading the test controls."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._text: list[str] = []

    @classmethod
    async def connect(cls, server: Server | int) -> RawClient:
        """Connect to ``server`` (or a port) and read the welcome frame."""
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server if isinstance(server, int) else server.port))
        client = cls(trio.SocketStream(sock))
        await client.stream.send_all(client.ws.send(Request(host="127.0.0.1", target="/ws")))
        await client._read_until(lambda: len(client.frames) >= 1)
        return client

    async def send(self, **frame: Any) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(json.dumps(frame))))

    async def _read_until(self, done: Any) -> None:
        with trio.fail_after(30):
            while not done() and self.close_code is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            self.frames.append(json.loads("".join(self._text)))
                            self._text.clear()
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        await self.stream.send_all(self.ws.send(event.response()))
                    else:
                        assert isinstance(event, AcceptConnection | CloseConnection), event

    async def read_until_frame(self, predicate: Any) -> None:
        await self._read_until(lambda: any(predicate(f) for f in self.frames))

    async def read_until_closed(self) -> None:
        await self._read_until(lambda: False)
