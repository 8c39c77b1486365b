"""The wire contract of PROTOCOL.md, checked without any I/O.

Every malformed client frame must become a ``BAD_REQUEST`` that echoes the
frame's ``request_id`` when it could be read; every server frame must encode
to exactly the JSON of PROTOCOL.md, key order included, and decode back.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pubsub import ErrorCode, ProtocolError
from pubsub._protocol.frames import (
    Ack,
    AnyClientFrame,
    AnyServerFrame,
    Error,
    ErrorBody,
    Event,
    Info,
    Message,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Unsubscribe,
    check_topic_name,
    decode_client_frame,
    decode_server_frame,
    encode,
    error_frame,
    info_frame,
    is_valid_topic_name,
    json_too_deep,
)

TS = "2026-11-28T10:00:00.123Z"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

#: Request ids a client may send: strings and ints, including the falsy ones
#: that a careless ``if request_id:`` would drop.
REQUEST_IDS: list[str | int] = ["r-1", "", 7, 0]

SUBSCRIBE: dict[str, Any] = {"type": "subscribe", "topic": "orders", "client_id": "c1"}
UNSUBSCRIBE: dict[str, Any] = {"type": "unsubscribe", "topic": "orders", "client_id": "c1"}
PUBLISH: dict[str, Any] = {
    "type": "publish",
    "topic": "orders",
    "message": {"id": "m1", "payload": {"sku": "A-1", "qty": 2}},
    "client_id": "c1",
}
PING: dict[str, Any] = {"type": "ping"}
FRAME_IDS = ["subscribe", "unsubscribe", "publish"]


def dumps(frame: object) -> bytes:
    return json.dumps(frame).encode()


def without(frame: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k != key}


def with_message(**message: Any) -> dict[str, Any]:
    return {**PUBLISH, "message": message}


def bad_request(data: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(data)
    assert info.value.code is ErrorCode.BAD_REQUEST
    return info.value


# --------------------------------------------------------------------------
# Client frames that must be refused.

BAD_TOPICS = [
    pytest.param("", id="empty"),
    pytest.param("a" * 129, id="129-chars"),
    pytest.param("my topic", id="space"),
    pytest.param("orders/eu", id="slash"),
    pytest.param("café", id="unicode"),
    pytest.param("日本", id="cjk"),
    pytest.param("orders*", id="star"),
    pytest.param("\norders", id="leading-newline"),
]

# Names only a `$`-anchored pattern lets through.
NEWLINE_TOPICS = [
    pytest.param("orders\n", id="trailing-newline"),
    pytest.param("a" * 128 + "\n", id="128-chars-and-newline"),
]

GOOD_TOPICS = [
    pytest.param("a", id="one-char"),
    pytest.param("a" * 128, id="128-chars"),
    pytest.param(("AZaz09._:-" * 13)[:128], id="every-class-128"),
    pytest.param("orders.eu:v2_new-1", id="punctuation"),
]

# (frame, words the error message must mention so the user can find the fault)
INVALID_FRAMES = [
    pytest.param({"type": "subcribe", "topic": "t", "client_id": "c"}, "type", id="unknown-type"),
    pytest.param({**PING, "type": "PING"}, "type", id="type-wrong-case"),
    pytest.param({**PING, "type": ""}, "type", id="type-empty"),
    pytest.param({**PING, "type": 5}, "type", id="type-not-string"),
    pytest.param({**PING, "type": None}, "type", id="type-null"),
    pytest.param(without(SUBSCRIBE, "type"), "type", id="missing-type"),
    pytest.param({}, "type", id="empty-object"),
    pytest.param(without(SUBSCRIBE, "topic"), "topic", id="subscribe-missing-topic"),
    pytest.param(without(SUBSCRIBE, "client_id"), "client_id", id="subscribe-missing-client_id"),
    pytest.param(without(UNSUBSCRIBE, "topic"), "topic", id="unsubscribe-missing-topic"),
    pytest.param(
        without(UNSUBSCRIBE, "client_id"), "client_id", id="unsubscribe-missing-client_id"
    ),
    pytest.param(without(PUBLISH, "topic"), "topic", id="publish-missing-topic"),
    pytest.param(without(PUBLISH, "client_id"), "client_id", id="publish-missing-client_id"),
    pytest.param(without(PUBLISH, "message"), "message", id="publish-missing-message"),
    pytest.param(with_message(payload=1), "id", id="publish-missing-message.id"),
    pytest.param(with_message(id="m1"), "payload", id="publish-missing-message.payload"),
    pytest.param({**PUBLISH, "message": "hello"}, "message", id="message-not-object"),
    pytest.param({**PUBLISH, "message": None}, "message", id="message-null"),
    pytest.param(with_message(id="", payload=1), "id", id="message.id-empty"),
    pytest.param(with_message(id="x" * 257, payload=1), "id", id="message.id-257-chars"),
    pytest.param(with_message(id=17, payload=1), "id", id="message.id-not-string"),
    pytest.param({**SUBSCRIBE, "last_n": -1}, "last_n", id="last_n-negative"),
    pytest.param({**SUBSCRIBE, "last_n": "5"}, "last_n", id="last_n-string"),
    pytest.param({**SUBSCRIBE, "last_n": 1.5}, "last_n", id="last_n-float"),
    pytest.param({**SUBSCRIBE, "last_n": True}, "last_n", id="last_n-bool"),
    pytest.param({**SUBSCRIBE, "topic": 5}, "topic", id="subscribe-topic-int"),
    pytest.param({**SUBSCRIBE, "topic": None}, "topic", id="subscribe-topic-null"),
    pytest.param({**SUBSCRIBE, "topic": ["orders"]}, "topic", id="subscribe-topic-list"),
    pytest.param({**UNSUBSCRIBE, "topic": 5}, "topic", id="unsubscribe-topic-int"),
    pytest.param({**PUBLISH, "topic": {"name": "o"}}, "topic", id="publish-topic-object"),
    pytest.param({**SUBSCRIBE, "client_id": 5}, "client_id", id="client_id-int"),
    pytest.param({**SUBSCRIBE, "since_offset": 3}, "since_offset", id="since_offset-no-epoch"),
    pytest.param(
        {**SUBSCRIBE, "since_offset": -1, "epoch": "e1"}, "since_offset", id="since_offset-neg"
    ),
    pytest.param(
        {**SUBSCRIBE, "since_offset": "3", "epoch": "e1"}, "since_offset", id="since_offset-str"
    ),
    *(
        pytest.param(
            {**base, "topic": topic.values[0]},
            "topic",
            id=f"{base['type']}-topic-{topic.id}",
        )
        for base in (SUBSCRIBE, UNSUBSCRIBE, PUBLISH)
        for topic in BAD_TOPICS
    ),
]

MALFORMED_JSON = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"not json", id="text"),
    pytest.param(b'{"type":"ping",}', id="trailing-comma"),
    pytest.param(b"{'type':'ping'}", id="single-quotes"),
    pytest.param(b'{"type":"ping"} {"type":"ping"}', id="two-objects"),
    pytest.param(b'{"type":"ping","request_id":"r-1"', id="truncated-with-request_id"),
    pytest.param(b'{"type":"ping","request_id":"r-1"} x', id="trailing-garbage"),
    pytest.param(b'{"type":"ping","request_id":NaN}', id="nan"),
]

NOT_AN_OBJECT = [
    pytest.param(b"[]", id="empty-array"),
    pytest.param(b'[{"type":"ping","request_id":"r-1"}]', id="array-of-frame"),
    pytest.param(b'"ping"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="bool"),
]


@pytest.mark.parametrize("request_id", REQUEST_IDS)
@pytest.mark.parametrize(("frame", "mentions"), INVALID_FRAMES)
def test_invalid_frame_is_bad_request_echoing_request_id(
    frame: dict[str, Any], mentions: str, request_id: str | int
) -> None:
    error = bad_request(dumps({**frame, "request_id": request_id}))
    assert error.request_id == request_id
    assert type(error.request_id) is type(request_id)
    assert mentions in error.message


@pytest.mark.parametrize(("frame", "mentions"), INVALID_FRAMES)
def test_invalid_frame_without_request_id_echoes_none(frame: dict[str, Any], mentions: str) -> None:
    error = bad_request(dumps(frame))
    assert error.request_id is None
    assert mentions in error.message


@pytest.mark.parametrize("data", MALFORMED_JSON)
def test_malformed_json_is_bad_request_without_request_id(data: bytes) -> None:
    error = bad_request(data)
    assert error.request_id is None
    assert "JSON" in error.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"type":"ping","request_id":"r-\xff"}', id="in-request_id"),
        pytest.param(b'{"type":"subscribe","topic":"\xff","client_id":"c"}', id="in-topic"),
        pytest.param(
            b'{"type":"publish","topic":"t","client_id":"c","message":{"id":"m","payload":"\xff"}}',
            id="in-payload",
        ),
    ],
)
def test_invalid_utf8_is_bad_request_without_request_id(data: bytes) -> None:
    # RFC 8259: JSON text is UTF-8. A payload that is not would be relayed to
    # every subscriber inside a WebSocket *text* frame.
    assert bad_request(data).request_id is None


@pytest.mark.parametrize("topic", NEWLINE_TOPICS)
@pytest.mark.parametrize("base", [SUBSCRIBE, UNSUBSCRIBE, PUBLISH], ids=FRAME_IDS)
def test_topic_with_trailing_newline_is_bad_request(base: dict[str, Any], topic: str) -> None:
    assert bad_request(dumps({**base, "topic": topic, "request_id": "r-1"})).request_id == "r-1"


@pytest.mark.parametrize("topic", NEWLINE_TOPICS)
def test_topic_name_helpers_refuse_trailing_newline(topic: str) -> None:
    assert not is_valid_topic_name(topic)


def test_malformed_json_as_str_is_bad_request() -> None:
    assert bad_request('{"type": "ping", "request_id": "r-1"').request_id is None


@pytest.mark.parametrize("data", NOT_AN_OBJECT)
def test_non_object_json_is_bad_request_without_request_id(data: bytes) -> None:
    assert bad_request(data).request_id is None


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="float"),
        pytest.param(["r-1"], id="array"),
        pytest.param({"id": "r-1"}, id="object"),
    ],
)
@pytest.mark.parametrize("base", [SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING], ids=[*FRAME_IDS, "ping"])
def test_unreadable_request_id_is_bad_request_without_request_id(
    base: dict[str, Any], request_id: object
) -> None:
    assert bad_request(dumps({**base, "request_id": request_id})).request_id is None


def test_unreadable_request_id_with_another_fault_still_echoes_none() -> None:
    error = bad_request(dumps({**SUBSCRIBE, "topic": "a b", "request_id": [1]}))
    assert error.request_id is None


def test_bad_topic_name_error_states_the_rule() -> None:
    error = bad_request(dumps({**SUBSCRIBE, "topic": "a b", "request_id": "r-1"}))
    assert "1-128" in error.message
    assert "A-Z a-z 0-9 . _ : -" in error.message


def test_unknown_type_error_names_the_type() -> None:
    error = bad_request(dumps({"type": "subcribe", "topic": "t", "client_id": "c"}))
    assert "subcribe" in error.message


# --------------------------------------------------------------------------
# Client frames that must be accepted.


@pytest.mark.parametrize("request_id", [*REQUEST_IDS, None])
def test_valid_frames_decode_to_their_structs(request_id: str | int | None) -> None:
    extra: dict[str, Any] = {} if request_id is None else {"request_id": request_id}
    assert decode_client_frame(dumps({**SUBSCRIBE, "last_n": 5, **extra})) == Subscribe(
        topic="orders", client_id="c1", last_n=5, request_id=request_id
    )
    assert decode_client_frame(dumps({**UNSUBSCRIBE, **extra})) == Unsubscribe(
        topic="orders", client_id="c1", request_id=request_id
    )
    publish = decode_client_frame(dumps({**PUBLISH, **extra}))
    assert isinstance(publish, Publish)
    assert (publish.topic, publish.client_id, publish.request_id) == ("orders", "c1", request_id)
    assert publish.message.id == "m1"
    assert msgspec.json.decode(publish.message.payload) == {"sku": "A-1", "qty": 2}
    assert decode_client_frame(dumps({**PING, **extra})) == Ping(request_id=request_id)


def test_subscribe_defaults() -> None:
    frame = decode_client_frame(dumps(SUBSCRIBE))
    assert frame == Subscribe(topic="orders", client_id="c1")
    assert isinstance(frame, Subscribe)
    assert frame.last_n == 0
    assert (frame.since_offset, frame.epoch, frame.request_id) == (None, None, None)


@pytest.mark.parametrize("last_n", [0, 1, 100, 10**9])
def test_last_n_accepts_non_negative_ints(last_n: int) -> None:
    frame = decode_client_frame(dumps({**SUBSCRIBE, "last_n": last_n}))
    assert isinstance(frame, Subscribe)
    assert frame.last_n == last_n


@pytest.mark.parametrize("since_offset", [0, 42])
def test_since_offset_with_epoch_is_accepted(since_offset: int) -> None:
    frame = decode_client_frame(dumps({**SUBSCRIBE, "since_offset": since_offset, "epoch": "e1"}))
    assert isinstance(frame, Subscribe)
    assert (frame.since_offset, frame.epoch) == (since_offset, "e1")


def test_request_id_null_means_no_request_id() -> None:
    assert decode_client_frame(b'{"type":"ping","request_id":null}') == Ping()


def test_str_input_is_accepted() -> None:
    assert decode_client_frame('{"type":"ping","request_id":"r-1"}') == Ping(request_id="r-1")


@pytest.mark.parametrize("topic", GOOD_TOPICS)
@pytest.mark.parametrize("base", [SUBSCRIBE, UNSUBSCRIBE, PUBLISH], ids=FRAME_IDS)
def test_valid_topic_names_are_accepted(base: dict[str, Any], topic: str) -> None:
    frame = decode_client_frame(dumps({**base, "topic": topic}))
    assert isinstance(frame, Subscribe | Unsubscribe | Publish)
    assert frame.topic == topic


@pytest.mark.parametrize("topic", GOOD_TOPICS)
def test_topic_name_helpers_accept_valid_names(topic: str) -> None:
    assert is_valid_topic_name(topic)
    assert check_topic_name(topic, "r-1") == topic


@pytest.mark.parametrize("request_id", [*REQUEST_IDS, None])
@pytest.mark.parametrize("topic", [*BAD_TOPICS, pytest.param(5, id="int")])
def test_topic_name_helpers_refuse_bad_names(topic: object, request_id: str | int | None) -> None:
    assert not is_valid_topic_name(topic)
    with pytest.raises(ProtocolError) as info:
        check_topic_name(topic, request_id)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.request_id == request_id
    assert "1-128" in info.value.message


@pytest.mark.parametrize("message_id", ["m", "x" * 256, "550e8400-e29b-41d4-a716-446655440000"])
def test_message_id_of_1_to_256_chars_is_accepted(message_id: str) -> None:
    frame = decode_client_frame(dumps(with_message(id=message_id, payload=None)))
    assert isinstance(frame, Publish)
    assert frame.message.id == message_id


# Each frame plus fields the contract does not know: decoding must ignore them.
UNKNOWN_FIELDS: dict[str, Any] = {"priority": 5, "meta": {"a": [1]}, "ts": "x", "epoch2": None}


@pytest.mark.parametrize(
    "base",
    [
        pytest.param({**SUBSCRIBE, "request_id": "r-1", "last_n": 3}, id="subscribe"),
        pytest.param({**UNSUBSCRIBE, "request_id": 2}, id="unsubscribe"),
        pytest.param({**PUBLISH, "request_id": "r-1"}, id="publish"),
        pytest.param({**PING, "request_id": "r-1"}, id="ping"),
        pytest.param(PING, id="ping-bare"),
    ],
)
def test_unknown_fields_are_ignored(base: dict[str, Any]) -> None:
    extended = {**base, **UNKNOWN_FIELDS}
    if base["type"] == "publish":
        extended["message"] = {**base["message"], "headers": {"trace": "t-1"}}
    assert decode_client_frame(dumps(extended)) == decode_client_frame(dumps(base))


# --------------------------------------------------------------------------
# Payloads are delivered byte for byte.

RAW_PAYLOADS = [
    pytest.param(b'{"b": 1,   "a":[1.50, "x"]}', id="spacing-and-1.50"),
    pytest.param(b"1.0", id="1.0"),
    pytest.param(b"1E2", id="exponent"),
    pytest.param(b"-0", id="minus-zero"),
    pytest.param(b"123456789012345678901234567890", id="bigint"),
    pytest.param(b'"\\u00e9\\n"', id="escapes"),
    pytest.param('"café ✓"'.encode(), id="utf8"),
    pytest.param(b"[ ]", id="spaced-empty-array"),
    pytest.param(b"null", id="null"),
    pytest.param(b"false", id="false"),
    pytest.param(b'{"a":1,"a":2}', id="duplicate-keys"),
]


@pytest.mark.parametrize("payload", RAW_PAYLOADS)
def test_payload_bytes_survive_decode_and_event_encode(payload: bytes) -> None:
    data = (
        b'{"type":"publish","topic":"orders","client_id":"c1",'
        b'"message":{"id":"m1","payload":' + payload + b"}}"
    )
    frame = decode_client_frame(data)
    assert isinstance(frame, Publish)
    assert bytes(frame.message.payload) == payload
    event = Event(topic=frame.topic, message=frame.message, offset=43, ts=TS)
    assert encode(event) == (
        b'{"type":"event","topic":"orders","message":{"id":"m1","payload":'
        + payload
        + b'},"offset":43,"ts":"'
        + TS.encode()
        + b'"}'
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children)
    ),
    max_leaves=25,
)


@given(value=JSON_VALUES, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 1]))
def test_any_json_payload_round_trips(value: Any, ensure_ascii: bool, indent: int | None) -> None:
    payload = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    data = (
        '{"type":"publish","topic":"t","client_id":"c","message":{"id":"m","payload":'
        + payload
        + "}}"
    ).encode()
    frame = decode_client_frame(data)
    assert isinstance(frame, Publish)
    wire = encode(Event(topic=frame.topic, message=frame.message, offset=1, ts=TS))
    back = decode_server_frame(wire)
    assert isinstance(back, Event)
    assert bytes(back.message.payload) == payload.encode()
    assert msgspec.json.decode(back.message.payload) == value


# --------------------------------------------------------------------------
# Server frames: exact JSON of PROTOCOL.md, key order included.

_EVENT_MESSAGE = Message(id="m1", payload=msgspec.Raw(b'{"sku":"A-1","qty":2}'))

SERVER_FRAMES = [
    pytest.param(
        Info(msg="connected", connection_id="c-1f3a", ts=TS),
        '{"type":"info","msg":"connected","connection_id":"c-1f3a","ts":"TS"}',
        id="info-connected",
    ),
    pytest.param(
        Ack(request_id="r1", topic="orders", status="ok", offset=42, ts=TS),
        '{"type":"ack","request_id":"r1","topic":"orders","status":"ok","offset":42,"ts":"TS"}',
        id="ack",
    ),
    pytest.param(
        Ack(request_id=7, topic="orders", status="ok", offset=42, ts=TS),
        '{"type":"ack","request_id":7,"topic":"orders","status":"ok","offset":42,"ts":"TS"}',
        id="ack-int-request_id",
    ),
    pytest.param(
        Ack(topic="orders", status="ok", offset=42, ts=TS),
        '{"type":"ack","topic":"orders","status":"ok","offset":42,"ts":"TS"}',
        id="ack-without-request_id",
    ),
    pytest.param(
        Ack(request_id="", topic="orders", status="ok", offset=0, ts=TS),
        '{"type":"ack","request_id":"","topic":"orders","status":"ok","offset":0,"ts":"TS"}',
        id="ack-empty-request_id-offset-0",
    ),
    pytest.param(
        Ack(
            request_id="r1",
            topic="orders",
            status="ok",
            offset=0,
            epoch="e-9",
            recovered=False,
            ts=TS,
        ),
        '{"type":"ack","request_id":"r1","topic":"orders","status":"ok","offset":0,'
        '"epoch":"e-9","recovered":false,"ts":"TS"}',
        id="subscribe-ack-not-recovered",
    ),
    pytest.param(
        Ack(topic="orders", status="ok", offset=12, epoch="e-9", recovered=True, ts=TS),
        '{"type":"ack","topic":"orders","status":"ok","offset":12,'
        '"epoch":"e-9","recovered":true,"ts":"TS"}',
        id="subscribe-ack-recovered",
    ),
    pytest.param(
        Event(topic="orders", message=_EVENT_MESSAGE, offset=43, ts=TS),
        '{"type":"event","topic":"orders","message":{"id":"m1","payload":{"sku":"A-1","qty":2}},'
        '"offset":43,"ts":"TS"}',
        id="event",
    ),
    pytest.param(
        Pong(request_id="r9", ts=TS),
        '{"type":"pong","request_id":"r9","ts":"TS"}',
        id="pong",
    ),
    pytest.param(
        Pong(request_id=0, ts=TS),
        '{"type":"pong","request_id":0,"ts":"TS"}',
        id="pong-int-0",
    ),
    pytest.param(Pong(ts=TS), '{"type":"pong","ts":"TS"}', id="pong-without-request_id"),
    pytest.param(Info(msg="ping", ts=TS), '{"type":"info","msg":"ping","ts":"TS"}', id="info-ping"),
    pytest.param(
        Info(topic="orders", msg="topic_deleted", ts=TS),
        '{"type":"info","topic":"orders","msg":"topic_deleted","ts":"TS"}',
        id="info-topic_deleted",
    ),
    pytest.param(
        Info(msg="messages_dropped", dropped=17, ts=TS),
        '{"type":"info","msg":"messages_dropped","dropped":17,"ts":"TS"}',
        id="info-messages_dropped",
    ),
    pytest.param(
        Info(msg="shutting_down", ts=TS),
        '{"type":"info","msg":"shutting_down","ts":"TS"}',
        id="info-shutting_down",
    ),
    pytest.param(
        Error(
            request_id="r2",
            error=ErrorBody("TOPIC_NOT_FOUND", "topic 'x' does not exist"),
            ts=TS,
        ),
        '{"type":"error","request_id":"r2","error":{"code":"TOPIC_NOT_FOUND",'
        '"message":"topic \'x\' does not exist"},"ts":"TS"}',
        id="error",
    ),
    pytest.param(
        Error(error=ErrorBody("BAD_REQUEST", "malformed JSON"), ts=TS),
        '{"type":"error","error":{"code":"BAD_REQUEST","message":"malformed JSON"},"ts":"TS"}',
        id="error-without-request_id",
    ),
]


def wire(template: str) -> bytes:
    return template.replace('"ts":"TS"', f'"ts":"{TS}"').encode()


def pin_ts(data: bytes) -> bytes:
    """Check the frame's ``ts`` has the contract format and replace it with ``TS``."""
    ts = json.loads(data)["ts"]
    assert TS_RE.fullmatch(ts), ts
    field = f'"ts":"{ts}"'.encode()
    assert data.count(field) == 1
    return data.replace(field, b'"ts":"TS"')


