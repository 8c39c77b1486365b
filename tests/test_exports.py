"""The public surface of ``pubsub`` is pinned (trio's ``test_exports`` habit).

Adding or removing a public name is an API change: update ``EXPECTED`` on
purpose, together with the CHANGELOG.
"""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import pubsub

EXPECTED = [
    "BadRequest",
    "Broker",
    "CloseReason",
    "Counters",
    "ErrorCode",
    "InternalError",
    "LimitExceeded",
    "MessageTooLarge",
    "ProtocolError",
    "PubSubError",
    "Session",
    "Settings",
    "SettingsError",
    "SlowConsumer",
    "Stats",
    "Topic",
    "TopicExists",
    "TopicNotFound",
    "Unauthorized",
    "__version__",
    "open_broker",
]


def _defined_in_pubsub(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "pubsub" or module.startswith("pubsub.")


def test_all_is_pinned() -> None:
    assert pubsub.__all__ == EXPECTED


def test_all_is_sorted_without_duplicates() -> None:
    assert pubsub.__all__ == sorted(set(pubsub.__all__))


@pytest.mark.parametrize("name", EXPECTED)
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(pubsub, name)
    obj = getattr(pubsub, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert _defined_in_pubsub(obj), f"{name} is re-exported from {obj.__module__}"


def test_no_public_class_or_function_outside_all() -> None:
    unlisted = [
        name
        for name, obj in vars(pubsub).items()
        if not name.startswith("_")
        and name not in pubsub.__all__
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and _defined_in_pubsub(obj)
    ]
    assert unlisted == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from pubsub import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(EXPECTED)


def test_version_matches_the_installed_distribution() -> None:
    assert pubsub.__version__ == importlib.metadata.version("trio-pubsub")
