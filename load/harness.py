"""One target's run: the processes it needs and the phases scenarios are made of.

``Harness`` starts redis-server (unless given a URL), the server under test and the
client workers, and stops them all on the way out. Scenarios compose its phases:
``connect`` (open and subscribe clients), ``publish`` (a scheduled publish, drained and
accounted) and ``usage`` windows (server and generator CPU, server memory), and turn
what they return into ``Result`` records with the helpers at the bottom.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import sys
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from load import procstat, verdict
from load.histogram import LatencyHistogram
from load.ledger import Ledger, Loss, Window, account, expected_in_windows, merge_receipts
from load.options import Options
from load.pool import WorkerPool
from load.processes import HOST, RedisProcess, ServerProcess
from load.publisher import (
    HttpPublisher,
    Publisher,
    PublishOutcome,
    RedisPublisher,
    publish_on_schedule,
)
from load.report import Result
from load.schedule import RateSchedule
from load.worker import ConnectOrder, ConnectReport, Peek, Receipts, Reconnects

#: pushhub settings that guard against abusive clients, raised out of the way of a load
#: run whose clients all share one IP (see Harness.pushhub_config).
LIFTED_LIMITS = {
    "max_connections_per_ip": 10_000_000,
    "connections_per_second_per_ip": 1_000_000,
    "publish_rate": 10_000_000,
    "publish_burst": 100_000_000,
}

#: The window over which --wait-quiet judges the machine.
QUIET_WINDOW_S = 2.0
#: A drain ends when nothing has arrived for this long (or everything has).
DRAIN_QUIET_S = 1.0
#: ... and after this long at most.
DRAIN_CAP_S = 30.0
#: After a storm, frames are counted until none has arrived for this long (presence
#: events come at the server's next tick) ...
FRAMES_QUIET_S = 0.5
#: ... or this long at most.
FRAMES_CAP_S = 5.0


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU and memory over a window. CPU is percent of one core."""

    seconds: float
    server_cpu: float
    server_rss_kib: int
    server_hwm_kib: int
    worker_cpu: list[float]
    #: This process: the publisher (and the harness's bookkeeping).
    publisher_cpu: float
    redis_cpu: float
    #: Everything on the generator's cores (or the whole machine when nothing is pinned).
    generator_cpu: float
    generator_cores: int
    #: CPU the machine spent on anything but this run (other work, the kernel): noise.
    other_cpu: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    procs: dict[int, procstat.ProcSample | None]
    #: (monotonic time, busy CPU seconds of the whole machine)
    machine: tuple[float, float]


@dataclass(slots=True)
class ConnectOutcome:
    attempted: int
    connected: int
    failures: int
    errors: list[str]
    seconds: float
    latency: LatencyHistogram
    subscribers: list[int]
    usage: Usage
    #: Attempts refused with 503, and failed attempts retried after a backoff.
    refused: int = 0
    retries: int = 0
    #: Data frames and presence lines the clients received from the start of the phase
    #: until the frames stopped (with ``count_frames``; else None).
    frames: int | None = None
    presence: int | None = None

    @property
    def rate(self) -> float:
        return self.connected / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Delivery:
    """What one publish phase sent and what arrived."""

    outcome: PublishOutcome
    usage: Usage
    loss: Loss
    latency: LatencyHistogram
    first_ns: int
    last_ns: int
    disconnects: int
    bad: int
    drain_timed_out: bool
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        end = max(self.last_ns, self.outcome.finished_ns)
        return max(1e-9, (end - self.outcome.started_ns) / 1e9)


#: A stream's schedule is open-ended: it runs until stopped (the bound is never reached
#: in a bounded run: an hour at 2,000 msg/s).
MAX_STREAM_MESSAGES = 7_200_000


@dataclass(slots=True)
class Stream:
    """A publish running in the background (``Harness.stream_start``)."""

    first_seq: int
    began: float
    before: Snapshot
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Future[PublishOutcome] | None = None
    #: Receipts of every phase collected so far.
    receipts: list[Receipts] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Restart:
    """A restart's timings (time.time_ns for instants)."""

    cut_ns: int
    restart_ns: int
    #: When SIGTERM actually went out.
    signalled_ns: int
    #: SIGTERM to exit, SIGTERM to ready again, in seconds.
    stop_s: float
    outage_s: float
    #: A worker applied the cut after it was due (a receipt may have counted wrongly).
    cut_late: bool


