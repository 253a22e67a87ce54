"""idle: N subscribed connections doing nothing; the server's resident memory per
connection and the connect rate. One message per channel at the end proves every
subscription is still live."""

from __future__ import annotations

import argparse
import asyncio

from load import procstat
from load.harness import Harness, add_connect, add_delivery, add_usage, judge
from load.report import Result
from load.scenarios.base import add_check_arguments, spread, verify_every_channel


class Idle:
    name = "idle"
    help = "N idle subscribed connections: server RSS per connection, connect rate"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_check_arguments(parser)

    def channels(self, clients: int, requested: int | None) -> int:
        return requested or clients

    async def run(self, harness: Harness) -> Result:
        opts = harness.opts
        channels = self.channels(opts.clients, opts.channels)
        await asyncio.sleep(opts.settle)  # let the freshly started server settle
        before = procstat.sample(harness.server_pid)
        assert before is not None, "the server is gone"
        conn = await harness.connect(
            spread(opts.clients, channels), channels, opts.connect_concurrency
        )
        window = harness.snapshot()
        async with harness.progress("idle", lambda: ""):
            await asyncio.sleep(opts.duration)
        usage = harness.usage(window)
        check = await verify_every_channel(harness, channels, opts.rate)

        result = harness.result(channels)
        add_connect(result, conn)
        add_delivery(result, check)
        result.delivered_per_s = None  # the check's speed is not what this scenario measures
        add_usage(result, usage)  # memory and CPU of the idle hold, not of the check after it
        if conn.connected:
            result.rss_per_conn_kib = (usage.server_rss_kib - before.rss_kib) / conn.connected
        result.rate = None  # the check's rate is not a measurement
        result.notes.append(f"latency: one message per channel at {opts.rate:g}/s after the hold")
        judge(result, conn.usage, shown=usage)
        harness.emit(result)
        return result
