"""Content filters: every op and value rule, every refusal with its location, the key,
and property tests against a plain reference evaluator.

Synchronous: compiling and matching are plain functions. Messages are built as
``msgspec.json.decode`` gives them (plain dicts, lists and scalars).

The property tests draw messages first and filters that mostly name their paths and
values (or lookalikes of them: ``true`` for ``1``, ``0`` for ``null``), so that
conditions hold about as often as not; they check every filter inside a filter too,
since an ``and`` or ``or`` can hide a wrong answer. A third test draws any JSON
(any number, any text, keys that are empty or dotted) to show ``matches`` never raises.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pubsub._protocol.errors import BadRequest, ErrorCode
from pubsub._protocol.filters import MAX_DEPTH, MAX_NODES, MAX_SEGMENTS, OPS, compile_filter


def cond(op: object, *value: object, path: object = "payload.v") -> dict[str, object]:
    """A condition; ``value`` is left out when none is given (``exists``). Typed
    loosely: the refusal tests pass what JSON may hold, not what is valid."""
    spec: dict[str, object] = {"path": path, "op": op}
    if value:
        (spec["value"],) = value
    return spec


def matches(spec: object, payload: object) -> bool:
    return compile_filter(spec).matches({"id": "m-1", "payload": payload})


def refusal(spec: object) -> str:
    with pytest.raises(BadRequest) as caught:
        compile_filter(spec)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    return caught.value.message


#: A condition every message meets (every message has an id).
TRUE = cond("exists", path="id")
#: Stands for a missing value: in the op cases, where the payload lacks "v"; in the
#: reference, where a path leads nowhere.
MISSING = object()


# ------------------------------------------------------------------ every op

#: (op, value, payload["v"] or MISSING, expected)
OP_CASES: list[tuple[str, object, object, bool]] = [
    ("eq", 5, 5, True),
    ("eq", 5, 6, False),
    ("eq", 5, MISSING, False),
    ("eq", "a", "a", True),
    ("eq", "a", "b", False),
    ("ne", 5, 6, True),
    ("ne", 5, 5, False),
    ("ne", 5, MISSING, True),
    ("ne", 5, "5", True),
    ("lt", 5, 4, True),
    ("lt", 5, 5, False),
    ("lt", 5, MISSING, False),
    ("lte", 5, 5, True),
    ("lte", 5, 6, False),
    ("lte", 5, MISSING, False),
    ("gt", 100, 250, True),
    ("gt", 100, 100, False),
    ("gt", 100, MISSING, False),
    ("gte", 100, 100, True),
    ("gte", 100, 99.5, False),
    ("gte", 100, MISSING, False),
    ("lt", "b", "a", True),
    ("lt", "b", "ba", False),
    ("gte", "b", "ba", True),
    ("in", [1, "a"], "a", True),
    ("in", [1, "a"], 2, False),
    ("in", [1, "a"], MISSING, False),
    ("nin", [1, "a"], 2, True),
    ("nin", [1, "a"], 1, False),
    ("nin", [1, "a"], MISSING, True),
    ("exists", None, 0, True),
    ("exists", None, None, True),  # present, even as null
    ("exists", None, MISSING, False),
    ("prefix", "eu-", "eu-west", True),
    ("prefix", "eu-", "us-east", False),
    ("prefix", "eu-", MISSING, False),
    ("prefix", "", "", True),
    ("contains", "west", "eu-west-1", True),
    ("contains", "west", "eu-east-1", False),
    ("contains", "", "anything", True),
    ("contains", "west", MISSING, False),
    ("contains", 2, [1, 2, 3], True),
    ("contains", 4, [1, 2, 3], False),
    ("contains", "b", ["a", "b"], True),
    ("contains", "b", ["abc"], False),  # membership, not substring, in an array
]


@pytest.mark.parametrize(("op", "value", "found", "expected"), OP_CASES)
def test_every_op_matches_misses_and_handles_a_missing_path(
    op: str, value: object, found: object, expected: bool
) -> None:
    spec = cond(op) if op == "exists" else cond(op, value)
    payload = {} if found is MISSING else {"v": found}
    assert matches(spec, payload) is expected


def test_the_cases_cover_every_op() -> None:
    assert {op for op, *_ in OP_CASES} == set(OPS)


def test_and_or_not() -> None:
    big = cond("gt", 100, path="payload.amount")
    eur = cond("eq", "EUR", path="payload.currency")
    payload = {"amount": 250, "currency": "USD"}
    assert not matches({"and": [big, eur]}, payload)
    assert matches({"or": [big, eur]}, payload)
    assert matches({"and": [big, {"not": eur}]}, payload)
    assert not matches({"or": [{"not": big}, eur]}, payload)
    assert matches({"and": [big]}, payload)
    # not of a missing path: every op but exists/ne/nin is false there.
    assert matches({"not": cond("gt", 1, path="payload.nope")}, payload)
    assert not matches({"not": cond("exists", path="payload.amount")}, payload)


# ------------------------------------------------------------- value rules


@pytest.mark.parametrize(
    ("value", "found", "expected"),
    [
        (1, 1.0, True),
        (1.0, 1, True),
        (0, -0.0, True),
        (1e2, 100, True),
        (1, True, False),  # Python's True == 1 must not leak through
        (True, 1, False),
        (0, False, False),
        (False, 0, False),
        (True, True, True),
        (False, False, True),
        (None, None, True),
        (None, 0, False),
        (None, "", False),
        (None, False, False),
        (None, [], False),
        (0, None, False),
        ("1", 1, False),
        (1, "1", False),
        (2**53 + 1, 2.0**53, False),  # exact, not through floats
        (2**53, 2.0**53, True),
        (10**30, 1e30, False),  # 1e30 is not exactly 10**30
        ([1, [2, {"a": 3}]], [1.0, [2.0, {"a": 3.0}]], True),
        ([1, 2], [2, 1], False),  # arrays in order
        ([1, 2], [1, 2, 3], False),
        ([1], [True], False),  # booleans apart inside too
        ([None], [0], False),
        ({"a": 1, "b": [True]}, {"b": [True], "a": 1.0}, True),  # objects in any order
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": None}, {}, False),
        ({}, [], False),
        ([], {}, False),
        ([], [], True),
        ("x", ["x"], False),
    ],
)
def test_eq_and_ne_compare_json_values(value: object, found: object, expected: bool) -> None:
    assert matches(cond("eq", value), {"v": found}) is expected
    assert matches(cond("ne", value), {"v": found}) is not expected


@pytest.mark.parametrize(
    ("op", "value", "found"),
    [
        ("gt", 1, "2"),  # a number orders only numbers
        ("lt", "b", 1),  # a string orders only strings
        ("gt", 0, True),  # booleans are not numbers
        ("gte", 0, False),
        ("lte", 1, True),
        ("lt", 1, None),
        ("gt", 0, [1]),
        ("gt", 0, {"a": 1}),
        ("gte", "", None),
        ("gte", "", ["a"]),
    ],
)
def test_ordering_across_types_is_false(op: str, value: object, found: object) -> None:
    assert not matches(cond(op, value), {"v": found})
    assert matches({"not": cond(op, value)}, {"v": found})


def test_ordering_is_exact_on_large_numbers_and_by_code_point_on_strings() -> None:
    assert matches(cond("gt", 2.0**53), {"v": 2**53 + 1})
    assert not matches(cond("gt", 2**53 + 1), {"v": 2.0**53})
    assert matches(cond("gt", 1e308), {"v": 10**400})
    assert matches(cond("lt", 1.5), {"v": 1})
    assert matches(cond("gte", 1), {"v": 1.0})
    assert matches(cond("lt", "a"), {"v": "Z"})  # code points, not a locale
    assert matches(cond("lt", "\U0001f600"), {"v": "\uffff"})  # not UTF-16 units


def test_in_and_nin_compare_whole_values_by_json_type() -> None:
    values = [1, "a", True, None, [1, 2], {"k": 1}]
    hits: list[object] = [1, 1.0, "a", True, None, [1, 2.0], {"k": 1.0}]
    for found in hits:
        assert matches(cond("in", values), {"v": found}), found
        assert not matches(cond("nin", values), {"v": found}), found
    misses: list[object] = [False, 0, "1", "A", [2, 1], [1], {"k": True}, {}, 1.5]
    for found in misses:
        assert not matches(cond("in", values), {"v": found}), found
        assert matches(cond("nin", values), {"v": found}), found
    assert not matches(cond("in", [1]), {"v": True})
    assert not matches(cond("in", [True]), {"v": 1})
    assert not matches(cond("in", [0]), {"v": False})
    assert not matches(cond("in", [2.0**53]), {"v": 2**53 + 1})
    assert not matches(cond("in", [1, 2]), {"v": [1]})  # no search inside an array
    assert not matches(cond("in", []), {"v": 1})
    assert matches(cond("nin", []), {"v": 1})


@pytest.mark.parametrize(
    ("op", "value", "found", "expected"),
    [
        ("prefix", "1", 12, False),  # prefix applies to strings only
        ("prefix", "t", True, False),
        ("prefix", "a", ["ab"], False),
        ("prefix", "n", None, False),
        ("prefix", "a", {"a": 1}, False),
        ("contains", 1, "a1b", False),  # only a string is in a string
        ("contains", None, "null", False),
        ("contains", ["a"], "a", False),
        ("contains", "a", {"a": 1}, False),  # not object keys
        ("contains", 1, {"k": 1}, False),  # nor object values
        ("contains", "1", 12, False),
        ("contains", "t", True, False),
        ("contains", 1, [1.0], True),  # membership as eq
        ("contains", 1, [True], False),
        ("contains", True, [1], False),
        ("contains", True, [False, True], True),
        ("contains", None, [0, None], True),
        ("contains", None, [0, ""], False),
        ("contains", [1, 2], [[1, 2], 3], True),
        ("contains", [1, 2], [1, 2], False),  # an element, not a sub-array
        ("contains", {"a": 1}, [{"a": 1.0}], True),
        ("contains", "a", [], False),
    ],
)
def test_prefix_and_contains_by_type(op: str, value: object, found: object, expected: bool) -> None:
    assert matches(cond(op, value), {"v": found}) is expected


# -------------------------------------------------------------------- paths


def test_a_digit_segment_indexes_an_array() -> None:
    payload = {"items": [{"sku": "a"}, {"sku": "b"}], "grid": [[0, 1], [2, 3]]}
    assert matches(cond("eq", "b", path="payload.items.1.sku"), payload)
    assert matches(cond("eq", 3, path="payload.grid.1.1"), payload)
    assert matches(cond("eq", [2, 3], path="payload.grid.1"), payload)
    assert matches(cond("exists", path="payload.items.0"), payload)
    assert not matches(cond("exists", path="payload.items.2"), payload)  # past the end


@pytest.mark.parametrize(
    "segment",
    ["01", "00", "-1", "+1", " 1", "1 ", "1e0", "0x1", "sku", "\u0661", "9" * 30],
)
def test_anything_but_a_canonical_index_on_an_array_is_missing(segment: str) -> None:
    payload = {"items": ["a", "b"] * 50}
    path = f"payload.items.{segment}"
    assert not matches(cond("exists", path=path), payload)
    assert matches(cond("ne", "b", path=path), payload)


def test_a_digit_segment_on_an_object_is_a_key() -> None:
    payload = {"0": "zero", "01": "leading", "1": {"2": "deep"}}
    assert matches(cond("eq", "zero", path="payload.0"), payload)
    assert matches(cond("eq", "leading", path="payload.01"), payload)
    assert matches(cond("eq", "deep", path="payload.1.2"), payload)
    assert not matches(cond("exists", path="payload.2"), payload)


@pytest.mark.parametrize(
    "payload",
    [None, True, 0, 1.5, "text", [], {}, {"a": None}, {"a": "string"}, {"a": [1]}, {"a": 7}],
)
def test_a_path_through_a_scalar_or_absent_value_is_missing(payload: object) -> None:
    for op in OPS:
        spec = cond(op) if op == "exists" else cond(op, ["x"] if op in ("in", "nin") else "x")
        spec["path"] = "payload.a.b.0"
        assert matches(spec, payload) is (op in ("ne", "nin")), op


def test_any_message_and_top_level_paths() -> None:
    by_id = compile_filter(cond("prefix", "order-", path="id"))
    assert by_id.matches({"id": "order-7", "payload": None})
    assert not by_id.matches({"id": 7, "payload": None})
    unknown_field = compile_filter(cond("exists", path="topic"))  # merely missing
    assert not unknown_field.matches({"id": "m", "payload": {}})
    for message in (None, [], "payload", 3, {"payload": "x"}, [{"id": "order-7"}]):
        assert not by_id.matches(message)


def test_matching_decoded_messages() -> None:
    message = msgspec.json.decode(
        b'{"id":"m-9","payload":{"amount":250.0,"tags":["vip","eu"],"customer":{"id":7}}}'
    )
    spec = msgspec.json.decode(
        b'{"and":[{"path":"payload.amount","op":"eq","value":250},'
        b'{"path":"payload.tags","op":"contains","value":"vip"},'
        b'{"path":"payload.tags.1","op":"in","value":["eu","uk"]},'
        b'{"not":{"path":"payload.customer.id","op":"eq","value":true}}]}'
    )
    assert compile_filter(spec).matches(message)


def test_deep_values_need_no_deep_stack() -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    other: list[object] = [1]
    for _ in range(5000):
        other = [other]
    compiled = compile_filter(cond("eq", deep))
    assert compiled.key == '{"op":"eq","path":"payload.v","value":' + "[" * 5001 + "]" * 5001 + "}"
    assert compiled.matches({"payload": {"v": deep}})
    assert not compiled.matches({"payload": {"v": other}})
    assert compile_filter(cond("contains", deep)).matches({"payload": {"v": [deep]}})


# ------------------------------------------------------------------- limits


def nested_nots(levels: int) -> dict[str, object]:
    """A filter ``levels`` deep: ``levels - 1`` nots around a condition."""
    spec: dict[str, object] = TRUE
    for _ in range(levels - 1):
        spec = {"not": spec}
    return spec


def test_the_limits() -> None:
    assert (MAX_DEPTH, MAX_NODES, MAX_SEGMENTS) == (8, 64, 16)


def test_depth_counts_levels_of_nodes() -> None:
    assert compile_filter(nested_nots(MAX_DEPTH)).matches({"id": "m"}) is False  # 7 nots
    assert refusal(nested_nots(MAX_DEPTH + 1)) == (
        "filter" + ".not" * MAX_DEPTH + ": more than 8 levels deep"
    )
    spec: dict[str, object] = TRUE
    for _ in range(MAX_DEPTH - 1):
        spec = {"and": [TRUE, spec]}
    assert compile_filter(spec).matches({"id": "m"})
    assert refusal({"or": [spec]}) == (
        # The first node at level 9 is the innermost and's first condition.
        "filter.or[0]" + ".and[1]" * (MAX_DEPTH - 2) + ".and[0]: more than 8 levels deep"
    )


def test_nodes_count_conditions_and_combinators() -> None:
    assert compile_filter({"and": [TRUE] * (MAX_NODES - 1)}).matches({"id": "m"})
    assert compile_filter({"not": {"and": [TRUE] * (MAX_NODES - 2)}}).matches({"id": "m"}) is False
    assert refusal({"and": [TRUE] * MAX_NODES}) == (
        "filter: more than 64 nodes (one too many at filter.and[63])"
    )
    assert refusal({"or": [{"not": TRUE}] * 32}) == (
        "filter: more than 64 nodes (one too many at filter.or[31].not)"
    )


def test_a_path_has_at_most_16_segments() -> None:
    deep: object = "bottom"
    for _ in range(MAX_SEGMENTS - 1):
        deep = {"a": deep}
    longest = cond("eq", "bottom", path=".".join(["payload"] + ["a"] * (MAX_SEGMENTS - 1)))
    assert matches(longest, deep)
    spec = {"and": [TRUE, TRUE, cond("exists", path=".".join("a" * 17))]}
    assert refusal(spec) == "filter.and[2].path: 17 segments (at most 16)"


# ---------------------------------------------------------------- refusals

LEAF = cond("eq", 1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([LEAF], "filter: expected an object, got array"),
        (None, "filter: expected an object, got null"),
        ("payload.a", "filter: expected an object, got string"),
        (1, "filter: expected an object, got number"),
        (True, "filter: expected an object, got boolean"),
        ({}, "filter: empty object (expected a condition, or one of and, or, not)"),
        (
            {"all": [LEAF]},
            'filter: unknown key "all" (expected a condition, or one of and, or, not)',
        ),
        (
            {"paht": "payload.a", "op": "eq", "value": 1},
            'filter: unexpected key "paht" (a condition has only path, op and value)',
        ),
        (
            {**LEAF, "y": 1, "x": 2},
            'filter: unexpected keys "x", "y" (a condition has only path, op and value)',
        ),
        (
            {"and": [LEAF], "or": [LEAF]},
            'filter: unexpected key "or" beside "and" '
            "(a node is exactly one of a condition, and, or, not)",
        ),
        (
            {"not": LEAF, **LEAF},
            'filter: unexpected keys "op", "path", "value" beside "not" '
            "(a node is exactly one of a condition, and, or, not)",
        ),
        ({"op": "eq", "value": 1}, "filter.path: missing"),
        ({"path": "payload.a", "value": 1}, "filter.op: missing"),
        ({"value": 1}, "filter.path: missing"),
        (cond("eq", 1, path=["payload", "a"]), "filter.path: expected a string, got array"),
        (cond("eq", 1, path=None), "filter.path: expected a string, got null"),
        (cond("eq", 1, path=""), "filter.path: empty"),
        (cond("eq", 1, path="payload..a"), "filter.path: segment 2 of 3 is empty"),
        (cond("eq", 1, path=".payload"), "filter.path: segment 1 of 2 is empty"),
        (cond("eq", 1, path="payload."), "filter.path: segment 2 of 2 is empty"),
        (cond("exists", path="."), "filter.path: segment 1 of 2 is empty"),
        (
            cond("like", "x"),
            'filter.op: unknown op "like" '
            "(one of eq, ne, lt, lte, gt, gte, in, nin, exists, prefix, contains)",
        ),
        (
            cond("EQ", 1),
            'filter.op: unknown op "EQ" '
            "(one of eq, ne, lt, lte, gt, gte, in, nin, exists, prefix, contains)",
        ),
        (cond(1, 1), "filter.op: expected a string, got number"),
        (cond("eq"), "filter.value: missing (op eq needs one)"),
        (cond("contains"), "filter.value: missing (op contains needs one)"),
        (
            cond("exists", True),
            "filter.value: op exists takes no value (for absence, wrap it in a not)",
        ),
        (
            cond("exists", None),
            "filter.value: op exists takes no value (for absence, wrap it in a not)",
        ),
        (cond("gt", True), "filter.value: op gt needs a number or a string, got boolean"),
        (cond("lt", None), "filter.value: op lt needs a number or a string, got null"),
        (cond("gte", [1]), "filter.value: op gte needs a number or a string, got array"),
        (cond("lte", {"a": 1}), "filter.value: op lte needs a number or a string, got object"),
        (cond("in", "abc"), "filter.value: op in needs an array, got string"),
        (cond("nin", {"a": 1}), "filter.value: op nin needs an array, got object"),
        (cond("in", None), "filter.value: op in needs an array, got null"),
        (cond("prefix", 1), "filter.value: op prefix needs a string, got number"),
        (cond("prefix", ["a"]), "filter.value: op prefix needs a string, got array"),
        ({"and": []}, "filter.and: empty (at least one filter is needed)"),
        ({"or": []}, "filter.or: empty (at least one filter is needed)"),
        ({"and": LEAF}, "filter.and: expected a non-empty array, got object"),
        ({"or": None}, "filter.or: expected a non-empty array, got null"),
        ({"not": [LEAF]}, "filter.not: expected an object, got array"),
        ({"not": None}, "filter.not: expected an object, got null"),
        (
            {"or": [LEAF, {"not": {"and": [LEAF, 5]}}]},
            "filter.or[1].not.and[1]: expected an object, got number",
        ),
        (
            {"and": [LEAF, {"or": [LEAF, cond("gt")]}]},
            "filter.and[1].or[1].value: missing (op gt needs one)",
        ),
        # Only a Python caller can pass what JSON cannot hold.
        (cond("eq", (1, 2)), "filter.value: not a JSON value (tuple)"),
        (cond("eq", {"a": [1, float("inf")]}), "filter.value.a[1]: inf is not a JSON number"),
        (cond("in", [0, float("nan")]), "filter.value[1]: nan is not a JSON number"),
        (cond("eq", [{1: 2}]), "filter.value[0]: object key 1 is not a string"),
    ],
)
def test_a_bad_filter_is_refused_saying_where(spec: object, message: str) -> None:
    assert refusal(spec) == message


def test_compiling_leaves_the_spec_alone() -> None:
    spec = cond("in", [1.0, {"b": 2.0, "a": [3.0]}])
    before = msgspec.json.encode(spec)
    compile_filter(spec)
    assert msgspec.json.encode(spec) == before


# ---------------------------------------------------------------------- key


def test_the_key_is_canonical_json() -> None:
    spec = {"and": [{"value": 100, "op": "gt", "path": "payload.amount"}, {"not": TRUE}]}
    key = compile_filter(spec).key
    assert key == (
        '{"and":[{"op":"gt","path":"payload.amount","value":100},'
        '{"not":{"op":"exists","path":"id"}}]}'
    )
    assert compile_filter(msgspec.json.decode(key)).key == key


def test_key_order_and_number_spelling_do_not_change_the_key() -> None:
    one = {"path": "payload.a", "op": "eq", "value": {"x": 1, "y": [{"b": 1.0, "a": -0.0}]}}
    two = {"value": {"y": [{"a": 0, "b": 1}], "x": 1.0}, "op": "eq", "path": "payload.a"}
    assert compile_filter(one).key == compile_filter(two).key
    assert compile_filter({"or": [one]}).key == compile_filter({"or": [two]}).key
    assert compile_filter(cond("in", [1e2, 2.5])).key == compile_filter(cond("in", [100, 2.5])).key


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (cond("eq", 1), cond("ne", 1)),
        (cond("eq", 1), cond("eq", "1")),
        (cond("eq", 1), cond("eq", True)),
        (cond("eq", 0), cond("eq", False)),
        (cond("eq", 0), cond("eq", None)),
        (cond("eq", 1.5), cond("eq", 1)),
        (cond("eq", 1), cond("eq", 1, path="payload.w")),
        (cond("eq", [1]), cond("in", [1])),
        (cond("eq", {"a": 1}), cond("eq", {"a": 1, "b": 1})),
        (cond("exists"), cond("eq", None)),
        (cond("eq", "a.b", path="payload"), cond("eq", "b", path="payload.a")),
        ({"and": [TRUE]}, {"or": [TRUE]}),
        ({"and": [TRUE]}, TRUE),
        ({"not": {"not": TRUE}}, TRUE),
        ({"and": [TRUE, LEAF]}, {"and": [TRUE, {"not": LEAF}]}),
    ],
)
def test_different_filters_have_different_keys(one: object, two: object) -> None:
    assert compile_filter(one).key != compile_filter(two).key


# ----------------------------------------------------- property: a reference


def resolve(message: object, path: str) -> object:
    """The value at ``path``, or MISSING: the contract's words, one by one."""
    node = message
    for segment in path.split("."):
        if isinstance(node, dict):
            if segment not in node:
                return MISSING
            node = node[segment]
        elif (
            isinstance(node, list)
            and segment.isascii()
            and segment.isdigit()
            and str(int(segment)) == segment
            and int(segment) < len(node)
        ):
            node = node[int(segment)]
        else:
            return MISSING
    return node


