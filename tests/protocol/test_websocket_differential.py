"""Differential test: the server's own frame parser against wsproto's.

Random and adversarial client byte streams - fragmentation, control frames inside
fragmented messages, masks, unmasked frames, every length encoding (and non-minimal
ones), lengths at every boundary, reserved bits, bad opcodes, bad UTF-8, close
frames of every kind - are fed to :class:`MessageReader` split at random points, and
all at once to the same rules on top of wsproto (:mod:`wsproto_oracle`). Both must
give the same messages, replies, refusals and close codes.

One divergence is by design: a message whose frame header already puts it over
``MAX_MESSAGE_SIZE`` is refused before its bytes arrive (never buffered), where
wsproto's reader first read them, and so may instead have closed the connection for
a protocol error found inside (bad UTF-8), or refused it a few frames later. After
our refusal the connection is closing, so only what came before it is compared, and
the reference must refuse that message too, or close for an error within it.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pubsub._protocol.errors import ErrorCode
from pubsub._protocol.websocket import Closed, MessageReader, ReaderEvent, Refused, Reply, Text

from .wsproto_oracle import WsprotoReader

MAX_SIZE = 64

#: Lengths at and around every boundary of the length encodings and of the limit.
LENGTHS = [0, 1, 2, 3, 4, 5, 63, 64, 65, 124, 125, 126, 127, 128, 200, 65535, 65536]

_valid_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40).map(str.encode)
_any_bytes = st.binary(max_size=40)
_payloads = st.one_of(
    _valid_text,
    _any_bytes,
    st.sampled_from(LENGTHS).map(lambda n: b"a" * n),
    # multi-byte characters cut at a frame boundary, and invalid sequences
    st.sampled_from([b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"\xf0\x9f\x98", b"\x80", b"\xff"]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One client frame, mostly valid, sometimes broken in one way."""
    opcode = draw(
        st.one_of(
            st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]),
            st.integers(min_value=0, max_value=15),
        )
    )
    fin = draw(st.booleans()) if opcode in (0x0, 0x1, 0x2) else draw(st.booleans() | st.just(True))
    rsv = draw(st.sampled_from([0] * 12 + [0x10, 0x20, 0x40]))
    masked = draw(st.sampled_from([True] * 15 + [False]))
    payload = draw(close_payloads()) if opcode == 0x8 else draw(_payloads)
    length = len(payload)
    encoding = draw(st.sampled_from(["minimal"] * 8 + ["two", "eight"]))
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if length < 65536 and (encoding == "two" or (encoding == "minimal" and length >= 126)):
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    elif encoding == "eight" or length >= 126:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    else:
        header = bytes((first, mask_bit | length))
    if not masked:
        return header + payload
    key = draw(st.binary(min_size=4, max_size=4))
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + body


@st.composite
def close_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["empty", "one", "code", "code+reason", "bad reason"]))
    if kind == "empty":
        return b""
    if kind == "one":
        return b"\x03"
    code = draw(
        st.one_of(
            st.sampled_from([1000, 1001, 1002, 1004, 1005, 1006, 1011, 1014, 1015, 2999, 3000]),
            st.integers(min_value=0, max_value=5999),
        )
    )
    reason = b""
    if kind == "code+reason":
        reason = draw(_valid_text)[:100]
    elif kind == "bad reason":
        reason = b"ok\xff"
    return struct.pack("!H", code) + reason


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = b"".join(draw(st.lists(frames(), min_size=1, max_size=12)))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=8)))
    return data, cuts


def frame_bytes(opcode: int, fin: bool, payload: bytes, key: bytes) -> bytes:
    """A well-formed masked client frame."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, 0x80 | 127)) + struct.pack("!Q", length)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Mostly valid traffic: messages of one or more frames (with pings and pongs
    between the fragments), binary messages, pings, maybe a close at the end; then,
    sometimes, one byte changed or cut out."""
    key = draw(st.binary(min_size=4, max_size=4))
    data = b""
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.sampled_from(["text", "text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            data += frame_bytes(0x9 if kind == "ping" else 0xA, True, draw(_any_bytes), key)
            continue
        whole = draw(_valid_text if kind == "text" else _any_bytes)
        if draw(st.booleans()):
            whole += draw(st.sampled_from([b"", b"x" * 30, "\u00e9".encode() * 20]))
        pieces = draw(st.integers(min_value=1, max_value=4))
        step = max(1, len(whole) // pieces)
        parts = [whole[i : i + step] for i in range(0, len(whole), step)] or [b""]
        for index, part in enumerate(parts):
            opcode = (0x1 if kind == "text" else 0x2) if index == 0 else 0x0
            data += frame_bytes(opcode, index == len(parts) - 1, part, key)
            if index < len(parts) - 1 and draw(st.booleans()):
                data += frame_bytes(0x9, True, draw(_any_bytes), key)
    if draw(st.booleans()):
        data += frame_bytes(0x8, True, draw(close_payloads()), key)
    if data and draw(st.sampled_from([False, False, True])):
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        value = draw(st.integers(min_value=0, max_value=255))
        data = data[:at] + bytes((value,)) + data[at + 1 :]
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=8)))
    return data, cuts


