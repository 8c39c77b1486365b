"""Wildcard matching: the matcher against the contract's examples, and the
pattern index (a segment trie) against matching every pattern one by one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pubsub._core.patterns import PatternIndex, pattern_matcher
from pubsub._protocol.filters import compile_filter


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.eu.de", False),
        ("orders.>", "orders.eu", True),
        ("orders.>", "orders.eu.de", True),
        ("orders.>", "orders", False),
        ("*.eu", "orders.eu", True),
        ("*.eu", "orders.us", False),
        ("*", "orders", True),
        ("*", "orders.eu", False),
        (">", "orders", True),
        (">", "a.b.c", True),
        ("a.*.c.>", "a.b.c.d.e", True),
        ("a.*.c.>", "a.b.c", False),
        ("or.ders.*", "orXders.x", False),  # a dot is a separator, not "any character"
        ("a:b-c_d.*", "a:b-c_d.x", True),
    ],
)
def test_the_matcher_follows_the_contract(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matcher(pattern)(topic) is expected


segment = st.sampled_from(["a", "b", "c"])
literal_topics = st.lists(segment, min_size=1, max_size=4).map(".".join)
patterns = st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4).flatmap(
    lambda parts: st.sampled_from([".".join(parts), ".".join([*parts[:-1], ">"])])
)


@given(st.lists(st.tuples(patterns, st.integers(0, 3)), max_size=12), literal_topics)
def test_the_index_finds_exactly_the_matching_subscriptions(
    subscriptions: list[tuple[str, int]], topic: str
) -> None:
    index: PatternIndex[int] = PatternIndex()
    for pattern, holder in subscriptions:
        index.add(pattern, holder, None)
    expected = {(p, h) for p, h in subscriptions if pattern_matcher(p)(topic)}
    found = [(p, h) for p, h, _ in index.match(topic)]
    assert sorted(found) == sorted(expected)
    assert len(found) == len(set(found))
    assert len(index) == len(set(subscriptions))


def test_removing_and_replacing_subscriptions() -> None:
    index: PatternIndex[str] = PatternIndex()
    error = compile_filter({"path": "payload.level", "op": "eq", "value": "error"})
    index.add("logs.*", "s1", None)
    index.add("logs.*", "s1", error)  # replaces the filter
    index.add("logs.>", "s2", None)
    assert len(index) == 2
    assert sorted(index.match("logs.api"), key=str) == sorted(
        [("logs.*", "s1", error), ("logs.>", "s2", None)], key=str
    )
    index.remove("logs.*", "s1")
    index.remove("logs.*", "s1")  # twice is harmless
    index.remove("never.*", "s1")
    assert len(index) == 1
    assert [(p, h) for p, h, _ in index.match("logs.api.v2")] == [("logs.>", "s2")]
