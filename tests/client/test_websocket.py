"""The client's WebSocket (``pubsub._client_ws``): URL forms, the sans-IO rules
(bytes in, messages and closes out, against wsproto's own server end), then the
client over it for real: TLS, refusals, the close handshake."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from pubsub import Unauthorized
from pubsub._client_ws import (
    Accepted,
    ClientProtocol,
    Closed,
    ConnectionClosed,
    HandshakeFailed,
    Refused,
    parse_url,
)
from pubsub.client import ServerUnreachable, open_client

from .servers import fake_server

pytestmark = pytest.mark.anyio

# ------------------------------------------------------------------ URL forms


@pytest.mark.parametrize(
    ("url", "normal", "host", "port", "tls", "target"),
    [
        ("ws://127.0.0.1:3000", "ws://127.0.0.1:3000/ws", "127.0.0.1", 3000, False, "/ws"),
        ("http://127.0.0.1:3000", "ws://127.0.0.1:3000/ws", "127.0.0.1", 3000, False, "/ws"),
        ("http://127.0.0.1:3000/", "ws://127.0.0.1:3000/ws", "127.0.0.1", 3000, False, "/ws"),
        ("ws://127.0.0.1:3000/ws", "ws://127.0.0.1:3000/ws", "127.0.0.1", 3000, False, "/ws"),
        ("https://pubsub.example", "wss://pubsub.example/ws", "pubsub.example", 443, True, "/ws"),
        (
            "wss://pubsub.example:8443",
            "wss://pubsub.example:8443/ws",
            "pubsub.example",
            8443,
            True,
            "/ws",
        ),
        ("ws://h/broker?x=1", "ws://h/broker?x=1", "h", 80, False, "/broker?x=1"),
        ("ws://[::1]:3000", "ws://[::1]:3000/ws", "::1", 3000, False, "/ws"),
    ],
)
def test_url_forms(url: str, normal: str, host: str, port: int, tls: bool, target: str) -> None:
    endpoint = parse_url(url)
    assert (endpoint.url, endpoint.host, endpoint.port) == (normal, host, port)
    assert (endpoint.tls, endpoint.target) == (tls, target)


@pytest.mark.parametrize("url", ["ftp://h:3000", "127.0.0.1:3000", "ws://", "ws://h:port"])
def test_what_is_not_a_server_url(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


# -------------------------------------------------------------------- sans-IO


def server_events(server: WSConnection, data: bytes) -> list[Any]:
    server.receive_data(data)
    return list(server.events())


@pytest.fixture
def opening() -> Iterator[tuple[ClientProtocol, WSConnection]]:
    """A client whose upgrade request the server (wsproto) has read."""
    client = ClientProtocol(max_message_size=100)
    server = WSConnection(ConnectionType.SERVER)
    data = client.request("h:3000", "/ws?x=1", [(b"X-API-Key", b"k")])
    [request] = server_events(server, data)
    assert isinstance(request, Request)
    assert (request.host, request.target) == ("h:3000", "/ws?x=1")
    assert (b"x-api-key", b"k") in request.extra_headers
    yield client, server


@pytest.fixture
def connected(
    opening: tuple[ClientProtocol, WSConnection],
) -> tuple[ClientProtocol, WSConnection]:
    client, server = opening
    assert client.receive_data(server.send(AcceptConnection())) == [Accepted()]
    return client, server


def test_messages_in_the_same_read_as_the_accept_are_kept(
    opening: tuple[ClientProtocol, WSConnection],
) -> None:
    client, server = opening
    data = server.send(AcceptConnection()) + server.send(Message(data='{"msg":"connected"}'))
    assert client.receive_data(data) == [Accepted(), '{"msg":"connected"}']


def test_a_refused_upgrade_gives_its_status(opening: tuple[ClientProtocol, WSConnection]) -> None:
    client, server = opening
    assert client.receive_data(server.send(RejectConnection(status_code=401))) == [Refused(401)]


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", None])
def test_an_answer_that_is_not_http_fails_the_handshake(
    opening: tuple[ClientProtocol, WSConnection], answer: bytes | None
) -> None:
    client, _ = opening
    with pytest.raises(HandshakeFailed):
        client.receive_data(answer)


def test_fragments_make_one_message_and_client_frames_are_masked_text(
    connected: tuple[ClientProtocol, WSConnection],
) -> None:
    client, server = connected
    data = server.send(Message(data="ab", message_finished=False)) + server.send(Message(data="é"))
    assert client.receive_data(data) == ["abé"]
    [message] = server_events(server, client.text("héllo"))  # wsproto refuses unmasked ones
    assert isinstance(message, TextMessage) and message.data == "héllo"


def test_a_ping_is_answered(connected: tuple[ClientProtocol, WSConnection]) -> None:
    client, server = connected
    assert client.receive_data(server.send(Ping(payload=b"p"))) == []
    assert server_events(server, client.data_to_send()) == [Pong(payload=b"p")]


def test_a_close_from_the_server_is_answered(
    connected: tuple[ClientProtocol, WSConnection],
) -> None:
    client, server = connected
    closed = client.receive_data(server.send(CloseConnection(code=1001, reason="bye")))
    assert closed == [Closed(1001, "bye")]
    [reply] = server_events(server, client.data_to_send())
    assert isinstance(reply, CloseConnection) and reply.code == 1001
    assert server.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosed):
        client.text("too late")


def test_the_client_closes_and_the_server_answers(
    connected: tuple[ClientProtocol, WSConnection],
) -> None:
    client, server = connected
    [close] = server_events(server, client.close())
    assert isinstance(close, CloseConnection) and close.code == 1000
    assert client.close() == b""  # once
    assert client.receive_data(server.send(close.response())) == [Closed(1000, "")]
    assert client.data_to_send() == b""


def test_a_message_over_the_limit_closes_with_1009(
    connected: tuple[ClientProtocol, WSConnection],
) -> None:
    client, server = connected
    assert client.receive_data(server.send(Message(data="x" * 100))) == ["x" * 100]
    data = server.send(Message(data="x" * 60, message_finished=False))
    data += server.send(Message(data="x" * 41))
    [closed] = client.receive_data(data)
    assert isinstance(closed, Closed) and closed.code == 1009
    [close] = server_events(server, client.data_to_send())
    assert isinstance(close, CloseConnection) and close.code == 1009


def test_a_lost_tcp_connection_is_1006(connected: tuple[ClientProtocol, WSConnection]) -> None:
    client, _ = connected
    assert client.receive_data(None) == [Closed(1006, "")]
    assert client.receive_data(b"more") == []


# ---------------------------------------------------------------- over TCP


async def test_every_url_form_reaches_the_ws_endpoint() -> None:
    async with fake_server() as fake:
        for url in (
            f"ws://127.0.0.1:{fake.port}",
            f"http://127.0.0.1:{fake.port}/",
            f"ws://127.0.0.1:{fake.port}/ws",
        ):
            async with open_client(url, api_key="secret") as client:
                assert client.url == fake.url
                assert await client.ping() > 0
        async with open_client(f"http://127.0.0.1:{fake.port}/broker?x=1") as client:
            assert client.url == f"ws://127.0.0.1:{fake.port}/broker?x=1"
        targets = [request.target for request in fake.requests]
        assert targets == ["/ws", "/ws", "/ws", "/broker?x=1"]
        assert all((b"x-api-key", b"secret") in r.extra_headers for r in fake.requests[:3])
        # Each client closed its connection with a close frame, as it should.
        assert fake.close_codes == [1000] * 4
    with pytest.raises(ValueError, match="not a ws"):
        async with open_client("ftp://127.0.0.1:1"):
            pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_wss_and_https_urls_use_tls(ca: trustme.CA, server_tls: ssl.SSLContext) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with fake_server(server_tls) as fake:
        for url in (fake.url, f"https://127.0.0.1:{fake.port}"):
            async with open_client(url, ssl_context=trusting) as client:
                assert client.url == f"wss://127.0.0.1:{fake.port}/ws"
                assert client.connection_id is not None
                assert await client.ping() > 0
        # The default context trusts the system's CAs, not this test's.
        with pytest.raises(ServerUnreachable, match=r"(?i)certificate verify failed"):
            async with open_client(fake.url):
                pass
        # Plain WebSocket to a TLS port: no handshake either.
        with pytest.raises(ServerUnreachable):
            async with open_client(f"ws://127.0.0.1:{fake.port}", reconnect=False):
                pass
        assert fake.connections == 2


@pytest.mark.parametrize("reconnect", [True, False])
async def test_refusals_of_the_first_connection_are_errors(reconnect: bool) -> None:
    async with fake_server() as fake:
        fake.refuse_with = 401
        with pytest.raises(Unauthorized):
            async with open_client(fake.url, reconnect=reconnect):
                pass
        fake.refuse_with = 503
        with pytest.raises(ServerUnreachable, match="HTTP 503"):
            async with open_client(fake.url, reconnect=reconnect):
                pass
        # Accepted, then closed before the welcome frame (MAX_CONNECTIONS does so).
        fake.refuse_with = None
        fake.close_with = 1013
        with pytest.raises(ServerUnreachable, match="1013"):
            async with open_client(fake.url, reconnect=reconnect):
                pass
        assert fake.connections == 0


async def test_a_connection_refused_names_the_address() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(ServerUnreachable) as unreachable:
        async with open_client(f"ws://127.0.0.1:{port}"):
            pass
    assert f"ws://127.0.0.1:{port}/ws" in str(unreachable.value)
    assert "connection attempts failed" in str(unreachable.value)
