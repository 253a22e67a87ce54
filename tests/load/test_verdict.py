"""When a result is the generator's limit rather than the server's, and when it fails."""

from __future__ import annotations

from load.verdict import failures, generator_reasons, noise


def test_a_generator_with_headroom_has_no_reasons() -> None:
    assert generator_reasons(worker_cpu=[40, 45], generator_cpu=85, cores=1, seconds=5) == []


def test_a_saturated_worker_is_a_reason() -> None:
    reasons = generator_reasons(worker_cpu=[20, 97], generator_cpu=117, cores=2, seconds=5)
    assert reasons == ["a client worker used 97% CPU"]


def test_workers_sharing_a_saturated_core_are_a_reason() -> None:
    reasons = generator_reasons(worker_cpu=[48, 47], generator_cpu=98, cores=1, seconds=5)
    assert reasons == ["generator cores saturated (98% of 100%)"]


def test_cpu_over_a_window_too_short_to_measure_is_ignored() -> None:
    assert generator_reasons(worker_cpu=[150], generator_cpu=150, cores=1, seconds=0.2) == []


def test_a_publisher_behind_schedule_is_a_reason() -> None:
    reasons = generator_reasons(worker_cpu=[], generator_cpu=0, cores=1, seconds=5, max_lag_s=0.25)
    assert reasons == ["publisher fell 250 ms behind schedule"]


def test_a_clean_run_has_no_failures() -> None:
    assert failures(lost=0, disconnects=0, p99_ms=5.0, max_p99_ms=10) == []


def test_loss_disconnects_connect_failures_and_latency_each_fail_a_run() -> None:
    assert failures(lost=3, disconnects=2, connect_failures=1, p99_ms=30.0, max_p99_ms=25) == [
        "1 clients failed to connect",
        "3 messages lost",
        "server closed 2 clients",
        "p99 30.0 ms over 25 ms",
    ]


def test_latency_without_a_limit_never_fails() -> None:
    assert failures(lost=0, disconnects=0, p99_ms=10_000.0) == []


def test_a_busy_machine_is_reported_as_noise() -> None:
    assert noise(other_cpu=60, seconds=10) == ["noisy machine: other processes used 60% CPU"]
    assert noise(other_cpu=5, seconds=10) == []
    assert noise(other_cpu=60, seconds=0.1) == []
