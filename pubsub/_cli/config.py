"""Where ``serve`` gets its settings: defaults, a TOML file, the environment, flags.

Each source is a layer of raw values, applied in order, a later one winning:
defaults < the file (``--config FILE`` / ``PUBSUB_CONFIG``) < the environment
(``PUBSUB_NAME``, else ``NAME``) < flags. The file's keys are the setting names
in lower case (``max_queue_size = 500``); it may also declare topics that exist
before the server listens (:class:`DeclaredTopic`). A secret (``api_key``,
``metrics_token``) may come from a file named by ``api_key_file`` (in the
config file), ``API_KEY_FILE`` or ``--api-key-file``, so that it never appears
on a command line (``ps``); the file key counts as its secret's own layer.

An empty value, in any layer, means "not set here" (as an empty variable
always has). Every error names where the value came from and exits 2.

The commented template (``config init``) is generated from the settings'
descriptions and defaults, so it cannot drift from them.
"""

from __future__ import annotations

import difflib
import json
import ssl
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from .._protocol.errors import PubSubError
from .._protocol.frames import check_topic_name
from .._server.tls import tls_context
from .._settings import (
    ENV_PREFIX,
    FIELD_NAMES,
    SECRETS,
    Settings,
    SettingsError,
    convert,
    describe,
    environment,
)

