"""Fuzzing the server's WebSocket decoders: what holds for any bytes, however split.

:class:`MessageReader` and :class:`Handshake` read bytes from anyone who connects.
The differential tests (``tests/protocol/test_*_differential.py``) hold them to
wsproto's answers; these hold them to properties that need no reference, with
larger limits and frames than those tests use:

- nothing but events comes out: :meth:`MessageReader.receive_data` never raises,
  :class:`Handshake` never raises and either accepts or answers a well-formed refusal;
- how the bytes are split never matters: the same events whether a stream is fed
  at once, in random pieces, or partly through the reader's constructor;
- memory stays within the limit: after every read the reader holds at most one
  unfinished frame (``MAX_MESSAGE_SIZE`` plus the largest header and mask), holds
  nothing while it skips a frame it refused, assembles at most ``MAX_MESSAGE_SIZE``
  bytes of a message, and buffers nothing more once it is done;
- events come in an order the transport can act on: one ``Closed`` at most and last,
  nothing of a message after ``MESSAGE_TOO_LARGE``, pongs that are valid frames;
- well-formed traffic (messages of any size around every length boundary, in any
  fragments, cut inside characters, with pings between fragments, then maybe a
  close) gives exactly the events a small model predicts: each message as ``Text``
  with the same content, each binary one refused, each ping answered, the first
  message over the limit refused the moment its frame header arrives.

Budgets: see :mod:`tests.fuzz.budget` (``PUBSUB_FUZZ_EXAMPLES=N`` for a long run).
"""

from __future__ import annotations

import json
import re
import string
import struct
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pubsub._protocol.errors import (
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_PROTOCOL_ERROR,
    ErrorCode,
)
from pubsub._protocol.websocket import (
    MAX_CLOSE_REASON,
    Handshake,
    MessageReader,
    ReaderEvent,
    Refused,
    Reply,
    Text,
    close_reason,
)

from .budget import budget, one_in

#: The longest frame header (2 bytes, then a 64-bit length) and the mask after it.
HEADER_AND_MASK = 10 + 4
#: A control frame carries at most 125 bytes (RFC 6455 5.5), whatever the limit.
MAX_CONTROL_PAYLOAD = 125
#: Payload lengths at every boundary of the 7-, 16- and 64-bit length encodings.
LENGTHS = (0, 1, 2, 125, 126, 127, 128, 65535, 65536, 65537)
#: ``MAX_MESSAGE_SIZE`` values around the same boundaries (it is at least 1).
MAX_SIZES = (1, 2, 125, 126, 127, 128, 1000, 65535, 65536, 65537)
#: Close codes a peer may send (RFC 6455 7.4): the known ones that are not local-only.
PEER_CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013)
TOO_LARGE = ("refused", ErrorCode.MESSAGE_TOO_LARGE)


# --------------------------------------------------------------------------
# Building client frames.


def masked(payload: bytes, key: bytes) -> bytes:
    """``payload`` XORed with the repeated 4-byte ``key`` (fast for 64 KiB payloads)."""
    if not payload:
        return b""
    length = len(payload)
    stream = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(length, "big")


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    key: bytes | None = b"\x37\xfa\x21\x3d",
    rsv: int = 0,
    form: str = "minimal",
    declared: int | None = None,
) -> bytes:
    """One client frame: masked with ``key`` (None: unmasked), its length in the
    ``form`` given (``minimal``, ``16`` or ``64`` bits; non-minimal ones are
    protocol errors), and ``declared`` in the header instead of the true length."""
    length = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if key is not None else 0
    if form == "minimal" and length < 126:
        header = bytes((first, mask_bit | length))
    elif form == "16" or (form == "minimal" and length < 65536):
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    if key is None:
        return header + payload
    return header + key + masked(payload, key)


def text_of_size(prefix: str, size: int) -> str:
    """Text of exactly ``size`` UTF-8 bytes: ``prefix`` (cut between characters),
    padded with ASCII."""
    head = prefix.encode()[:size].decode(errors="ignore")
    return head + "a" * (size - len(head.encode()))


# --------------------------------------------------------------------------
# Feeding a reader and checking it after every read.


