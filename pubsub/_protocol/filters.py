"""Content filters (PROTOCOL.md "Content filters"): compiled once, evaluated per message.

A subscribe's ``"filter"`` is decoded JSON. :func:`compile_filter` checks it
completely and turns it into nested closures, so :meth:`Filter.matches` does no
parsing or validation on the fan-out path; it never raises, whatever JSON the
message holds. :attr:`Filter.key` is a canonical text of the filter, so that
subscribers with equal filters can share one evaluation per message.

What the contract leaves open is decided here, as a client author would expect:

Values
    JSON has six types: object, array, string, number, boolean, null; values
    are compared by JSON type first. Booleans are not numbers (``true`` is not
    ``1``, although Python says ``True == 1``); ``null`` equals only ``null``.
    Numbers compare exactly by value, whatever their spelling (``1``, ``1.0``
    and ``1e0`` are equal; a large integer is not rounded to a float).

Paths
    A segment is an object key; on an array, a segment of ASCII digits in
    canonical form (``0``, ``7``, ``12``; not ``01``, ``+1`` or ``-1``) is an
    index. A digit segment on an object is a key like any other (``"0"``).
    Anything else is missing: a key an object lacks, an index past an array's
    end, a non-index segment on an array, any segment on a string, number,
    boolean or null. Paths need not start with ``id`` or ``payload``: the
    message object may grow fields, and an unknown one is merely missing. A
    key that is present with the value ``null`` exists.

Ops
    ``eq``/``ne`` take any JSON value; arrays and objects are equal when deeply
    equal by the same rules (arrays in order, objects whatever their key order).
    ``ne`` is exactly ``not eq``, so it is true for a missing path and for a
    value of another type.

    ``lt lte gt gte`` need a number or a string (otherwise ``BAD_REQUEST``);
    a number orders only numbers and a string only strings (by Unicode code
    point, as UTF-8 bytes sort), every other pair is false.

    ``in``/``nin`` need an array of JSON values; ``in`` is true when the
    message's value equals (as ``eq``) one of them, ``nin`` is ``not in``. The
    message's value is compared whole: an array value is not searched.

    ``exists`` takes no ``value``, and one is refused rather than ignored (a
    ``"value": false`` meaning "absent" would otherwise silently mean
    "present"; absence is ``{"not": ...}``).

    ``prefix`` needs a string and matches string values only (every string
    starts with ``""``). ``contains`` takes any JSON value: on a string value
    it is a substring test (so only a string value can match; ``""`` is in
    every string), on an array value it is membership as ``eq``; on any other
    value, objects included, it is false.

Shape
    A node is an object and exactly one of a condition (``path``, ``op`` and,
    except for ``exists``, ``value``), ``{"and": [...]}``, ``{"or": [...]}``
    or ``{"not": node}``; any other key is refused by name. ``and``/``or``
    need a non-empty array. Every node counts, conditions and ``and``/``or``/
    ``not`` alike: a condition is 1 node at depth 1, ``{"not": condition}`` 2
    nodes at depth 2, ``{"and": [c1, c2]}`` 3 nodes at depth 2. Values are not
    nodes and have no depth limit of their own (the decoder's is enough: nothing
    here recurses on a value). A Python caller passing what JSON cannot hold
    (a tuple, NaN, a non-string key) gets ``BAD_REQUEST`` too.

Errors name the bad part by its location, ``filter`` being the whole filter:
``filter.and[2].path: 17 segments (at most 16)``. Locations index arrays from 0.

The key is the compact JSON of the filter with object keys sorted at every
level (values included) and integral numbers written as integers, so filters
that differ only in key order or number spelling share a key.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec

from .errors import BadRequest

#: Levels of nesting a filter may have (a lone condition is 1).
MAX_DEPTH: Final = 8
#: Nodes (conditions and ``and``/``or``/``not``) a filter may have.
MAX_NODES: Final = 64
#: Segments a condition's ``path`` may have.
MAX_SEGMENTS: Final = 16

#: The ops of a condition, in the contract's order.
OPS: Final = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "exists", "prefix", "contains")

#: Tests whether a message matches.
Predicate = Callable[[object], bool]

_ORDERING: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}
#: The Python types of JSON numbers: ``bool`` is an ``int`` subclass, so type
#: checks are exact (``type(x) in _NUMBERS``), never ``isinstance``.
_NUMBERS: Final = frozenset((int, float))
_COMBINATORS: Final = ("and", "or", "not")
_CONDITION_KEYS: Final = frozenset(("path", "op", "value"))
_encode: Final = msgspec.json.Encoder().encode
#: An array index has at most this many digits: longer ones cannot be in range,
#: and ``int()`` refuses very long digit strings.
_INDEX_DIGITS: Final = 18


class _Missing:
    """What a path that leads nowhere gives: equal to no JSON value."""

    __slots__ = ()


_MISSING: Final = _Missing()


class Filter:
    """A compiled filter.

    Attributes:
        key: The canonical JSON text of the filter: equal for filters that
            differ only in object key order or number spelling.
        matches: ``matches(message)``: whether the message object (``{"id",
            "payload"}``, decoded) passes. A plain attribute holding the
            compiled closure, so a call costs no method binding.
    """

    __slots__ = ("key", "matches")

    def __init__(self, key: str, matches: Predicate) -> None:
        self.key = key
        self.matches = matches

    def __repr__(self) -> str:
        return f"Filter({self.key})"


def any_of(filters: list[Filter | None]) -> Filter | None:
    """The filter of a connection that receives a topic through several
    subscriptions (its own and wildcard patterns): a message passes if any
    passes; None (everything passes) if any of them has no filter."""
    if not filters or None in filters:
        return None
    distinct = {f.key: f for f in filters if f is not None}
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    chosen = [distinct[key] for key in sorted(distinct)]
    tests = [f.matches for f in chosen]

    def matches(message: object) -> bool:
        return any(test(message) for test in tests)

    return Filter("any:" + "|".join(f.key for f in chosen), matches)


def compile_filter(spec: object) -> Filter:
    """Check ``spec`` (a decoded ``"filter"``) and compile it.

    Raises:
        BadRequest: The filter breaks a rule; the message says where and which.
    """
    counter = [0]
    predicate, normal = _compile_node(spec, "filter", 1, counter)
    return Filter(_canonical(normal), predicate)


# ---------------------------------------------------------------------- nodes


def _compile_node(
    node: object, where: str, depth: int, counter: list[int]
) -> tuple[Predicate, object]:
    """One node and its children: its predicate and its normal form (for the key)."""
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise BadRequest(f"filter: more than {MAX_NODES} nodes (one too many at {where})")
    if depth > MAX_DEPTH:
        raise BadRequest(f"{where}: more than {MAX_DEPTH} levels deep")
    if type(node) is not dict:
        raise BadRequest(f"{where}: expected an object, got {_json_type(node)}")
    combinators = [name for name in _COMBINATORS if name in node]
    if not combinators:
        if node.keys() & _CONDITION_KEYS:
            return _compile_condition(node, where)
        if not node:
            raise BadRequest(
                f"{where}: empty object (expected a condition, or one of and, or, not)"
            )
        raise BadRequest(
            f"{where}: unknown {_keys(node)} (expected a condition, or one of and, or, not)"
        )
    extra = node.keys() - {combinators[0]}
    if extra:
        raise BadRequest(
            f"{where}: unexpected {_keys(extra)} beside {_quote(combinators[0])}"
            " (a node is exactly one of a condition, and, or, not)"
        )
    name = combinators[0]
    if name == "not":
        inner, normal = _compile_node(node["not"], f"{where}.not", depth + 1, counter)
        return (lambda message: not inner(message)), {"not": normal}
    children = node[name]
    if type(children) is not list:
        raise BadRequest(f"{where}.{name}: expected a non-empty array, got {_json_type(children)}")
    if not children:
        raise BadRequest(f"{where}.{name}: empty (at least one filter is needed)")
    compiled = [
        _compile_node(child, f"{where}.{name}[{index}]", depth + 1, counter)
        for index, child in enumerate(children)
    ]
    predicates = tuple(predicate for predicate, _ in compiled)
    normals = [normal for _, normal in compiled]
    if name == "and":

        def all_of(message: object) -> bool:
            for predicate in predicates:  # noqa: SIM110 - twice as fast as all() on a generator
                if not predicate(message):
                    return False
            return True

        return all_of, {"and": normals}

    def any_of(message: object) -> bool:
        for predicate in predicates:  # noqa: SIM110 - twice as fast as any() on a generator
            if predicate(message):
                return True
        return False

    return any_of, {"or": normals}


def _compile_condition(node: dict[Any, Any], where: str) -> tuple[Predicate, object]:
    """A ``{"path", "op", "value"}`` condition."""
    extra = node.keys() - _CONDITION_KEYS
    if extra:
        raise BadRequest(
            f"{where}: unexpected {_keys(extra)} (a condition has only path, op and value)"
        )
    if "path" not in node:
        raise BadRequest(f"{where}.path: missing")
    path = node["path"]
    get = _compile_path(path, f"{where}.path")
    if "op" not in node:
        raise BadRequest(f"{where}.op: missing")
    op = node["op"]
    if type(op) is not str:
        raise BadRequest(f"{where}.op: expected a string, got {_json_type(op)}")
    if op not in OPS:
        raise BadRequest(f"{where}.op: unknown op {_quote(op)} (one of {', '.join(OPS)})")
    normal: dict[str, object] = {"path": path, "op": op}
    if op == "exists":
        if "value" in node:
            raise BadRequest(
                f"{where}.value: op exists takes no value (for absence, wrap it in a not)"
            )
        return (lambda message: get(message) is not _MISSING), normal
    if "value" not in node:
        raise BadRequest(f"{where}.value: missing (op {op} needs one)")
    value = normal["value"] = _json_value(node["value"], f"{where}.value")
    return _compile_op(op, value, get, f"{where}.value"), normal


def _compile_op(op: str, value: Any, get: Callable[[object], Any], where: str) -> Predicate:
    """The predicate of a condition whose op takes a value (already normalised)."""
    if op in ("eq", "ne"):
        equals = _equals(value)
        if op == "eq":
            return lambda message: equals(get(message))
        return lambda message: not equals(get(message))
    if op in _ORDERING:
        compare = _ORDERING[op]
        kind = type(value)
        if kind in _NUMBERS:

            def numeric(message: object) -> bool:
                found = get(message)
                return type(found) in _NUMBERS and compare(found, value)

            return numeric
        if kind is str:

            def textual(message: object) -> bool:
                found = get(message)
                return type(found) is str and compare(found, value)

            return textual
        raise BadRequest(f"{where}: op {op} needs a number or a string, got {_json_type(value)}")
    if op in ("in", "nin"):
        if type(value) is not list:
            raise BadRequest(f"{where}: op {op} needs an array, got {_json_type(value)}")
        member = _member_of(value)
        if op == "in":
            return lambda message: member(get(message))
        return lambda message: not member(get(message))
    if op == "prefix":
        if type(value) is not str:
            raise BadRequest(f"{where}: op prefix needs a string, got {_json_type(value)}")

        def prefix(message: object) -> bool:
            found = get(message)
            return type(found) is str and found.startswith(value)

        return prefix
    # contains
    if type(value) is str:

        def substring(message: object) -> bool:
            found = get(message)
            # A string equals only a string, so list membership needs no type check.
            kind = type(found)
            return (kind is str or kind is list) and value in found

        return substring
    equals = _equals(value)

    def element(message: object) -> bool:
        found = get(message)
        return type(found) is list and any(map(equals, found))

    return element


# ---------------------------------------------------------------------- paths


def _compile_path(path: object, where: str) -> Callable[[object], Any]:
    """A function giving the value at ``path`` in a message, or :data:`_MISSING`."""
    if type(path) is not str:
        raise BadRequest(f"{where}: expected a string, got {_json_type(path)}")
    if not path:
        raise BadRequest(f"{where}: empty")
    segments = path.split(".")
    if len(segments) > MAX_SEGMENTS:
        raise BadRequest(f"{where}: {len(segments)} segments (at most {MAX_SEGMENTS})")
    for number, segment in enumerate(segments, 1):
        if not segment:
            raise BadRequest(f"{where}: segment {number} of {len(segments)} is empty")
    # Each step is (key on an object, index on an array or -1 for none).
    steps = tuple((segment, _index(segment)) for segment in segments)

    def get(node: Any) -> Any:
        for key, index in steps:
            kind = type(node)
            if kind is dict:
                node = node.get(key, _MISSING)
            elif kind is list and 0 <= index < len(node):
                node = node[index]
            else:
                return _MISSING
        return node

    return get


def _index(segment: str) -> int:
    """The array index ``segment`` names, or -1: canonical ASCII decimal only."""
    if (
        segment.isascii()
        and segment.isdigit()
        and (segment == "0" or segment[0] != "0")
        and len(segment) <= _INDEX_DIGITS
    ):
        return int(segment)
    return -1


# --------------------------------------------------------------------- values


def _json_value(value: object, where: str) -> object:
    """A copy of ``value`` with integral floats as ints (one spelling per number).

    Also refuses what is not JSON (only a caller passing Python objects can
    send it). Iterative: a value nested as deep as the decoder allows must
    not exhaust the stack.
    """
    root: list[object] = [None]
    # (item, its container in the copy, its slot there, the location of that container)
    stack: list[tuple[Any, Any, Any, str]] = [(value, root, 0, "")]
    while stack:
        item, parent, slot, parent_where = stack.pop()
        kind = type(item)
        if kind is dict:
            copy: dict[str, object] = {}
            parent[slot] = copy
            here = _at(where, parent_where, parent, slot)
            for key, child in item.items():
                if type(key) is not str:
                    raise BadRequest(f"{here}: object key {key!r} is not a string")
                stack.append((child, copy, key, here))
        elif kind is list:
            items: list[object] = [None] * len(item)
            parent[slot] = items
            here = _at(where, parent_where, parent, slot)
            stack.extend((child, items, index, here) for index, child in enumerate(item))
        elif kind is float:
            if item - item != 0:  # inf and nan; JSON has neither
                raise BadRequest(
                    f"{_at(where, parent_where, parent, slot)}: {item} is not a JSON number"
                )
            parent[slot] = int(item) if item.is_integer() else item
        elif kind in (str, int, bool) or item is None:
            parent[slot] = item
        else:
            raise BadRequest(
                f"{_at(where, parent_where, parent, slot)}: not a JSON value ({kind.__name__})"
            )
    return root[0]


def _at(where: str, parent_where: str, parent: object, slot: object) -> str:
    """The location of the item at ``slot`` of ``parent`` (the root: ``where``)."""
    if not parent_where:
        return where
    if type(parent) is list:
        return f"{parent_where}[{slot}]"
    return f"{parent_where}.{slot}"


def _canonical(value: object) -> str:
    """Compact JSON of a normalised filter, object keys sorted at every level.

    Iterative, like :func:`_json_value` (``msgspec.json.encode`` recurses). The
    work stack holds values still to write and ``bytes``, already-encoded text
    (a JSON value is never ``bytes``).
    """
    out: list[bytes] = []
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is bytes:
            out.append(item)
        elif kind is dict:
            out.append(b"{")
            todo.append(b"}")
            # Pushed last to first: each entry's text pops as [","] key ":" value.
            for number, key in reversed(list(enumerate(sorted(item)))):
                todo.append(item[key])
                todo.append(_encode(key) + b":")
                if number:
                    todo.append(b",")
        elif kind is list:
            out.append(b"[")
            todo.append(b"]")
            for number in reversed(range(len(item))):
                todo.append(item[number])
                if number:
                    todo.append(b",")
        else:
            out.append(_encode(item))
    return b"".join(out).decode()


def _equals(value: Any) -> Callable[[object], bool]:
    """A test for JSON equality with ``value``, specialised for its type."""
    kind = type(value)
    if value is None or kind is bool:
        return lambda found: found is value
    if kind is str:
        return lambda found: type(found) is str and found == value
    if kind in _NUMBERS:
        return lambda found: type(found) in _NUMBERS and found == value
    return lambda found: _json_equal(found, value)


def _json_equal(left: object, right: object) -> bool:
    """Deep JSON equality: numbers by value, booleans apart from numbers, objects
    whatever their key order. Iterative, so no nesting exhausts the stack."""
    pairs: list[tuple[Any, Any]] = [(left, right)]
    while pairs:
        one, other = pairs.pop()
        kind = type(one)
        if kind in _NUMBERS:
            if type(other) not in _NUMBERS or one != other:
                return False
        elif kind is not type(other):
            return False
        elif kind is list:
            if len(one) != len(other):
                return False
            pairs.extend(zip(one, other, strict=True))
        elif kind is dict:
            if one.keys() != other.keys():
                return False
            pairs.extend((child, other[key]) for key, child in one.items())
        elif one != other:
            return False
    return True


def _member_of(values: list[Any]) -> Callable[[object], bool]:
    """A test for equality with one of ``values``: scalars by hashing, per JSON type
    (so that ``True`` never meets ``1``), arrays and objects one by one."""
    strings = frozenset(value for value in values if type(value) is str)
    numbers = frozenset(value for value in values if type(value) in _NUMBERS)
    booleans = frozenset(value for value in values if type(value) is bool)
    null = any(value is None for value in values)
    containers = tuple(_equals(value) for value in values if type(value) in (list, dict))

    def member(found: object) -> bool:
        kind = type(found)
        if kind is str:
            return found in strings
        if kind in _NUMBERS:
            return found in numbers
        if kind is bool:
            return found in booleans
        if found is None:
            return null
        return any(equals(found) for equals in containers)

    return member


# ----------------------------------------------------------- error messages


def _json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is bool:
        return "boolean"
    if kind in _NUMBERS:
        return "number"
    if kind is str:
        return "string"
    if kind is list:
        return "array"
    if kind is dict:
        return "object"
    return kind.__name__


def _quote(text: str) -> str:
    return _encode(text).decode()


def _keys(keys: Iterable[object]) -> str:
    """``key "a"`` or ``keys "a", "b"`` (sorted), naming keys in a message."""
    names = sorted(str(key) for key in keys)
    return ("key " if len(names) == 1 else "keys ") + ", ".join(map(_quote, names))
