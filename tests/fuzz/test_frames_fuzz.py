"""Fuzzing the client frame decoder: any text is a frame or a ``BAD_REQUEST``.

:func:`decode_client_frame` reads every WebSocket message a client sends, and
:func:`json_too_deep` guards it (and the REST bodies) against JSON nested deep
enough to exhaust msgspec's recursion. What must hold for any input:

- the decoder returns a frame or raises :class:`ProtocolError` (``BAD_REQUEST``),
  never anything else, for any text or bytes: random text, JSON-ish token soup,
  valid frames of every type with odd field values (huge numbers, unicode, wrong
  types), the same mutated, and JSON nested around, at and past every limit;
- a request id echoed in an error is the frame's own;
- a text and its UTF-8 bytes decode the same;
- nesting: for valid JSON, :func:`json_too_deep` answers exactly what a plain
  recursive count of the nesting says, for ``str`` and for ``bytes``, and a
  publish whose payload nests past ``MAX_JSON_DEPTH`` is refused as too deep while
  one at the limit decodes.

Budgets: see :mod:`tests.fuzz.budget` (``PUBSUB_FUZZ_EXAMPLES=N`` for a long run).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pubsub._protocol.errors import ErrorCode, ProtocolError
from pubsub._protocol.frames import (
    _JSON_STRING,
    MAX_JSON_DEPTH,
    AnyClientFrame,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
    json_too_deep,
    too_deep_message,
)

from .budget import budget, one_in

#: The types a client may send, by tag.
FRAME_TYPES: dict[str, type[AnyClientFrame]] = {
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "publish": Publish,
    "ping": Ping,
}
#: ``MAX_JSON_DEPTH`` values: small ones, the default and its neighbours, and ones
#: above what msgspec can decode (it then fails with RecursionError near 1,000).
DEPTHS = (1, 2, 3, 10, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 250, 5000)
#: Mostly the default: frames nest two or three levels before their payload does.
_max_depths = st.sampled_from([MAX_JSON_DEPTH] * len(DEPTHS) + list(DEPTHS))


def nesting(value: Any) -> int:
    """How deep arrays and objects nest in ``value``: the reference for the depth
    check (a scalar is 0, ``[]`` is 1, ``[[1]]`` is 2)."""
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


Outcome = tuple[str, Any, Any]


def outcome(data: str | bytes, max_depth: int) -> Outcome:
    """What decoding gives: the frame, or the error's message and request id. Any
    exception other than ProtocolError propagates and fails the test."""
    try:
        frame = decode_client_frame(data, max_depth)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST
        assert isinstance(exc.message, str)
        assert exc.message
        rid = exc.request_id
        assert rid is None or isinstance(rid, str) or type(rid) is int
        return ("error", exc.message, rid)
    assert isinstance(frame, tuple(FRAME_TYPES.values()))
    return ("frame", msgspec.json.encode(frame), None)


def check(text: str, max_depth: int = MAX_JSON_DEPTH) -> Outcome:
    """Decode ``text`` as ``str`` and as UTF-8 ``bytes``: the same outcome, and an
    echoed request id is the frame's own."""
    result = outcome(text, max_depth)
    assert outcome(text.encode(), max_depth) == result
    if result[0] == "error" and result[2] is not None:
        # Only a JSON object's top-level "request_id" is ever echoed.
        document = json.loads(text)
        assert isinstance(document, dict)
        assert document.get("request_id") == result[2]
    return result


# --------------------------------------------------------------------------
# Strategies.

#: Text with what matters to a JSON scanner: brackets, quotes, backslashes, escapes
#: that look like JSON, and characters outside ASCII (any surrogate-free code point).
_tricky_text = st.text(
    alphabet=st.sampled_from('[]{}"\\/:,u\n\t\x00 a\u00e9\u2028\U0001f600')
    | st.characters(codec="utf-8"),
    max_size=12,
)
#: Strings that a scanner which gets JSON strings wrong would read as brackets.
_scanner_traps = st.sampled_from(["[k{", 'q"]', "\\", '\\"}{', '\u00e9"[', '"', "\\u005d"])
_huge_ints = st.sampled_from(
    [2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**100, -(10**400)]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _huge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    _tricky_text,
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_tricky_text, children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def nested(draw: st.DrawFn, depth: st.SearchStrategy[int]) -> Any:
    """A JSON value nested ``depth`` (drawn) levels around another: each level an
    array or an object, with siblings before or after the way down."""
    value = draw(_values)
    # The levels follow a short drawn pattern, repeated: deep values cost few draws.
    pattern = draw(
        st.lists(
            st.sampled_from(["list", "object", "list with siblings", "object with siblings"]),
            min_size=1,
            max_size=4,
        )
    )
    siblings = draw(st.lists(_values | _scanner_traps, min_size=1, max_size=2))
    key = draw(_scanner_traps)
    for level in range(draw(depth)):
        kind = pattern[level % len(pattern)]
        if kind == "list":
            value = [value]
        elif kind == "object":
            value = {"k": value}
        elif kind == "list with siblings":
            value = [*siblings, value] if level % 2 else [value, *siblings]
        else:
            value = {"a": siblings[0], key: value, "z": siblings}
    return value


def around(limit: int) -> st.SearchStrategy[int]:
    """Depths just under, at and over ``limit``, and any up to twice it."""
    return st.sampled_from([limit - 1, limit, limit + 1]) | st.integers(
        min_value=0, max_value=2 * limit + 2
    )


@st.composite
def json_texts(draw: st.DrawFn, value: Any) -> str:
    """``value`` as JSON, written as any encoder might: compact or indented, ASCII or not."""
    return json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, None, 0, 2, "\t"])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )


