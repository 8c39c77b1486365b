"""Settings: the defaults of PROTOCOL.md, loading from the environment, errors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pubsub import Settings, SettingsError
from pubsub._settings import FIELD_NAMES, describe

#: PROTOCOL.md "Settings", as field name -> default.
PROTOCOL_DEFAULTS: dict[str, Any] = {
    "port": 3000,
    "host": "127.0.0.1",
    "max_messages_per_topic": 100,
    "max_queue_size": 1000,
    "backpressure_policy": "drop_oldest",
    "heartbeat_interval": 30_000,
    "connection_timeout": 60_000,
    "shutdown_timeout": 10_000,
    "max_message_size": 1_048_576,
    "max_topics": 1000,
    "max_subscribers_per_topic": 10_000,
    "max_connections": 10_000,
    "api_key": None,
    "log_level": "info",
    "log_format": "text",
}

ALL_VARIABLES = [f.name.upper() for f in msgspec.structs.fields(Settings)]


@pytest.mark.parametrize(("name", "default"), list(PROTOCOL_DEFAULTS.items()))
def test_default_is_the_protocol_default(name: str, default: object) -> None:
    assert getattr(Settings(), name) == default


def test_every_protocol_setting_is_a_variable() -> None:
    assert {name.upper() for name in PROTOCOL_DEFAULTS} <= set(ALL_VARIABLES)


def test_empty_environment_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/usr/bin", "HOME": "/root", "PORTS": "x"}) == Settings()


def test_from_env_converts_strings() -> None:
    settings = Settings.from_env(
        {
            "PORT": "8080",
            "HOST": "0.0.0.0",
            "MAX_MESSAGES_PER_TOPIC": "0",
            "MAX_QUEUE_SIZE": "5",
            "BACKPRESSURE_POLICY": "disconnect",
            "HEARTBEAT_INTERVAL": "1500",
            "CONNECTION_TIMEOUT": "4500",
            "SHUTDOWN_TIMEOUT": "250",
            "MAX_MESSAGE_SIZE": "2048",
            "MAX_TOPICS": "3",
            "MAX_SUBSCRIBERS_PER_TOPIC": "4",
            "MAX_CONNECTIONS": "6",
            "API_KEY": "s3cret",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "json",
        }
    )
    assert msgspec.structs.asdict(settings) == {
        **msgspec.structs.asdict(Settings()),
        "port": 8080,
        "host": "0.0.0.0",
        "max_messages_per_topic": 0,
        "max_queue_size": 5,
        "backpressure_policy": "disconnect",
        "heartbeat_interval": 1500,
        "connection_timeout": 4500,
        "shutdown_timeout": 250,
        "max_message_size": 2048,
        "max_topics": 3,
        "max_subscribers_per_topic": 4,
        "max_connections": 6,
        "api_key": "s3cret",
        "log_level": "debug",
        "log_format": "json",
    }
    assert type(settings.port) is int
    assert type(settings.max_message_size) is int


def test_port_0_is_accepted() -> None:
    # 0 means "pick a free port", which tests and the CLI rely on.
    assert Settings.from_env({"PORT": "0"}).port == 0


@pytest.mark.parametrize("variable", ALL_VARIABLES)
def test_empty_variable_keeps_default(variable: str) -> None:
    assert Settings.from_env({variable: ""}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "65536"),
        ("PORT", "-1"),
        ("PORT", "80.5"),
        ("MAX_QUEUE_SIZE", "0"),
        ("MAX_CONNECTIONS", "-1"),
        ("MAX_MESSAGE_SIZE", "1MB"),
        ("BACKPRESSURE_POLICY", "nope"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("HEARTBEAT_INTERVAL", "-5"),
        ("HEARTBEAT_INTERVAL", "0"),
        ("CONNECTION_TIMEOUT", "soon"),
    ],
)
def test_bad_value_raises_settings_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    message = str(info.value)
    assert message.startswith(variable)
    assert info.value.name == variable
    assert value in message
    # Callers that validate input generically catch ValueError.
    assert isinstance(info.value, ValueError)


def test_replace_returns_a_converted_copy() -> None:
    base = Settings()
    changed = base.replace(port="4000", max_topics=7, backpressure_policy="disconnect")
    assert (changed.port, changed.max_topics, changed.backpressure_policy) == (
        4000,
        7,
        "disconnect",
    )
    assert base == Settings()


def test_replace_bad_value_raises_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"^MAX_QUEUE_SIZE"):
        Settings().replace(max_queue_size=0)


@pytest.mark.parametrize("name", ["nope", "PORT", "apikey"])
def test_replace_unknown_name_raises(name: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings().replace(**{name: "1"})
    assert str(info.value).startswith(name.upper())
    assert "unknown" in str(info.value)


def test_public_hides_api_key() -> None:
    settings = Settings.from_env({"API_KEY": "s3cret", "PORT": "4000"})
    public = settings.public()
    assert public["api_key"] != "s3cret"
    assert public["api_key"]  # still says that a key is set
    assert "s3cret" not in msgspec.json.encode(public).decode()
    assert public["port"] == 4000
    assert set(public) == {name.lower() for name in ALL_VARIABLES}


def test_public_without_api_key_says_none() -> None:
    public = Settings().public()
    assert public["api_key"] is None
    assert {name: public[name] for name in PROTOCOL_DEFAULTS} == PROTOCOL_DEFAULTS


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_extension_settings_have_their_defaults_and_load_from_env() -> None:
    defaults = Settings()
    assert (defaults.max_queue_bytes, defaults.close_timeout) == (0, 2_000)
    loaded = Settings.from_env({"MAX_QUEUE_BYTES": "65536", "CLOSE_TIMEOUT": "500"})
    assert (loaded.max_queue_bytes, loaded.close_timeout) == (65_536, 500)
    with pytest.raises(SettingsError, match="MAX_QUEUE_BYTES"):
        Settings.from_env({"MAX_QUEUE_BYTES": "-1"})


@pytest.mark.parametrize(
    "name",
    [
        "heartbeat_interval",
        "connection_timeout",
        "shutdown_timeout",
        "handshake_timeout",
        "close_timeout",
    ],
)
def test_durations_are_milliseconds_and_seconds_converts_them(name: Any) -> None:
    settings = Settings().replace(**{name: 1500})
    assert settings.seconds(name) == 1.5


def test_every_setting_describes_itself() -> None:
    """``serve --help`` is generated from these descriptions: none may be missing."""
    for name in FIELD_NAMES:
        text = describe(name)
        assert text and text == text.strip(), name