class Harness:
    def __init__(
        self,
        opts: Options,
        target: str,
        *,
        deadline: float | None = None,
        emit: Callable[[Result], None] | None = None,
    ) -> None:
        self.opts = opts
        self.target = target
        #: time.monotonic() by which this target's run must be over.
        self.deadline = deadline if deadline is not None else time.monotonic() + opts.max_duration
        self._emit = emit
        self.redis: RedisProcess | None = None
        self.server: ServerProcess | None = None
        self.pool: WorkerPool | None = None
        self.publisher: Publisher | None = None
        self.ledger = Ledger([])
        #: A fresh prefix per run, so a shared Redis never mixes two runs' channels.
        self.prefix = f"load.{secrets.token_hex(3)}."
        self.began = time.monotonic()
        self._padding = "x" * max(0, opts.payload_bytes - 40)

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Harness:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        opts = self.opts
        redis_url = opts.redis_url
        if redis_url is None:
            self.redis = RedisProcess(opts.client_cpus)
            self.redis.start()
            redis_url = self.redis.url
        self.server = ServerProcess(self.target, redis_url, opts.server_cpus, self.pushhub_config())
        self.server.start()
        # Workers stop by themselves shortly after the run's deadline, whatever happens here.
        self.pool = WorkerPool(opts.workers, opts.client_cpus, time.time() + self.time_left() + 30)
        await self.pool.start()
        if opts.publish == "http":
            self.publisher = HttpPublisher(HOST, self.server.port, opts.http_connections)
        else:
            self.publisher = RedisPublisher(redis_url)
        await self.publisher.start()
        self.log(f"started: {self.target} pid {self.server.pid} on port {self.server.port}")

    async def _stop(self) -> None:
        # Processes are stopped in the finally blocks, so that even a second interrupt
        # during the polite part of the shutdown leaves nothing running.
        try:
            if self.publisher is not None:
                with contextlib.suppress(Exception):
                    await self.publisher.close()
        finally:
            self.publisher = None
            try:
                if self.pool is not None:
                    with contextlib.suppress(Exception):
                        await self.pool.close()
            finally:
                if self.pool is not None:
                    self.pool.kill()
                self.pool = None
                for proc in (self.server, self.redis):
                    if proc is not None:
                        proc.stop()
                self.server = self.redis = None

    # -- helpers ------------------------------------------------------------------

    def log(self, message: str) -> None:
        log(f"[{self.target} {self.opts.scenario} {time.monotonic() - self.began:.0f}s] {message}")

    def pushhub_config(self) -> str:
        """pushhub's configuration file for the run (TOML).

        Every load client comes from 127.0.0.1, so pushhub's per-IP and per-key guards
        against abuse (connections, connection rate, publish rate) would be measured
        instead of its hot path: they are lifted. Admission control (max_handshakes) is
        not a guard against abuse: it stays at pushhub's default unless --max-handshakes.
        Presence is off on the run's channels unless --presence, since the reference has
        none.
        """
        lines = [f"{name} = {value}" for name, value in LIFTED_LIMITS.items()]
        if self.opts.max_handshakes is not None:
            lines.append(f"max_handshakes = {self.opts.max_handshakes}")
        lines += ["", "[[channels]]", f'pattern = "{self.prefix}*"']
        if not self.opts.presence:
            lines += ["presence = false", "join_leave = false"]
        return "\n".join(lines) + "\n"

    def channel_name(self, channel: int) -> str:
        return self.prefix + str(channel)

    @property
    def workers(self) -> WorkerPool:
        assert self.pool is not None, "the harness is not started"
        return self.pool

    @property
    def server_pid(self) -> int:
        assert self.server is not None, "the harness is not started"
        return self.server.pid

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def emit(self, result: Result) -> None:
        """Hand a finished record to the output as soon as it exists."""
        if self._emit is not None:
            self._emit(result)

    # -- measurement windows ----------------------------------------------------------

    def _generator_pids(self) -> list[int]:
        pids = [os.getpid(), *self.workers.pids]
        if self.redis is not None:
            pids.append(self.redis.pid)
        if not self.opts.client_cpus:
            pids.append(self.server_pid)  # unpinned: everything shares every core
        return pids

    def snapshot(self) -> Snapshot:
        pids = {self.server_pid, *self._generator_pids()}
        return Snapshot({pid: procstat.sample(pid) for pid in pids}, procstat.machine_busy())

    def usage(self, start: Snapshot) -> Usage:
        end = self.snapshot()
        before, after = start.procs, end.procs

        def cpu(pid: int) -> float:
            a, b = before.get(pid), after.get(pid)
            return procstat.cpu_percent(a, b) if a and b else 0.0

        server = after.get(self.server_pid)
        seconds = max((s.time for s in after.values() if s), default=0.0) - min(
            (s.time for s in before.values() if s), default=0.0
        )
        cores = len(self.opts.client_cpus) or (os.cpu_count() or 1)
        (t0, busy0), (t1, busy1) = start.machine, end.machine
        machine = 100 * (busy1 - busy0) / (t1 - t0) if t1 > t0 else 0.0
        ours = sum(cpu(pid) for pid in after)
        return Usage(
            seconds=seconds,
            server_cpu=cpu(self.server_pid),
            server_rss_kib=server.rss_kib if server else 0,
            server_hwm_kib=server.hwm_kib if server else 0,
            worker_cpu=[cpu(pid) for pid in self.workers.pids],
            publisher_cpu=cpu(os.getpid()),
            redis_cpu=cpu(self.redis.pid) if self.redis is not None else 0.0,
            generator_cpu=sum(cpu(pid) for pid in self._generator_pids()),
            generator_cores=cores,
            other_cpu=max(0.0, machine - ours),
        )

    @contextlib.asynccontextmanager
    async def progress(self, phase: str, detail: Callable[[], str]) -> AsyncIterator[None]:
        """Print a progress line to stderr every few seconds while the block runs."""
        task = asyncio.get_running_loop().create_task(self._progress(phase, detail))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _progress(self, phase: str, detail: Callable[[], str]) -> None:
        last_msgs, last_snap = 0, self.snapshot()
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(self.opts.progress_every)
            peeks: list[Peek] = await self.workers.ask_all("peek", wait_s=10)
            now = time.monotonic()
            msgs = sum(p.messages for p in peeks)
            use = self.usage(last_snap)
            rate = max(0, msgs - last_msgs) / max(1e-9, now - last_t)
            extra = detail()
            self.log(
                f"{phase}: {extra + ' | ' if extra else ''}"
                f"clients {sum(p.connected for p in peeks):,} | "
                f"received {msgs:,} ({rate:,.0f}/s) | "
                f"server CPU {use.server_cpu:.0f}% RSS {use.server_rss_kib / 1024:.0f} MiB | "
                f"generator CPU {use.generator_cpu:.0f}%"
            )
            last_msgs, last_snap, last_t = msgs, self.snapshot(), now

    # -- phases ---------------------------------------------------------------------

    async def wait_quiet(self) -> None:
        """With --wait-quiet: wait until other processes leave the CPUs alone (or give up
        after that many seconds and measure anyway; the result then says it was noisy)."""
        if self.opts.wait_quiet <= 0:
            return
        give_up = time.monotonic() + min(self.opts.wait_quiet, max(0.0, self.time_left() - 60))
        while True:
            start = self.snapshot()
            await asyncio.sleep(QUIET_WINDOW_S)
            other = self.usage(start).other_cpu
            if other < verdict.QUIET_OTHER_CPU:
                return
            if time.monotonic() >= give_up:
                self.log(f"other processes still use {other:.0f}% CPU; measuring anyway")
                return
            self.log(f"waiting for a quiet machine: other processes use {other:.0f}% CPU")

    async def connect(
        self,
        assignment: Sequence[int],
        channels: int,
        concurrency: int,
        *,
        retry_for: float = 0.0,
        reconnect: bool = False,
        windowed: bool = False,
        count_frames: bool = False,
        ledger: bool = True,
        at_start: Callable[[], Awaitable[object]] | None = None,
    ) -> ConnectOutcome:
        """Open len(assignment) clients, client i subscribed to channel assignment[i].

        Every worker starts at the same instant; ``concurrency`` bounds how many
        connections are opening at once across all workers. ``retry_for``,
        ``reconnect`` and ``windowed`` go to the workers (see ``ConnectOrder``).
        ``count_frames``: afterwards, wait for the frames to stop (presence events come
        at the server's tick) and count the frames and presence lines received.
        ``ledger``: the new clients are the ones the next publish expects to reach.
        ``at_start``: awaited at the instant the workers start connecting.
        """
        assert self.server is not None
        await self.wait_quiet()
        pool = self.workers
        count = len(pool.workers)
        per_worker = max(1, math.ceil(concurrency / count))
        peeks: list[Peek] = await pool.ask_all("peek") if count_frames else []
        frames0, presence0 = sum(p.frames for p in peeks), sum(p.presence for p in peeks)
        start_at = time.time() + 0.5
        orders = [
            (
                "connect",
                ConnectOrder(
                    self.server.ws_url,
                    self.prefix,
                    list(assignment[k::count]),
                    start_at,
                    per_worker,
                    self.opts.connect_timeout,
                    retry_for,
                    reconnect,
                    windowed,
                ),
            )
            for k in range(count)
        ]
        asked = asyncio.ensure_future(pool.ask_each(orders, wait_s=self.time_left()))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        if at_start is not None:
            await at_start()
        before = self.snapshot()
        total = len(assignment)
        async with self.progress("connecting", lambda: f"{total:,} to open"):
            reports: list[ConnectReport] = await asyncio.shield(asked)
        usage = self.usage(before)
        subscribers = [0] * channels
        for report in reports:
            for channel, n in report.subscribed.items():
                subscribers[channel] += n
        if ledger:
            self.ledger = Ledger(subscribers)
        outcome = ConnectOutcome(
            attempted=sum(r.attempted for r in reports),
            connected=sum(r.connected for r in reports),
            failures=sum(r.failures for r in reports),
            errors=[e for r in reports for e in r.errors][:5],
            seconds=max(r.finished for r in reports) - start_at,
            latency=LatencyHistogram.merged(
                LatencyHistogram.from_state(r.latency) for r in reports
            ),
            subscribers=subscribers,
            usage=usage,
            refused=sum(r.refused for r in reports),
            retries=sum(r.retries for r in reports),
        )
        if count_frames:
            frames, presence = await self.frames_settled()
            outcome.frames, outcome.presence = frames - frames0, presence - presence0
        self.log(
            f"connected {outcome.connected:,}/{outcome.attempted:,} in {outcome.seconds:.1f}s "
            f"({outcome.rate:,.0f}/s), {outcome.failures} failed, {outcome.refused} refused"
            + (f": {outcome.errors[0]}" if outcome.errors else "")
            + (
                f"; {outcome.frames:,} frames, {outcome.presence:,} presence lines"
                if outcome.frames is not None
                else ""
            )
        )
        return outcome

    async def frame_counts(self) -> tuple[int, int]:
        """Frames and presence lines the clients received since the workers started."""
        peeks: list[Peek] = await self.workers.ask_all("peek", wait_s=10)
        return sum(p.frames for p in peeks), sum(p.presence for p in peeks)

    async def frames_settled(self) -> tuple[int, int]:
        """Frames and presence lines received so far, once no frame has come for
        FRAMES_QUIET_S (or after FRAMES_CAP_S)."""
        cap = time.monotonic() + FRAMES_CAP_S
        last, last_change = (-1, -1), time.monotonic()
        while True:
            got = await self.frame_counts()
            now = time.monotonic()
            if got != last:
                last, last_change = got, now
            elif now - last_change >= FRAMES_QUIET_S or now >= cap:
                return got
            await asyncio.sleep(0.05)

    async def restore(self) -> int:
        """Open again the clients the server closed (say, as slow consumers), so the next
        phase runs with every client; return how many were reopened. Channels whose
        clients cannot be reopened expect fewer receipts from then on."""
        assert self.server is not None
        pool = self.workers
        lost: list[list[int]] = await pool.ask_all("lost")
        if not any(lost):
            return 0
        per_worker = max(1, math.ceil(self.opts.connect_concurrency / len(pool.workers)))
        orders = [
            (
                "connect",
                ConnectOrder(
                    self.server.ws_url,
                    self.prefix,
                    channels,
                    time.time(),
                    per_worker,
                    self.opts.connect_timeout,
                ),
            )
            for channels in lost
        ]
        reports: list[ConnectReport] = await pool.ask_each(orders, wait_s=self.time_left())
        reopened = 0
        for channels, report in zip(lost, reports, strict=True):
            reopened += report.connected
            missing: dict[int, int] = {}
            for channel in channels:
                missing[channel] = missing.get(channel, 0) + 1
            for channel, n in missing.items():
                self.ledger.subscribers[channel] -= n - report.subscribed.get(channel, 0)
        self.log(f"reopened {reopened:,} of {sum(map(len, lost)):,} clients the server closed")
        return reopened

    async def publish(
        self,
        rate: float,
        pick: Callable[[int], int],
        *,
        duration: float | None = None,
        total: int | None = None,
    ) -> Delivery:
        """Publish at ``rate`` for ``duration`` seconds (or ``total`` messages), message i
        to channel ``pick(i)``; wait until everything expected has arrived (or nothing
        more does), then account for it."""
        assert self.publisher is not None
        await self.wait_quiet()
        start = time.monotonic() + 0.05
        if total is not None:
            schedule = RateSchedule(rate, total, start)
        else:
            assert duration is not None, "give a duration or a total"
            schedule = RateSchedule.for_duration(rate, duration, start)
        before = self.snapshot()
        sent_so_far = self.ledger.published

        def detail() -> str:
            return f"published {self.ledger.published - sent_so_far:,}/{schedule.total:,}"

        async with self.progress(f"publishing {rate:g}/s", detail):
            outcome = await publish_on_schedule(
                self.publisher, schedule, self.ledger, pick, self.channel_name, self._padding
            )
            expected = sum(self.ledger.expected(outcome.first_seq, outcome.stop_seq))
            drained = await self.drain(expected)
        usage = self.usage(before)
        receipts: list[Receipts] = await self.workers.ask_all("collect", outcome.stop_seq)
        return self._account(outcome, usage, receipts, timed_out=not drained)

    # -- a stream that runs while the scenario does something else -----------------------

    async def stream_start(self, rate: float, pick: Callable[[int], int]) -> Stream:
        """Start publishing at ``rate`` (message i to channel ``pick(i)``) in the
        background, until ``stream_stop``. Receipts are counted from here on."""
        assert self.publisher is not None
        first = self.ledger.published
        await self.workers.ask_all("collect", first)  # count from the stream's first message
        stream = Stream(first, time.monotonic(), self.snapshot())
        schedule = RateSchedule(rate, MAX_STREAM_MESSAGES, time.monotonic() + 0.05)
        stream.task = asyncio.ensure_future(
            publish_on_schedule(
                self.publisher,
                schedule,
                self.ledger,
                pick,
                self.channel_name,
                self._padding,
                until=stream.stop.is_set,
            )
        )
        return stream

    async def stream_collect(self, stream: Stream) -> list[Receipts]:
        """The stream's receipts since the last collect (a phase of it)."""
        receipts: list[Receipts] = await self.workers.ask_all("collect", stream.first_seq)
        stream.receipts += receipts
        return receipts

    async def stream_stop(self, stream: Stream) -> Delivery:
        """Stop the stream, wait for what is expected, and account for it by windows:
        each message is expected once per counting window of its channel that holds its
        publish time (``load.ledger``)."""
        assert stream.task is not None
        stream.stop.set()
        outcome = await stream.task
        windows: list[list[Window]] = await self.workers.ask_all("windows")
        expected = expected_in_windows(
            self.ledger.channels(outcome.first_seq, outcome.stop_seq),
            self.ledger.stamps(outcome.first_seq, outcome.stop_seq),
            (w for part in windows for w in part),
        )
        # drain() counts what arrived since the last collect; earlier phases are in hand.
        counted = sum(r.messages for r in stream.receipts)
        drained = await self.drain(sum(expected) - counted)
        usage = self.usage(stream.before)
        await self.stream_collect(stream)
        return self._account(outcome, usage, stream.receipts, not drained, expected)

    async def drain(self, expected: int) -> bool:
        """Wait until ``expected`` messages arrived; False if arrivals stopped short."""
        last, last_change = -1, time.monotonic()
        cap = time.monotonic() + min(DRAIN_CAP_S, max(1.0, self.time_left() - 5))
        while True:
            peeks: list[Peek] = await self.workers.ask_all("peek", wait_s=10)
            got = sum(p.messages for p in peeks)
            now = time.monotonic()
            if got >= expected:
                return True
            if got != last:
                last, last_change = got, now
            elif now - last_change >= DRAIN_QUIET_S or now >= cap:
                return False
            await asyncio.sleep(0.05)

    def _account(
        self,
        outcome: PublishOutcome,
        usage: Usage,
        receipts: list[Receipts],
        timed_out: bool,
        expected: list[int] | None = None,
    ) -> Delivery:
        parts = []
        for r in receipts:
            counts = array("I")
            counts.frombytes(r.counts)
            parts.append((r.base, counts))
        merged, outside = merge_receipts(parts, outcome.first_seq, outcome.stop_seq)
        late = sum(r.late for r in receipts)
        if expected is None:
            loss = self.ledger.account(outcome.first_seq, outcome.stop_seq, merged, outside + late)
        else:
            loss = account(expected, merged, outside + late)
        firsts = [r.first_ns for r in receipts if r.first_ns]
        delivery = Delivery(
            outcome=outcome,
            usage=usage,
            loss=loss,
            latency=LatencyHistogram.merged(
                LatencyHistogram.from_state(r.latency) for r in receipts
            ),
            first_ns=min(firsts, default=0),
            last_ns=max((r.last_ns for r in receipts), default=0),
            disconnects=sum(n for r in receipts for n in r.disconnects.values()),
            bad=sum(r.bad for r in receipts),
            drain_timed_out=timed_out,
        )
        codes: dict[int, int] = {}
        for r in receipts:
            for code, n in r.disconnects.items():
                codes[code] = codes.get(code, 0) + n
        if codes:
            delivery.notes.append(
                "closed by server: " + ", ".join(f"{n} with {c}" for c, n in sorted(codes.items()))
            )
        if delivery.bad:
            delivery.notes.append(f"{delivery.bad} unreadable frames")
        if loss.unexpected:
            delivery.notes.append(f"{loss.unexpected} late receipts")
        self.log(
            f"published {outcome.sent:,}, delivered {loss.received:,}/{loss.expected:,} "
            f"in {delivery.seconds:.1f}s, lost {loss.lost:,}"
        )
        return delivery

    # -- the restart ------------------------------------------------------------------

    async def restart_server(self, lead_s: float, guard_s: float) -> Restart:
        """Restart the server under test on its port: announce the cut to the workers
        ``lead_s`` ahead (the counting windows of the connections open then end there),
        SIGTERM ``guard_s`` after the cut, start it again, and return the timings. The
        event loop keeps running meanwhile (a stream goes on publishing)."""
        assert self.server is not None
        cut_ns = time.time_ns() + int(lead_s * 1e9)
        restart_ns = cut_ns + int(guard_s * 1e9)
        applied: list[int] = await self.workers.ask_all("cut", (cut_ns, restart_ns))
        late = max(applied) > cut_ns
        await asyncio.sleep(max(0.0, (restart_ns - time.time_ns()) / 1e9))
        signalled_ns = time.time_ns()
        self.log("restarting the server (SIGTERM)")
        stop_s, outage_s = await asyncio.to_thread(self.server.restart)
        self.log(f"server back after {outage_s:.2f}s (pid {self.server.pid})")
        return Restart(cut_ns, restart_ns, signalled_ns, stop_s, outage_s, late)

    async def wait_back(self, clients: int, give_up_s: float) -> bool:
        """Wait until ``clients`` clients are subscribed again after the restart (or have
        given up); False if that did not happen within ``give_up_s``."""
        end = time.monotonic() + min(give_up_s, max(1.0, self.time_left() - 10))
        while True:
            peeks: list[Peek] = await self.workers.ask_all("peek", wait_s=10)
            if sum(p.back + p.gave_up for p in peeks) >= clients:
                return True
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.05)

    async def reconnects(self) -> list[Reconnects]:
        answers: list[Reconnects] = await self.workers.ask_all("reconnects")
        return answers

    # -- results ----------------------------------------------------------------------

    def result(self, channels: int, **fields: object) -> Result:
        """A Result with the run's shape filled in."""
        result = Result(
            scenario=self.opts.scenario,
            target=self.target,
            clients=self.opts.clients,
            channels=channels,
            workers=self.opts.workers,
            publish=self.opts.publish,
            presence=self.opts.presence if self.target == "pushhub" else None,
        )
        for name, value in fields.items():
            setattr(result, name, value)
        return result


