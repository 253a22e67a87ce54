"""Options are checked before anything starts: bounds, pinning, loopback only."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from load.cli import build_parser, options_from
from load.options import Options, UsageError, check, check_redis_url, parse_cpus, pinning
from load.scenarios import REGISTRY


@pytest.mark.parametrize(
    ("text", "cpus"), [("1", (1,)), ("3,1", (1, 3)), ("1-3", (1, 2, 3)), ("0,2-3", (0, 2, 3))]
)
def test_cpu_lists_parse(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "3-1", "1,,2"])
def test_bad_cpu_lists_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--client-cpus"):
        parse_cpus(text)


def test_by_default_the_server_gets_the_first_cpu_and_the_generator_the_rest() -> None:
    assert pinning([0, 1]) == ((0,), (1,))
    assert pinning([2, 3, 5]) == ((2,), (3, 5))


def test_one_cpu_or_pinning_disabled_pins_nothing() -> None:
    assert pinning([0]) == ((), ())
    assert pinning([0, 1], enabled=False) == ((), ())


def test_explicit_cpus_are_used_and_checked() -> None:
    assert pinning([0, 1, 2, 3], server_cpu=3, client_cpus=[0, 1]) == ((3,), (0, 1))
    with pytest.raises(UsageError, match="not available"):
        pinning([0, 1], server_cpu=7)
    with pytest.raises(UsageError, match="also in --client-cpus"):
        pinning([0, 1, 2], server_cpu=1, client_cpus=[1, 2])


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://localhost:1234"])
def test_loopback_redis_urls_are_accepted(url: str) -> None:
    assert check_redis_url(url) == url


@pytest.mark.parametrize(
    "url", ["redis://10.0.0.5:6379", "redis://redis.example.com", "rediss://127.0.0.1"]
)
def test_other_redis_urls_are_refused(url: str) -> None:
    with pytest.raises(UsageError, match="--redis-url"):
        check_redis_url(url)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"clients": 0}, "--clients"),
        ({"clients": 10**6}, "--clients"),
        ({"duration": 100_000}, "--duration"),
        ({"max_duration": 10**6}, "--max-duration"),
        ({"rate": 0}, "--rate"),
        ({"channels": 2000}, "--channels"),
        ({"targets": ("elsewhere",)}, "--target"),
        ({"publish": "carrier-pigeon"}, "--publish"),
        ({"publish": "http", "targets": ("reference", "pushhub")}, "no HTTP API"),
        ({"rate": 500_000, "duration": 100}, "more than"),
        ({"ramp": True, "max_rate": 1_000_000, "duration": 30}, "more than"),
    ],
)
def test_out_of_bounds_options_are_refused(change: dict[str, Any], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        check(dataclasses.replace(Options(scenario="fanout"), **change))


def test_both_targets_run_the_reference_first_with_identical_options() -> None:
    args = build_parser().parse_args(["fanout", "--target", "both", "--clients", "20", "--no-pin"])
    opts = options_from(args)
    assert opts.targets == ("reference", "pushhub")
    assert (opts.clients, opts.server_cpus, opts.client_cpus) == (20, (), ())


def test_scenario_defaults_come_from_the_scenario() -> None:
    assert options_from(build_parser().parse_args(["targeted", "--no-pin"])).rate == 1000
    assert options_from(build_parser().parse_args(["fanout", "--no-pin", "--ramp"])).ramp


def test_every_scenario_is_on_the_command_line() -> None:
    assert set(REGISTRY) == {"fanout", "targeted", "idle", "storm", "stormload", "restart"}
    for name in REGISTRY:
        assert options_from(build_parser().parse_args([name, "--no-pin"])).scenario == name


def test_restart_streams_through_redis_and_its_clients_must_retry() -> None:
    with pytest.raises(UsageError, match="publish redis"):
        check(Options(scenario="restart", publish="http"))
    with pytest.raises(UsageError, match="retry-for"):
        check(Options(scenario="restart", retry_for=0))
    assert check(Options(scenario="restart")).retry_for == 120.0


def test_stormload_bounds_its_storm() -> None:
    with pytest.raises(UsageError, match="storm-clients"):
        check(Options(scenario="stormload", storm_clients=0))
    with pytest.raises(UsageError, match="more than"):
        check(Options(scenario="stormload", clients=30_000, storm_clients=30_000))


def test_the_new_scenarios_defaults_one_channel_twenty_messages_a_second() -> None:
    for name in ("restart", "stormload"):
        opts = options_from(build_parser().parse_args([name, "--no-pin"]))
        assert (opts.rate, REGISTRY[name].channels(opts.clients, opts.channels)) == (20.0, 1)
    storm = options_from(build_parser().parse_args(["stormload", "--no-pin"]))
    assert storm.storm_clients == 5000
