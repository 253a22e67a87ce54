"""fanout: N clients on one channel; a publisher at a fixed rate, or ramping to find the
highest rate delivered with zero loss and bounded latency."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from load import verdict
from load.harness import ConnectOutcome, Harness
from load.report import Result
from load.scenarios.base import delivery_result
from load.schedule import Ramp

#: A ramp step whose p99 latency exceeds this has not kept up (unless --max-p99-ms).
#: A server short of the offered rate by a fraction f ends a 10 s step about 10 f seconds
#: behind, so 500 ms catches a shortfall of 5 % while ignoring ordinary latency tails:
#: the ramp measures capacity; latency at a given rate is a run of its own.
RAMP_MAX_P99_MS = 500.0
#: Pause between ramp steps, so one step's queues do not spill into the next.
STEP_PAUSE_S = 1.0
#: Time a step needs beyond its duration (drain, collect, pause) to be worth starting.
STEP_MARGIN_S = 5.0


def _doubtful(step: Result) -> bool:
    noisy = (step.other_cpu_pct or 0.0) >= verdict.NOISY_OTHER_CPU
    return step.generator_bottleneck or noisy


class Fanout:
    name = "fanout"
    help = "N clients on one channel; fixed rate, or --ramp to find the highest zero-loss rate"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--rate",
            type=float,
            default=100.0,
            help="messages/s (default 100; with --ramp, the first step)",
        )
        parser.add_argument(
            "--ramp", action="store_true", help="step the rate up until loss or latency breaks"
        )
        parser.add_argument(
            "--ramp-factor", type=float, default=1.5, help="rate multiplier per step (default 1.5)"
        )
        parser.add_argument(
            "--ramp-refine",
            type=int,
            default=2,
            help="bisection steps after the first failure (default 2)",
        )
        parser.add_argument(
            "--max-rate", type=float, default=100_000.0, help="highest rate a ramp tries"
        )
        parser.add_argument(
            "--max-p99-ms",
            type=float,
            default=None,
            help=f"p99 over this fails a run or step (ramp default {RAMP_MAX_P99_MS:g})",
        )

    def channels(self, clients: int, requested: int | None) -> int:
        return 1

    async def run(self, harness: Harness) -> Result:
        opts = harness.opts
        conn = await harness.connect([0] * opts.clients, 1, opts.connect_concurrency)
        if not opts.ramp:
            delivery = await harness.publish(opts.rate, lambda i: 0, duration=opts.duration)
            result = delivery_result(
                harness, 1, conn, delivery, opts.rate, max_p99_ms=opts.max_p99_ms
            )
            harness.emit(result)
            return result
        return await self._ramp(harness, conn)

    async def _ramp(self, harness: Harness, conn: ConnectOutcome) -> Result:
        opts = harness.opts
        max_p99 = opts.max_p99_ms if opts.max_p99_ms is not None else RAMP_MAX_P99_MS
        ramp = Ramp(
            opts.rate, factor=opts.ramp_factor, max_rate=opts.max_rate, refine=opts.ramp_refine
        )
        steps: list[Result] = []
        stopped = ""
        repeated: set[float] = set()
        while (rate := ramp.next_rate()) is not None:
            if harness.time_left() < opts.duration + STEP_MARGIN_S:
                stopped = "stopped early by --max-duration"
                break
            reopened = await harness.restore() if steps else 0
            delivery = await harness.publish(rate, lambda i: 0, duration=opts.duration)
            step = delivery_result(
                harness,
                1,
                conn,
                delivery,
                rate,
                kind="step",
                step=len(steps) + 1,
                max_p99_ms=max_p99,
            )
            behind = delivery.outcome.max_lag_s > verdict.MAX_PUBLISH_LAG_S
            if reopened:
                step.notes.append(f"{reopened} clients closed in the step before were reopened")
            passed = step.ok and not behind
            steps.append(step)
            if not passed and rate not in repeated and _doubtful(step):
                # A failure the server may not own (the generator was short, or other work
                # took the CPUs): measure this rate once more before believing it.
                repeated.add(rate)
                step.notes.append("not counted: repeating this rate once")
            else:
                ramp.record(rate, passed)
            harness.emit(step)
            await asyncio.sleep(STEP_PAUSE_S)
        return self._summary(harness, ramp, steps, stopped)

    def _summary(self, harness: Harness, ramp: Ramp, steps: list[Result], stopped: str) -> Result:
        passed = [s for s in steps if s.rate == ramp.best]
        failed = [s for s in steps if s.rate == ramp.failed][-1:]
        if passed or steps:
            base = passed[-1] if passed else steps[0]
            summary = dataclasses.replace(base, kind="ramp", step=None, notes=[])
        else:
            base = summary = harness.result(1, kind="ramp")
        summary.best_rate = ramp.best
        summary.ok = ramp.best is not None
        if failed:
            first = failed[0]
            why = "; ".join(first.notes) or "publisher behind schedule"
            summary.notes.append(f"fails at {first.rate:g}/s: {why}")
            # The search ended where the generator, not necessarily the server, gave out.
            summary.generator_bottleneck = first.generator_bottleneck or base.generator_bottleneck
        elif ramp.best is not None and ramp.best >= ramp.max_rate:
            summary.notes.append(f"reached --max-rate {ramp.max_rate:g}/s without failing")
        if stopped:
            summary.notes.append(stopped)
        if ramp.best is None:
            summary.notes.append("no step passed")
        harness.emit(summary)
        return summary
