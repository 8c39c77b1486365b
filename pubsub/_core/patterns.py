"""Wildcard subscriptions (v1.2): matching topic names against patterns, and the
node's index of the pattern subscriptions its connections hold.

A pattern is dot-separated segments where ``*`` matches exactly one segment and
a final ``>`` one or more (``orders.*``, ``metrics.eu.>``); the wire checks its
form (:func:`~pubsub._protocol.frames.check_pattern`).

Patterns cost nothing per publish: a pattern subscription is matched against
the topics once, when it is made (and against a topic once, when the topic is
created), and the matching topics' actors then count the connection among
their subscribers. :class:`PatternIndex` is a segment trie, as NATS's sublist
is, so matching one new topic walks its segments, not every pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Generic, TypeVar

from .._protocol.filters import Filter

K = TypeVar("K")


@lru_cache(maxsize=4096)
def pattern_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate: whether a topic name matches ``pattern`` (a checked pattern)."""
    parts = []
    for segment in pattern.split("."):
        if segment == "*":
            parts.append(r"[^.]*")
        elif segment == ">":
            parts.append(r".*")
        else:
            parts.append(re.escape(segment))
    compiled = re.compile(r"\.".join(parts) + r"\Z")

    def matches(topic: str) -> bool:
        return compiled.match(topic) is not None

    return matches


class _Level(Generic[K]):
    """One segment position of the trie."""

    __slots__ = ("children", "here", "rest", "star")

    def __init__(self) -> None:
        self.children: dict[str, _Level[K]] = {}
        self.star: _Level[K] | None = None
        #: Subscriptions whose pattern ends here, and those ending with ``>`` here.
        self.here: dict[K, Filter | None] = {}
        self.rest: dict[K, Filter | None] = {}


class PatternIndex(Generic[K]):
    """The pattern subscriptions of a node: for each pattern, who holds it (``K``,
    a session) with which content filter."""

    def __init__(self) -> None:
        self._root: _Level[K] = _Level()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, holder: K, wanted: Filter | None) -> None:
        """Add (or replace the filter of) ``holder``'s subscription to ``pattern``."""
        entries = self._entries(pattern, create=True)
        assert entries is not None
        if holder not in entries:
            self._count += 1
        entries[holder] = wanted

    def remove(self, pattern: str, holder: K) -> None:
        """Forget ``holder``'s subscription to ``pattern`` (if it has one). Emptied
        trie levels stay: a pattern used once is likely to be used again."""
        entries = self._entries(pattern, create=False)
        if entries is not None and entries.pop(holder, 0) != 0:
            self._count -= 1

    def match(self, topic: str) -> Iterator[tuple[str, K, Filter | None]]:
        """Every ``(pattern, holder, filter)`` whose pattern matches ``topic``."""
        segments = topic.split(".")
        yield from self._walk(self._root, segments, 0, [])

    def _walk(
        self, level: _Level[K], segments: list[str], index: int, path: list[str]
    ) -> Iterator[tuple[str, K, Filter | None]]:
        if index < len(segments) and level.rest:
            pattern = ".".join([*path, ">"])
            for holder, wanted in level.rest.items():
                yield pattern, holder, wanted
        if index == len(segments):
            pattern = ".".join(path)
            for holder, wanted in level.here.items():
                yield pattern, holder, wanted
            return
        segment = segments[index]
        child = level.children.get(segment)
        if child is not None:
            yield from self._walk(child, segments, index + 1, [*path, segment])
        if level.star is not None:
            yield from self._walk(level.star, segments, index + 1, [*path, "*"])

    def _entries(self, pattern: str, *, create: bool) -> dict[K, Filter | None] | None:
        level = self._root
        segments = pattern.split(".")
        for position, segment in enumerate(segments):
            if segment == ">" and position == len(segments) - 1:
                return level.rest
            if segment == "*":
                if level.star is None:
                    if not create:
                        return None
                    level.star = _Level()
                level = level.star
                continue
            child = level.children.get(segment)
            if child is None:
                if not create:
                    return None
                child = level.children[segment] = _Level()
            level = child
        return level.here
