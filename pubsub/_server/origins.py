"""``ALLOWED_ORIGINS``: which browser pages may use the API, and CORS.

A browser sends ``Origin`` with every WebSocket upgrade and every cross-origin
request; tools (the CLI, curl, the client library) send none and always pass.
By default only the server's own origin passes (the dashboard, a page the
server serves): the ``Origin``'s host and port must be the request's ``Host``.
Origins are compared as RFC 6454 serializes them: scheme, host and port, in
lower case, a default port (80, 443) left out.
"""

from __future__ import annotations

import functools
import logging
from typing import Final
from urllib.parse import urlsplit

log = logging.getLogger("pubsub.auth")

#: The error code of a refused origin (an HTTP reason, not a contract code: 403).
FORBIDDEN: Final = "FORBIDDEN"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _host_port(netloc: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``host[:port]`` as ``(host, port)`` (``default_port`` when none); None if malformed."""
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path:
        return None
    return parts.hostname, port if port is not None else default_port


def normalise(origin: str) -> str | None:
    """``origin`` serialized as browsers send it (``scheme://host[:port]``, lower case,
    no default port), or None when it is not an http(s) origin."""
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.path not in ("", "/") or parts.query:
        return None
    address = _host_port(parts.netloc, _DEFAULT_PORTS[scheme])
    if address is None:
        return None
    host, port = address
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


class Origins:
    """``ALLOWED_ORIGINS``, parsed once.

    Raises:
        ValueError: an entry is neither ``*`` nor an http(s) origin.
    """

    __slots__ = ("any", "listed")

    def __init__(self, setting: str) -> None:
        self.any = False
        listed: set[str] = set()
        for entry in setting.split(","):
            entry = entry.strip()
            if not entry:
                continue
            if entry == "*":
                self.any = True
                continue
            origin = normalise(entry)
            if origin is None:
                raise ValueError(
                    f"ALLOWED_ORIGINS: {entry!r} is not an origin like https://app.example.com"
                )
            listed.add(origin)
        self.listed = frozenset(listed)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request with ``Origin: origin`` and ``Host: host`` may go on."""
        if origin is None or self.any:
            return True
        normalised = normalise(origin)
        if normalised is None:  # "null" (a file, a sandbox), or garbage
            return False
        return normalised in self.listed or same_origin(normalised, host)


def same_origin(origin: str, host: str | None) -> bool:
    """Whether the (normalised) ``origin`` names the host and port in ``Host``."""
    if host is None:
        return False
    parts = urlsplit(origin)
    default = _DEFAULT_PORTS[parts.scheme]
    return _host_port(host.strip().lower(), default) == _host_port(parts.netloc, default)


@functools.lru_cache(maxsize=8)
def allowed_origins(setting: str) -> Origins:
    """``Origins(setting)``, parsed once per setting (asked per connection)."""
    return Origins(setting)


def origin_refusal(origin: str) -> str:
    return f"origin {origin!r} is not allowed (ALLOWED_ORIGINS)"


def refused_origin(transport: str, path: str, peer: str | None, origin: str) -> None:
    """Log a request refused for its origin (at warning: a page elsewhere tried)."""
    log.warning(
        "%s %s from %s refused: origin %r is not allowed (ALLOWED_ORIGINS)",
        transport,
        path,
        peer,
        origin,
        extra={
            "event": "origin_refused",
            "transport": transport,
            "path": path,
            "peer": peer,
            "origin": origin,
        },
    )