def tagged(value: object) -> tuple[object, ...]:
    """``value`` as nested tuples that are equal exactly when the JSON values are."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(tagged(item) for item in value))
    assert isinstance(value, dict)
    return ("object", frozenset((key, tagged(item)) for key, item in value.items()))


def kind(value: object) -> str:
    """The JSON type of ``value``: "null", "boolean", "number", "string", "array"..."""
    return str(tagged(value)[0])


def reference(spec: dict[str, Any], message: object) -> bool:
    """What the contract and the module's decisions say, plainly, with no speed in mind."""
    if "and" in spec:
        return all(reference(child, message) for child in spec["and"])
    if "or" in spec:
        return any(reference(child, message) for child in spec["or"])
    if "not" in spec:
        return not reference(spec["not"], message)
    op, found = spec["op"], resolve(message, spec["path"])
    if op == "exists":
        return found is not MISSING
    if found is MISSING:
        return op in ("ne", "nin")
    value = spec["value"]
    if op in ("eq", "ne"):
        return (tagged(found) == tagged(value)) is (op == "eq")
    if op in ("in", "nin"):
        return any(tagged(found) == tagged(item) for item in value) is (op == "in")
    if op in ("lt", "lte", "gt", "gte"):
        if kind(found) != kind(value) or kind(value) not in ("number", "string"):
            return False
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "lt": operator.lt,
            "lte": operator.le,
            "gt": operator.gt,
            "gte": operator.ge,
        }
        return compare[op](found, value)
    if op == "prefix":
        return isinstance(found, str) and found.startswith(value)
    assert op == "contains"
    if isinstance(found, str):
        return isinstance(value, str) and value in found
    if isinstance(found, list):
        return any(tagged(item) == tagged(value) for item in found)
    return False