def normal(events: list[ReaderEvent]) -> list[tuple[Any, ...]]:
    """Events as comparable values (close reasons are prose: only codes count)."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, Text):
            out.append(("text", event.text))
        elif isinstance(event, Refused):
            out.append(("refused", event.error.code))
        elif isinstance(event, Reply):
            out.append(("reply", event.data))
        elif isinstance(event, Closed):
            out.append(("closed", event.code))
    return out


def ours(data: bytes, cuts: list[int]) -> tuple[list[tuple[Any, ...]], bool]:
    """Our events, and whether the stream ended inside a frame."""
    reader = MessageReader(MAX_SIZE)
    events: list[ReaderEvent] = []
    previous = 0
    for cut in [*cuts, len(data)]:
        events += reader.receive_data(data[previous:cut])
        previous = cut
    return normal(events), reader.mid_frame


TOO_LARGE = ("refused", ErrorCode.MESSAGE_TOO_LARGE)


def check(data: bytes, cuts: list[int]) -> None:
    got, mid_frame = ours(data, cuts)
    reference = WsprotoReader(MAX_SIZE)
    expected = normal(reference.receive_data(data))
    if mid_frame:
        # The last frame has not fully arrived: wsproto reads the part that did
        # (bad UTF-8 in it: 1007; a continuation out of place: 1002; over the
        # limit: refused) where we wait for the whole frame, and we may have
        # refused it by its header already.
        if got and got[-1] == TOO_LARGE:
            got.pop()
        if expected and expected[-1] in (TOO_LARGE, ("closed", 1007), ("closed", 1002)):
            expected.pop()
    if TOO_LARGE not in got:
        assert got == expected
        return
    at = got.index(TOO_LARGE)
    assert got[:at] == expected[:at]
    rest = expected[at:]
    # The stream may also end inside that message before the reference decides
    # (it counts decoded characters, and holds back a cut UTF-8 sequence).
    assert (
        TOO_LARGE in rest
        or any(kind == "closed" and code in (1002, 1007) for kind, code, *_ in rest)
        or (not rest and reference.mid_message)
    ), (got, expected)


# derandomize: the same examples on every run, so CI never meets a new one by
# chance; drop it (or pass --hypothesis-seed) to explore further.
@settings(max_examples=3000, deadline=None, derandomize=True)
@given(streams())
def test_the_same_messages_replies_refusals_and_close_codes_as_wsproto(
    stream: tuple[bytes, list[int]],
) -> None:
    check(*stream)


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(conversations())
def test_mostly_valid_traffic_gives_the_same_as_wsproto(stream: tuple[bytes, list[int]]) -> None:
    check(*stream)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_random_bytes_give_the_same_result(data: bytes, cuts: list[int]) -> None:
    """Unstructured bytes (mostly broken framing at once)."""
    check(data, sorted(cut for cut in cuts if cut <= len(data)))


def test_a_large_random_stream_of_valid_traffic_byte_by_byte() -> None:
    """Many frames of valid traffic, fed one byte at a time (the slowest split)."""
    random = os.urandom(4)
    data = b""
    for number in range(200):
        payload = f'{{"type":"ping","request_id":{number}}}'.encode()
        data += bytes((0x81, 0x80 | len(payload))) + random
        data += bytes(b ^ random[i % 4] for i, b in enumerate(payload))
    got, mid_frame = ours(data, list(range(len(data))))
    assert not mid_frame
    assert got == normal(WsprotoReader(MAX_SIZE).receive_data(data))
    assert len(got) == 200
