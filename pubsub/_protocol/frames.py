"""The wire contract as data: frames, their decoding and encoding.

Sans-IO: no trio, no sockets. One decoder and one encoder per direction are
built once and reused. Client payloads stay ``msgspec.Raw`` from decode to
encode, so the bytes a publisher sent are the bytes every subscriber gets.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Annotated, Any, Final, Literal

import msgspec

from .errors import ErrorCode, ProtocolError
from .timestamps import MAX_TTL_MS, ts_now

TOPIC_NAME_RULE: Final = "1-128 characters from A-Z a-z 0-9 . _ : -"
_TOPIC_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}\Z"  # \Z: "$" would accept a final newline
_TOPIC_RE: Final = re.compile(_TOPIC_PATTERN)
#: The rule as JSON Schema writes it (ECMA 262, where "$" is the end).
TOPIC_NAME_PATTERN: Final = "^[A-Za-z0-9._:-]{1,128}$"

TopicName = Annotated[str, msgspec.Meta(pattern=_TOPIC_PATTERN)]
#: A topic name or a wildcard pattern (v1.2): checked further by ``check_pattern``.
TopicOrPattern = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:*>-]{1,128}\Z")]
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
#: A message TTL in ms (at most :data:`~pubsub._protocol.timestamps.MAX_TTL_MS`).
TtlMs = Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_MS)]
#: A request id is echoed exactly as sent: clients use strings, some use numbers.
RequestId = str | int


def is_valid_topic_name(name: object) -> bool:
    """True when ``name`` is a string following the topic-name rule."""
    return isinstance(name, str) and _TOPIC_RE.match(name) is not None


def check_topic_name(name: object, request_id: RequestId | None = None) -> str:
    """Return ``name`` if it is a valid topic name, else raise ``BAD_REQUEST``."""
    if not is_valid_topic_name(name):
        raise ProtocolError(
            f"invalid topic name {name!r}: use {TOPIC_NAME_RULE}",
            request_id,
        )
    assert isinstance(name, str)
    return name


PATTERN_RULE: Final = (
    "dot-separated segments where `*` is a whole segment and `>` only the whole last segment"
)


def is_pattern(topic: str) -> bool:
    """Whether a subscribe's ``topic`` is a wildcard pattern (v1.2)."""
    return "*" in topic or ">" in topic


def check_pattern(topic: str) -> None:
    """Raise ``ValueError`` (a ``BAD_REQUEST`` when decoding) naming what is wrong
    with a wildcard pattern; topic names pass."""
    if not is_pattern(topic):
        return
    segments = topic.split(".")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in ("*", ">"):
            if segment == ">" and index != last:
                raise ValueError(f"invalid topic pattern {topic!r}: `>` must be the last segment")
        elif "*" in segment or ">" in segment:
            raise ValueError(
                f"invalid topic pattern {topic!r}: a wildcard must be a whole segment "
                f"({PATTERN_RULE})"
            )


# --------------------------------------------------------------------------
# Client -> server frames.


class Message(msgspec.Struct, frozen=True, gc=False):
    """A published message: the client's id and its payload, kept as raw JSON.

    Not tracked by the garbage collector (``gc=False``: it holds only strings
    and bytes, so it can be in no cycle): the history rings hold many, and
    every tracked object there would be scanned by each full collection."""

    id: MessageId
    payload: msgspec.Raw


class ClientFrame(msgspec.Struct, tag_field="type", frozen=True, gc=False):
    """Base of the frames a client sends; ``type`` is the tag. Untracked by the
    garbage collector like :class:`Message` (one per request on the hot path)."""


