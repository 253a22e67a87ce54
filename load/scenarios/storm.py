"""storm: N clients connecting and subscribing at once; the connect rate, connect
latency and failures, the time until every client is subscribed, and the frames and
presence lines the storm made the server send; then one message per channel to prove
every subscription works.

A refused (HTTP 503: pushhub's ``max_handshakes``) or failed connect is retried with the
browser client's backoff for ``--retry-for`` seconds, as a browser would; refusals are
counted, and only a client that never got in counts as failed."""

from __future__ import annotations

import argparse

from load.harness import Harness, add_connect, add_delivery, add_usage, judge
from load.report import Result
from load.scenarios.base import (
    add_check_arguments,
    add_retry_argument,
    spread,
    verify_every_channel,
)


class Storm:
    name = "storm"
    help = "N clients connecting and subscribing at once: connect rate and failures"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_check_arguments(parser)
        add_retry_argument(parser)

    def channels(self, clients: int, requested: int | None) -> int:
        return requested or clients

    async def run(self, harness: Harness) -> Result:
        opts = harness.opts
        channels = self.channels(opts.clients, opts.channels)
        # Every client at once: no concurrency bound.
        conn = await harness.connect(
            spread(opts.clients, channels),
            channels,
            opts.clients,
            retry_for=opts.retry_for,
            count_frames=True,
        )
        check = await verify_every_channel(harness, channels, opts.rate)

        result = harness.result(channels)
        add_connect(result, conn)
        add_delivery(result, check)
        result.delivered_per_s = None  # the check's speed is not what this scenario measures
        add_usage(result, conn.usage)  # CPU of the storm itself, memory right after it
        result.duration_s = conn.seconds
        result.all_subscribed_s = conn.seconds
        result.frames_received = conn.frames
        result.presence_events_received = conn.presence
        result.rate = None  # the check's rate is not a measurement
        result.notes.append(f"latency: one message per channel at {opts.rate:g}/s after the storm")
        if conn.refused:
            result.notes.append(f"{conn.refused} connects refused with 503, retried")
        judge(result, conn.usage)
        harness.emit(result)
        return result
