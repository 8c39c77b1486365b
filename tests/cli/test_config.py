"""Where ``serve`` gets its settings: the TOML file, the environment, flags, secret
files, declared topics, and the template and report of ``config init`` / ``check``."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pubsub import Settings
from pubsub._cli.config import (
    Config,
    ConfigError,
    DeclaredTopic,
    check,
    load,
    report,
    template,
)
from pubsub._settings import FIELD_NAMES, describe

from .shell import SCRIPT


def write(tmp_path: Path, text: str, name: str = "pubsub.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "max_topics = 3\nmax_queue_size = 500\nclose_timeout = 1500\nhandshake_timeout = 900\n",
    )
    environ = {
        "MAX_QUEUE_SIZE": "600",
        "CLOSE_TIMEOUT": "1700",
        "PUBSUB_CLOSE_TIMEOUT": "1600",  # the prefixed name wins over the plain one
        "HANDSHAKE_TIMEOUT": "800",
    }
    config = load({"handshake_timeout": "700", "port": None}, environ, str(path))
    settings = config.settings
    assert (settings.max_topics, settings.max_queue_size) == (3, 600)
    assert (settings.close_timeout, settings.handshake_timeout) == (1600, 700)
    assert settings.max_connections == Settings().max_connections
    assert config.sources == {
        "max_topics": f"{path}: max_topics",
        "max_queue_size": "MAX_QUEUE_SIZE",
        "close_timeout": "PUBSUB_CLOSE_TIMEOUT",
        "handshake_timeout": "--handshake-timeout",
    }


def test_no_file_no_environment_no_flags_is_the_defaults() -> None:
    assert load({}, {}) == Config(Settings())


def test_the_file_comes_from_pubsub_config_unless_config_names_one(tmp_path: Path) -> None:
    one = write(tmp_path, "max_topics = 1\n", "one.toml")
    two = write(tmp_path, "max_topics = 2\n", "two.toml")
    assert load({}, {"PUBSUB_CONFIG": str(one)}).settings.max_topics == 1
    assert load({}, {"PUBSUB_CONFIG": str(one)}, str(two)).settings.max_topics == 2


def test_values_keep_their_toml_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'host = "0.0.0.0"\nauto_create_topics = true\nlog_level = "WARNING"\n'
        'backpressure_policy = "disconnect"\nnode_id = ""\n',
    )
    settings = load({}, {}, str(path)).settings
    assert (settings.host, settings.auto_create_topics) == ("0.0.0.0", True)
    assert (settings.log_level, settings.backpressure_policy) == ("warning", "disconnect")
    assert settings.node_id is None  # an empty string means unset, as in the environment


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("max_queue_sise = 3\n", "unknown key 'max_queue_sise' (did you mean 'max_queue_size'?)"),
        ("MAX_QUEUE_SIZE = 3\n", "unknown key 'MAX_QUEUE_SIZE' (keys are lower case: "),
        ("colour = 3\n", "unknown key 'colour' (`trio-pubsub config init` lists them)"),
        ("max_queue_size = 0\n", "max_queue_size: expected an integer >= 1, not 0"),
        ('port = "http"\n', "port: expected an integer, not 'http'"),
        ('log_level = "loud"\n', "log_level: 'loud' is not one of debug, info, warning, error"),
        ("[port]\nnumber = 1\n", "port must be a single value, not a table or an array"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, text: str, says: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load({}, {}, str(path))
    assert str(info.value).startswith(f"{path}: ")
    assert says in str(info.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the configuration file .*nope\.toml"):
        load({}, {}, str(tmp_path / "nope.toml"))


def test_bad_values_name_where_they_were_set() -> None:
    with pytest.raises(ConfigError, match=r"^PUBSUB_PORT: expected an integer, not 'x'$"):
        load({}, {"PUBSUB_PORT": "x", "PORT": "1"})
    with pytest.raises(
        ConfigError, match=r"^--max-topics \(MAX_TOPICS\): expected an integer >= 1, not '0'$"
    ):
        load({"max_topics": "0"}, {})


def test_topics_as_tables_or_names(tmp_path: Path) -> None:
    tables = write(
        tmp_path,
        '[[topics]]\nname = "orders"\nmessage_ttl_ms = 60000\n\n[[topics]]\nname = "audit"\n',
        "tables.toml",
    )
    assert load({}, {}, str(tables)).topics == (
        DeclaredTopic("orders", 60000),
        DeclaredTopic("audit"),
    )
    names = write(tmp_path, 'topics = ["a", {name = "b", message_ttl_ms = 0}]\n', "names.toml")
    assert load({}, {}, str(names)).topics == (DeclaredTopic("a"), DeclaredTopic("b", 0))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('topics = "orders"\n', "topics must be an array"),
        ("topics = [1]\n", "topics[0]: expected a name or a table, not 1"),
        ('topics = ["a b"]\n', "topics[0]: invalid topic name 'a b'"),
        ('topics = ["orders.*"]\n', "topics[0]: invalid topic name 'orders.*'"),
        ('topics = ["a", "a"]\n', "topics[1]: topic 'a' is declared twice"),
        ("[[topics]]\nmessage_ttl_ms = 1\n", "topics[0]: a topic needs a name"),
        ('[[topics]]\nname = "a"\nttl = 1\n', "topics[0]: unknown key 'ttl'"),
        ('[[topics]]\nname = "a"\nmessage_ttl_ms = -1\n', "message_ttl_ms must be an integer"),
        ('[[topics]]\nname = "a"\nmessage_ttl_ms = "1"\n', "message_ttl_ms must be an integer"),
    ],
)
def test_bad_topics_are_refused(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load({}, {}, str(path))
    assert says in str(info.value)


def test_a_secret_comes_from_a_file_in_each_layer(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text("from-the-config-file\n")
    path = write(tmp_path, 'api_key_file = "secrets/key"\n')  # beside the configuration file
    assert load({}, {}, str(path)).settings.api_key == "from-the-config-file"
    env_key = tmp_path / "env-key"
    env_key.write_text("  from-the-environment  \n")
    flag_key = tmp_path / "flag-key"
    flag_key.write_text("from-a-flag")
    environ = {"API_KEY_FILE": str(env_key)}
    assert load({}, environ, str(path)).settings.api_key == "from-the-environment"
    config = load({"api_key_file": str(flag_key)}, environ, str(path))
    assert config.settings.api_key == "from-a-flag"
    assert config.sources["api_key"] == f"--api-key-file ({flag_key})"
    token = load({}, {"PUBSUB_METRICS_TOKEN_FILE": str(flag_key)}).settings.metrics_token
    assert token == "from-a-flag"


def test_a_secret_and_its_file_in_one_layer_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    with pytest.raises(ConfigError, match=r"^API_KEY and API_KEY_FILE are both set: set one"):
        load({}, {"API_KEY": "k", "API_KEY_FILE": str(key)})
    # In different layers the later one simply wins.
    assert load({"api_key": "flag"}, {"API_KEY_FILE": str(key)}).settings.api_key == "flag"


@pytest.mark.parametrize(("content", "says"), [(None, "No such file"), ("\n", "is empty")])
def test_an_unusable_secret_file_is_refused(tmp_path: Path, content: str | None, says: str) -> None:
    key = tmp_path / "key"
    if content is not None:
        key.write_text(content)
    with pytest.raises(ConfigError) as info:
        load({"api_key_file": str(key)}, {})
    assert str(info.value).startswith("--api-key-file: ")
    assert says in str(info.value) and str(key) in str(info.value)


def test_check_refuses_settings_that_cannot_work_together() -> None:
    with pytest.raises(ConfigError, match="WORKERS: more than one worker needs ENGINE=redis"):
        check(load({"workers": "2"}, {}))
    long_id = "n" * 62
    with pytest.raises(ConfigError, match="NODE_ID plus the worker suffix"):
        check(load({"workers": "2", "engine": "redis", "node_id": long_id}, {}))
    worker = check(load({"node_id": "edge"}, {}), worker="3")
    assert worker.settings.node_id == "edge-w3"


def _uncommented(text: str) -> str:
    """The template with every commented-out setting line made live."""
    return re.sub(r"^#(?=[a-z\[])", "", text, flags=re.MULTILINE)


def test_the_template_has_every_setting_at_its_default(tmp_path: Path) -> None:
    text = template()
    assert tomllib.loads(text) == {}  # everything commented out
    for name in FIELD_NAMES:
        assert f"\n#{name} = " in text, name
        # The description is the setting's own, words unbroken by the wrapping.
        assert " ".join(describe(name).split()) in " ".join(
            line.removeprefix("# ") for line in text.splitlines()
        ), name
    live = write(tmp_path, _uncommented(text))
    config = load({}, {}, str(live))
    assert config.settings == Settings()
    assert config.topics == (DeclaredTopic("orders", 60000),)


def test_the_report_masks_secrets_and_names_sources(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret")
    path = write(
        tmp_path,
        f'api_key_file = "{key}"\nredis_url = "redis://u:pw@db:6379/0"\n'
        'metrics_token = "t0ken"\ntopics = ["orders"]\n',
    )
    config = load({}, {"MAX_TOPICS": "7"}, str(path))
    text = report(config)
    for secret in ("s3cret", "pw", "t0ken"):
        assert secret not in text
    data = tomllib.loads(text)
    assert data["api_key"] == "***" and data["metrics_token"] == "***"
    assert data["redis_url"] == "redis://u:***@db:6379/0"
    assert data["topics"] == [{"name": "orders"}]
    assert "max_topics = 7  # MAX_TOPICS" in text.splitlines()
    assert "#node_id = (unset)" in text.splitlines()


def test_a_worker_reads_the_configuration_it_is_handed() -> None:
    config = load({"max_topics": "5"}, {})
    config = msgspec.structs.replace(config, topics=(DeclaredTopic("t", 5),))
    assert msgspec.json.decode(msgspec.json.encode(config), type=Config) == config


def _run(*args: str, env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_config_init_then_check(tmp_path: Path) -> None:
    init = _run("config", "init")
    assert (init.returncode, init.stdout) == (0, template())
    path = write(tmp_path, init.stdout + '\nmax_queue_size = 500\napi_key = "s3cret"\n')
    checked = _run("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert f"max_queue_size = 500  # {path}: max_queue_size" in checked.stdout.splitlines()
    assert "s3cret" not in checked.stdout
    bad = write(tmp_path, "max_queue_sise = 500\n", "bad.toml")
    refused = _run("config", "check", str(bad))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"trio-pubsub: error: {bad}: unknown key 'max_queue_sise' "
        "(did you mean 'max_queue_size'?)\n"
    )
    assert refused.stdout == ""
