"""API-key checks (``API_KEY``), shared by REST and the ``/ws`` handshake.

REST takes the key from the ``X-API-Key`` header; ``/ws`` from that header or
the ``api_key`` query parameter (browsers cannot set headers on a WebSocket).
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac


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
