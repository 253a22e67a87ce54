"""targeted: N clients each on a channel of its own (a user's notifications); publishes
spread over the channels at random, at a fixed total rate."""

from __future__ import annotations

import argparse
import random

from load.harness import Harness
from load.report import Result
from load.scenarios.base import delivery_result, spread


class Targeted:
    name = "targeted"
    help = "N clients each on its own channel; publishes spread at random over the channels"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--rate", type=float, default=1000.0, help="total messages/s (default 1000)"
        )
        parser.add_argument(
            "--channels", type=int, default=None, help="distinct channels (default: one per client)"
        )
        parser.add_argument(
            "--max-p99-ms", type=float, default=None, help="p99 over this fails the run"
        )

    def channels(self, clients: int, requested: int | None) -> int:
        return requested or clients

    async def run(self, harness: Harness) -> Result:
        opts = harness.opts
        channels = self.channels(opts.clients, opts.channels)
        conn = await harness.connect(
            spread(opts.clients, channels), channels, opts.connect_concurrency
        )
        # Seeded, so the reference and pushhub get the same sequence of channels.
        rng = random.Random(opts.seed)
        delivery = await harness.publish(
            opts.rate, lambda i: rng.randrange(channels), duration=opts.duration
        )
        result = delivery_result(
            harness, channels, conn, delivery, opts.rate, max_p99_ms=opts.max_p99_ms
        )
        harness.emit(result)
        return result
