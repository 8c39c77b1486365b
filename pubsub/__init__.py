"""trio-pubsub: a real-time WebSocket pub/sub message broker on Trio."""

from __future__ import annotations

from ._broker import Broker as Broker
from ._broker import Counters as Counters
from ._broker import Stats as Stats
from ._broker import open_broker as open_broker
from ._errors import BadRequest as BadRequest
from ._errors import ErrorCode as ErrorCode
from ._errors import InternalError as InternalError
from ._errors import LimitExceeded as LimitExceeded
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import ProtocolError as ProtocolError
from ._errors import PubSubError as PubSubError
from ._errors import SlowConsumer as SlowConsumer
from ._errors import TopicExists as TopicExists
from ._errors import TopicNotFound as TopicNotFound
from ._errors import Unauthorized as Unauthorized
from ._session import CloseReason as CloseReason
from ._session import Session as Session
from ._settings import Settings as Settings
from ._settings import SettingsError as SettingsError
from ._topic import Topic as Topic
from ._version import __version__ as __version__

__all__ = [
    "BadRequest",
    "Broker",
    "CloseReason",
    "Counters",
    "ErrorCode",
    "InternalError",
    "LimitExceeded",
    "MessageTooLarge",
    "ProtocolError",
    "PubSubError",
    "Session",
    "Settings",
    "SettingsError",
    "SlowConsumer",
    "Stats",
    "Topic",
    "TopicExists",
    "TopicNotFound",
    "Unauthorized",
    "__version__",
    "open_broker",
]
