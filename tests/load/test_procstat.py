"""Reading CPU time and memory from /proc text (the parsing; no /proc needed)."""

from __future__ import annotations

import pytest

from load.procstat import ProcSample, busy_seconds, cpu_percent, cpu_seconds, status_kib

# proc(5): pid (comm) state ppid ... utime (14) stime (15) ...
STAT = "4242 (python -m pushhub) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 0 0 20 0 3 0"


def test_cpu_seconds_adds_user_and_system_time() -> None:
    assert cpu_seconds(STAT, clk_tck=100) == pytest.approx(3.0)


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_fields() -> None:
    weird = STAT.replace("(python -m pushhub)", "(a) b (c))")
    assert cpu_seconds(weird, clk_tck=100) == pytest.approx(3.0)


def test_status_kib_reads_a_named_field() -> None:
    status = "Name:\tpython\nVmHWM:\t  90000 kB\nVmRSS:\t   81234 kB\nThreads:\t3\n"
    assert status_kib(status, "VmRSS") == 81234
    assert status_kib(status, "VmHWM") == 90000


def test_status_kib_of_a_missing_field_raises() -> None:
    with pytest.raises(KeyError, match="VmRSS"):
        status_kib("Name:\tzombie\n", "VmRSS")


def test_busy_seconds_leaves_out_idle_and_iowait() -> None:
    stat = "cpu  100 10 50 9000 40 5 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    assert busy_seconds(stat, clk_tck=100) == pytest.approx(2.0)


def test_cpu_percent_is_relative_to_one_core() -> None:
    before = ProcSample(time=10.0, cpu=1.0, rss_kib=0, hwm_kib=0)
    after = ProcSample(time=12.0, cpu=2.5, rss_kib=0, hwm_kib=0)
    assert cpu_percent(before, after) == pytest.approx(75.0)
    assert cpu_percent(after, after) == 0.0
