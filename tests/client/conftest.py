"""Every test of the client library runs twice: on asyncio and on Trio.

The repository runs pytest-trio in Trio mode (``trio_mode = true``): it marks
every ``async def`` test ``trio`` and runs it with ``trio.run``, whatever other
plugin claims it. Here AnyIO's pytest plugin runs the tests instead: each test
module says ``pytestmark = pytest.mark.anyio``, the ``anyio_backend`` fixture
below runs each test once per backend, and the hook below takes pytest-trio's
mark off these tests again (it is added when items are collected; pytest-trio
only acts on tests that carry it). Async fixtures work as AnyIO's plugin
documents: it turns them into plain ones before pytest-trio looks. Synchronous
tests (the sans-IO rules, the blocking client with its own event loop) run once.

The server is Trio-only, so the tests run it in a thread of its own
(:class:`client.servers.LiveServer`): the client under test shares no event
loop with it, under either backend.
"""

from __future__ import annotations

from inspect import iscoroutinefunction
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BACKENDS = ("asyncio", "trio")


@pytest.fixture(scope="module", params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or HERE not in item.path.parents:
            continue
        if iscoroutinefunction(item.function):
            if "anyio_backend" not in item.fixturenames:
                raise pytest.UsageError(
                    f"{item.nodeid}: tests of the client run on both backends; "
                    "mark the module with pytestmark = pytest.mark.anyio"
                )
            # Undo pytest-trio's Trio mode (it ran first: this hook is trylast).
            item.own_markers[:] = [m for m in item.own_markers if m.name != "trio"]
