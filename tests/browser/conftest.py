"""Fixtures of the browser tests: one Chromium for the package, pages with their
console errors recorded, brokers and static sites stopped after each test.

Without Chromium or Playwright these tests skip, saying how to get them; under
``CI=true`` they fail instead (CI must run them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import EXAMPLES, Broker, Pages, StaticSite, chromium_path, launch_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    chromium_path()  # skips (or fails under CI) before Playwright is started
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    opened.close()


@pytest.fixture
def start_broker() -> Iterator[Callable[..., Broker]]:
    """``start_broker(API_KEY="k", ...)``: a broker with those environment variables
    (``ca_file``: see :class:`Broker`)."""
    brokers: list[Broker] = []

    def start(ca_file: Path | None = None, **env: str) -> Broker:
        broker = Broker(ca_file, **env)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def examples_site() -> Iterator[StaticSite]:
    """``examples/`` served from an origin of its own."""
    site = StaticSite(EXAMPLES)
    yield site
    site.stop()


@pytest.fixture
def foreign_site(tmp_path: Path) -> Iterator[StaticSite]:
    """An empty page on another origin than any broker's."""
    (tmp_path / "blank.html").write_text(
        '<!doctype html><html><head><link rel="icon" href="data:,"></head><body></body></html>'
    )
    site = StaticSite(tmp_path)
    yield site
    site.stop()