class Subscribe(ClientFrame, tag="subscribe", frozen=True):
    #: A topic name or (v1.2) a wildcard pattern.
    topic: TopicOrPattern
    client_id: str
    last_n: NonNegative = 0
    request_id: RequestId | None = None
    #: Resume (v1.1): replay everything after this offset if ``epoch`` matches.
    since_offset: NonNegative | None = None
    epoch: str | None = None
    #: Content filter (v1.2), decoded JSON: checked and compiled by the topic.
    filter: Any = None

    def __post_init__(self) -> None:
        if self.since_offset is not None and self.epoch is None:
            raise ValueError("`since_offset` needs `epoch`")
        if is_pattern(self.topic):
            check_pattern(self.topic)
            if self.last_n or self.since_offset is not None:
                raise ValueError("`last_n` and `since_offset` cannot be used with a pattern")


class Unsubscribe(ClientFrame, tag="unsubscribe", frozen=True):
    topic: TopicOrPattern
    client_id: str
    request_id: RequestId | None = None

    def __post_init__(self) -> None:
        check_pattern(self.topic)


class Publish(ClientFrame, tag="publish", frozen=True):
    topic: TopicName
    message: Message
    client_id: str
    request_id: RequestId | None = None
    #: Message TTL (v1.2): replaces the topic's ``message_ttl_ms`` for this message.
    ttl_ms: TtlMs | None = None


class Ping(ClientFrame, tag="ping", frozen=True):
    request_id: RequestId | None = None


AnyClientFrame = Subscribe | Unsubscribe | Publish | Ping


class _RequestIdProbe(msgspec.Struct):
    """Reads only ``request_id`` so an error can echo it even when the rest is bad."""

    request_id: Any = None


_client_decoder: Final[msgspec.json.Decoder[AnyClientFrame]] = msgspec.json.Decoder(AnyClientFrame)
_probe_decoder: Final = msgspec.json.Decoder(_RequestIdProbe)


def _probe_request_id(data: str | bytes) -> RequestId | None:
    try:
        rid = _probe_decoder.decode(data).request_id
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        return rid
    return None


#: ``MAX_JSON_DEPTH``'s default: the deepest nesting of arrays and objects a
#: client's JSON may have (msgspec itself recurses, and fails near 1,000).
MAX_JSON_DEPTH: Final = 100

#: A JSON string, or the rest of the text after an opening quote that never
#: closes: a match never fails, so no search starts over from every quote (an
#: unclosed string full of escaped quotes made the check quadratic).
_JSON_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS: Final = re.compile(r"[^\[\]{}]+")
_NESTING: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_too_deep(data: str | bytes, limit: int) -> bool:
    """Whether ``data`` nests arrays and objects more than ``limit`` deep.

    Cheap for nearly every message: a short one cannot nest deeper (a length
    check), nor can one with at most ``limit`` opening brackets (two C-speed
    counts). Otherwise the strings are cut out (one regular expression pass)
    and the depth is the largest running sum over the brackets left (C-speed
    loops; about 75 ms for a 1 MiB message of nothing but brackets). Linear in
    the length whatever the input. Malformed JSON may answer either way: the
    decoder then says what is wrong, or the depth does."""
    if len(data) <= 2 * limit:
        return False  # too short to open and close more than limit levels
    # Latin-1 maps byte for byte: the ASCII that matters is found as it is (a
    # UTF-8 sequence never contains an ASCII byte).
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    if brackets.count("[") + brackets.count("{") <= limit:
        return False
    return max(accumulate(map(_NESTING.__getitem__, brackets))) > limit


def too_deep_message(limit: int) -> str:
    return f"JSON nested more than {limit} levels deep (MAX_JSON_DEPTH)"


