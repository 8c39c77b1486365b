"""trio-pubsub: a real-time WebSocket pub/sub message broker on Trio.

The public API: run a broker (:func:`open_server`, :class:`Server`), its
:class:`Settings`, the client library (:func:`open_client`; more in
:mod:`pubsub.client`) and the typed errors both raise. Everything else lives
in private packages, by layer: ``_protocol`` (wire, sans-IO), ``_core`` (topic
actors, sessions, outboxes, the engine interface), ``_engines`` (the memory
engine), ``_server`` (transport, REST, composition) and ``_cli``.
"""

from __future__ import annotations

from ._protocol.errors import BadRequest as BadRequest
from ._protocol.errors import ErrorCode as ErrorCode
from ._protocol.errors import InternalError as InternalError
from ._protocol.errors import LimitExceeded as LimitExceeded
from ._protocol.errors import MessageTooLarge as MessageTooLarge
from ._protocol.errors import ProtocolError as ProtocolError
from ._protocol.errors import PubSubError as PubSubError
from ._protocol.errors import RateLimited as RateLimited
from ._protocol.errors import SlowConsumer as SlowConsumer
from ._protocol.errors import TopicExists as TopicExists
from ._protocol.errors import TopicNotFound as TopicNotFound
from ._protocol.errors import Unauthorized as Unauthorized
from ._protocol.errors import Unavailable as Unavailable
from ._server.server import Server as Server
from ._server.server import open_server as open_server
from ._settings import Settings as Settings
from ._settings import SettingsError as SettingsError
from ._version import __version__ as __version__
from .client import open_client as open_client

__all__ = [
    "BadRequest",
    "ErrorCode",
    "InternalError",
    "LimitExceeded",
    "MessageTooLarge",
    "ProtocolError",
    "PubSubError",
    "RateLimited",
    "Server",
    "Settings",
    "SettingsError",
    "SlowConsumer",
    "TopicExists",
    "TopicNotFound",
    "Unauthorized",
    "Unavailable",
    "__version__",
    "open_client",
    "open_server",
]