def depth_and_nodes(spec: dict[str, Any]) -> tuple[int, int]:
    """How deep ``spec`` is and how many nodes it has (a condition: 1 and 1)."""
    children = spec.get("and") or spec.get("or") or ([spec["not"]] if "not" in spec else [])
    if not children:
        return 1, 1
    counted = [depth_and_nodes(child) for child in children]
    return 1 + max(depth for depth, _ in counted), 1 + sum(nodes for _, nodes in counted)


def within_limits(depth: int, nodes: int) -> bool:
    return depth <= MAX_DEPTH and nodes <= MAX_NODES


# Few keys and few distinct scalars, so that values often meet their equals and
# their lookalikes (1 and 1.0, True and 1, 2**53 + 1 and 2.0**53, 0 and null).
KEYS = ("a", "b", "0", "1", "01")
SCALARS = [None, True, False, 0, 1, 0.0, -0.0, 1.0, 1.5, 2**53 + 1, 2.0**53, "", "a", "ab", "1"]
scalars = st.sampled_from(SCALARS)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
messages = st.builds(
    lambda id_, payload: {"id": id_, "payload": payload},
    st.sampled_from(["m", "7"]),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4) | json_values,
)


def inside(value: object, path: str) -> Iterator[tuple[str, object]]:
    """Every path in ``value`` from ``path`` down, with what it leads to."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from inside(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from inside(item, f"{path}.{index}")


#: Filter shapes, with None for each condition (drawn to fit the messages).
shapes = st.recursive(
    st.none(),
    lambda inner: (
        st.builds(lambda children: {"and": children}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda children: {"or": children}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda child: {"not": child}, inner)
    ),
    max_leaves=6,
)


def confusable(one: object, other: object) -> bool:
    """Whether a careless evaluator could take ``one`` for ``other``: Python's ``==``
    (``True == 1``), both falsy (``None``, ``0``, ``""``, ``[]``), nearly equal numbers."""
    if one == other or (not one and not other):
        return True
    numbers = (int, float)
    if isinstance(one, numbers) and isinstance(other, numbers):
        try:
            return math.isclose(one, other)
        except OverflowError:  # an integer beyond any float
            return False
    return False


def lookalike(draw: Callable[[st.SearchStrategy[Any]], Any], value: object) -> object:
    """``value`` with one scalar in it swapped for a confusable one (where it has
    one), and object keys in another order."""
    leaves = [item for _, item in inside(value, "") if not isinstance(item, list | dict)]
    chosen = draw(st.integers(0, len(leaves) - 1)) if leaves else -1
    seen = -1

    def rebuilt(item: object) -> object:
        nonlocal seen
        if isinstance(item, list):
            return [rebuilt(child) for child in item]
        if isinstance(item, dict):
            return {key: rebuilt(item[key]) for key in reversed(item)}
        seen += 1
        twins = [
            other
            for other in SCALARS
            if confusable(other, item) and not (type(other) is type(item) and other == item)
        ]
        return draw(st.sampled_from(twins)) if seen == chosen and twins else item

    return rebuilt(value)


def fits(op: str, value: object) -> bool:
    """Whether ``value`` is what ``op`` is most worth testing at: arrays and strings
    for contains, scalars for the rest (other values come along anyway)."""
    if op == "contains":
        return isinstance(value, list | str)
    return not isinstance(value, list | dict)


def respelled(path: str) -> str:
    """``path`` with a leading zero on each digit segment: no index any more, but
    the key "01" names a value in the messages drawn."""
    return ".".join("0" + segment if segment.isdigit() else segment for segment in path.split("."))


@st.composite
def conditions(draw: st.DrawFn, found: list[tuple[str, object]]) -> dict[str, Any]:
    """A condition that mostly names a ``found`` path and a value like the one there
    (itself, a lookalike, a part of it), so that it holds about as often as not, and
    an evaluator that confuses types or treats scalars as text gets caught."""
    op = draw(st.sampled_from(OPS))
    fitting = [(path, value) for path, value in found if fits(op, value)]
    path, there = draw(
        st.sampled_from(fitting or found) | st.sampled_from(found) | st.sampled_from(FIXED)
    )
    if draw(st.integers(0, 3)) == 0:
        path = respelled(path)
    somewhere = st.sampled_from([value for _, value in found]) | scalars | json_values
    spec: dict[str, Any] = {"path": path, "op": op}
    if op in ("lt", "lte", "gt", "gte"):
        pool: list[object] = [0, 1, 1.5, 2.0**53, "", "a", "1"]
        if isinstance(there, int | float) and not isinstance(there, bool):
            pool += [there, there - 1, there + 0.5]
        elif isinstance(there, str):
            pool += [there, there[:-1], there + "a"]
        spec["value"] = draw(st.sampled_from(pool))
    elif op == "prefix" or (op == "contains" and not isinstance(there, list | dict)):
        # Text from the value: its start or a part of it, or of its JSON if not a string.
        text = there if isinstance(there, str) else msgspec.json.encode(there).decode()
        start = 0 if op == "prefix" else draw(st.integers(0, len(text)))
        spec["value"] = text[start : draw(st.integers(start, len(text)))]
        if op == "contains" and not isinstance(there, str) and draw(st.booleans()):
            spec["value"] = pick(draw, there, somewhere)
    elif op == "contains":
        # An element of the array (of the object: a key or a value, which must not match).
        assert isinstance(there, list | dict)
        parts = [*there, *there.values()] if isinstance(there, dict) else [*there]
        spec["value"] = pick(draw, draw(st.sampled_from(parts)), somewhere) if parts else there
    elif op in ("in", "nin"):
        spec["value"] = [pick(draw, there, somewhere) for _ in range(draw(st.integers(0, 3)))]
    elif op != "exists":
        spec["value"] = pick(draw, there, somewhere)
    return spec


def pick(draw: st.DrawFn, there: object, somewhere: st.SearchStrategy[object]) -> object:
    """``there``, a lookalike of it, or a value from elsewhere."""
    choice = draw(st.sampled_from(["same", "lookalike", "elsewhere"]))
    if choice == "same":
        return there
    if choice == "lookalike":
        return lookalike(draw, there)
    return draw(somewhere)


def fill(draw: st.DrawFn, shape: object, found: list[tuple[str, object]]) -> dict[str, Any]:
    """``shape`` with a condition drawn for each None."""
    if shape is None:
        return draw(conditions(found))
    assert isinstance(shape, dict)
    ((name, inner),) = shape.items()
    if name == "not":
        return {"not": fill(draw, inner, found)}
    return {name: [fill(draw, child, found) for child in inner]}


#: The id (every message has one) and paths that mostly lead nowhere, each with a
#: value to use.
FIXED = [("id", "m"), ("payload.a.b.0", 1), ("nope", "a"), ("id.0", "m")]


@st.composite
def cases(
    draw: st.DrawFn,
    messages: st.SearchStrategy[dict[str, object]],
    others: st.SearchStrategy[object],
) -> tuple[list[dict[str, Any]], list[object]]:
    """Filters and what to match them against: ``messages`` whose paths and values
    the filters mostly use, and ``others``, any JSON (no message). Several filters
    share the messages: drawing messages costs more than drawing a filter."""
    batch: list[object] = draw(st.lists(messages, min_size=1, max_size=3))
    found = [
        (path[1:], value)
        for message in batch
        for path, value in inside(message, "")
        # What a path can name: no empty segment (a key "" or "a.b" splits), 16 at most.
        if path not in ("", ".id") and all(path[1:].split(".")) and path.count(".") <= MAX_SEGMENTS
    ]
    specs = [fill(draw, draw(shapes), found) for _ in range(draw(st.integers(1, 4)))]
    specs = [spec for spec in specs if within_limits(*depth_and_nodes(spec))]
    return specs, batch + draw(st.lists(others, max_size=2))


def reordered(value: object) -> object:
    """``value`` with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(value)}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def nodes(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``spec`` and every filter inside it."""
    yield spec
    for child in spec.get("and", spec.get("or", [spec["not"]] if "not" in spec else [])):
        yield from nodes(child)


def check(specs: list[dict[str, Any]], batch: list[object]) -> None:
    """Each filter and each filter inside it (where and/or could hide a wrong
    answer) match exactly what the reference says; the key ignores key order."""
    for spec in specs:
        assert compile_filter(reordered(spec)).key == compile_filter(spec).key
        for node in nodes(spec):
            compiled = compile_filter(node)
            for message in batch:
                assert compiled.matches(message) is reference(node, message), (node, message)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(cases(messages, json_values))
def test_matches_agrees_with_the_reference(
    case: tuple[list[dict[str, Any]], list[object]],
) -> None:
    check(*case)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.data())
def test_values_and_their_lookalikes_agree_with_the_reference(data: st.DataObject) -> None:
    """Where careless comparisons go wrong: a value against itself with one scalar
    swapped for a lookalike (1 for true or 1.0, 0 for null, 2.0**53 for 2**53 + 1),
    at the top, inside arrays and objects, as an element and as a member."""
    one = data.draw(scalars | json_values)
    other = lookalike(data.draw, one)
    specs: list[dict[str, Any]] = []
    for value in (one, other):
        specs += [
            cond("eq", value),
            cond("ne", value),
            cond("in", [value]),
            cond("nin", [value]),
            cond("contains", value),
        ]
        if kind(value) in ("number", "string"):
            specs += [cond(op, value) for op in ("lt", "lte", "gt", "gte")]
    batch: list[object] = [
        {"id": "m", "payload": {"v": found}} for found in (one, other, [one], [other])
    ]
    check(specs, batch)


# Any JSON: any number, any text, keys that are empty, dotted or non-ASCII digits.
wide_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["", ".", "a", "0", "01", "\u0663", "a.b"]) | st.text(max_size=3),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)
wide_messages = st.builds(lambda payload: {"id": "m", "payload": payload}, wide_json)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(cases(wide_messages, wide_json))
def test_matches_agrees_and_never_raises_on_any_json(
    case: tuple[list[dict[str, Any]], list[object]],
) -> None:
    check(*case)
