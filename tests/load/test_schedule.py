"""The publisher's schedule and the ramp's choice of rates, with times passed in."""

from __future__ import annotations

import pytest

from load.schedule import Ramp, RateSchedule


def test_the_first_message_is_due_at_the_start() -> None:
    schedule = RateSchedule(10, 100, start=50.0)
    assert schedule.due_by(49.999) == 0
    assert schedule.due_by(50.0) == 1


def test_messages_fall_due_at_the_rate() -> None:
    schedule = RateSchedule(10, 100, start=0.0)
    assert schedule.due_by(0.95) == 10
    assert schedule.due_by(1.0) == 11
    assert schedule.due_at(20) == pytest.approx(2.0)


def test_no_more_than_the_total_is_ever_due() -> None:
    assert RateSchedule(10, 5, start=0.0).due_by(1000) == 5


def test_for_duration_schedules_rate_times_duration_messages() -> None:
    schedule = RateSchedule.for_duration(200, 2.5, start=1.0)
    assert schedule.total == 500
    assert schedule.end == pytest.approx(1.0 + 499 / 200)


def test_for_duration_always_schedules_at_least_one_message() -> None:
    assert RateSchedule.for_duration(0.1, 1, start=0).total == 1


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (1, 0), (-1, 1)])
def test_for_duration_refuses_non_positive_inputs(rate: float, duration: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateSchedule.for_duration(rate, duration, start=0)


def test_lag_is_how_late_a_message_goes_out() -> None:
    schedule = RateSchedule(100, 1000, start=0.0)
    assert schedule.lag(100, 1.25) == pytest.approx(0.25)
    assert schedule.lag(100, 0.5) == 0.0


def run_ramp(ramp: Ramp, capacity: float) -> list[float]:
    """Drive a ramp against a server that passes every rate up to ``capacity``."""
    tried = []
    while (rate := ramp.next_rate()) is not None:
        tried.append(rate)
        ramp.record(rate, rate <= capacity)
    return tried


def test_ramp_grows_until_a_failure_then_bisects() -> None:
    ramp = Ramp(100, factor=2, refine=2)
    assert run_ramp(ramp, capacity=500) == [100, 200, 400, 800, 600, 500]
    assert ramp.best == 500
    assert ramp.failed == 600


def test_ramp_without_refinement_stops_at_the_first_failure() -> None:
    ramp = Ramp(100, factor=2, refine=0)
    assert run_ramp(ramp, capacity=300) == [100, 200, 400]
    assert ramp.best == 200


def test_ramp_whose_first_step_fails_has_no_best_rate() -> None:
    ramp = Ramp(100, refine=3)
    assert run_ramp(ramp, capacity=50) == [100]
    assert ramp.best is None


def test_ramp_stops_at_max_rate_when_nothing_fails() -> None:
    ramp = Ramp(100, factor=2, max_rate=500)
    assert run_ramp(ramp, capacity=10**9) == [100, 200, 400, 500]
    assert ramp.best == 500


def test_ramp_stops_after_max_steps() -> None:
    ramp = Ramp(1, factor=1.1, max_steps=4)
    assert len(run_ramp(ramp, capacity=10**9)) == 4


@pytest.mark.parametrize(("start", "factor", "max_rate"), [(0, 2, 10), (10, 1, 100), (10, 2, 5)])
def test_ramp_refuses_a_search_that_cannot_work(
    start: float, factor: float, max_rate: float
) -> None:
    with pytest.raises(ValueError, match="need"):
        Ramp(start, factor=factor, max_rate=max_rate)
