"""Per-pattern channel options: rules, their parsing, and their place in the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pushhub.channels import (
    DEFAULT_OPTIONS,
    ChannelOptions,
    ChannelRule,
    ChannelRules,
    parse_rules,
)
from pushhub.config import Settings, describe, load_settings
from pushhub.errors import ConfigError

QUIET = ChannelOptions(join_leave=False)
HIDDEN = ChannelOptions(presence=False, join_leave=False)


def config_error(raw: Any, where: str = "pushhub.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_rules(raw, where)
    assert "\n" not in str(info.value)
    return info.value


# -- resolving a channel ---------------------------------------------------------------------


def test_defaults_have_presence_and_join_leave_events_on() -> None:
    assert ChannelOptions() == ChannelOptions(presence=True, join_leave=True) == DEFAULT_OPTIONS


def test_a_channel_matching_no_rule_gets_the_defaults() -> None:
    rules = ChannelRules((ChannelRule("room:*", QUIET),))

    assert rules.options("news") is DEFAULT_OPTIONS
    assert rules.options("xroom:1") is DEFAULT_OPTIONS
    assert ChannelRules().options("room:1") is DEFAULT_OPTIONS


def test_the_first_matching_rule_wins_over_later_ones() -> None:
    rules = ChannelRules(
        (
            ChannelRule("room:secret-*", HIDDEN),
            ChannelRule("room:*", QUIET),
            ChannelRule("room:secret-1", DEFAULT_OPTIONS),
        )
    )

    assert rules.options("room:secret-1") == HIDDEN
    assert rules.options("room:lobby") == QUIET
    assert rules.options("lobby") == DEFAULT_OPTIONS


def test_a_broad_rule_first_shadows_a_narrower_rule_after_it() -> None:
    rules = ChannelRules((ChannelRule("*", QUIET), ChannelRule("room:*", HIDDEN)))

    assert rules.options("room:1") == QUIET


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("room:*", "room:1", True),
        ("room:*", "room:", True),
        ("room:*", "Room:1", False),  # case matters, as it does in channel names
        ("room:?", "room:1", True),
        ("room:?", "room:12", False),
        ("chat.*.private", "chat.42.private", True),
        ("exact", "exact", True),
        ("exact", "exactly", False),
    ],
)
def test_patterns_are_case_sensitive_globs(pattern: str, channel: str, matches: bool) -> None:
    rules = ChannelRules((ChannelRule(pattern, QUIET),))

    assert (rules.options(channel) == QUIET) is matches


# -- parsing [[channels]] tables ------------------------------------------------------------------


def test_parse_rules_keeps_file_order_and_defaults_unset_options() -> None:
    raw = [
        {"pattern": "room:quiet-*", "join_leave": False},
        {"pattern": "stats:*", "presence": False, "join_leave": False},
        {"pattern": "room:*"},
    ]

    assert parse_rules(raw, "pushhub.toml") == (
        ChannelRule("room:quiet-*", QUIET),
        ChannelRule("stats:*", HIDDEN),
        ChannelRule("room:*", DEFAULT_OPTIONS),
    )
    assert parse_rules([], "pushhub.toml") == ()


@pytest.mark.parametrize("raw", [{"pattern": "room:*"}, "room:*", 5, None])
def test_channels_that_are_not_an_array_of_tables_are_refused(raw: Any) -> None:
    err = config_error(raw, "/etc/pushhub.toml")

    assert err.key == "channels (in /etc/pushhub.toml)"
    assert "[[channels]]" in err.expected


@pytest.mark.parametrize("table", ["room:*", ["room:*"], 5])
def test_an_entry_that_is_not_a_table_is_refused(table: Any) -> None:
    err = config_error([{"pattern": "ok"}, table])

    assert err.key == "channels[1] (in pushhub.toml)"


@pytest.mark.parametrize(
    "table",
    [
        pytest.param({"join_leave": False}, id="missing"),
        pytest.param({"pattern": ""}, id="empty"),
        pytest.param({"pattern": "x" * 256}, id="256-chars"),
        pytest.param({"pattern": 5}, id="number"),
        pytest.param({"pattern": ["room:*"]}, id="list"),
    ],
)
def test_a_rule_without_a_good_pattern_is_refused_naming_the_key(table: dict[str, Any]) -> None:
    err = config_error([table])

    assert err.key == "channels[0] (in pushhub.toml).pattern"
    assert err.value == table.get("pattern")
    assert "room:*" in str(err)


def test_an_unknown_option_is_refused_naming_it_and_listing_the_known_ones() -> None:
    err = config_error([{"pattern": "a"}, {"pattern": "b", "colour": 10}])

    assert err.key == "channels[1] (in pushhub.toml).colour"
    assert err.value == 10
    assert "join_leave" in err.expected
    assert "presence" in err.expected


@pytest.mark.parametrize("value", ["false", 0, 1, None, [True]])
def test_an_option_of_the_wrong_type_is_refused_naming_it(value: Any) -> None:
    err = config_error([{"pattern": "room:*", "join_leave": value}])

    assert err.key == "channels[0] (in pushhub.toml).join_leave"
    assert err.value == value
    assert err.expected == "a bool"


def test_a_longest_allowed_pattern_is_accepted() -> None:
    assert parse_rules([{"pattern": "x" * 255}], "f") == (ChannelRule("x" * 255, DEFAULT_OPTIONS),)


# -- through the settings -----------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pushhub.toml"
    path.write_text(text)
    return str(path)


def test_channels_tables_in_the_config_file_become_the_settings_rules(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
port = 9000

[[channels]]
pattern = "room:quiet-*"
join_leave = false

[[channels]]
pattern = "metrics:*"
presence = false
join_leave = false

[[channels]]
pattern = "room:*"
""",
    )

    settings = load_settings({"config": path}, {})

    assert settings.port == 9000
    assert settings.channels == (
        ChannelRule("room:quiet-*", QUIET),
        ChannelRule("metrics:*", HIDDEN),
        ChannelRule("room:*", DEFAULT_OPTIONS),
    )
    rules = ChannelRules(settings.channels)
    assert rules.options("room:quiet-1") == QUIET
    assert rules.options("metrics:cpu") == HIDDEN
    assert rules.options("room:1") == DEFAULT_OPTIONS
    described = describe(settings)["channels"]
    assert [(d["pattern"], d["presence"], d["join_leave"]) for d in described] == [
        ("room:quiet-*", True, False),
        ("metrics:*", False, False),
        ("room:*", True, True),
    ]


