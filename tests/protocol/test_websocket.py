"""The sans-IO WebSocket layer, checked bytes in, events out (no sockets, no trio).

wsproto plays the client: it builds the handshake request and the masked client
frames fed to :class:`Handshake` and :class:`MessageReader`, and it decodes what
the server sends back (the ``101``, refusals, pongs, close frames, text frames),
so every assertion is about bytes a real client would see.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from pubsub import ErrorCode
from pubsub._protocol.websocket import (
    MAX_CLOSE_REASON,
    OPCODE_TEXT,
    PING_FRAME,
    Closed,
    Handshake,
    MessageReader,
    ReaderEvent,
    Refused,
    Reply,
    Text,
    close_reason,
    iter_server_frames,
    sendable_close_code,
    text_frame,
)

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MAX_SIZE = 64

# --------------------------------------------------------------------------
# Helpers: wsproto as the client.


def request_head(
    target: str = "/ws?api_key=k", extra_headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[WSConnection, bytes]:
    """A fresh wsproto client and the bytes of its opening handshake request."""
    client = WSConnection(ConnectionType.CLIENT)
    head = client.send(Request(host="x", target=target, extra_headers=extra_headers or []))
    return client, head


def client_events(client: WSConnection, data: bytes) -> list[Event]:
    """What the wsproto client makes of bytes the server sent."""
    client.receive_data(data)
    return list(client.events())


def connect(max_size: int = MAX_SIZE) -> tuple[WSConnection, MessageReader]:
    """An open client and the server's reader for it, handshake done."""
    client, head = request_head()
    handshake = Handshake(head)
    accept, early = handshake.accept()
    assert [type(e) for e in client_events(client, accept)] == [AcceptConnection]
    return client, MessageReader(max_size, early)


def send(client: WSConnection, *events: Event) -> bytes:
    """The masked client frames for ``events``, concatenated."""
    return b"".join(client.send(event) for event in events)


