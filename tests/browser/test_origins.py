"""ALLOWED_ORIGINS as a browser meets it: by default a page of another origin can
neither open /ws nor change anything over REST (whatever its content type, with
or without a preflight); a page of an allowed origin can, and can read the
answers (CORS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .harness import Broker, Pages, StaticSite, need_playwright

need_playwright()

from playwright.sync_api import Page  # noqa: E402

#: Opens /ws; resolves to the welcome frame's msg, or to "closed <code>" when refused.
OPEN_SOCKET = """url => new Promise(resolve => {
  const socket = new WebSocket(url);
  socket.onmessage = message => { resolve(JSON.parse(message.data).msg); socket.close(); };
  socket.onclose = close => resolve(`closed ${close.code}`);
})"""
#: A cross-origin POST; resolves to the status the page may read, or "blocked".
POST = """([url, body, type]) =>
  fetch(url, {method: "POST", headers: {"Content-Type": type}, body})
    .then(response => response.status, () => "blocked")"""
#: A cross-origin GET; resolves to the JSON the page may read, or "blocked".
GET = """url => fetch(url).then(response => response.json(), () => "blocked")"""


def page_on(pages: Pages, site: StaticSite) -> Page:
    return pages.open(f"{site.origin}/blank.html")


def post(page: Page, broker: Broker, name: str, content_type: str) -> Any:
    body = f'{{"name": "{name}"}}'
    return page.evaluate(POST, [f"{broker.url}/topics", body, content_type])


def test_a_page_of_another_origin_cannot_open_ws_or_create_topics(
    pages: Pages, start_broker: Callable[..., Broker], foreign_site: StaticSite
) -> None:
    broker = start_broker()  # default: the broker's own origin only
    page = page_on(pages, foreign_site)
    assert page.evaluate(OPEN_SOCKET, broker.ws_url) == "closed 1006"  # the upgrade got 403
    # text/plain needs no preflight: the request reaches the server, which must refuse it.
    assert post(page, broker, "simple", "text/plain") == "blocked"
    assert post(page, broker, "preflighted", "application/json") == "blocked"
    with broker.rest() as rest:
        assert rest.get("/topics").json()["topics"] == []
        refused = rest.post("/topics", json={"name": "x"}, headers={"Origin": foreign_site.origin})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("setting", ["listed", "*"])
def test_a_page_of_an_allowed_origin_can_use_the_api(
    pages: Pages, start_broker: Callable[..., Broker], foreign_site: StaticSite, setting: str
) -> None:
    allowed = foreign_site.origin if setting == "listed" else setting
    broker = start_broker(ALLOWED_ORIGINS=f"https://elsewhere.example, {allowed}")
    page = page_on(pages, foreign_site)
    assert page.evaluate(OPEN_SOCKET, broker.ws_url) == "connected"
    assert post(page, broker, "simple", "text/plain") == 201
    assert post(page, broker, "preflighted", "application/json") == 201
    listed = page.evaluate(GET, f"{broker.url}/topics")
    assert [topic["name"] for topic in listed["topics"]] == ["preflighted", "simple"]
    assert pages.errors == []


def test_the_broker_s_own_pages_need_no_setting(
    pages: Pages, start_broker: Callable[..., Broker]
) -> None:
    broker = start_broker()
    page = pages.open(f"{broker.url}/health")  # any page of the broker's origin
    assert page.evaluate(OPEN_SOCKET, broker.ws_url) == "connected"
    assert post(page, broker, "mine", "application/json") == 201
    assert pages.errors == []