_request_ids = st.text(max_size=8) | st.integers(min_value=-(2**63), max_value=2**64 - 1)
_odd_request_ids = st.one_of(
    st.none(),
    _huge_ints,
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
)
_topics = st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True) | st.just("x" * 128)
_patterns = st.sampled_from(["a.*", "a.>", "*", ">", "*.b.*", "a.*.>"])
_odd_topics = st.one_of(
    st.sampled_from(["", "a.>.b", "a*", "a.b>", "x" * 129, "orders\n", "caf\u00e9"]),
    st.text(max_size=10),
    _scalars,
)
_counts = st.integers(min_value=0, max_value=2**63 - 1)
_odd_counts = st.one_of(st.integers(max_value=-1), _huge_ints, st.floats(), st.text(max_size=3))


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    """A client frame as a JSON object: mostly one of a known type with valid
    fields, now and then a field odd (wrong type, out of range, huge, unicode),
    missing or unknown, or the type unknown."""

    def field(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        return draw(odd if one_in(draw, 6) else valid)

    kind = field(st.sampled_from(list(FRAME_TYPES)), st.sampled_from(["nope", "", "Ping"]))
    fields: dict[str, Any] = {"type": kind}
    if kind in ("subscribe", "unsubscribe"):
        fields["topic"] = field(_topics | _patterns, _odd_topics)
    if kind == "publish":
        fields["topic"] = field(_topics, _odd_topics | _patterns)
    if kind in ("subscribe", "unsubscribe", "publish"):
        fields["client_id"] = field(st.text(max_size=8), _scalars)
    if kind == "subscribe":
        if draw(st.booleans()):
            fields["last_n"] = field(_counts, _odd_counts)
        if draw(st.booleans()):
            fields["since_offset"] = field(_counts, _odd_counts)
            fields["epoch"] = field(st.text(max_size=8), _scalars)
        if draw(st.booleans()):
            fields["filter"] = draw(_values)
    if kind == "publish":
        message = {"id": field(st.text(min_size=1, max_size=256), _scalars | st.just("i" * 257))}
        message["payload"] = draw(_values)
        fields["message"] = field(st.just(message), _values)
        if draw(st.booleans()):
            fields["ttl_ms"] = field(
                st.integers(min_value=1, max_value=2**63 - 1), _odd_counts | st.just(0)
            )
    if draw(st.booleans()):
        fields["request_id"] = field(_request_ids, _odd_request_ids)
    if one_in(draw, 8):
        del fields[draw(st.sampled_from(sorted(fields)))]
    if one_in(draw, 4):
        fields[draw(st.text(max_size=6))] = draw(_values)
    return fields


_json_tokens = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"',
        "\\",
        " ",
        "\n",
        "null",
        "true",
        "-",
        "0",
        "-0",
        "1e999",
        "1" * 30,
        "1.5e-400",
        '"type"',
        '"publish"',
        '"ping"',
        '"request_id"',
        '"\\u00e9"',
        '"\\ud800"',
        '"\\u12"',
        '"\\"',
        '"\\\\"',
        "\u00e9",
        "\x00",
    ]
)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few edits: a slice cut out, doubled or replaced by JSON tokens,
    or the end cut off."""
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        start = draw(st.integers(min_value=0, max_value=len(text)))
        end = draw(st.integers(min_value=start, max_value=min(len(text), start + 8)))
        edit = draw(st.sampled_from(["cut", "double", "replace", "truncate"]))
        if edit == "cut":
            text = text[:start] + text[end:]
        elif edit == "double":
            text = text[:end] + text[start:end] + text[end:]
        elif edit == "replace":
            text = text[:start] + "".join(draw(st.lists(_json_tokens, max_size=3))) + text[end:]
        else:
            text = text[:start]
    return text


# --------------------------------------------------------------------------
# The decoder.


@budget(short=200)
@given(text=st.text(max_size=200), max_depth=_max_depths)
def test_any_text_is_a_frame_or_bad_request(text: str, max_depth: int) -> None:
    check(text, max_depth)


@budget(short=150)
@given(data=st.binary(max_size=200), max_depth=_max_depths)
def test_any_bytes_are_a_frame_or_bad_request(data: bytes, max_depth: int) -> None:
    outcome(data, max_depth)


@budget(short=150)
@given(tokens=st.lists(_json_tokens | st.text(max_size=3), max_size=40))
def test_json_token_soup_is_a_frame_or_bad_request(tokens: list[str]) -> None:
    check("".join(tokens))


@budget(short=200)
@given(data=st.data(), fields=frames(), max_depth=_max_depths)
def test_odd_frames_and_their_mutations_are_a_frame_or_bad_request(
    data: st.DataObject, fields: dict[str, Any], max_depth: int
) -> None:
    text = data.draw(json_texts(fields))
    result = check(text, max_depth)
    if result[0] == "frame":
        # A frame decodes to the type its tag names.
        frame = decode_client_frame(text, max_depth)
        assert type(frame) is FRAME_TYPES[fields["type"]]
    check(data.draw(mutated(text)), max_depth)


@budget(short=100)
@given(data=st.data(), limit=st.sampled_from(DEPTHS[:-1]))
def test_a_publish_decodes_up_to_the_depth_limit_and_is_refused_past_it(
    data: st.DataObject, limit: int
) -> None:
    """The frame object and its message are two levels; the payload adds its own."""
    payload = data.draw(nested(around(limit)))
    fields = {
        "type": "publish",
        "topic": "orders",
        "client_id": "c",
        "message": {"id": "m", "payload": payload},
        "request_id": "r",
    }
    depth = nesting(fields)
    result = check(data.draw(json_texts(fields)), limit)
    if depth > limit:
        # Refused before msgspec reads it, so the request id is not read either.
        assert result == ("error", too_deep_message(limit), None)
    else:
        assert result[0] == "frame"


@pytest.mark.parametrize("depth", [900, 1200, 5000])
@pytest.mark.parametrize("shape", ["[", '{"a":'])
def test_nesting_past_what_msgspec_can_decode_is_too_deep(depth: int, shape: str) -> None:
    """With ``MAX_JSON_DEPTH`` above msgspec's own recursion limit, the frame is still
    refused as too deep (not a RecursionError, which would drop the connection)."""
    close = "]" if shape == "[" else "}"
    text = '{"type":"ping","x":' + shape * depth + "1" + close * depth + "}"
    result = check(text, 10_000)
    assert result[0] == "frame" or result[1] == too_deep_message(10_000)


# --------------------------------------------------------------------------
# The depth check against a reference.


@budget(short=150)
@given(data=st.data(), limit=st.sampled_from(DEPTHS[:-1]))
def test_json_too_deep_agrees_with_a_plain_count_of_the_nesting(
    data: st.DataObject, limit: int
) -> None:
    value = data.draw(nested(around(limit)) | _values)
    text = data.draw(json_texts(value))
    deep = nesting(value) > limit
    assert json_too_deep(text, limit) is deep
    assert json_too_deep(text.encode(), limit) is deep


@budget(short=150)
@given(
    text=st.text(max_size=300) | st.lists(_json_tokens).map("".join), limit=st.sampled_from(DEPTHS)
)
def test_json_too_deep_reads_text_and_its_bytes_alike(text: str, limit: int) -> None:
    """Malformed input may be answered either way (the decoder then says what is
    wrong), but the same for a text and its UTF-8 bytes, and without raising."""
    assert json_too_deep(text, limit) is json_too_deep(text.encode(), limit)


# --------------------------------------------------------------------------
# Found while writing these tests.


def test_a_lone_surrogate_in_text_is_bad_request() -> None:
    # decode_client_frame let UnicodeEncodeError out (msgspec encodes str input as
    # UTF-8); unreachable from the wire, whose text is decoded strictly.
    with pytest.raises(ProtocolError):
        decode_client_frame('{"type":"ping","request_id":"\ud800"}')


@budget(short=300)
@given(st.text(alphabet='"\\[]{}ab', max_size=200))
def test_the_string_pattern_never_fails_at_a_quote(rest: str) -> None:
    """What keeps the depth check linear: from an opening quote the pattern
    matches (a whole string, or the rest of the text), so no search starts over
    from every later quote. The pattern that could fail rescanned to the end
    from every quote of an unclosed string of escaped quotes: quadratic, about
    an hour for a 1 MiB frame."""
    assert _JSON_STRING.match('"' + rest) is not None


def test_the_depth_check_of_a_large_malformed_frame_is_linear() -> None:
    # 256 KiB: milliseconds now; minutes with the quadratic pattern.
    frame = '"' + '\\"' * 131072 + "[" * 101
    assert not json_too_deep(frame, 100)
    with pytest.raises(ProtocolError):
        decode_client_frame(frame)
