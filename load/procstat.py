"""CPU time and resident memory of a process, from ``/proc`` (Linux).

CPU% over a window is the change in user+system time divided by the wall time, so a
process using one full core shows 100 %. RSS is ``VmRSS``; the peak is ``VmHWM``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat: str, clk_tck: int = CLK_TCK) -> float:
    """User + system CPU seconds from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / clk_tck


def status_kib(status: str, key: str) -> int:
    """A ``kB`` field such as ``VmRSS`` from the text of ``/proc/<pid>/status``."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(f"{key} not in /proc status")


@dataclass(frozen=True, slots=True)
class ProcSample:
    time: float
    cpu: float
    rss_kib: int
    hwm_kib: int


def busy_seconds(stat: str, clk_tck: int = CLK_TCK) -> float:
    """CPU seconds all CPUs spent busy (not idle, not waiting for I/O), from the text of
    ``/proc/stat``: user, nice, system, irq, softirq and steal."""
    fields = stat.split("\n", 1)[0].split()
    if fields[0] != "cpu":
        raise ValueError("/proc/stat does not start with the cpu line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / clk_tck


def machine_busy() -> tuple[float, float]:
    """(time.monotonic(), busy CPU seconds of the whole machine so far)."""
    with open("/proc/stat") as fh:
        return time.monotonic(), busy_seconds(fh.read())


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    elapsed = after.time - before.time
    return 0.0 if elapsed <= 0 else 100.0 * (after.cpu - before.cpu) / elapsed


def sample(pid: int) -> ProcSample | None:
    """The process's CPU and memory now, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/status") as fh:
            status = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    now = time.monotonic()
    try:
        return ProcSample(
            now, cpu_seconds(stat), status_kib(status, "VmRSS"), status_kib(status, "VmHWM")
        )
    except KeyError:  # a zombie has no memory fields
        return None
