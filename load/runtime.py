"""Process set-up shared by the tool's processes: event loop, CPU pinning, file limits."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Collection, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed (as uvicorn does for pushhub), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def raise_nofile_limit() -> int:
    """Raise the open-file soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin(cpus: Collection[int], pid: int = 0) -> None:
    """Pin ``pid`` (0: this process) to ``cpus``; no-op when ``cpus`` is empty."""
    if cpus:
        os.sched_setaffinity(pid, set(cpus))


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))
