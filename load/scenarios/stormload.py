"""stormload: admission control. --clients clients receive a stream at --rate while
--storm-clients new clients connect all at once; the stream's latency during the storm
against before it, and the storm's connect rate, refusals and failures.

Timeline: the stream clients connect (bounded concurrency) and the stream starts;
--duration seconds of baseline; the storm (every new client at once, each on a channel
of its own that nothing is published to, so the storm adds connections, not fan-out);
--duration seconds after it; then everything published is accounted for. The storm
window runs from the instant the new clients start to the last one subscribed. A refused
(503) or failed connect is retried with the browser client's backoff for --retry-for
seconds; refusals are counted, not fatal."""

from __future__ import annotations

import argparse
import asyncio

from load.harness import Harness, add_connect, add_delivery, add_usage, judge
from load.histogram import LatencyHistogram
from load.report import Result
from load.scenarios.base import add_retry_argument, spread
from load.worker import Receipts


class StormLoad:
    name = "stormload"
    help = "a stream to N clients while --storm-clients others connect at once: its latency"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--channels", type=int, default=None, help="channels of the stream (default 1)"
        )
        parser.add_argument(
            "--rate", type=float, default=20.0, help="stream messages/s (default 20)"
        )
        parser.add_argument(
            "--storm-clients",
            type=int,
            default=5000,
            help="new clients connecting at once during the stream (default 5000)",
        )
        parser.add_argument(
            "--max-p99-ms",
            type=float,
            default=None,
            help="stream p99 during the storm over this fails the run",
        )
        add_retry_argument(parser)

    def channels(self, clients: int, requested: int | None) -> int:
        return requested or 1

    async def run(self, harness: Harness) -> Result:
        opts = harness.opts
        channels = self.channels(opts.clients, opts.channels)
        conn = await harness.connect(
            spread(opts.clients, channels),
            channels,
            opts.connect_concurrency,
            retry_for=opts.retry_for,
            windowed=True,
        )
        stream = await harness.stream_start(opts.rate, lambda i: i % channels)
        await asyncio.sleep(opts.duration)
        baseline = await harness.stream_collect(stream)

        async def storm_begins() -> None:
            await harness.stream_collect(stream)  # the baseline's tail

        storm_count = opts.storm_clients
        # Channel ids past the stream's: each new client on a channel of its own.
        storm = await harness.connect(
            [channels + i for i in range(storm_count)],
            channels + storm_count,
            storm_count,
            retry_for=opts.retry_for,
            ledger=False,
            at_start=storm_begins,
        )
        during = await harness.stream_collect(stream)
        await asyncio.sleep(opts.duration)
        delivery = await harness.stream_stop(stream)

        result = harness.result(channels, rate=opts.rate)
        add_connect(result, conn)
        add_delivery(result, delivery)
        add_usage(result, storm.usage)  # the server during the storm
        latency = _merged(during)
        result.latency_p50_ms = _ms(latency.percentile(50))
        result.latency_p99_ms = _ms(latency.percentile(99))
        result.latency_max_ms = _ms(latency.max if latency.total else None)
        result.baseline_latency_p99_ms = _ms(_merged(baseline).percentile(99))
        result.storm_clients = storm_count
        result.storm_connected = storm.connected
        result.storm_failures = storm.failures
        result.storm_connect_per_s = storm.rate
        result.all_subscribed_s = storm.seconds
        result.connect_refused = storm.refused
        result.connect_retries = storm.retries
        result.uncounted = sum(r.uncounted for r in stream.receipts)
        judge(result, storm.usage, delivery.outcome.max_lag_s, opts.max_p99_ms)
        if storm.failures:
            result.ok = False
            result.notes.insert(0, f"{storm.failures} storm clients failed to connect")
            if storm.errors:
                result.notes.append(f"storm connect error: {storm.errors[0]}")
        result.notes.append(
            f"latency: the stream during the storm ({latency.total:,} receipts); "
            f"{storm.refused} storm connects refused with 503"
        )
        harness.emit(result)
        return result


def _merged(receipts: list[Receipts]) -> LatencyHistogram:
    return LatencyHistogram.merged(LatencyHistogram.from_state(r.latency) for r in receipts)


def _ms(micros: int | None) -> float | None:
    return None if micros is None else micros / 1000
