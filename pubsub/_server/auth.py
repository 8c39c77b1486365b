"""API-key checks (``API_KEY``, ``METRICS_TOKEN``), shared by REST and the ``/ws``
handshake, and the ``auth_failed`` log event.

REST takes the key from the ``X-API-Key`` header; ``/ws`` from that header or
the ``api_key`` query parameter (browsers cannot set headers on a WebSocket).
``/metrics`` also opens to ``METRICS_TOKEN`` (``Authorization: Bearer <token>``
or ``X-Metrics-Token``), which opens nothing else: a scraper needs no API key.
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from typing import Final

log: Final = logging.getLogger("pubsub.auth")


def key_matches(expected: str, given: str | None) -> bool:
    """Whether ``given`` is the expected key (constant-time comparison)."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def allowed(api_key: str | None, header: str | None, query: str | None = None) -> bool:
    """Whether a request may proceed: no key is configured, or the header (else
    the query parameter, for ``/ws``) carries it."""
    if api_key is None:
        return True
    return key_matches(api_key, header if header is not None else query)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def metrics_allowed(
    api_key: str | None,
    metrics_token: str | None,
    *,
    key_header: str | None,
    authorization: str | None,
    token_header: str | None,
) -> bool:
    """Whether a ``/metrics`` scrape may proceed: open while neither ``API_KEY``
    nor ``METRICS_TOKEN`` is set; otherwise the API key (``X-API-Key``) or the
    metrics token (``Authorization: Bearer`` or ``X-Metrics-Token``) opens it.
    A metrics token alone (no ``API_KEY``) still guards ``/metrics``."""
    if api_key is None and metrics_token is None:
        return True
    if api_key is not None and key_matches(api_key, key_header):
        return True
    if metrics_token is None:
        return False
    # Both checked (no early exit on the first), so timing says nothing about which.
    by_header = key_matches(metrics_token, token_header)
    by_bearer = key_matches(metrics_token, bearer_token(authorization))
    return by_header or by_bearer


def refused(transport: str, path: str, peer: str | None, *, key_given: bool) -> None:
    """Log ``auth_failed`` (warning) for a request refused with 401."""
    reason = "wrong_key" if key_given else "missing_key"
    log.warning(
        "%s %s from %s refused: %s",
        transport,
        path,
        peer,
        reason.replace("_", " "),
        extra={
            "event": "auth_failed",
            "transport": transport,
            "path": path,
            "peer": peer,
            "reason": reason,
        },
    )
