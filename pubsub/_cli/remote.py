"""The broker a client command talks to: ``--url``, ``--api-key`` and REST calls."""

from __future__ import annotations

import argparse
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from .exits import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, CommandError

DEFAULT_URL: Final = "http://127.0.0.1:3000"
#: Seconds a REST call may take for each of connecting and answering.
REST_TIMEOUT: Final = 10.0
_SCHEMES: Final = ("http", "https", "ws", "wss")


def check_url(url: str) -> None:
    """Refuse, as bad usage, a ``--url`` that cannot name a broker (``foo``,
    ``localhost:3000`` without a scheme, a bad port)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise CommandError(f"--url {url!r} has a bad port", EXIT_USAGE) from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise CommandError(
            f"--url {url!r} is not a broker URL: use http://HOST:PORT (or https://, ws://, wss://)",
            EXIT_USAGE,
        )


def read_key(path: str) -> str:
    """The API key in file ``path`` (``--api-key-file``), without surrounding whitespace."""
    try:
        with open(path, encoding="utf-8") as file:
            key = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CommandError(f"--api-key-file: cannot read {path}: {reason}", EXIT_USAGE) from None
    if not key:
        raise CommandError(f"--api-key-file: {path} is empty", EXIT_USAGE)
    return key


def http_base(url: str) -> str:
    """``scheme://host:port`` for REST (``ws``/``wss`` become ``http``/``https``)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def ws_url(url: str) -> str:
    """The WebSocket endpoint (``/ws``) of the broker at ``url``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/ws") else parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def headers(args: argparse.Namespace) -> dict[str, str]:
    return {"X-API-Key": args.api_key} if args.api_key else {}


def rest(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """Call the REST API; its JSON answer.

    Raises:
        CommandError: exit 3 when the broker cannot be reached, 1 when it
            answers with an error (the message names its code).
    """
    base = http_base(args.url)
    try:
        response = httpx.request(
            method, base + path, json=body, headers=headers(args), timeout=REST_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {base}: {exc}", EXIT_UNREACHABLE) from None
    try:
        data = response.json()
    except ValueError:
        raise CommandError(
            f"unexpected answer from {base}: HTTP {response.status_code}", EXIT_REFUSED
        ) from None
    if response.status_code >= 400:
        raise CommandError(f"{data.get('error')}: {data.get('message')}", EXIT_REFUSED)
    return data