def normal(event: ReaderEvent) -> tuple[Any, ...]:
    """An event as a comparable value (a refusal carries an exception, which does
    not compare equal to an equal copy)."""
    if isinstance(event, Text):
        return ("text", event.text)
    if isinstance(event, Refused):
        return ("refused", event.error.code)
    if isinstance(event, Reply):
        return ("reply", event.data)
    return ("closed", event.code, event.reason)


def peer_may_send(code: int) -> bool:
    return code in PEER_CLOSE_CODES or 3000 <= code <= 4999


@dataclass
class Fed:
    """A reader, the events it gave, and the checks that hold after every read."""

    max_size: int
    first: bytes = b""
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Bytes that came with the handshake's head: read by the first receive_data.
        self.reader = MessageReader(self.max_size, self.first)

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        reader = self.reader
        was_done = reader._done
        held = len(reader._buffer)
        events = [normal(event) for event in reader.receive_data(data)]
        self.events += events
        if was_done:
            # Closed, or the framing broke: nothing more is read or kept.
            assert events == []
            assert len(reader._buffer) == held
        elif not reader._done:
            # At most one unfinished frame is held: a data frame within the limit,
            # or a control frame, with the largest header and its mask.
            limit = max(self.max_size - reader._message, MAX_CONTROL_PAYLOAD) + HEADER_AND_MASK
            assert len(reader._buffer) <= limit, (len(reader._buffer), limit)
        if reader._skip:
            # A refused frame's payload is read into nothing, never buffered.
            assert not reader._buffer
        assert 0 <= reader._message <= self.max_size
        # Parts are text (characters, each at least one byte) or bytes.
        assert sum(len(part) for part in reader._parts) <= reader._message
        return events

    def feed_all(self, data: bytes, cuts: list[int]) -> list[tuple[Any, ...]]:
        previous = 0
        for cut in [*cuts, len(data)]:
            self.feed(data[previous:cut])
            previous = cut
        check_order(self.events, self.max_size)
        return self.events


def check_order(events: list[tuple[Any, ...]], max_size: int) -> None:
    """What the transport relies on, whatever the bytes were."""
    for index, event in enumerate(events):
        match event:
            case ("text", text):
                assert len(text.encode()) <= max_size
                assert TOO_LARGE not in events[:index], "a message after MESSAGE_TOO_LARGE"
            case ("refused", code):
                assert code in (ErrorCode.BAD_REQUEST, ErrorCode.MESSAGE_TOO_LARGE)
                assert TOO_LARGE not in events[:index], "a refusal after MESSAGE_TOO_LARGE"
            case ("reply", data):
                # An unmasked final pong echoing at most 125 bytes.
                assert data[0] == 0x8A
                assert data[1] == len(data) - 2 <= MAX_CONTROL_PAYLOAD
            case ("closed", code, reason):
                assert index == len(events) - 1, "events after Closed"
                assert isinstance(reason, str)
                assert code in (CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_NO_STATUS) or (
                    peer_may_send(code) and len(reason.encode()) <= MAX_CLOSE_REASON
                )
            case _:
                raise AssertionError(f"unknown event {event!r}")


def check_any_split(max_size: int, data: bytes, cuts: list[int], early: int) -> None:
    """Fed at once and fed in pieces (the first ``early`` bytes through the
    constructor, as the handshake passes them), a stream gives the same events."""
    whole = Fed(max_size)
    expected = whole.feed_all(data, [])
    pieces = Fed(max_size, data[:early])
    assert pieces.feed_all(data[early:], [cut - early for cut in cuts if cut >= early]) == expected
    assert pieces.reader.mid_frame == whole.reader.mid_frame
    assert pieces.reader.refused_too_large == whole.reader.refused_too_large


