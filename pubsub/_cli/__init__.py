"""Layer 6, the ``trio-pubsub`` command: ``serve`` and the client commands."""

from __future__ import annotations

from .serve import main as main

__all__ = ["main"]
