"""Settings from flags, environment, TOML file and defaults; every bad value named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pushhub.config import Settings, describe, load_settings
from pushhub.errors import ConfigError

KEY_A = "a" * 16
KEY_B = "b-long-enough-key-0123"


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pushhub.toml"
    path.write_text(text)
    return str(path)


def config_error(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> str:
    """The one-line message of the ConfigError that loading these sources raises."""
    with pytest.raises(ConfigError) as info:
        load_settings(flags or {}, env or {})
    message = str(info.value)
    assert "\n" not in message
    return message


# -- defaults and precedence -------------------------------------------------------------


def test_no_flags_no_environment_and_no_file_give_the_defaults() -> None:
    settings = load_settings({}, {})

    assert settings == Settings()
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8000, None)
    assert settings.engine_url == "memory://"
    assert settings.api_keys == ()
    assert settings.config_file is None


def test_flags_that_are_none_mean_not_given() -> None:
    assert load_settings({"port": None, "host": None, "config": None}, {}) == Settings()


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = 1111\nhost = "0.0.0.0"\n')

    settings = load_settings({"config": path}, {})

    assert (settings.port, settings.host, settings.config_file) == (1111, "0.0.0.0", path)
    assert settings.log_level == "info"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = 1111\nlog_level = "debug"\n')

    settings = load_settings({"config": path}, {"PUSHHUB_PORT": "2222"})

    assert (settings.port, settings.log_level) == (2222, "debug")


def test_flags_override_environment_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1111\nmax_subscriptions = 7\n")
    env = {"PUSHHUB_PORT": "2222", "PUSHHUB_LOG_LEVEL": "warning"}

    settings = load_settings({"config": path, "port": "3333"}, env)

    assert (settings.port, settings.log_level, settings.max_subscriptions) == (3333, "warning", 7)


def test_config_file_can_be_named_in_the_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1111\n")

    settings = load_settings({}, {"PUSHHUB_CONFIG": path})

    assert (settings.port, settings.config_file) == (1111, path)


def test_config_flag_wins_over_the_config_environment_variable(tmp_path: Path) -> None:
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text("port = 1111\n")
    env_file = tmp_path / "env.toml"
    env_file.write_text("port = 2222\n")

    settings = load_settings({"config": str(flag_file)}, {"PUSHHUB_CONFIG": str(env_file)})

    assert settings.port == 1111


@pytest.mark.parametrize(
    ("env", "redis_url"),
    [
        ({"REDIS_URL": "redis://platform:6379/0"}, "redis://platform:6379/0"),
        ({"PUSHHUB_REDIS_URL": "redis://ours:6379/0"}, "redis://ours:6379/0"),
        (
            {"REDIS_URL": "redis://platform:6379/0", "PUSHHUB_REDIS_URL": "redis://ours:6379/0"},
            "redis://ours:6379/0",
        ),
    ],
)
def test_prefixed_redis_url_wins_over_the_platform_one(env: dict[str, str], redis_url: str) -> None:
    settings = load_settings({}, env)

    assert settings.redis_url == redis_url
    assert settings.engine_url == redis_url


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({"PORT": "5000"}, 5000),
        ({"PUSHHUB_PORT": "6000"}, 6000),
        ({"PORT": "5000", "PUSHHUB_PORT": "6000"}, 6000),
    ],
)
def test_prefixed_port_wins_over_the_platform_one(env: dict[str, str], port: int) -> None:
    assert load_settings({}, env).port == port


def test_empty_redis_url_selects_the_memory_engine() -> None:
    settings = load_settings({}, {"REDIS_URL": ""})

    assert settings.redis_url is None
    assert settings.engine_url == "memory://"


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock", "REDIS://h"]
)
def test_every_supported_redis_scheme_is_accepted(url: str) -> None:
    assert load_settings({"redis_url": url}, {}).redis_url == url


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_boolean_setting_accepts_the_usual_spellings(raw: str, value: bool) -> None:
    env = {"PUSHHUB_WEBSOCKET_COMPRESSION": raw}
    assert load_settings({}, env).websocket_compression is value


def test_values_from_toml_keep_their_types(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "websocket_compression = true\nping_interval = 5\nping_timeout = 2.5\n"
        'key_prefix = "app:"\nnode_id = "node-1"\n',
    )

    settings = load_settings({"config": path}, {})

    assert settings.websocket_compression is True
    assert (settings.ping_interval, settings.ping_timeout) == (5.0, 2.5)
    assert (settings.key_prefix, settings.node_id) == ("app:", "node-1")


# -- API keys -------------------------------------------------------------------------------


def test_api_keys_are_a_comma_separated_list_in_the_environment() -> None:
    env = {"PUSHHUB_API_KEYS": f" {KEY_A} ,{KEY_B},, "}

    assert load_settings({}, env).api_keys == (KEY_A, KEY_B)


def test_api_keys_are_an_array_in_the_toml_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'api_keys = ["{KEY_A}", "{KEY_B}"]\n')

    assert load_settings({"config": path}, {}).api_keys == (KEY_A, KEY_B)


@pytest.mark.parametrize("source", ["env", "file"])
def test_short_api_key_is_refused_without_echoing_any_key(tmp_path: Path, source: str) -> None:
    if source == "env":
        message = config_error(env={"PUSHHUB_API_KEYS": f"{KEY_A},short-secret"})
        assert "PUSHHUB_API_KEYS" in message
    else:
        path = write_toml(tmp_path, f'api_keys = ["{KEY_A}", "short-secret"]\n')
        message = config_error({"config": path})
        assert "api_keys" in message
        assert path in message
    # The value is named as redacted: an error line must not leak a secret into logs.
    assert "<redacted>" in message
    assert "short-secret" not in message
    assert KEY_A not in message
    assert "16" in message


def test_api_keys_of_the_wrong_type_in_toml_are_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "api_keys = [1, 2]\n")

    assert "api_keys" in config_error({"config": path})


# -- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "key", "value"),
    [
        ({"port": "abc"}, {}, "--port", "'abc'"),
        ({"port": "70000"}, {}, "--port", "'70000'"),
        ({"port": "-1"}, {}, "--port", "'-1'"),
        ({}, {"PUSHHUB_PORT": "abc"}, "PUSHHUB_PORT", "'abc'"),
        ({}, {"PORT": "70000"}, "PORT", "'70000'"),
        ({"redis_url": "http://x"}, {}, "--redis-url", "'http://x'"),
        ({}, {"REDIS_URL": "http://x"}, "REDIS_URL", "'http://x'"),
        ({}, {"PUSHHUB_REDIS_URL": "localhost:6379"}, "PUSHHUB_REDIS_URL", "'localhost:6379'"),
        ({}, {"PUSHHUB_WEBSOCKET_COMPRESSION": "maybe"}, "PUSHHUB_WEBSOCKET_COMPRESSION", "maybe"),
        ({"log_level": "loud"}, {}, "--log-level", "'loud'"),
        ({}, {"PUSHHUB_LOG_LEVEL": "loud"}, "PUSHHUB_LOG_LEVEL", "'loud'"),
        ({}, {"PUSHHUB_MAX_SUBSCRIPTIONS": "0"}, "PUSHHUB_MAX_SUBSCRIPTIONS", "'0'"),
        ({}, {"PUSHHUB_PING_INTERVAL": "soon"}, "PUSHHUB_PING_INTERVAL", "'soon'"),
        ({}, {"PUSHHUB_HOST": "two words"}, "PUSHHUB_HOST", "'two words'"),
        ({}, {"PUSHHUB_KEY_PREFIX": "a*"}, "PUSHHUB_KEY_PREFIX", "'a*'"),
        ({}, {"PUSHHUB_NODE_ID": "no spaces"}, "PUSHHUB_NODE_ID", "'no spaces'"),
        ({"colour": "blue"}, {}, "--colour", "'blue'"),
    ],
)
def test_bad_value_is_refused_naming_the_key_and_the_value(
    flags: dict[str, Any], env: dict[str, str], key: str, value: str
) -> None:
    message = config_error(flags, env)

    assert message.startswith(f"{key}=")
    assert value in message
    assert "expected" in message


def test_bad_value_in_the_toml_file_is_refused_naming_the_key_and_the_file(
    tmp_path: Path,
) -> None:
    path = write_toml(tmp_path, "port = 70000\n")

    message = config_error({"config": path})

    assert message.startswith(f"port (in {path})=")
    assert "70000" in message


def test_boolean_given_for_a_number_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = true\n")

    assert "port" in config_error({"config": path})


def test_fractional_port_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 8000.5\n")

    message = config_error({"config": path})

    assert "port" in message
    assert "8000.5" in message


def test_unknown_key_in_the_toml_file_is_refused_naming_key_value_and_file(
    tmp_path: Path,
) -> None:
    path = write_toml(tmp_path, 'prot = 8000\nhost = "127.0.0.1"\n')

    message = config_error({"config": path})

    assert message.startswith(f"prot (in {path})=")
    assert "known setting" in message


def test_an_unknown_key_in_the_toml_file_never_echoes_its_value(tmp_path: Path) -> None:
    # A misspelt secret must not reach the log through the error that names it.
    path = write_toml(tmp_path, 'jwt_secrte = "s3cr3t-value-that-must-not-leak-0123456789"\n')

    message = config_error({"config": path})

    assert message.startswith(f"jwt_secrte (in {path})=")
    assert "s3cr3t" not in message


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_config_file_is_refused_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "missing.toml" if kind == "missing" else tmp_path

    message = config_error({"config": str(path)})

    assert message.startswith("--config=")
    assert repr(str(path)) in message
    assert "readable" in message


def test_unreadable_config_file_named_in_the_environment_is_refused_naming_that_variable(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "missing.toml")

    message = config_error(env={"PUSHHUB_CONFIG": path})

    # The user set PUSHHUB_CONFIG, not --config: the error should say where the value came from.
    assert message.startswith("PUSHHUB_CONFIG=")
    assert repr(path) in message


def test_invalid_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = = 1\n")

    message = config_error({"config": path})

    assert message.startswith("--config=")
    assert repr(path) in message
    assert "TOML" in message


def test_ping_timeout_longer_than_four_intervals_is_refused() -> None:
    env = {"PUSHHUB_PING_INTERVAL": "2", "PUSHHUB_PING_TIMEOUT": "9"}

    message = config_error(env=env)

    assert "ping_timeout" in message
    assert "9.0" in message


def test_config_error_carries_its_fields() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"port": "abc"}, {})

    assert (info.value.key, info.value.value) == ("--port", "abc")
    assert "integer" in info.value.expected


# -- describe ----------------------------------------------------------------------------------


def test_describe_redacts_api_keys_and_the_redis_password() -> None:
    settings = load_settings(
        {"redis_url": "redis://user:s3cret-pw@redis.internal:6379/0"},
        {"PUSHHUB_API_KEYS": f"{KEY_A},{KEY_B}"},
    )

    described = describe(settings)
    text = repr(described)

    assert KEY_A not in text
    assert KEY_B not in text
    assert "s3cret-pw" not in text
    assert described["api_keys"] == "<2 configured>"
    assert described["redis_url"] == "redis://user:***@redis.internal:6379/0"
    assert described["port"] == 8000
    assert set(described) == {f.name for f in dataclasses.fields(Settings)}


def test_describe_leaves_a_redis_url_without_password_as_is() -> None:
    settings = load_settings({"redis_url": "redis://redis.internal:6379/0"}, {})

    assert describe(settings)["redis_url"] == "redis://redis.internal:6379/0"


def test_bad_redis_url_error_does_not_leak_its_password() -> None:
    message = config_error({"redis_url": "http://:s3cret-pw@x"})

    assert "s3cret-pw" not in message
    assert "http://:***@x" in message