def masked(first_byte: int, payload: bytes) -> bytes:
    """A client frame with a zero mask (so the payload reads as is)."""
    assert len(payload) < 126
    return bytes((first_byte, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload


def joined_text(events: list[Event]) -> str:
    """The text of the messages the client decoded (wsproto may split one)."""
    return "".join(e.data for e in events if isinstance(e, TextMessage))


def can_send_close(reader: MessageReader) -> bool:
    """``reader.can_send_close``, read afresh (mypy would keep an earlier assert's narrowing)."""
    return reader.can_send_close


def http_response(data: bytes) -> tuple[bytes, dict[bytes, bytes], Any]:
    """Status line, headers (lower-cased names) and JSON body of an HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers[b"content-length"]) == len(body)
    return status_line, headers, json.loads(body)


# --------------------------------------------------------------------------
# Server frames.


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_header_forms_decode_in_a_client(length: int, header: bytes) -> None:
    payload = (b"0123456789" * (length // 10 + 1))[:length]
    frame = text_frame(payload)
    assert frame == header + payload
    client, _ = connect()
    events = client_events(client, frame)
    assert joined_text(events) == payload.decode()
    assert isinstance(events[-1], TextMessage)
    assert events[-1].message_finished


def test_text_frame_carries_utf8_unchanged() -> None:
    payload = '{"type":"event","message":{"payload":"héllo €𝄞"}}'.encode()
    client, _ = connect()
    assert joined_text(client_events(client, text_frame(payload))) == payload.decode()


def test_ping_frame_is_an_empty_ping_to_a_client() -> None:
    client, _ = connect()
    assert client_events(client, PING_FRAME) == [Ping(payload=b"")]


def test_iter_server_frames_round_trips_text_frames_and_pings() -> None:
    payloads = [b'{"a":1}', b"", b"x" * 126, b"y" * 70000, "é€".encode(), b"z" * 125]
    data = b"".join(
        [text_frame(payloads[0]), PING_FRAME] + [text_frame(p) for p in payloads[1:]] + [PING_FRAME]
    )
    expected = (
        [(OPCODE_TEXT, payloads[0]), (0x9, b"")]
        + [(OPCODE_TEXT, p) for p in payloads[1:]]
        + [(0x9, b"")]
    )
    assert list(iter_server_frames(data)) == expected


def test_iter_server_frames_of_nothing_is_empty() -> None:
    assert list(iter_server_frames(b"")) == []


#: A batch of two frames whose second has a 2-byte extended length header.
BATCH = text_frame(b"first") + text_frame(b"s" * 200)
SECOND = len(text_frame(b"first"))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(SECOND + 1, id="inside-first-header-byte"),
        pytest.param(SECOND + 2, id="before-extended-length"),
        pytest.param(SECOND + 3, id="inside-extended-length"),
        pytest.param(SECOND + 4, id="before-payload"),
        pytest.param(len(BATCH) - 1, id="last-payload-byte-missing"),
    ],
)
def test_iter_server_frames_refuses_a_truncated_last_frame(cut: int) -> None:
    frames = iter_server_frames(BATCH[:cut])
    assert next(frames) == (OPCODE_TEXT, b"first")
    with pytest.raises(ValueError, match="truncated"):
        next(frames)


# --------------------------------------------------------------------------
# Close codes and reasons.


@pytest.mark.parametrize(
    ("received", "sent"),
    [(1005, 1000), (1006, 1000), (1000, 1000), (1001, 1001), (1009, 1009), (1013, 1013)],
)
def test_sendable_close_code(received: int, sent: int) -> None:
    assert sendable_close_code(received) == sent


@pytest.mark.parametrize(
    "reason",
    [
        "",
        "bye",
        "a" * 123,
        "a" * 124,
        "a" * 500,
        "é" * 62,  # 124 bytes: the last 2-byte character must go whole
        "a" + "€" * 41,  # 124 bytes: a 3-byte character straddles the limit
        "ab" + "𝄞" * 31,  # 126 bytes: a 4-byte character straddles the limit
        "€" * 41,  # exactly 123 bytes
    ],
)
def test_close_reason_fits_a_close_frame_without_splitting_characters(reason: str) -> None:
    cut = close_reason(reason)
    encoded = cut.encode()
    assert len(encoded) <= MAX_CLOSE_REASON
    assert reason.startswith(cut)
    if cut != reason:
        # As long as possible: one more character would not fit.
        assert len(reason[: len(cut) + 1].encode()) > MAX_CLOSE_REASON
    if len(reason.encode()) <= MAX_CLOSE_REASON:
        assert cut == reason


# --------------------------------------------------------------------------
# The opening handshake.


def test_handshake_exposes_headers_and_query_parameters() -> None:
    _, head = request_head(
        "/ws?api_key=k%20ey&client_id=c1&client_id=c2",
        [(b"X-API-Key", b"secret"), (b"X-Other", b"caf\xe9")],
    )
    handshake = Handshake(head)
    assert handshake.request is not None
    assert handshake.refusal == b""
    assert handshake.request.target.startswith("/ws?")
    assert handshake.header(b"x-api-key") == "secret"
    assert handshake.header(b"x-other") == "café"  # latin-1, as HTTP headers are
    assert handshake.header(b"x-missing") is None
    assert handshake.query("api_key") == "k ey"
    assert handshake.query("client_id") == "c1"
    assert handshake.query("missing") is None


def test_handshake_without_query_has_no_query_parameters() -> None:
    _, head = request_head("/ws")
    handshake = Handshake(head)
    assert handshake.query("api_key") is None
    assert handshake.header(b"x-api-key") is None


def test_accept_gives_a_101_the_client_accepts() -> None:
    client, head = request_head()
    accept, _ = Handshake(head).accept()
    assert accept.startswith(b"HTTP/1.1 101 ")
    assert [type(e) for e in client_events(client, accept)] == [AcceptConnection]
    # The client is now open: it can send a message.
    assert client.send(TextMessage(data="hi"))


def test_handshake_split_head_is_refused_as_incomplete() -> None:
    _, head = request_head()
    handshake = Handshake(head[:-2])
    assert handshake.request is None
    status, _, body = http_response(handshake.refusal)
    assert status.startswith(b"HTTP/1.1 400")
    assert body["error"] == "BAD_REQUEST"


GOOD_HEADERS = (
    b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"garbage\r\n\r\n", 400, id="garbage"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, id="tls"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="plain-get"),
        pytest.param(
            b"POST /ws HTTP/1.1\r\n" + GOOD_HEADERS + b"Sec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n",
            400,
            id="post",
        ),
        pytest.param(b"GET /ws HTTP/1.1\r\n" + GOOD_HEADERS + b"\r\n", 400, id="no-version"),
        pytest.param(
            b"GET /ws HTTP/1.1\r\n" + GOOD_HEADERS + b"Sec-WebSocket-Version: 8\r\n\r\n",
            426,
            id="old-version",
        ),
    ],
)
def test_bad_handshake_is_refused_with_a_json_error(head: bytes, status: int) -> None:
    handshake = Handshake(head)
    assert handshake.request is None
    status_line, headers, body = http_response(handshake.refusal)
    assert status_line.startswith(b"HTTP/1.1 %d" % status)
    assert 400 <= status < 500
    assert headers[b"content-type"] == b"application/json"
    assert body["error"] == "BAD_REQUEST"
    assert "handshake" in body["message"]
    assert TS_RE.match(body["ts"])


def test_empty_head_is_refused() -> None:
    handshake = Handshake(b"")
    assert handshake.request is None
    assert handshake.refusal.startswith(b"HTTP/1.1 400")


def test_reject_gives_the_contract_error_body() -> None:
    client, head = request_head()
    handshake = Handshake(head)
    refusal = handshake.reject(401, ErrorCode.UNAUTHORIZED, "missing or wrong API key")

    status_line, headers, body = http_response(refusal)
    assert status_line.startswith(b"HTTP/1.1 401")
    assert headers[b"content-type"] == b"application/json"
    assert list(body) == ["error", "message", "ts"]
    assert body["error"] == "UNAUTHORIZED"
    assert body["message"] == "missing or wrong API key"
    assert TS_RE.match(body["ts"])

    # The wsproto client sees a rejection carrying that body.
    events = client_events(client, refusal)
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == 401
    data = b"".join(e.data for e in events if isinstance(e, RejectData))
    assert json.loads(data) == body
    assert isinstance(events[-1], RejectData)
    assert events[-1].body_finished


def test_frames_after_the_head_reach_the_reader() -> None:
    _, head = request_head()
    # A client that does not wait for the 101 (RFC 6455 says it must, but the
    # transport passes whatever it read with the head): the message must not vanish.
    handshake = Handshake(head + masked(0x81, b"early"))
    assert handshake.request is not None
    _, early = handshake.accept()
    assert MessageReader(MAX_SIZE, early).receive_data(b"") == [Text("early")]


# --------------------------------------------------------------------------
# Messages.


def test_whole_text_message() -> None:
    client, reader = connect()
    assert reader.receive_data(send(client, TextMessage(data='{"type":"ping"}'))) == [
        Text('{"type":"ping"}')
    ]


def test_empty_text_message() -> None:
    client, reader = connect()
    assert reader.receive_data(send(client, TextMessage(data=""))) == [Text("")]


def test_fragmented_message_is_delivered_whole_at_its_last_fragment() -> None:
    client, reader = connect()
    first = send(client, TextMessage(data='{"type":', message_finished=False))
    second = send(client, TextMessage(data='"pi', message_finished=False))
    last = send(client, TextMessage(data='ng"}', message_finished=True))
    assert reader.receive_data(first) == []
    assert reader.receive_data(second) == []
    assert reader.receive_data(last) == [Text('{"type":"ping"}')]


def test_several_messages_in_one_read_come_out_in_order() -> None:
    client, reader = connect()
    data = send(
        client,
        TextMessage(data="one"),
        TextMessage(data="tw", message_finished=False),
        TextMessage(data="o"),
        TextMessage(data="three"),
    )
    assert reader.receive_data(data) == [Text("one"), Text("two"), Text("three")]


def a_conversation(client: WSConnection) -> bytes:
    """Client bytes exercising every kind of frame, ending with a close."""
    return send(
        client,
        TextMessage(data="hello"),
        TextMessage(data="wö", message_finished=False),
        Ping(payload=b"mid-message"),
        TextMessage(data="rld €𝄞", message_finished=True),
        BytesMessage(data=b"\x00\x01"),
        TextMessage(data="x" * 200),
        Ping(payload=b""),
        CloseConnection(code=1000, reason="bye"),
    )


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    client, reader = connect(max_size=1000)
    whole = reader.receive_data(a_conversation(client))
    assert [type(e) for e in whole] == [Text, Reply, Text, Refused, Text, Reply, Closed]
    assert whole[0] == Text("hello")
    assert whole[2] == Text("wörld €𝄞")
    assert whole[-1] == Closed(1000, "bye")

    client, reader = connect(max_size=1000)
    trickled: list[ReaderEvent] = []
    for byte in a_conversation(client):
        trickled.extend(reader.receive_data(bytes((byte,))))
    assert _comparable(trickled) == _comparable(whole)


def _comparable(events: list[ReaderEvent]) -> list[object]:
    # Refused carries an exception, which does not compare equal to an equal copy.
    return [(e.error.code, e.error.message) if isinstance(e, Refused) else e for e in events]


def test_a_ping_between_fragments_is_answered_at_once() -> None:
    client, reader = connect()
    assert reader.receive_data(send(client, TextMessage(data="a", message_finished=False))) == []
    events = reader.receive_data(send(client, Ping(payload=b"p")))
    assert [type(e) for e in events] == [Reply]
    assert reader.receive_data(send(client, TextMessage(data="b"))) == [Text("ab")]


@pytest.mark.parametrize("fragments", [1, 3])
def test_binary_message_is_refused_and_the_connection_stays_usable(fragments: int) -> None:
    client, reader = connect()
    parts = [
        BytesMessage(data=b"\x00\xff", message_finished=i == fragments - 1)
        for i in range(fragments)
    ]
    events = reader.receive_data(send(client, *parts))
    assert len(events) == 1
    assert isinstance(events[0], Refused)
    assert events[0].error.code is ErrorCode.BAD_REQUEST
    assert events[0].error.code.ws_close is None
    assert not reader.refused_too_large
    assert can_send_close(reader)
    assert reader.receive_data(send(client, TextMessage(data="next"))) == [Text("next")]


def assert_too_large(events: list[ReaderEvent], reader: MessageReader) -> None:
    assert len(events) == 1
    assert isinstance(events[0], Refused)
    assert events[0].error.code is ErrorCode.MESSAGE_TOO_LARGE
    assert events[0].error.code.ws_close == 1009
    assert str(MAX_SIZE) in events[0].error.message
    assert reader.refused_too_large


def test_message_at_the_limit_is_accepted() -> None:
    client, reader = connect()
    text = "x" * MAX_SIZE
    assert reader.receive_data(send(client, TextMessage(data=text))) == [Text(text)]
    assert not reader.refused_too_large


def test_message_over_the_limit_is_refused_and_later_messages_are_ignored() -> None:
    client, reader = connect()
    assert_too_large(
        reader.receive_data(send(client, TextMessage(data="x" * (MAX_SIZE + 1)))), reader
    )
    assert reader.receive_data(send(client, TextMessage(data="later"))) == []
    assert reader.receive_data(send(client, BytesMessage(data=b"later"))) == []
    # The close that follows still reaches the client with 1009.
    events = client_events(client, reader.close(1009, "message too large"))
    assert events == [CloseConnection(code=1009, reason="message too large")]


def test_binary_message_over_the_limit_is_too_large() -> None:
    client, reader = connect()
    events = reader.receive_data(send(client, BytesMessage(data=b"\x00" * (MAX_SIZE + 1))))
    assert_too_large(events, reader)


@pytest.mark.parametrize(
    ("char", "count", "accepted"),
    [
        ("é", MAX_SIZE // 2, True),  # exactly MAX_SIZE bytes
        ("é", MAX_SIZE // 2 + 1, False),
        ("€", MAX_SIZE // 3, True),  # 63 bytes
        ("€", MAX_SIZE // 3 + 1, False),
        ("𝄞", MAX_SIZE // 4, True),  # exactly MAX_SIZE bytes
        ("𝄞", MAX_SIZE // 4 + 1, False),
        ("é", MAX_SIZE, False),  # MAX_SIZE characters, twice as many bytes
        ("𝄞", MAX_SIZE, False),
    ],
)
def test_the_limit_counts_utf8_bytes_not_characters(char: str, count: int, accepted: bool) -> None:
    client, reader = connect()
    text = char * count
    events = reader.receive_data(send(client, TextMessage(data=text)))
    if accepted:
        assert events == [Text(text)]
    else:
        assert_too_large(events, reader)


def test_multibyte_limit_holds_across_fragments() -> None:
    client, reader = connect()
    half = "é" * (MAX_SIZE // 4 + 1)
    first = send(client, TextMessage(data=half, message_finished=False))
    assert reader.receive_data(first) == []
    assert_too_large(reader.receive_data(send(client, TextMessage(data=half))), reader)


def test_oversize_is_caught_before_the_last_fragment() -> None:
    client, reader = connect()
    half = "x" * (MAX_SIZE // 2 + 1)
    assert reader.receive_data(send(client, TextMessage(data=half, message_finished=False))) == []
    events = reader.receive_data(send(client, TextMessage(data=half, message_finished=False)))
    assert_too_large(events, reader)
    # The rest of that message, and every later one, are dropped.
    assert reader.receive_data(send(client, TextMessage(data=half))) == []
    assert reader.receive_data(send(client, TextMessage(data="ok"))) == []


def test_oversize_is_caught_inside_one_partially_received_frame() -> None:
    client, reader = connect()
    frame = send(client, TextMessage(data="x" * (MAX_SIZE * 4)))
    # Only part of the single frame has arrived, already over the limit.
    assert_too_large(reader.receive_data(frame[: MAX_SIZE + 20]), reader)
    assert reader.receive_data(frame[MAX_SIZE + 20 :]) == []


@pytest.mark.parametrize("payload", [b"", b"keepalive", b"\x00\xff" * 62 + b"!"])
def test_ping_is_answered_with_a_pong_carrying_its_payload(payload: bytes) -> None:
    client, reader = connect()
    events = reader.receive_data(send(client, Ping(payload=payload)))
    assert len(events) == 1
    assert isinstance(events[0], Reply)
    assert client_events(client, events[0].data) == [Pong(payload=payload)]


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, "bye"), (1001, "going away"), (4000, "app-defined"), (1000, "")]
)
def test_client_close_is_reported_and_answered(code: int, reason: str) -> None:
    client, reader = connect()
    events = reader.receive_data(send(client, CloseConnection(code=code, reason=reason)))
    assert events == [Closed(code, reason)]
    assert can_send_close(reader)
    reply = reader.close(code, reason)
    assert client_events(client, reply) == [CloseConnection(code=code, reason=reason)]
    assert not can_send_close(reader)
    assert reader.close(code, reason) == b""


def test_close_without_a_code_is_answered_with_1000() -> None:
    client, reader = connect()
    # An empty close payload: the received code is 1005 (no status), never sent back.
    events = reader.receive_data(masked(0x88, b""))
    assert events == [Closed(1005, "")]
    assert client_events(client, reader.close(1005, "")) == [CloseConnection(code=1000, reason="")]


def test_nothing_after_the_close_frame_is_reported() -> None:
    client, reader = connect()
    data = send(client, CloseConnection(code=1000, reason="bye"))
    events = reader.receive_data(data + masked(0x81, b"late"))
    assert events == [Closed(1000, "bye")]


def test_ping_after_the_client_closed_is_not_answered() -> None:
    client, reader = connect()
    data = send(client, CloseConnection(code=1000, reason="bye"))
    assert reader.receive_data(data) == [Closed(1000, "bye")]
    # A raw ping after the close (the wsproto client refuses to send one).
    assert reader.receive_data(masked(0x89, b"p")) == []


def test_server_close_sends_a_frame_once() -> None:
    client, reader = connect()
    assert can_send_close(reader)
    frame = reader.close(1013, "LIMIT_EXCEEDED")
    assert client_events(client, frame) == [CloseConnection(code=1013, reason="LIMIT_EXCEEDED")]
    assert not can_send_close(reader)
    assert reader.close(1000, "again") == b""
    # The client's answering close completes the handshake.
    assert reader.receive_data(send(client, CloseConnection(code=1013))) == [Closed(1013, "")]
    assert reader.close(1000, "") == b""


@pytest.mark.parametrize("received", [1005, 1006])
def test_close_never_sends_a_reserved_code(received: int) -> None:
    client, reader = connect()
    assert client_events(client, reader.close(received, "gone")) == [
        CloseConnection(code=1000, reason="gone")
    ]


def test_close_reason_is_cut_to_fit_the_frame() -> None:
    client, reader = connect()
    reason = "é" * 100  # 200 bytes
    events = client_events(client, reader.close(1011, reason))
    assert len(events) == 1
    assert isinstance(events[0], CloseConnection)
    assert events[0].code == 1011
    assert events[0].reason == "é" * 61


def test_pings_are_not_answered_once_the_server_closed() -> None:
    client, reader = connect()
    reader.close(1009, "too large")
    assert reader.receive_data(send(client, Ping(payload=b"p"))) == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(text_frame(b"hi"), 1002, id="unmasked"),
        pytest.param(masked(0x81, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(masked(0x81, "é".encode()[:1]), 1007, id="truncated-utf8"),
        pytest.param(masked(0x83, b"x"), 1002, id="reserved-opcode"),
        pytest.param(masked(0xC1, b"x"), 1002, id="rsv1-without-extension"),
        pytest.param(masked(0x80, b"x"), 1002, id="continuation-without-start"),
        pytest.param(masked(0x09, b"x"), 1002, id="fragmented-ping"),
        pytest.param(masked(0x88, b"\x03\xe8\xff"), 1007, id="close-reason-not-utf8"),
        pytest.param(masked(0x88, b"\x03\xed"), 1002, id="close-code-1005-on-wire"),
        pytest.param(masked(0x88, b"\x03"), 1002, id="one-byte-close-payload"),
        pytest.param(
            masked(0x01, b"a") + masked(0x81, b"b"), 1002, id="new-message-inside-fragmented"
        ),
    ],
)
def test_protocol_violation_closes_with_the_right_code(data: bytes, code: int) -> None:
    client, reader = connect()
    events = reader.receive_data(data)
    assert len(events) == 1
    assert isinstance(events[0], Closed)
    assert events[0].code == code
    # The server can still say so to the client, with that code.
    reply = client_events(client, reader.close(events[0].code, events[0].reason))
    assert len(reply) == 1
    assert isinstance(reply[0], CloseConnection)
    assert reply[0].code == code
    assert len((reply[0].reason or "").encode()) <= MAX_CLOSE_REASON
