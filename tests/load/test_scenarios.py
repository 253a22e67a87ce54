"""Small decisions inside the scenarios."""

from __future__ import annotations

from load.report import Result
from load.scenarios.base import spread
from load.scenarios.fanout import _doubtful


def test_spread_puts_clients_round_robin_on_channels() -> None:
    assert spread(5, 2) == [0, 1, 0, 1, 0]
    assert spread(3, 3) == [0, 1, 2]


def step(**fields: object) -> Result:
    result = Result(scenario="fanout", target="pushhub", kind="step")
    for name, value in fields.items():
        setattr(result, name, value)
    return result


def test_a_failed_step_is_doubtful_when_the_generator_or_other_work_may_own_it() -> None:
    assert _doubtful(step(generator_bottleneck=True, other_cpu_pct=0.0))
    assert _doubtful(step(other_cpu_pct=60.0))


def test_a_failed_step_on_a_quiet_machine_with_a_healthy_generator_is_believed() -> None:
    assert not _doubtful(step(other_cpu_pct=3.0))
    assert not _doubtful(step())
