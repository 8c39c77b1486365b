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


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LOG_LEVEL", "INFO", "info"),
        ("LOG_LEVEL", "Warning", "warning"),
        ("LOG_FORMAT", "JSON", "json"),
        ("BACKPRESSURE_POLICY", "DISCONNECT", "disconnect"),
        ("ENGINE", "Memory", "memory"),
    ],
)
def test_fixed_choices_are_accepted_in_any_case(variable: str, value: str, expected: str) -> None:
    settings = Settings.from_env({variable: value})
    assert getattr(settings, variable.lower()) == expected


@pytest.mark.parametrize(
    ("variable", "allowed"),
    [
        ("LOG_LEVEL", "debug, info, warning, error, critical"),
        ("LOG_FORMAT", "text, json"),
        ("BACKPRESSURE_POLICY", "drop_oldest, disconnect"),
        ("ENGINE", "memory, redis"),
    ],
)
def test_a_refused_choice_names_the_allowed_values(variable: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: "loud"})
    assert str(info.value) == f"{variable}: 'loud' is not one of {allowed} (any case)"


def test_a_refused_boolean_says_what_is_accepted() -> None:
    assert Settings.from_env({"AUTO_CREATE_TOPICS": "TRUE"}).auto_create_topics is True
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"AUTO_CREATE_TOPICS": "maybe"})
    assert str(info.value) == (
        "AUTO_CREATE_TOPICS: expected true or false (or 1 or 0), not 'maybe'"
    )


def test_pubsub_prefixed_variables_win_over_plain_ones() -> None:
    assert Settings.from_env({"PUBSUB_PORT": "4000"}).port == 4000
    both = Settings.from_env({"PUBSUB_PORT": "4000", "PORT": "5000", "MAX_TOPICS": "7"})
    assert (both.port, both.max_topics) == (4000, 7)
    # An empty prefixed variable is unset: the plain one applies.
    assert Settings.from_env({"PUBSUB_PORT": "", "PORT": "5000"}).port == 5000


def test_an_error_names_the_variable_as_it_was_set() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"PUBSUB_MAX_QUEUE_SIZE": "0", "MAX_QUEUE_SIZE": "5"})
    assert info.value.name == "PUBSUB_MAX_QUEUE_SIZE"
    assert str(info.value) == "PUBSUB_MAX_QUEUE_SIZE: expected an integer >= 1, not '0'"


def test_public_hides_every_secret() -> None:
    settings = Settings.from_env({"API_KEY": "k3y", "METRICS_TOKEN": "t0ken"})
    public = settings.public()
    assert (public["api_key"], public["metrics_token"]) == ("***", "***")
    assert Settings().public()["metrics_token"] is None