@st.composite
def cuts_in(draw: st.DrawFn, data: bytes) -> tuple[list[int], int]:
    """Where to cut ``data`` into reads, and how much came with the handshake."""
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=10))
    early = draw(st.sampled_from([0, 0, 0, 1, 2, len(data) // 2]))
    return sorted(cuts), early


# --------------------------------------------------------------------------
# Any bytes, and adversarial frames.


@budget(short=200)
@given(data=st.data(), max_size=st.sampled_from(MAX_SIZES), raw=st.binary(max_size=400))
def test_any_bytes_give_events_only_and_the_same_however_split(
    data: st.DataObject, max_size: int, raw: bytes
) -> None:
    cuts, early = data.draw(cuts_in(raw))
    check_any_split(max_size, raw, cuts, early)


_broken_seeds = st.one_of(
    st.binary(min_size=1, max_size=12),
    # A character cut short, a lone continuation byte, bytes that are never UTF-8.
    st.sampled_from(
        [b"\xc3", b"\xa9", b"\xe2\x82", b"\xf0\x9f\x98", b"\x80", b"\xff", b"\xed\xa0"]
    ),
)


@st.composite
def lengths(draw: st.DrawFn, max_size: int) -> int:
    """A payload length: at a length-encoding boundary, at the limit, or small."""
    return draw(
        st.one_of(
            st.sampled_from(LENGTHS),
            st.sampled_from([max_size - 1, max_size, max_size + 1]).filter(lambda n: n >= 0),
            st.integers(min_value=0, max_value=300),
        )
    )


@st.composite
def close_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["empty", "one byte", "code", "reason", "bad reason", "long"]))
    if kind == "empty":
        return b""
    if kind == "one byte":
        return b"\x03"
    code = draw(
        st.one_of(
            st.sampled_from([*PEER_CLOSE_CODES, 999, 1004, 1005, 1006, 1015, 2999, 3000, 4999]),
            st.integers(min_value=0, max_value=65535),
        )
    )
    reason = {
        "code": b"",
        "reason": draw(st.text(max_size=40)).encode()[:MAX_CLOSE_REASON],
        "bad reason": b"bye\xe2\x82",
        "long": b"r" * draw(st.sampled_from([123, 124])),  # 126 bytes: too long for control
    }[kind]
    return struct.pack("!H", code) + reason


@st.composite
def any_frame(draw: st.DrawFn, max_size: int, in_message: bool) -> tuple[bytes, bool]:
    """One frame, and whether a message is still open after it. Mostly a frame
    that fits where it comes; now and then broken one way: any opcode, a message
    started inside one or a continuation outside one, bad UTF-8, reserved bits, no
    mask, a non-minimal or lying length, a fragmented or oversized control frame."""
    if one_in(draw, 12):
        opcode = draw(st.integers(min_value=0, max_value=15))
    elif one_in(draw, 4):
        opcode = draw(st.sampled_from([0x8, 0x9, 0xA]))
    else:
        opcode = 0x0 if in_message else draw(st.sampled_from([0x1, 0x1, 0x2]))
    control = opcode & 0x8
    fin = not one_in(draw, 15) if control else draw(st.booleans())
    if opcode == 0x8:
        payload = draw(close_payloads())
    else:
        size = draw(lengths(max_size))
        if control and not one_in(draw, 12):
            size = min(size, MAX_CONTROL_PAYLOAD)
        if opcode == 0x2 or one_in(draw, 8):
            seed = draw(_broken_seeds)
            payload = (seed * (size // len(seed) + 1))[:size]
        else:
            payload = text_of_size(draw(st.text(max_size=12)), size).encode()
    rsv = draw(st.sampled_from([0x10, 0x20, 0x40])) if one_in(draw, 25) else 0
    key = draw(st.sampled_from([b"\x00\x00\x00\x00", b"\x37\xfa\x21\x3d", b"\xff\x80\x01\xfe"]))
    form = draw(st.sampled_from(["16", "64"])) if one_in(draw, 12) else "minimal"
    if form == "16" and len(payload) > 0xFFFF:
        form = "64"
    declared = None
    if one_in(draw, 25):
        # The header lies: the stream goes on with bytes read as the next frame, or
        # the frame never ends (lengths up to 2**63 - 1; 2**63 sets the forbidden MSB).
        declared = draw(st.sampled_from([0, 1, 126, 65536, 2**32, 2**62, 2**63 - 1, 2**63]))
        form = "64" if declared > 0xFFFF else form
    data = frame(
        opcode,
        payload,
        fin=fin,
        key=None if one_in(draw, 25) else key,
        rsv=rsv,
        form=form,
        declared=declared,
    )
    return data, in_message if control else opcode in (0x0, 0x1, 0x2) and not fin


@st.composite
def adversarial_streams(draw: st.DrawFn) -> tuple[int, bytes, list[int], int]:
    max_size = draw(st.sampled_from(MAX_SIZES))
    data = b""
    in_message = False
    for _ in range(draw(st.integers(min_value=1, max_value=10))):
        more, in_message = draw(any_frame(max_size, in_message))
        data += more
    if one_in(draw, 4):
        data += draw(st.binary(max_size=20))
    cuts, early = draw(cuts_in(data))
    return max_size, data, cuts, early


@budget(short=150)
@given(adversarial_streams())
def test_adversarial_frames_give_events_only_and_the_same_however_split(
    stream: tuple[int, bytes, list[int], int],
) -> None:
    check_any_split(*stream)


# --------------------------------------------------------------------------
# Well-formed traffic, predicted by a model.


@dataclass
class Message:
    """A data message sent in fragments, with pings after some of them."""

    text: str | None  # None: a binary message
    payload: bytes
    cuts: list[int]
    pings: dict[int, bytes]  # fragment index -> payload of a ping sent right after it

    def fragments(self) -> list[bytes]:
        bounds = [0, *self.cuts, len(self.payload)]
        return [self.payload[start:end] for start, end in pairwise(bounds)]


@dataclass
class Conversation:
    max_size: int
    items: list[Message | tuple[str, bytes]]  # messages, ("ping" | "pong", payload)
    close: bytes | None  # a close frame's payload, if the client closes at the end

    def data(self, key: bytes) -> bytes:
        out = bytearray()
        for item in self.items:
            if isinstance(item, Message):
                fragments = item.fragments()
                for index, fragment in enumerate(fragments):
                    opcode = 0x0 if index else (0x1 if item.text is not None else 0x2)
                    out += frame(opcode, fragment, fin=index == len(fragments) - 1, key=key)
                    if index in item.pings:
                        out += frame(0x9, item.pings[index], key=key)
            else:
                kind, payload = item
                out += frame(0x9 if kind == "ping" else 0xA, payload, key=key)
        if self.close is not None:
            out += frame(0x8, self.close, key=key)
        return bytes(out)

    def expected(self) -> list[tuple[Any, ...]]:
        """The events PROTOCOL.md asks for: each message whole, or refused; once a
        message is over the limit nothing of any later message comes out (the
        connection is closing), but pings are still answered."""
        events: list[tuple[Any, ...]] = []
        too_large = False
        for item in self.items:
            if not isinstance(item, Message):
                kind, payload = item
                if kind == "ping":
                    events.append(("reply", bytes((0x8A, len(payload))) + payload))
                continue
            size = 0
            this_one = False
            for index, fragment in enumerate(item.fragments()):
                size += len(fragment)
                # Refused when the header of the frame that passes the limit arrives.
                if size > self.max_size and not this_one:
                    this_one = True
                    if not too_large:
                        events.append(TOO_LARGE)
                    too_large = True
                if index in item.pings:
                    payload = item.pings[index]
                    events.append(("reply", bytes((0x8A, len(payload))) + payload))
            if not too_large:
                if item.text is None:
                    events.append(("refused", ErrorCode.BAD_REQUEST))
                else:
                    events.append(("text", item.text))
        if self.close is not None:
            if self.close:
                code = int.from_bytes(self.close[:2], "big")
                events.append(("closed", code, self.close[2:].decode()))
            else:
                events.append(("closed", CLOSE_NO_STATUS, ""))
        return events


_control_payloads = st.binary(max_size=MAX_CONTROL_PAYLOAD) | st.sampled_from([b"", b"p" * 125])


@st.composite
def messages(draw: st.DrawFn, max_size: int) -> Message:
    size = draw(lengths(max_size))
    binary = draw(st.integers(min_value=0, max_value=4)) == 0
    if binary:
        seed = draw(st.binary(min_size=1, max_size=8))
        text, payload = None, (seed * (size // len(seed) + 1))[:size]
    else:
        text = text_of_size(draw(st.text(max_size=30)), size)
        payload = text.encode()
    # Fragments anywhere, empty ones and ones ending inside a character included.
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=size), max_size=4)))
    pings = draw(
        st.dictionaries(st.integers(min_value=0, max_value=len(cuts) - 1), _control_payloads)
        if cuts
        else st.just({})
    )
    return Message(text, payload, cuts, pings)


_peer_close = st.one_of(
    st.just(b""),
    st.builds(
        lambda code, reason: struct.pack("!H", code) + close_reason(reason).encode(),
        st.sampled_from(PEER_CLOSE_CODES) | st.integers(min_value=3000, max_value=4999),
        st.text(max_size=50),
    ),
)


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    max_size = draw(st.sampled_from(MAX_SIZES))
    items = draw(
        st.lists(
            messages(max_size) | st.tuples(st.sampled_from(["ping", "pong"]), _control_payloads),
            min_size=1,
            max_size=6,
        )
    )
    return Conversation(max_size, items, draw(st.none() | _peer_close))


def check_conversation(conversation: Conversation, key: bytes, split: list[int]) -> None:
    data = conversation.data(key)
    expected = conversation.expected()
    cuts = sorted(cut for cut in split if cut <= len(data))
    assert Fed(conversation.max_size).feed_all(data, cuts) == expected
    fed = Fed(conversation.max_size)
    assert fed.feed_all(data, []) == expected
    assert not fed.reader.mid_frame


@budget(short=120)
@given(
    conversations(),
    st.sampled_from([b"\x00\x00\x00\x00", b"\xa5\x5a\x01\xff"]),
    st.lists(st.integers(min_value=0, max_value=70000), max_size=10),
)
def test_well_formed_traffic_gives_what_the_model_predicts(
    conversation: Conversation, key: bytes, split: list[int]
) -> None:
    check_conversation(conversation, key, split)


@pytest.mark.parametrize(
    ("length", "over"),
    # MAX_MESSAGE_SIZE (length - over) is at least 1.
    [(length, over) for length in LENGTHS for over in (-1, 0, 1) if length - over >= 1],
)
@pytest.mark.parametrize("fragments", [1, 3])
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_a_message_around_the_limit_at_every_length_boundary(
    length: int, over: int, fragments: int, kind: str
) -> None:
    """A message of ``length`` bytes with ``MAX_MESSAGE_SIZE`` just above, at and just
    below it, whole and in fragments, with a ping between fragments, then the
    next message (ignored after a refusal), a ping and a close."""
    max_size = length - over
    text: str | None = None
    if kind == "text":
        text = text_of_size("h\u00e9\u20ac\U0001d11e", length)
        payload = text.encode()
    else:
        payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    step = max(1, length // fragments)
    cuts = list(range(step, length, step))[: fragments - 1]
    conversation = Conversation(
        max_size,
        [
            Message(text, payload, cuts, {0: b"mid"} if cuts else {}),
            Message("n", b"n", [], {}),
            ("ping", b"after"),
        ],
        struct.pack("!H", 1000) + b"bye",
    )
    expected = conversation.expected()
    assert (TOO_LARGE in expected) is (over > 0)
    # Every byte boundary around the headers, and a few reads inside the payload.
    check_conversation(conversation, b"\x11\x22\x33\x44", [1, 2, 3, 4, 5, 9, 13, 14, 15, 300])


@pytest.mark.parametrize("length", [0, 1, 125])
@pytest.mark.parametrize("form", ["16", "64"])
def test_a_length_in_more_bytes_than_needed_closes_with_1002(length: int, form: str) -> None:
    fed = Fed(1000)
    fed.feed_all(frame(0x1, b"x" * length, form=form), [1, 2, 3])
    assert [event[:2] for event in fed.events] == [("closed", CLOSE_PROTOCOL_ERROR)]


@pytest.mark.parametrize("length", [1, 125, 126, 65536])
def test_an_unmasked_frame_closes_with_1002(length: int) -> None:
    fed = Fed(65536)
    fed.feed_all(frame(0x1, b"x" * length, key=None), [1])
    assert [event[:2] for event in fed.events] == [("closed", CLOSE_PROTOCOL_ERROR)]


@budget(short=50)
@given(
    max_size=st.sampled_from(MAX_SIZES),
    beyond=st.sampled_from([1, 2, 125, 126, 65536, 2**32, 2**62, 2**63 - 1 - 65537]),
    fin=st.booleans(),
    reads=st.lists(st.integers(min_value=1, max_value=1 << 20), min_size=1, max_size=6),
)
def test_a_frame_over_the_limit_is_read_into_nothing(
    max_size: int, beyond: int, fin: bool, reads: list[int]
) -> None:
    """However long a frame says it is, once its header says it is over the limit
    nothing of it is kept, and the frame after it is read as usual."""
    length = max_size + beyond
    fed = Fed(max_size)
    assert fed.feed(frame(0x1, b"", fin=fin, declared=length)) == [TOO_LARGE]
    left = length
    for size in reads:
        size = min(size, left)
        assert fed.feed(bytes(size)) == []
        assert not fed.reader._buffer
        left -= size
    if left <= 1 << 21:
        # The rest of the frame, then a ping: answered, so reading went on.
        events = fed.feed(bytes(left) + frame(0x9, b"still here"))
        assert events == [("reply", b"\x8a\x0astill here")]


# --------------------------------------------------------------------------
# The handshake.

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
REQUIRED = [
    (b"Host", b"localhost:8080"),
    (b"Connection", b"Upgrade"),
    (b"Upgrade", b"websocket"),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Key", KEY),
]
#: Headers whose values decide the handshake: kept as REQUIRED has them.
DECIDING = {name.lower() for name, _ in REQUIRED} | {
    b"content-length",
    b"transfer-encoding",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
}
#: The characters of an HTTP token (RFC 7230 3.2.6): header names.
TOKEN_CHARACTERS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
_token = st.text(alphabet=TOKEN_CHARACTERS, min_size=1, max_size=12).map(str.encode)
_field_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=20)
_values = st.one_of(
    _field_value.map(lambda text: text.encode("latin-1")),
    st.sampled_from(
        [
            b"",
            b"Upgrade",
            b"keep-alive, Upgrade",
            b"websocket",
            b"13",
            b"8",
            KEY,
            b"xn--",
            b"xn--\xff",
            b"xn--a-" + b"9" * 40,
            b"a" * 64 + b".com",
            b"h\xc3\xa9.example",
            b"chunked",
            b"gzip, chunked",
            b"10",
            b"1, 1",
            b"1, 2",
            b"a\x00b",
            b" padded ",
        ]
    ),
    st.binary(max_size=12),
)
_names = st.one_of(
    st.sampled_from(
        [
            *(name for name, _ in REQUIRED),
            b"Content-Length",
            b"Transfer-Encoding",
            b"Sec-WebSocket-Protocol",
            b"Sec-WebSocket-Extensions",
            b"X-Api-Key",
            b"host",
            b"CONNECTION",
            b"Bad Name",
            b"",
        ]
    ),
    _token,
)
_request_lines = st.sampled_from(
    [
        b"GET /ws HTTP/1.0",
        b"GET /ws HTTP/2.0",
        b"POST /ws HTTP/1.1",
        b"HEAD /ws HTTP/1.1",
        b"get /ws HTTP/1.1",
        b"GET  /ws HTTP/1.1",
        b" GET /ws HTTP/1.1",
        b"GET /ws",
        b"GET /w\xffs HTTP/1.1",
    ]
) | st.binary(max_size=30)
_good_request_lines = st.sampled_from(
    [
        b"GET /ws HTTP/1.1",
        b"GET /ws?api_key=k&x=%zz&x=2 HTTP/1.1",
        b"GET http://h:1/ws?api_key=k#frag HTTP/1.1",
        b"GET //[h?api_key=k HTTP/1.1",
    ]
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request heads: mostly the required headers, now and then one left out,
    changed, repeated or folded; extra headers; odd line endings; maybe no end,
    maybe bytes behind; maybe one byte changed."""
    fields = [(name, value) for name, value in REQUIRED if not one_in(draw, 20)]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(fields)))
        if one_in(draw, 4):
            fields.insert(at, (draw(_names), draw(_values)))
        else:
            fields.insert(at, (draw(_token), draw(_field_value).encode("latin-1")))
    lines = [draw(_request_lines if one_in(draw, 8) else _good_request_lines)]
    for name, value in fields:
        separator = draw(
            st.sampled_from([b" :", b": \x00", b"\r:"])
            if one_in(draw, 20)
            else st.sampled_from([b": ", b":", b":\t", b":  "])
        )
        line = name + separator + value
        if one_in(draw, 15):
            line += draw(st.sampled_from([b"\r\n ", b"\r\n\t", b"\n "])) + b"folded"
        lines.append(line)
    # CRLF, bare LF (h11 takes both), or now and then anything on a line.
    usual = draw(st.sampled_from([b"\r\n"] * 4 + [b"\n"]))
    odd = st.sampled_from([b"\n", b"\r", b"\n\r", b""])
    head = b"".join(line + (draw(odd) if one_in(draw, 20) else usual) for line in lines)
    head += draw(odd) if one_in(draw, 10) else usual
    if draw(st.booleans()):
        head += draw(st.binary(max_size=16) | st.just(frame(0x1, b"early")))
    if head and one_in(draw, 6):
        at = draw(st.integers(min_value=0, max_value=len(head) - 1))
        head = head[:at] + bytes((draw(st.integers(min_value=0, max_value=255)),)) + head[at + 1 :]
    return head


_RESPONSE = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r\n]*)\r\n((?:[^\r\n]+\r\n)*)\r\n(.*)", re.DOTALL)


def check_handshake(head: bytes) -> Handshake:
    """``head`` is accepted with a valid ``101``, or refused with a well-formed
    response carrying the contract's error body; neither raises."""
    handshake = Handshake(head)
    if handshake.request is None:
        response = _RESPONSE.fullmatch(handshake.refusal)
        assert response is not None, handshake.refusal
        status, reason, header_block, body = response.groups()
        assert int(status) in (400, 426)
        assert reason
        headers = {
            name: value
            for name, _, value in (line.partition(b": ") for line in header_block.splitlines())
        }
        assert headers[b"content-length"] == str(len(body)).encode()
        assert headers[b"connection"] == b"close"
        if status == b"426":
            assert headers[b"sec-websocket-version"] == b"13"
        error = json.loads(body)
        assert error["error"] == ErrorCode.BAD_REQUEST.value
        assert error["message"].startswith("bad WebSocket handshake")
        return handshake
    assert handshake.refusal == b""
    response_bytes, early = handshake.accept()
    assert response_bytes.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert response_bytes.endswith(b"\r\n\r\n")
    token = re.search(rb"\r\nSec-WebSocket-Accept: ([A-Za-z0-9+/]{27}=)\r\n", response_bytes)
    assert token is not None, response_bytes
    # The bytes handed to the reader come from behind the head, never from it.
    assert head.endswith(early)
    assert len(early) <= len(head) - len(b"GET / HTTP/1.0\n\n")
    for name, _ in REQUIRED:
        value = handshake.header(name.lower())
        assert value is None or isinstance(value, str)
    for parameter in ("api_key", "x", ""):
        value = handshake.query(parameter)
        assert value is None or isinstance(value, str)
    return handshake


@budget(short=200)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_handshake_accepted_or_refused_cleanly(head: bytes) -> None:
    check_handshake(head)


@budget(short=200)
@given(heads())
def test_request_heads_are_accepted_or_refused_cleanly(head: bytes) -> None:
    check_handshake(head)


@budget(short=100)
@given(
    extra=st.lists(st.tuples(_token, _field_value.map(lambda text: text.encode("latin-1")))),
    target=st.sampled_from([b"/ws", b"/ws?api_key=k", b"/ws?a=%20b&a=c#x"]),
    early=st.binary(max_size=40) | st.just(b"\r\n\r\n" + frame(0x1, b"early")),
)
def test_bytes_behind_a_crlf_head_are_handed_over_unchanged(
    extra: list[tuple[bytes, bytes]], target: bytes, early: bytes
) -> None:
    """A valid head (with any extra headers) followed by any bytes: accepted as the
    head alone is, and exactly those bytes go to the reader."""
    fields = [
        *REQUIRED,
        *((name, value) for name, value in extra if name.lower() not in DECIDING),
    ]
    head = b"GET " + target + b" HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
    alone = check_handshake(head)
    handshake = check_handshake(head + early)
    assert alone.request is not None
    assert handshake.request == alone.request
    response, behind = handshake.accept()
    assert ACCEPT in response
    assert behind == early


def test_bytes_behind_a_bare_lf_head_are_handed_over_unchanged() -> None:
    # They were taken from after the first CRLF CRLF, though the head ends at the
    # first blank line (bare LF too, as h11 reads it).
    head = b"GET /ws HTTP/1.1\n" + b"".join(
        name + b": " + value + b"\n" for name, value in REQUIRED
    )
    early = frame(0x1, b"early")
    handshake = Handshake(head + b"\n" + early)
    assert handshake.request is not None
    assert handshake.accept()[1] == early