@pytest.mark.parametrize(("frame", "expected"), SERVER_FRAMES)
def test_server_frame_encodes_to_protocol_json(frame: AnyServerFrame, expected: str) -> None:
    assert encode(frame) == wire(expected)


@pytest.mark.parametrize(("frame", "expected"), SERVER_FRAMES)
def test_decode_server_frame_round_trips(frame: AnyServerFrame, expected: str) -> None:
    decoded = decode_server_frame(wire(expected))
    assert decoded == frame
    assert type(decoded) is type(frame)
    assert encode(decoded) == wire(expected)
    assert decode_server_frame(wire(expected).decode()) == frame


def test_decode_server_frame_refuses_unknown_type() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_server_frame(b'{"type":"nope","ts":"x"}')


@pytest.mark.parametrize(
    ("code", "message", "request_id", "expected"),
    [
        pytest.param(
            ErrorCode.TOPIC_NOT_FOUND,
            "topic 'x' does not exist",
            "r2",
            '{"type":"error","request_id":"r2","error":{"code":"TOPIC_NOT_FOUND",'
            '"message":"topic \'x\' does not exist"},"ts":"TS"}',
            id="str-request_id",
        ),
        pytest.param(
            ErrorCode.MESSAGE_TOO_LARGE,
            "too big",
            3,
            '{"type":"error","request_id":3,"error":{"code":"MESSAGE_TOO_LARGE",'
            '"message":"too big"},"ts":"TS"}',
            id="int-request_id",
        ),
        pytest.param(
            ErrorCode.BAD_REQUEST,
            "malformed JSON",
            None,
            '{"type":"error","error":{"code":"BAD_REQUEST","message":"malformed JSON"},"ts":"TS"}',
            id="no-request_id",
        ),
    ],
)
def test_error_frame(
    code: ErrorCode, message: str, request_id: str | int | None, expected: str
) -> None:
    assert pin_ts(error_frame(code, message, request_id)) == expected.encode()


