"""What a scenario is, and the pieces several scenarios share."""

from __future__ import annotations

import argparse
from typing import Protocol

from load.harness import ConnectOutcome, Delivery, Harness, add_connect, add_delivery, judge
from load.report import Result


class Scenario(Protocol):
    """A named load pattern. ``run`` emits every record through ``harness.emit`` and
    returns the one that sums the run up (the one compared with the reference)."""

    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def channels(self, clients: int, requested: int | None) -> int: ...

    async def run(self, harness: Harness) -> Result: ...


def spread(clients: int, channels: int) -> list[int]:
    """Client i's channel: round robin, so channels differ by at most one subscriber."""
    return [i % channels for i in range(clients)]


def delivery_result(
    harness: Harness,
    channels: int,
    conn: ConnectOutcome,
    delivery: Delivery,
    rate: float,
    *,
    kind: str = "run",
    step: int | None = None,
    max_p99_ms: float | None = None,
) -> Result:
    result = harness.result(channels, rate=rate, kind=kind, step=step)
    add_connect(result, conn)
    add_delivery(result, delivery)
    judge(result, delivery.usage, delivery.outcome.max_lag_s, max_p99_ms)
    return result


async def verify_every_channel(harness: Harness, channels: int, rate: float) -> Delivery:
    """One message to each channel: proves every subscription is live, and measures it."""
    return await harness.publish(rate, lambda i: i % channels, total=channels)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the scenarios that end with one message per channel (idle, storm)."""
    parser.add_argument(
        "--channels", type=int, default=None, help="distinct channels (default: one per client)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="rate of the final one-message-per-channel check (default 2000)",
    )


def add_retry_argument(parser: argparse.ArgumentParser) -> None:
    """Scenarios whose clients retry refused or failed connects (storm, stormload, restart)."""
    parser.add_argument(
        "--retry-for",
        type=float,
        default=120.0,
        help="seconds a client keeps retrying a refused (503) or failed connect with the "
        "browser client's backoff before it counts as failed (default 120; 0: no retry)",
    )
    parser.add_argument(
        "--max-handshakes",
        type=int,
        default=None,
        help="pushhub's max_handshakes for the run: upgrades past this many handshakes in "
        "progress get 503 (default: pushhub's own, 500)",
    )
