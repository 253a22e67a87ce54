"""A client worker process: many WebSocket clients on one event loop, measuring receipts.

The parent talks to each worker over a pipe with tagged requests, answered in any
order: ``connect`` (open and subscribe clients), ``peek`` (counters for progress),
``collect`` (receipts since the last collect, then start counting afresh), ``lost``
(the channels of clients the server closed, to open again), ``cut`` (the restart is
coming: end the counting windows of the connections open now), ``windows`` (every
counting window so far), ``reconnects`` (how the clients came back) and ``close``.

Clients opened with ``retry_for`` retry a failed or refused (503) attempt with the
browser client's backoff (``load.backoff``); with ``reconnect`` they also come back by
themselves when the server closes them, and resubscribe. With ``windowed``, a client
counts a message only when its publish time lies in the connection's window: from the
moment the subscribe was confirmed until the connection was lost, or until the cut
(``load.ledger`` has the rules; the parent expects messages by the same windows).
A worker exits by itself at its deadline or when the parent's end of the pipe closes,
so no run outlives its bound even if the parent is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.exceptions import InvalidStatus

from load import backoff, runtime
from load.client import LoadConnection, Slot, open_connection
from load.histogram import HistogramState, LatencyHistogram
from load.ledger import OPEN, Window

#: Event types that are presence: per-member events and the counts past the bound.
PRESENCE_TYPES = frozenset({"join", "leave", "presence_count"})


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    cpus: tuple[int, ...]
    #: Wall-clock time (time.time()) at which the worker exits whatever it is doing.
    deadline: float


@dataclass(frozen=True, slots=True)
class ConnectOrder:
    url: str
    #: Channel name of client i is prefix + str(channels[i]).
    prefix: str
    channels: list[int]
    #: Wall-clock time to start at, so that every worker starts together.
    start_at: float
    #: Connections opening at once in this worker.
    concurrency: int
    timeout: float
    #: Seconds a client keeps retrying a failed or refused attempt, with the backoff,
    #: before it counts as failed (0: one attempt, no retry).
    retry_for: float = 0.0
    #: Come back by itself (backoff, reconnect, resubscribe) when the server closes it.
    reconnect: bool = False
    #: Count messages by the connection's window (see the module docstring).
    windowed: bool = False


@dataclass(slots=True)
class ConnectReport:
    attempted: int = 0
    connected: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    #: Connect + subscribe time of each client, in microseconds.
    latency: HistogramState = ({}, 0, 0, 0)
    #: channel -> clients subscribed to it.
    subscribed: dict[int, int] = field(default_factory=dict)
    #: Attempts the server refused with HTTP 503 (too many handshakes in progress).
    refused: int = 0
    #: Failed attempts (refused or not) that were retried after a backoff.
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Peek:
    messages: int
    connected: int
    disconnects: int
    #: Data frames and presence lines received since the worker started.
    frames: int = 0
    presence: int = 0
    #: Clients subscribed again since the restart (confirmed after it), and clients
    #: that gave up coming back.
    back: int = 0
    gave_up: int = 0


@dataclass(frozen=True, slots=True)
class Reconnects:
    """How the clients came back after the restart."""

    #: Clients subscribed on a connection confirmed after the restart.
    back: int
    #: Per client: its current subscription's confirmation time minus the restart, in µs.
    latency: HistogramState
    last_back_ns: int
    #: The reconnect attempts: refusals, retries, clients that gave up, their errors.
    attempts: ConnectReport
    #: Close code -> connections the restart closed.
    closes: dict[int, int]


@dataclass(frozen=True, slots=True)
class Receipts:
    #: counts[i] is how often sequence number base + i arrived.
    base: int
    counts: bytes
    #: Messages with a sequence number below base (from an earlier collect's range).
    late: int
    messages: int
    frames: int
    #: Lines that were not JSON, or messages without our sequence and timestamp.
    bad: int
    #: Other events (for instance presence joins), neither replies nor messages.
    other: int
    first_ns: int
    last_ns: int
    #: End-to-end latency of each message, in microseconds.
    latency: HistogramState
    #: Close code -> clients closed by the server since the last collect.
    disconnects: dict[int, int]
    #: Messages outside the receiving connection's window (not counted, not timed).
    uncounted: int = 0


MAX_ERRORS_KEPT = 5
#: A sequence number this far past the collect's base cannot be one the parent published
#: (the ramp's longest step publishes far fewer); counting it would grow a list for nothing.
MAX_SEQ_AHEAD = 50_000_000


class Worker:
    def __init__(self, pipe: Connection, spec: WorkerSpec) -> None:
        self.pipe = pipe
        self.spec = spec
        self.clients: set[LoadConnection] = set()
        self.disconnects_total = 0
        #: Channels of clients the server closed, for the parent to open again.
        self.lost: list[int] = []
        self._stopped: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._random = random.Random()
        #: Since the worker started: every data frame, every presence line.
        self.frames_total = 0
        self.presence_total = 0
        #: The restart's cut and signal (time.time_ns), once the parent announced them.
        self.cut_ns = 0
        self.restart_ns = 0
        #: Windows of connections already lost.
        self.windows_closed: list[Window] = []
        #: Reconnect attempts after the server closed a client that comes back by itself.
        self.rejoin = ConnectReport()
        self.restart_closes: dict[int, int] = {}
        self._reset(0)

    def _reset(self, base: int) -> None:
        self.base = base
        self.counts: list[int] = []
        self.late = 0
        self.messages = 0
        self.frames = 0
        self.bad = 0
        self.other = 0
        self.uncounted = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latency = LatencyHistogram()
        self.disconnects: dict[int, int] = {}

    # -- the hot path: called by every connection for every data frame ----------------------

    def on_data(self, client: LoadConnection, payload: bytes) -> None:
        now = time.time_ns()
        self.frames += 1
        self.frames_total += 1
        for line in payload.split(b"\n"):
            try:
                event = orjson.loads(line)
                if event["type"] != "message":
                    self._on_reply(client, event, now)
                    continue
                data = event["data"]
                seq, sent = data["s"], data["t"]
                index = seq - self.base
                latency = (now - sent) // 1000
                counted = client.window_start <= sent < client.window_end
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.bad += 1
                continue
            if not counted:
                self.uncounted += 1
                continue
            if index < 0:
                self.late += 1
            else:
                counts = self.counts
                if index >= len(counts):
                    if index > MAX_SEQ_AHEAD:  # not one of ours: do not grow without bound
                        self.bad += 1
                        continue
                    counts.extend([0] * (index - len(counts) + 4096))
                counts[index] += 1
            self.latency.record(latency)
            self.messages += 1
            self.last_ns = now
            if not self.first_ns:
                self.first_ns = now

    def _on_reply(self, client: LoadConnection, event: dict[str, Any], now: int) -> None:
        pending = client.pending
        kind = event["type"]
        if pending is None or pending.done() or kind not in ("subscribed", "error"):
            self.other += 1
            if kind in PRESENCE_TYPES:
                self.presence_total += 1
        elif kind == "subscribed":
            client.confirmed_ns = now
            if client.windowed:
                client.window_start = now
                if self.cut_ns and now < self.restart_ns:
                    # Between the cut and the restart: this connection is about to be
                    # closed; it counts for nothing (an empty window).
                    client.window_end = self.cut_ns
            pending.set_result(None)
        else:
            pending.set_exception(ConnectionError(f"subscribe refused: {event}"))

    def on_lost(self, client: LoadConnection) -> None:
        if client in self.clients:
            self.clients.discard(client)
            now = time.time_ns()
            if client.windowed and client.confirmed_ns:
                end = min(client.window_end, now)
                self.windows_closed.append((client.channel, client.window_start, end))
            if client.leaving or self._closing:
                return
            code = client.close_code or 1006
            slot = client.slot
            if self.cut_ns and client.confirmed_ns and client.confirmed_ns < self.restart_ns:
                # Open before the restart: the restart closed it (or it closed meanwhile).
                self.restart_closes[code] = self.restart_closes.get(code, 0) + 1
            else:
                self.disconnects[code] = self.disconnects.get(code, 0) + 1
                self.disconnects_total += 1
            if slot is not None and slot.order.reconnect:
                lived = (now - client.confirmed_ns) / 1e9 if client.confirmed_ns else None
                self._spawn(self._come_back(slot, lived))
            else:
                self.lost.append(client.channel)

    # -- commands ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        LoadConnection.sink = self
        loop.add_reader(self.pipe.fileno(), self._on_pipe)
        # uvloop makes a watched fd non-blocking; sending a large answer must block
        # until the parent has read it, not fail half-written.
        os.set_blocking(self.pipe.fileno(), True)
        loop.call_later(max(0.0, self.spec.deadline - time.time()), self._stop)
        self._send("hello", None)
        try:
            await self._stopped
        finally:
            loop.remove_reader(self.pipe.fileno())
            await self._close_clients()

    def _stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _send(self, tag: Any, payload: Any) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send((tag, payload))

    def _on_pipe(self) -> None:
        try:
            while self.pipe.poll():
                tag, command, arg = self.pipe.recv()
                self._dispatch(tag, command, arg)
        except (EOFError, OSError):  # the parent is gone
            self._stop()

    def _dispatch(self, tag: int, command: str, arg: Any) -> None:
        if command == "peek":
            self._send(tag, self._peek())
        elif command == "cut":
            self._send(tag, self._cut(*arg))
        elif command == "windows":
            self._send(tag, self._windows())
        elif command == "reconnects":
            self._send(tag, self._reconnects())
        elif command == "collect":
            self._send(tag, self._collect(arg))
        elif command == "lost":
            self._send(tag, self.lost)
            self.lost = []
        elif command == "connect":
            self._spawn(self._reply_connect(tag, arg))
        elif command == "close":
            self._spawn(self._reply_close(tag))
        else:
            self._send(tag, ValueError(f"unknown command {command!r}"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _collect(self, next_base: int) -> Receipts:
        counts = array("I", self.counts[: self._used()])
        receipts = Receipts(
            self.base,
            counts.tobytes(),
            self.late,
            self.messages,
            self.frames,
            self.bad,
            self.other,
            self.first_ns,
            self.last_ns,
            self.latency.state(),
            dict(self.disconnects),
            self.uncounted,
        )
        self._reset(next_base)
        return receipts

    def _peek(self) -> Peek:
        back = 0
        if self.restart_ns:
            restart = self.restart_ns
            back = sum(1 for ws in self.clients if ws.confirmed_ns >= restart)
        return Peek(
            self.messages,
            len(self.clients),
            self.disconnects_total,
            self.frames_total,
            self.presence_total,
            back,
            self.rejoin.failures,
        )

    def _cut(self, cut_ns: int, restart_ns: int) -> int:
        """The restart comes at ``restart_ns``: the windows of the connections open now
        end at ``cut_ns`` (in the future). Returns the time the cut was applied."""
        self.cut_ns, self.restart_ns = cut_ns, restart_ns
        for ws in self.clients:
            if ws.windowed and ws.window_end > cut_ns:
                ws.window_end = cut_ns
        return time.time_ns()

    def _windows(self) -> list[Window]:
        current = [
            (ws.channel, ws.window_start, ws.window_end)
            for ws in self.clients
            if ws.windowed and ws.confirmed_ns
        ]
        return self.windows_closed + current

    def _reconnects(self) -> Reconnects:
        latency = LatencyHistogram()
        restart, last = self.restart_ns, 0
        for ws in self.clients:
            if restart and ws.confirmed_ns >= restart:
                latency.record((ws.confirmed_ns - restart) // 1000)
                last = max(last, ws.confirmed_ns)
        return Reconnects(latency.total, latency.state(), last, self.rejoin, self.restart_closes)

    def _used(self) -> int:
        counts = self.counts
        end = len(counts)
        while end and not counts[end - 1]:
            end -= 1
        return end

    async def _reply_connect(self, tag: int, order: ConnectOrder) -> None:
        try:
            self._send(tag, await self._connect(order))
        except Exception as exc:
            self._send(tag, exc)

    async def _reply_close(self, tag: int) -> None:
        await self._close_clients()
        self._send(tag, "closed")
        self._stop()

    async def _connect(self, order: ConnectOrder) -> ConnectReport:
        report = ConnectReport(attempted=len(order.channels))
        latency = LatencyHistogram()
        gate = asyncio.Semaphore(max(1, order.concurrency))
        await asyncio.sleep(max(0.0, order.start_at - time.time()))
        report.started = time.time()

        async def one(channel: int) -> None:
            slot = Slot(channel, order)
            if not await self._keep(slot, report, gate):
                report.failures += 1
                return
            # From its first attempt (not its wait for the gate), backoffs included.
            latency.record(int((time.perf_counter() - slot.began) * 1_000_000))
            report.connected += 1
            report.subscribed[channel] = report.subscribed.get(channel, 0) + 1

        await asyncio.gather(*(one(c) for c in order.channels))
        report.finished = time.time()
        report.latency = latency.state()
        return report

    async def _keep(
        self,
        slot: Slot,
        report: ConnectReport,
        gate: asyncio.Semaphore | None = None,
        wait_first: bool = False,
    ) -> bool:
        """Open and subscribe ``slot``'s client; with ``retry_for``, retry failures with
        the backoff. ``wait_first``: back off before the first attempt too (a client
        the server just closed). True once subscribed, False when it gave up."""
        order = slot.order
        give_up = time.monotonic() + order.retry_for
        wait = wait_first
        while True:
            if wait:
                pause = backoff.delay(slot.attempt, self._random.random)
                slot.attempt += 1
                if time.monotonic() + pause > give_up:
                    return False
                await asyncio.sleep(pause)
                if self._closing:
                    return False
            wait = True
            try:
                if gate is not None:
                    async with gate:
                        slot.began = slot.began or time.perf_counter()
                        await self._open(order, slot)
                else:
                    slot.began = slot.began or time.perf_counter()
                    await self._open(order, slot)
                return True
            except Exception as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code == 503:
                    report.refused += 1
                if order.retry_for <= 0 or self._closing or time.monotonic() >= give_up:
                    if len(report.errors) < MAX_ERRORS_KEPT:
                        report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return False
                report.retries += 1

    async def _come_back(self, slot: Slot, lived_s: float | None) -> None:
        """A client the server closed: back off, reconnect, resubscribe (the browser
        client's way: the attempt count resets only if the connection had stayed up)."""
        slot.attempt = backoff.attempt_after_close(slot.attempt, lived_s)
        self.rejoin.attempted += 1
        if await self._keep(slot, self.rejoin, wait_first=True):
            self.rejoin.connected += 1
        elif not self._closing:
            self.rejoin.failures += 1

    async def _open(self, order: ConnectOrder, slot: Slot) -> None:
        ws: LoadConnection | None = None
        try:
            async with asyncio.timeout(order.timeout):
                ws = await open_connection(order.url, order.timeout)
                ws.channel = slot.channel
                ws.slot = slot
                ws.windowed = order.windowed
                if order.windowed:
                    ws.window_start = OPEN  # nothing counts until the subscribe is confirmed
                ws.pending = asyncio.get_running_loop().create_future()
                self.clients.add(ws)
                name = order.prefix + str(slot.channel)
                await ws.send(
                    orjson.dumps({"type": "subscribe", "channel": name, "id": 1}).decode()
                )
                await ws.pending
        except BaseException:
            if ws is not None:
                ws.leaving = True
                self.clients.discard(ws)
                ws.transport.abort()
            raise

    async def _close_clients(self) -> None:
        self._closing = True
        clients = list(self.clients)
        for ws in clients:
            ws.leaving = True
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        except TimeoutError:
            pass
        for ws in clients:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()
        self.clients.clear()


def main(pipe: Connection, spec: WorkerSpec) -> None:
    """The worker process's entry point (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and closes us
    runtime.pin(spec.cpus)
    runtime.raise_nofile_limit()
    runtime.run(Worker(pipe, spec).run())
