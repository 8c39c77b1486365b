"""The public surface of ``pubsub`` and ``pubsub.client`` is pinned (trio's
``test_exports`` habit).

Adding or removing a public name is an API change: update the lists on
purpose, together with the CHANGELOG. Internals (sessions, topic actors, the
node, counters) live in private packages and are not exported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import inspect
from types import ModuleType

import pytest

import pubsub
import pubsub.client

EXPECTED = [
    "BadRequest",
    "ErrorCode",
    "InternalError",
    "LimitExceeded",
    "MessageTooLarge",
    "ProtocolError",
    "PubSubError",
    "RateLimited",
    "Server",
    "Settings",
    "SettingsError",
    "SlowConsumer",
    "TopicExists",
    "TopicNotFound",
    "Unauthorized",
    "Unavailable",
    "__version__",
    "open_client",
    "open_server",
]

EXPECTED_CLIENT = [
    "Client",
    "ConnectionLost",
    "Event",
    "Gap",
    "PublishAck",
    "ServerUnreachable",
    "Subscription",
    "SyncClient",
    "SyncSubscription",
    "connect_sync",
    "open_client",
]

MODULES = [(pubsub, EXPECTED), (pubsub.client, EXPECTED_CLIENT)]


def _defined_in_pubsub(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "pubsub" or module.startswith("pubsub.")


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_all_is_pinned_sorted_without_duplicates(module: ModuleType, expected: list[str]) -> None:
    assert module.__all__ == expected
    assert module.__all__ == sorted(set(module.__all__))


@pytest.mark.parametrize("name", EXPECTED)
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(pubsub, name)
    obj = getattr(pubsub, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert _defined_in_pubsub(obj), f"{name} is re-exported from {obj.__module__}"


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_no_public_class_or_function_outside_all(module: ModuleType, expected: list[str]) -> None:
    unlisted = [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and name not in module.__all__
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    ]
    assert unlisted == []


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_star_import_gives_exactly_all(module: ModuleType, expected: list[str]) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(expected)


def test_internals_are_not_exported() -> None:
    for name in ("Session", "Topic", "TopicActor", "Counters", "Node", "Broker", "open_broker"):
        assert not hasattr(pubsub, name), name


def test_version_matches_the_installed_distribution() -> None:
    assert pubsub.__version__ == importlib.metadata.version("trio-pubsub")


def test_the_package_says_it_is_typed() -> None:
    """``mypy --strict`` on an application needs the marker to use our annotations
    (without it: "module is installed, but missing library stubs or py.typed")."""
    marker = importlib.resources.files("pubsub") / "py.typed"
    assert marker.is_file()
