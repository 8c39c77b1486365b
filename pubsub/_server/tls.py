"""TLS for ``https://`` and ``wss://`` on the server's one port (``TLS_CERT``, ``TLS_KEY``)."""

from __future__ import annotations

import ssl


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the PEM certificate (chain) ``cert`` and its key ``key``:
    TLS 1.2 or later, HTTP/1.1 offered by ALPN (the contract has no HTTP/2).

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: the files are not a certificate and its key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context
