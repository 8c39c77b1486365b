"""Take docs/dashboard.png: the dashboard of a broker under a little load.

Run from the repository's root (needs Chromium and Playwright, like the browser
tests)::

    python -m tests.browser.screenshot [--seconds 60] [--out docs/dashboard.png]

It starts its own broker on a free port, subscribes a few WebSockets from a
browser page, publishes over REST at a rate that swells and ebbs (bounded in
time and count), opens one topic's live tail, and saves a full-page screenshot.
Not part of the test suite: the suite never writes into docs/.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from .harness import REPO, Broker, launch_chromium

TOPICS = ("orders", "payments", "metrics.cpu", "chat:lobby")
#: Per topic: how many browser WebSockets subscribe to it.
SUBSCRIBERS = {"orders": 3, "payments": 2, "metrics.cpu": 4, "chat:lobby": 6}
#: The publisher's bounds and pace: messages in all, and per second at the peak.
MAX_MESSAGES = 200_000
PEAK_RATE = 400

SUBSCRIBE = """([url, counts]) => {
  for (const [topic, count] of Object.entries(counts)) {
    for (let i = 0; i < count; i++) {
      const socket = new WebSocket(url);
      socket.onopen = () => socket.send(JSON.stringify(
        {type: "subscribe", topic, client_id: `viewer-${i}`}));
    }
  }
}"""


def publish(broker: Broker, seconds: float, stop: threading.Event) -> None:
    """Publish round the topics at a rate that follows a slow wave, for ``seconds``."""
    start = next_at = time.monotonic()
    with broker.rest() as rest:
        for index in range(MAX_MESSAGES):
            elapsed = time.monotonic() - start
            if stop.is_set() or elapsed > seconds:
                return
            topic = TOPICS[index % len(TOPICS)] if index % 3 else "orders"
            payload = {"n": index, "amount": round(10 + 90 * abs(math.sin(index)), 2)}
            rest.post(f"/topics/{topic}/messages", json={"payload": payload})
            # Pacing, not synchronisation: keep to the wave's rate.
            next_at += 1 / (PEAK_RATE * (0.55 + 0.45 * math.sin(elapsed / 6)))
            time.sleep(max(0.0, next_at - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="load before the shot")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    args = parser.parse_args()

    broker = Broker()
    stop = threading.Event()
    publisher = threading.Thread(target=publish, args=(broker, args.seconds + 30, stop))
    try:
        with broker.rest() as rest:
            for topic in TOPICS:
                rest.post("/topics", json={"name": topic}).raise_for_status()
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            viewers = browser.new_page()
            viewers.goto(f"{broker.url}/health")
            viewers.evaluate(SUBSCRIBE, [broker.ws_url, SUBSCRIBERS])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{broker.url}/dashboard")
            publisher.start()
            page.wait_for_timeout(args.seconds * 1000 - 5000)
            page.locator('#topics tr[data-topic="orders"] button.open').click()
            page.wait_for_timeout(5000)  # the tail fills, the chart moves on
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join()
        broker.stop()
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
