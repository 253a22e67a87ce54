"""restart: a restart storm. N clients connected and subscribed, a stream at --rate on
their channels; the server is restarted (SIGTERM, then started again on the same port)
and every client comes back by itself with the browser client's backoff and resubscribes.

Reports the time from SIGTERM until every client is subscribed again, per-client reconnect
time (p50, p99), clients that never came back, the server's CPU while they came back, the
frames and presence lines received from just before the restart until every client was
back (the stream's frames included), and the stream's loss and latency counted by windows
(``load.ledger``):

- a connection counts a message when the message's publish time lies in its window: from
  the moment its subscribe was confirmed until it was lost;
- the windows of the connections open before the restart end at the *cut*, GUARD_S before
  SIGTERM: what is published from the cut on is not expected from a client until it is
  subscribed again (from its new confirmation on). Messages published during the outage
  are not lost for clients that were down; ones published in the guard are not counted
  at all (the server is going down; whether it still delivers them is not measured);
- every other message is expected once per window holding it, and one that does not
  arrive is lost. Receipts outside their connection's window are ``uncounted``.
"""

from __future__ import annotations

import argparse
import asyncio

from load import backoff
from load.harness import Harness, add_connect, add_delivery, add_usage, judge
from load.histogram import LatencyHistogram
from load.report import Result
from load.scenarios.base import add_retry_argument, spread

#: Stream time before the cut. Long enough that every connection has been up for the
#: browser client's ``stableAfter`` when the restart closes it, as after any real uptime:
#: each client then comes back starting from retry 0.
BEFORE_S = backoff.STABLE_AFTER_S
#: The cut is announced this far ahead (every worker must have it before it is due) ...
CUT_LEAD_S = 0.5
#: ... and SIGTERM follows it this much later.
GUARD_S = 0.5


class Restart:
    name = "restart"
    help = "N clients and a stream; the server restarts; time until all are back, loss, p99"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--channels",
            type=int,
            default=None,
            help="channels the clients spread over (default 1)",
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=20.0,
            help="stream messages/s over all channels (default 20)",
        )
        parser.add_argument(
            "--max-p99-ms", type=float, default=None, help="stream p99 over this fails the run"
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
            reconnect=True,
            windowed=True,
        )
        stream = await harness.stream_start(opts.rate, lambda i: i % channels)
        await asyncio.sleep(BEFORE_S)
        await harness.stream_collect(stream)
        frames0, presence0 = await harness.frame_counts()
        restart = await harness.restart_server(CUT_LEAD_S, GUARD_S)
        window = harness.snapshot()  # the new server is up: the reconnect phase
        async with harness.progress("coming back", lambda: ""):
            all_back = await harness.wait_back(conn.connected, opts.retry_for + 30)
        usage = harness.usage(window)
        frames1, presence1 = await harness.frame_counts()
        answers = await harness.reconnects()
        during = await harness.stream_collect(stream)
        await asyncio.sleep(opts.duration)
        delivery = await harness.stream_stop(stream)

        result = harness.result(channels, rate=opts.rate)
        add_connect(result, conn)
        add_delivery(result, delivery)
        add_usage(result, usage)  # CPU and memory of the reconnect phase
        reconnect = LatencyHistogram.merged(LatencyHistogram.from_state(a.latency) for a in answers)
        back = sum(a.back for a in answers)
        last = max((a.last_back_ns for a in answers), default=0)
        result.all_subscribed_s = conn.seconds
        result.restart_stop_s = restart.stop_s
        result.outage_s = restart.outage_s
        result.all_back_s = (last - restart.restart_ns) / 1e9 if all_back and last else None
        result.reconnected = back
        result.reconnect_failures = conn.connected - back
        result.reconnect_p50_ms = _ms(reconnect.percentile(50))
        result.reconnect_p99_ms = _ms(reconnect.percentile(99))
        # The refusals and retries of the way back, not of the first connect.
        result.connect_refused = sum(a.attempts.refused for a in answers)
        result.connect_retries = sum(a.attempts.retries for a in answers)
        result.uncounted = sum(r.uncounted for r in stream.receipts)
        # From the cut until every client was back: the stream's frames included.
        result.frames_received = frames1 - frames0
        result.presence_events_received = presence1 - presence0
        closes: dict[int, int] = {}
        for a in answers:
            for code, n in a.closes.items():
                closes[code] = closes.get(code, 0) + n
        phase = LatencyHistogram.merged(LatencyHistogram.from_state(r.latency) for r in during)
        p99 = phase.percentile(99)
        judge(result, usage, delivery.outcome.max_lag_s, opts.max_p99_ms)
        problems = []
        if result.reconnect_failures:
            problems.append(f"{result.reconnect_failures} clients did not come back")
        if restart.cut_late:
            problems.append("a worker applied the cut late: counts around it may be off")
        result.ok = result.ok and not problems
        result.notes[:0] = problems
        result.notes.append(
            "restart closed " + ", ".join(f"{n} with {c}" for c, n in sorted(closes.items()))
        )
        if p99 is not None:
            result.notes.append(f"stream p99 while clients came back: {p99 / 1000:.1f} ms")
        errors = [e for a in answers for e in a.attempts.errors]
        if errors:
            result.notes.append(f"reconnect error: {errors[0]}")
        harness.emit(result)
        return result


def _ms(micros: int | None) -> float | None:
    return None if micros is None else micros / 1000