def test_no_channels_tables_means_no_rules() -> None:
    assert load_settings({}, {}).channels == ()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('channels = "room:*"\n', "channels (in {path})"),
        ("[channels]\npattern = 'room:*'\n", "channels (in {path})"),
        ("[[channels]]\njoin_leave = false\n", "channels[0] (in {path}).pattern"),
        (
            "[[channels]]\npattern = 'a'\n[[channels]]\npattern = 'b'\ncolour = 5\n",
            "channels[1] (in {path}).colour",
        ),
        ("[[channels]]\npattern = 'a'\npresence = 'no'\n", "channels[0] (in {path}).presence"),
    ],
)
def test_a_bad_channels_table_in_the_file_stops_loading_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    path = write_toml(tmp_path, text)

    with pytest.raises(ConfigError) as info:
        load_settings({"config": path}, {})

    assert info.value.key == key.format(path=path)
    assert str(info.value).startswith(key.format(path=path))


# -- presence timing settings --------------------------------------------------------------------


def test_presence_ttl_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"presence_ttl": 9.9, "presence_heartbeat": 5}, {})

    assert info.value.key == "presence_ttl"
    assert info.value.value == 9.9
    assert "2 x presence_heartbeat" in info.value.expected


def test_presence_ttl_from_the_environment_is_checked_against_the_heartbeat() -> None:
    env = {"PUSHHUB_PRESENCE_HEARTBEAT": "10"}

    with pytest.raises(ConfigError) as info:
        load_settings({}, env)

    assert info.value.key == "presence_ttl"  # the default 15 s is under 2 x 10 s


def test_presence_ttl_of_exactly_two_heartbeats_is_accepted() -> None:
    settings = load_settings({"presence_ttl": 10, "presence_heartbeat": 5}, {})

    assert (settings.presence_ttl, settings.presence_heartbeat) == (10.0, 5.0)


def test_default_presence_timing_keeps_three_heartbeats_per_ttl() -> None:
    defaults = Settings()

    assert defaults.presence_ttl == 3 * defaults.presence_heartbeat
    assert load_settings({}, {}).presence_ttl == defaults.presence_ttl