#: The environment variable naming the configuration file (``--config`` wins).
CONFIG_ENV: Final = "PUBSUB_CONFIG"
#: Keys that name a file holding a secret setting: ``api_key_file`` -> ``api_key``.
SECRET_FILES: Final = {f"{name}_file": name for name in SECRETS}
#: Keys of the file beyond the settings.
TOPICS_KEY: Final = "topics"
_TOPIC_KEYS: Final = ("name", "message_ttl_ms")


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why (exit 2)."""


class DeclaredTopic(msgspec.Struct, frozen=True):
    """A topic the configuration file declares: it exists before the server listens.

    Attributes:
        message_ttl_ms: Its messages' TTL; None: ``MESSAGE_TTL``; 0: never expire.
    """

    name: str
    message_ttl_ms: int | None = None


class Config(msgspec.Struct, frozen=True):
    """What ``serve`` runs with (and what a supervisor hands its workers).

    Attributes:
        sources: Where each setting that is not a default came from
            (``--port``, ``PUBSUB_PORT``, ``pubsub.toml``), for ``config check``.
    """

    settings: Settings
    topics: tuple[DeclaredTopic, ...] = ()
    sources: dict[str, str] = msgspec.field(default_factory=dict)


#: One layer: setting name -> (where it was set, raw value).
Layer = dict[str, tuple[str, Any]]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# ------------------------------------------------------------------- layers


def flag_layer(flags: Mapping[str, str | None]) -> Layer:
    """The settings (and secret files) given as ``serve`` flags."""
    layer = {name: (flag_name(name), value) for name, value in flags.items() if value}
    return _read_secret_files(layer, Path.cwd())


def env_layer(environ: Mapping[str, str]) -> Layer:
    """The settings (and secret files) the environment sets; ``PUBSUB_NAME`` wins."""
    names = (*FIELD_NAMES, *SECRET_FILES)
    layer: Layer = dict(environment(environ, names).items())
    return _read_secret_files(layer, Path.cwd())


def file_layer(path: Path) -> tuple[Layer, tuple[DeclaredTopic, ...]]:
    """The settings and topics of a TOML configuration file.

    Raises:
        ConfigError: unreadable, not TOML, an unknown key (named), a bad topic.
    """
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    topics = _declared_topics(path, data.pop(TOPICS_KEY, []))
    layer: Layer = {}
    for key, value in data.items():
        if key not in FIELD_NAMES and key not in SECRET_FILES:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggestion(key)}")
        if isinstance(value, dict | list):
            raise ConfigError(f"{path}: {key} must be a single value, not a table or an array")
        if value != "":
            layer[key] = (f"{path}: {key}", value)
    # A relative secret file is found beside the configuration file.
    return _read_secret_files(layer, path.parent), topics


def _suggestion(key: str) -> str:
    known = (*FIELD_NAMES, *SECRET_FILES, TOPICS_KEY)
    if key.lower() in known:
        return f" (keys are lower case: {key.lower()})"
    name = key.lower().removeprefix(ENV_PREFIX.lower())
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (`trio-pubsub config init` lists them)"


def _declared_topics(path: Path, raw: Any) -> tuple[DeclaredTopic, ...]:
    """``topics = ["a", "b"]``, or ``[[topics]]`` tables with ``name`` and
    optionally ``message_ttl_ms`` (an inline array may mix names and tables)."""
    if not isinstance(raw, list):
        raise ConfigError(
            f"{path}: topics must be an array of names, or [[topics]] tables with a name"
        )
    declared: dict[str, DeclaredTopic] = {}
    for index, item in enumerate(raw):
        where = f"{path}: topics[{index}]"
        ttl: Any = None
        if isinstance(item, str):
            name: Any = item
        elif isinstance(item, dict):
            unknown = sorted(set(item) - set(_TOPIC_KEYS))
            if unknown:
                raise ConfigError(
                    f"{where}: unknown key {unknown[0]!r} (a topic has name and message_ttl_ms)"
                )
            if "name" not in item:
                raise ConfigError(f"{where}: a topic needs a name")
            name, ttl = item["name"], item.get("message_ttl_ms")
        else:
            raise ConfigError(f"{where}: expected a name or a table, not {item!r}")
        try:
            check_topic_name(name)
        except PubSubError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if ttl is not None and (type(ttl) is not int or ttl < 0):
            raise ConfigError(
                f"{where}: message_ttl_ms must be an integer >= 0 (ms; 0 = never), not {ttl!r}"
            )
        if name in declared:
            raise ConfigError(f"{where}: topic {name!r} is declared twice")
        declared[name] = DeclaredTopic(name, ttl)
    return tuple(declared.values())


def _read_secret_files(layer: Layer, directory: Path) -> Layer:
    """Replace each ``*_file`` key of ``layer`` by its secret, read from that file
    (a path relative to ``directory``)."""
    for file_key, name in SECRET_FILES.items():
        if file_key not in layer:
            continue
        where, raw = layer.pop(file_key)
        if name in layer:
            raise ConfigError(f"{layer[name][0]} and {where} are both set: set one of them")
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a file name, not {raw!r}")
        path = directory / raw
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
        if not secret:
            raise ConfigError(f"{where}: {path} is empty")
        layer[name] = (f"{where} ({path})", secret)
    return layer


# -------------------------------------------------------------- resolution


def load(
    flags: Mapping[str, str | None], environ: Mapping[str, str], config_file: str | None = None
) -> Config:
    """The configuration ``serve`` runs with: defaults < file < environment < flags.

    Args:
        flags: The setting flags given (name -> raw value; None: not given),
            ``api_key_file`` and the like included.
        environ: The environment.
        config_file: ``--config``, else ``PUBSUB_CONFIG`` names the file (if any).

    Raises:
        ConfigError: a value a setting does not accept (named as it was set),
            an unreadable or bad file, a combination that cannot work.
    """
    path = config_file or environ.get(CONFIG_ENV) or None
    layers: list[Layer] = []
    topics: tuple[DeclaredTopic, ...] = ()
    if path is not None:
        from_file, topics = file_layer(Path(path))
        layers.append(from_file)
    layers += [env_layer(environ), flag_layer(flags)]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for name, (where, raw) in layer.items():
            try:
                values[name] = convert(name, raw)
            except SettingsError as exc:
                # A flag's error names its setting too (the variable the docs list).
                setting = f" ({name.upper()})" if where == flag_name(name) else ""
                raise ConfigError(f"{where}{setting}: {exc.detail}") from None
            sources[name] = where
    settings = msgspec.structs.replace(Settings(), **values)
    return Config(settings, topics, sources)


def check(config: Config, worker: str | None = None) -> Config:
    """Refuse settings that cannot work together; for worker ``worker`` (its
    number, under a supervisor), its own node id.

    Raises:
        ConfigError: more than one worker on the memory engine, a ``NODE_ID``
            too long for the worker suffix, or TLS files missing or unreadable.
    """
    settings = config.settings
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("TLS_CERT and TLS_KEY go together: set both to serve https and wss")
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            tls_context(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS_CERT / TLS_KEY: {exc}") from None
    if settings.workers > 1 and settings.engine == "memory":
        raise ConfigError(
            "WORKERS: more than one worker needs ENGINE=redis "
            "(with the memory engine each worker would have topics of its own)"
        )
    if settings.node_id is not None and (worker is not None or settings.workers > 1):
        # Each worker is NODE_ID-wN: check the longest now, before anything starts.
        suffix = worker if worker is not None else str(settings.workers)
        try:
            named = settings.replace(node_id=f"{settings.node_id}-w{suffix}")
        except SettingsError as exc:
            raise ConfigError(f"{exc} (NODE_ID plus the worker suffix)") from None
        if worker is not None:
            return msgspec.structs.replace(config, settings=named)
    return config


# ------------------------------------------------------- template and report


def _toml(value: Any) -> str:
    """``value`` as a TOML value (None: an empty string, which means unset)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps("" if value is None else value)  # a TOML basic string


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 76, initial_indent="# ", subsequent_indent="# ")


