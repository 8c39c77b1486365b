"""The dashboard at /dashboard, in a real browser: totals and tables follow the
broker, the topic view tails /ws and publishes, rates move under load, and with
API_KEY the page shows nothing until the key is entered."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme
from conftest import RedisServer

from .harness import Broker, Pages, need_playwright

need_playwright()

from playwright.sync_api import Page, expect  # noqa: E402

#: The issue's promise: what the broker holds is on the page within 2 s (the
#: page polls once a second; the tail is pushed over /ws).
SHOWN_WITHIN_MS = 2_000
#: Generous bounds for what needs a few polls (rates need two samples).
SETTLES_WITHIN_MS = 10_000
#: The load loop's bounds: messages, and seconds.
LOAD_MESSAGES = 20_000
LOAD_SECONDS = 30.0
NOT_ZERO = re.compile(r"^(?!0\.0$)\d")  # a rate, not "0.0" (nor the dash of none yet)


def open_dashboard(pages: Pages, broker: Broker) -> Page:
    page = pages.open(f"{broker.url}/dashboard")
    expect(page.locator("#status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
    return page


@contextmanager
def publishing(broker: Broker, topic: str) -> Iterator[None]:
    """Publish to ``topic`` over REST in a thread while the block runs (bounded)."""
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        with broker.rest() as rest:
            for index in range(LOAD_MESSAGES):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                rest.post(f"/topics/{topic}/messages", json={"payload": {"n": index}})

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_loads_without_console_errors_and_shows_what_rest_did(
    pages: Pages, start_broker: Callable[..., Broker]
) -> None:
    broker = start_broker()
    page = open_dashboard(pages, broker)
    expect(page.locator("#node-id")).to_have_text(re.compile(r"^node \S+"))
    expect(page.locator("#total-topics")).to_have_text("0")
    with broker.rest() as rest:
        assert rest.post("/topics", json={"name": "orders"}).status_code == 201
        row = page.locator('#topics tr[data-topic="orders"]')
        expect(row).to_be_visible(timeout=SHOWN_WITHIN_MS)
        row.locator("button.open").click()
        expect(page.locator("#tail-status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
        published = rest.post("/topics/orders/messages", json={"id": "m-1", "payload": {"n": 42}})
        assert published.status_code == 201
    tail = page.locator("#tail tbody tr").first
    expect(tail).to_have_text(re.compile(r'1\s*m-1\s*\{"n":42\}'), timeout=SHOWN_WITHIN_MS)
    expect(row.locator("td").nth(2)).to_have_text("1", timeout=SHOWN_WITHIN_MS)
    expect(row.locator("td").nth(1)).to_have_text("1")  # the tail's own subscription
    expect(page.locator("#total-connections")).to_have_text("1")
    assert pages.errors == []


def test_create_publish_and_delete_from_the_page(
    pages: Pages, start_broker: Callable[..., Broker]
) -> None:
    broker = start_broker()
    page = open_dashboard(pages, broker)
    page.locator("#create-name").fill("jobs:eu")
    page.locator("#create-form button").click()
    expect(page.locator("#create-result")).to_have_text("created jobs:eu")
    with broker.rest() as rest:
        assert rest.get("/topics/jobs:eu").status_code == 200
        row = page.locator('#topics tr[data-topic="jobs:eu"]')
        row.locator("button.open").click()
        expect(page.locator("#tail-status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
        page.locator("#publish-payload").fill('{"job": [1, 2, 3]}')
        page.locator("#publish-form button").click()
        expect(page.locator("#publish-result")).to_have_text("published at offset 1")
        expect(page.locator("#tail tbody tr").first).to_contain_text('{"job":[1,2,3]}')
        history = rest.get("/topics/jobs:eu/messages").json()["messages"]
        assert [item["message"]["payload"] for item in history] == [{"job": [1, 2, 3]}]

        page.locator("#publish-payload").fill("{not json")
        page.locator("#publish-form button").click()
        expect(page.locator("#publish-result")).to_contain_text("not JSON")

        delete = row.locator("button.delete")
        delete.click()  # arms it: one stray click deletes nothing
        expect(delete).to_have_text("Confirm delete")
        assert rest.get("/topics/jobs:eu").status_code == 200
        delete.click()
        expect(row).to_have_count(0)
        assert rest.get("/topics/jobs:eu").status_code == 404
    expect(page.locator("#tail-status")).to_have_text("this topic was deleted")
    assert pages.errors == []
    page.locator("#create-name").fill("bad name!")
    page.locator("#create-form button").click()
    expect(page.locator("#create-result")).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#create-result")).to_contain_text("bad name!")


def test_rates_move_while_a_publisher_runs(
    pages: Pages, start_broker: Callable[..., Broker]
) -> None:
    broker = start_broker()
    with broker.rest() as rest:
        assert rest.post("/topics", json={"name": "load"}).status_code == 201
    page = open_dashboard(pages, broker)
    row = page.locator('#topics tr[data-topic="load"]')
    row.locator("button.open").click()  # the tail subscribes: deliveries too
    expect(page.locator("#tail-status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
    with publishing(broker, "load"):
        for rate in ("#total-publish-rate", "#total-delivery-rate"):
            expect(page.locator(rate)).to_have_text(NOT_ZERO, timeout=SETTLES_WITHIN_MS)
        expect(row.locator("td").nth(3)).to_have_text(NOT_ZERO, timeout=SETTLES_WITHIN_MS)
    assert pages.errors == []


def test_with_an_api_key_the_page_shows_nothing_before_the_key(
    pages: Pages, start_broker: Callable[..., Broker]
) -> None:
    key = uuid.uuid4().hex
    broker = start_broker(API_KEY=key)
    secret = f"secret-{uuid.uuid4().hex[:8]}"
    with broker.rest(key) as rest:
        assert rest.post("/topics", json={"name": secret}).status_code == 201
    page = pages.open(f"{broker.url}/dashboard")
    expect(page.locator("#key-form")).to_be_visible(timeout=SETTLES_WITHIN_MS)
    expect(page.locator("#dashboard")).to_be_hidden()
    expect(page.locator("#key-error")).to_be_hidden()
    assert secret not in page.content()
    assert pages.errors == []  # /health said a key is needed: no request was refused

    page.locator("#key-input").fill("wrong")
    page.locator("#key-form button").click()
    expect(page.locator("#key-error")).to_contain_text("refused", timeout=SETTLES_WITHIN_MS)
    expect(page.locator("#dashboard")).to_be_hidden()
    assert secret not in page.content()
    assert page.locator("#node-id").text_content() == ""

    page.locator("#key-input").fill(key)
    page.locator("#key-form button").click()
    row = page.locator(f'#topics tr[data-topic="{secret}"]')
    expect(row).to_be_visible(timeout=SETTLES_WITHIN_MS)
    row.locator("button.open").click()  # /ws with ?api_key=
    expect(page.locator("#tail-status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
    with broker.rest(key) as rest:
        assert rest.post(f"/topics/{secret}/messages", json={"payload": "hi"}).status_code == 201
    expect(page.locator("#tail tbody tr").first).to_contain_text('"hi"')

    page.reload()  # the key is kept for the tab
    expect(row).to_be_visible(timeout=SETTLES_WITHIN_MS)
    expect(page.locator("#key-form")).to_be_hidden()


def test_the_dashboard_works_over_https_and_wss(
    pages: Pages, start_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    authority.cert_pem.write_to_path(str(files["ca"]))
    certificate.private_key_pem.write_to_path(str(files["key"]))
    for blob in certificate.cert_chain_pems:
        blob.write_to_path(str(files["cert"]), append=True)
    broker = start_broker(
        ca_file=files["ca"], TLS_CERT=str(files["cert"]), TLS_KEY=str(files["key"])
    )
    assert broker.url.startswith("https://")
    with broker.rest() as rest:
        assert rest.post("/topics", json={"name": "secure"}).status_code == 201
    # The browser does not know the test's CA: it is told to accept the certificate.
    page = pages.open(f"{broker.url}/dashboard", ignore_https_errors=True)
    expect(page.locator("#status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
    page.locator('#topics tr[data-topic="secure"] button.open').click()
    expect(page.locator("#tail-status")).to_have_text("live", timeout=SETTLES_WITHIN_MS)
    page.locator("#publish-form button").click()
    expect(page.locator("#tail tbody tr").first).to_contain_text('{"hello":"world"}')
    assert pages.errors == []


def test_in_a_cluster_each_node_has_a_row(
    pages: Pages,
    start_broker: Callable[..., Broker],
    redis_server: RedisServer,
    redis_prefix: str,
) -> None:
    env = {"ENGINE": "redis", "REDIS_URL": redis_server.url, "REDIS_PREFIX": redis_prefix}
    first = start_broker(**env, NODE_ID="node-a")
    start_broker(**env, NODE_ID="node-b")
    page = open_dashboard(pages, first)
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(2, timeout=SETTLES_WITHIN_MS)
    expect(page.locator('#nodes tr[data-key="node-a"]')).to_contain_text("node-a (this page)")
    expect(page.locator('#nodes tr[data-key="node-b"] td').first).to_have_text("node-b")
    assert pages.errors == []