def _ms(micros: int | None) -> float | None:
    return None if micros is None else micros / 1000


def add_connect(result: Result, conn: ConnectOutcome) -> None:
    result.connected = conn.connected
    result.connect_failures = conn.failures
    result.connect_per_s = conn.rate
    result.connect_p99_ms = _ms(conn.latency.percentile(99))
    result.connect_refused = conn.refused
    result.connect_retries = conn.retries
    if conn.errors:
        result.notes.append(f"connect error: {conn.errors[0]}")


def add_usage(result: Result, usage: Usage) -> None:
    result.server_cpu_pct = usage.server_cpu
    result.server_rss_mib = usage.server_rss_kib / 1024
    result.server_rss_peak_mib = usage.server_hwm_kib / 1024
    result.generator_cpu_pct = usage.generator_cpu
    result.worker_cpu_max_pct = max(usage.worker_cpu, default=0.0)
    result.worker_cpu_pct = sum(usage.worker_cpu)
    result.publisher_cpu_pct = usage.publisher_cpu
    result.redis_cpu_pct = usage.redis_cpu
    result.other_cpu_pct = usage.other_cpu


def add_delivery(result: Result, d: Delivery) -> None:
    result.duration_s = d.seconds
    result.published = d.outcome.sent
    result.expected = d.loss.expected
    result.delivered = d.loss.received
    result.lost = d.loss.lost
    result.duplicated = d.loss.duplicated
    result.delivered_per_s = d.loss.received / d.seconds
    result.latency_p50_ms = _ms(d.latency.percentile(50))
    result.latency_p99_ms = _ms(d.latency.percentile(99))
    result.latency_max_ms = _ms(d.latency.max if d.latency.total else None)
    result.disconnects = d.disconnects
    result.publisher_max_lag_ms = d.outcome.max_lag_s * 1000
    result.notes.extend(d.notes)
    add_usage(result, d.usage)


def judge(
    result: Result,
    usage: Usage,
    max_lag_s: float = 0.0,
    max_p99_ms: float | None = None,
    shown: Usage | None = None,
) -> None:
    """Set ``ok``, ``generator_bottleneck`` and their reasons on a finished result.

    ``usage`` is the window whose generator is judged; ``shown`` (default the same) the
    window whose figures the result reports, judged for noise from other work."""
    shown = shown or usage
    problems = verdict.failures(
        lost=result.lost,
        disconnects=result.disconnects,
        connect_failures=result.connect_failures,
        p99_ms=result.latency_p99_ms,
        max_p99_ms=max_p99_ms,
    )
    reasons = verdict.generator_reasons(
        worker_cpu=usage.worker_cpu,
        generator_cpu=usage.generator_cpu,
        cores=usage.generator_cores,
        seconds=usage.seconds,
        max_lag_s=max_lag_s,
    )
    result.ok = not problems
    result.generator_bottleneck = bool(reasons)
    noise = verdict.noise(shown.other_cpu, shown.seconds)
    result.notes = problems + reasons + noise + result.notes