_HEADER: Final = """\
# trio-pubsub configuration (TOML): trio-pubsub serve --config FILE, or
# PUBSUB_CONFIG=FILE. Each key is a setting: its environment variable in lower
# case. Every line below is a setting at its default, commented out: uncomment
# and change the ones you need. Environment variables (PUBSUB_NAME or NAME)
# override this file, and serve's flags override both. An empty string means
# unset. Durations are milliseconds, sizes bytes.
"""

_TOPICS_TEMPLATE: Final = """\
# Topics that exist before the server listens (one that exists already, on a
# shared Redis, is kept as it is). Each has a name and may set message_ttl_ms
# (ms its messages stay deliverable; default MESSAGE_TTL; 0 = forever). A plain
# list of names works too: topics = ["orders", "audit"]
#[[topics]]
#name = "orders"
#message_ttl_ms = 60000
"""


def template() -> str:
    """A commented TOML file with every setting at its default (``config init``)."""
    defaults = Settings()
    lines = [_HEADER]
    for name in FIELD_NAMES:
        default = getattr(defaults, name)
        unset = " Default: unset." if default is None else ""
        lines += _comment(describe(name) + "." + unset)
        lines.append(f"#{name} = {_toml(default)}")
        if name in SECRETS:
            file_key = f"{name}_file"
            lines += _comment(
                f"Or read {name} from this file (keeps it out of `ps`; a relative "
                f"path is beside this file; surrounding whitespace is dropped)."
            )
            lines.append(f'#{file_key} = ""')
        lines.append("")
    lines.append(_TOPICS_TEMPLATE)
    return "\n".join(lines)


def report(config: Config) -> str:
    """The effective settings as TOML, secrets masked, each from its source
    (``config check``)."""
    lines = ["# effective settings: defaults < file < environment (serve's flags win over all)"]
    for name, value in config.settings.public().items():
        source = config.sources.get(name)
        shown = f"{name} = {_toml(value)}" if value is not None else f"#{name} = (unset)"
        lines.append(f"{shown}  # {source}" if source else shown)
    for topic in config.topics:
        lines += ["", "[[topics]]", f"name = {_toml(topic.name)}"]
        if topic.message_ttl_ms is not None:
            lines.append(f"message_ttl_ms = {topic.message_ttl_ms}")
    return "\n".join(lines) + "\n"
