"""examples/chat.html in a real browser, served from a site of its own (another
origin than the broker's, as a user would host it): two pages talk, and a page
that goes away and comes back (or reloads) resumes with no gap and no duplicate."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from .harness import Broker, Pages, StaticSite, need_playwright

need_playwright()

from playwright.sync_api import Page, expect  # noqa: E402

#: Bounds of waits for what a poll or a reconnect brings (not a timing assertion).
SETTLES_WITHIN_MS = 10_000


def chat_url(site: StaticSite, broker: Broker, name: str) -> str:
    query = urlencode({"server": broker.ws_url, "room": "lobby", "name": name})
    return f"{site.origin}/chat.html?{query}"


def join(pages: Pages, site: StaticSite, broker: Broker, name: str) -> Page:
    page = pages.open(chat_url(site, broker, name))
    page.locator("#connect").click()
    expect(page.locator("#status")).to_have_text(f"in lobby as {name}", timeout=SETTLES_WITHIN_MS)
    return page


def say(page: Page, text: str) -> None:
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")
    expect(page.locator("#log li", has_text=text)).to_have_count(1, timeout=SETTLES_WITHIN_MS)


def log_of(page: Page) -> list[tuple[int, str]]:
    """The chat lines shown: (offset, "from" + text)."""
    lines = page.locator("#log li[data-offset]")
    return [
        (int(line.get_attribute("data-offset") or 0), line.locator(".from").inner_text())
        for line in lines.all()
    ]


def texts_of(page: Page) -> list[str]:
    return [
        line.evaluate("li => li.lastChild.textContent")
        for line in page.locator("#log li[data-offset]").all()
    ]


def chat_broker(start_broker: Callable[..., Broker], site: StaticSite) -> Broker:
    return start_broker(ALLOWED_ORIGINS=site.origin, AUTO_CREATE_TOPICS="true")


def test_two_pages_exchange_messages(
    pages: Pages, start_broker: Callable[..., Broker], examples_site: StaticSite
) -> None:
    broker = chat_broker(start_broker, examples_site)
    ann = join(pages, examples_site, broker, "ann")
    bob = join(pages, examples_site, broker, "bob")
    say(ann, "hello bob")
    expect(bob.locator("#log li", has_text="hello bob")).to_contain_text("ann")
    say(bob, "hi ann")
    expect(ann.locator("#log li", has_text="hi ann")).to_contain_text("bob")
    assert texts_of(ann) == texts_of(bob) == ["hello bob", "hi ann"]
    assert log_of(bob) == [(1, "ann"), (2, "bob")]
    assert pages.errors == []


def test_a_page_that_comes_back_resumes_without_a_gap(
    pages: Pages, start_broker: Callable[..., Broker], examples_site: StaticSite
) -> None:
    broker = chat_broker(start_broker, examples_site)
    ann = join(pages, examples_site, broker, "ann")
    bob = join(pages, examples_site, broker, "bob")
    for text in ("one", "two"):
        say(ann, text)
    expect(bob.locator("#log li[data-offset]")).to_have_count(2, timeout=SETTLES_WITHIN_MS)

    bob.goto("about:blank")  # bob's tab leaves: its socket closes
    for text in ("three", "four", "five"):
        say(ann, text)
    bob.goto(chat_url(examples_site, broker, "bob"))  # and comes back: it rejoins by itself
    status = bob.locator("#status")
    expect(status).to_have_text(
        "in lobby as bob: resumed after #2, nothing missed", timeout=SETTLES_WITHIN_MS
    )
    expect(bob.locator("#log li[data-offset]")).to_have_count(5, timeout=SETTLES_WITHIN_MS)

    bob.reload()
    expect(status).to_have_text(
        "in lobby as bob: resumed after #5, nothing missed", timeout=SETTLES_WITHIN_MS
    )
    say(ann, "six")
    expect(bob.locator("#log li[data-offset]")).to_have_count(6, timeout=SETTLES_WITHIN_MS)
    assert texts_of(bob) == ["one", "two", "three", "four", "five", "six"]
    assert [offset for offset, _ in log_of(bob)] == [1, 2, 3, 4, 5, 6]
    assert pages.errors == []
