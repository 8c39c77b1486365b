"""What the browser tests drive: a broker in a subprocess (``trio-pubsub serve``
as a user runs it), a static web site on another origin, and Debian's Chromium
under Playwright's sync API.

Playwright's sync API runs its own event loop, so these tests are plain
synchronous tests (no Trio): the broker lives in its own process, the static
site in a thread. Everything listens on 127.0.0.1 port 0 and is stopped by its
PID or its handle, never by name. Playwright never downloads a browser here:
it launches the system Chromium (``executable_path``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

CHROMIUM_MISSING = "needs Chromium (Debian/Ubuntu: apt-get install chromium); .ci/run installs it"
PLAYWRIGHT_MISSING = "needs Playwright for Python: pip install -e .[test]"
#: Flags for a quiet, headless Chromium that reaches nothing but 127.0.0.1.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a broker may take to say where it listens, seconds.
START_TIMEOUT = 30
#: How long a stopped broker may take to exit before it is killed, seconds.
STOP_TIMEOUT = 10
_LISTENING = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+)")


def _missing(message: str) -> None:
    """Skip with ``message``; under CI (``CI=true``) fail instead: CI must run these."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"under CI: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def need_playwright() -> None:
    """Call at the top of a test module, before importing Playwright."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing(PLAYWRIGHT_MISSING)


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        _missing(CHROMIUM_MISSING)
        raise AssertionError("unreachable")
    return path


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


class Broker:
    """``trio-pubsub serve --port 0`` in a subprocess with ``env`` added to the
    environment; its log is read in a thread (a full pipe would stall the server).

    Args:
        ca_file: The CA that signed ``TLS_CERT``, for :meth:`rest` (when it serves https).

    Raises:
        RuntimeError: it exited, or named no port within ``START_TIMEOUT``; the
            message holds its log.
    """

    def __init__(self, ca_file: Path | None = None, **env: str) -> None:
        self.ca_file = ca_file
        self.log: list[str] = []
        self.port = 0
        self.scheme = "http"
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pubsub", "serve", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "LOG_FORMAT": "text", "SHUTDOWN_TIMEOUT": "1000", **env},
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._listening.wait(START_TIMEOUT) or not self.port:
            self.stop()
            raise RuntimeError("the broker did not start:\n" + "".join(self.log))

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.log.append(line)
            if not self.port and (match := _LISTENING.search(line)):
                self.scheme = match.group(1)
                self.port = int(match.group(2))
                self._listening.set()
        self._listening.set()  # exited: wake the starter, which sees no port

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.scheme == "https" else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ws"

    def rest(self, api_key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": api_key} if api_key else {}
        verify = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, verify=verify)

    def stop(self) -> None:
        """SIGTERM by PID (a graceful shutdown), SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test output is no place for an access log


class StaticSite:
    """``directory`` served over http on 127.0.0.1, a port of its own: another
    origin than the broker's, as a web site with a chat page would be."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Pages:
    """Pages that each have their own browser context (their own sessionStorage,
    like separate visitors), with every console error and uncaught exception
    recorded in ``errors``."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def open(self, url: str, *, ignore_https_errors: bool = False) -> Page:
        """A new visitor at ``url``; ``ignore_https_errors`` for a test's own certificate."""
        context = self.browser.new_context(
            viewport={"width": 1280, "height": 900}, ignore_https_errors=ignore_https_errors
        )
        self.contexts.append(context)
        # Chromium asks a page that is not HTML (/health) for /favicon.ico, which
        # the broker has not: a 404 in the console that says nothing of the broker.
        context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        page = context.new_page()
        page.on("console", lambda message: self._console(page, message.type, message.text))
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        page.goto(url)
        return page

    def _console(self, page: Page, kind: str, text: str) -> None:
        if kind == "error":
            self.errors.append(f"{page.url}: {text}")

    def close(self) -> None:
        for context in self.contexts:
            context.close()