def decode_client_frame(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> AnyClientFrame:
    """Decode one client text frame.

    Raises:
        ProtocolError: ``BAD_REQUEST`` for malformed JSON, JSON nested deeper
            than ``max_depth``, an unknown or missing ``type``, a missing or
            invalid field or a bad topic name; it carries the frame's
            ``request_id`` when that could be read.
    """
    if json_too_deep(data, max_depth):
        raise ProtocolError(too_deep_message(max_depth))
    try:
        if not isinstance(data, str):
            data.decode()  # a raw payload must be valid UTF-8 too; str input already is
        return _client_decoder.decode(data)
    except RecursionError:  # a MAX_JSON_DEPTH above what msgspec can decode
        raise ProtocolError(too_deep_message(max_depth)) from None
    except msgspec.ValidationError as exc:
        raise ProtocolError(_describe(str(exc)), _probe_request_id(data)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    except UnicodeError:  # bytes that are not UTF-8, or a str with a lone surrogate
        raise ProtocolError("frame is not valid UTF-8") from None


def _describe(detail: str) -> str:
    if "regex" in detail and "$.topic" in detail:
        return f"invalid topic name: use {TOPIC_NAME_RULE} - at `$.topic`"
    if detail.startswith("Invalid value") and "$.type" in detail:
        return f"unknown frame type: {detail}"
    return f"invalid frame: {detail}"


# --------------------------------------------------------------------------
# Server -> client frames. Field order is the order of PROTOCOL.md; fields
# left at None are omitted.


class ServerFrame(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of the frames the server sends; ``type`` is the tag."""


class Ack(ServerFrame, tag="ack", kw_only=True):
    request_id: RequestId | None = None
    topic: str
    status: Literal["ok"]
    #: Publish: the message's offset. Subscribe: the topic's last offset.
    offset: int | None = None
    #: Subscribe (v1.1): the topic's epoch and whether ``since_offset`` was honoured.
    epoch: str | None = None
    recovered: bool | None = None
    #: Subscribe (v1.2): only messages matching the subscription's filter follow.
    filtered: bool | None = None
    #: Subscribe (v1.2): the subscription is a wildcard pattern (no offset or epoch).
    pattern: bool | None = None
    #: Resume (v1.2): messages after ``since_offset`` that expired (counted as recovered).
    expired: int | None = None
    ts: str


class Event(ServerFrame, tag="event", kw_only=True):
    topic: str
    message: Message
    offset: int
    ts: str
    #: Message TTL (v1.2): when the message expires.
    expires_at: str | None = None


class Pong(ServerFrame, tag="pong", kw_only=True):
    request_id: RequestId | None = None
    ts: str


class Info(ServerFrame, tag="info", kw_only=True):
    topic: str | None = None
    msg: str
    connection_id: str | None = None
    #: v1.2: the node that serves the connection (welcome frame).
    node_id: str | None = None
    dropped: int | None = None
    #: ``messages_expired`` (v1.2): queued events not written because they expired.
    expired: int | None = None
    ts: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    #: RATE_LIMITED (v1.2): when a publish may succeed again.
    retry_after_ms: int | None = None


class Error(ServerFrame, tag="error", kw_only=True):
    request_id: RequestId | None = None
    error: ErrorBody
    ts: str


AnyServerFrame = Ack | Event | Pong | Info | Error

_encoder: Final = msgspec.json.Encoder()
_server_decoder: Final[msgspec.json.Decoder[AnyServerFrame]] = msgspec.json.Decoder(AnyServerFrame)

encode: Final = _encoder.encode
"""Encode a frame (or any msgspec-encodable value) to JSON bytes."""


def decode_server_frame(data: str | bytes) -> AnyServerFrame:
    """Decode one server frame (for clients). Raises ``msgspec`` errors on bad input."""
    return _server_decoder.decode(data)


def error_frame(
    code: ErrorCode,
    message: str,
    request_id: RequestId | None = None,
    retry_after_ms: int | None = None,
) -> bytes:
    """The encoded ``error`` frame for ``code``."""
    body = ErrorBody(code.value, message, retry_after_ms)
    return encode(Error(request_id=request_id, error=body, ts=ts_now()))


def info_frame(msg: str, **fields: Any) -> bytes:
    """The encoded ``info`` frame with ``msg`` and optional contract fields."""
    return encode(Info(msg=msg, ts=ts_now(), **fields))