@pytest.mark.parametrize(
    ("msg", "fields", "expected"),
    [
        pytest.param(
            "connected",
            {"connection_id": "c-1f3a"},
            '{"type":"info","msg":"connected","connection_id":"c-1f3a","ts":"TS"}',
            id="connected",
        ),
        pytest.param("ping", {}, '{"type":"info","msg":"ping","ts":"TS"}', id="ping"),
        pytest.param(
            "topic_deleted",
            {"topic": "orders"},
            '{"type":"info","topic":"orders","msg":"topic_deleted","ts":"TS"}',
            id="topic_deleted",
        ),
        pytest.param(
            "messages_dropped",
            {"dropped": 17},
            '{"type":"info","msg":"messages_dropped","dropped":17,"ts":"TS"}',
            id="messages_dropped",
        ),
        pytest.param(
            "shutting_down", {}, '{"type":"info","msg":"shutting_down","ts":"TS"}', id="shutting"
        ),
    ],
)
def test_info_frame(msg: str, fields: dict[str, Any], expected: str) -> None:
    assert pin_ts(info_frame(msg, **fields)) == expected.encode()


def test_client_frame_round_trips_through_encode() -> None:
    frames: list[AnyClientFrame] = [
        Subscribe(topic="orders", client_id="c1", last_n=2, request_id="r-1"),
        Unsubscribe(topic="orders", client_id="c1", request_id=3),
        Ping(),
    ]
    for frame in frames:
        assert decode_client_frame(encode(frame)) == frame


@pytest.mark.parametrize("kind", [str, bytes])
@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[" * 100 + "]" * 100, False),
        ("[" * 101 + "]" * 101, True),
        ('{"a":' * 101 + "1" + "}" * 101, True),
        (json.dumps([{"a": [1, {"b": 2}]} for _ in range(500)]), False),  # wide, not deep
        (json.dumps({"s": "[" * 500}), False),  # brackets inside a string
        (json.dumps({"s": '\\"' + "{" * 500}), False),  # an escaped quote in it
        ("[" * 150, False),  # malformed: the decoder says what is wrong
    ],
)
def test_json_depth_is_counted_outside_strings(text: str, deep: bool, kind: type) -> None:
    data = text if kind is str else text.encode()
    assert json_too_deep(data, 100) is deep
