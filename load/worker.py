"""A client worker process: many WebSocket clients on one event loop, measuring receipts.

The parent talks to each worker over a pipe with tagged requests, answered in any
order: ``connect`` (open and subscribe clients), ``peek`` (counters for progress),
``collect`` (receipts since the last collect, then start counting afresh), ``lost``
(the channels of clients the server closed, to open again) and ``close``.
A worker exits by itself at its deadline or when the parent's end of the pipe closes,
so no run outlives its bound even if the parent is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

from load import runtime
from load.client import LoadConnection, open_connection
from load.histogram import HistogramState, LatencyHistogram


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


@dataclass(frozen=True, slots=True)
class Peek:
    messages: int
    connected: int
    disconnects: int


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
        self._reset(0)

    def _reset(self, base: int) -> None:
        self.base = base
        self.counts: list[int] = []
        self.late = 0
        self.messages = 0
        self.frames = 0
        self.bad = 0
        self.other = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latency = LatencyHistogram()
        self.disconnects: dict[int, int] = {}

    # -- the hot path: called by every connection for every data frame ----------------------

    def on_data(self, client: LoadConnection, payload: bytes) -> None:
        now = time.time_ns()
        self.frames += 1
        for line in payload.split(b"\n"):
            try:
                event = orjson.loads(line)
                if event["type"] != "message":
                    self._on_reply(client, event)
                    continue
                data = event["data"]
                seq, sent = data["s"], data["t"]
                index = seq - self.base
                latency = (now - sent) // 1000
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.bad += 1
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

    def _on_reply(self, client: LoadConnection, event: dict[str, Any]) -> None:
        pending = client.pending
        kind = event["type"]
        if pending is None or pending.done() or kind not in ("subscribed", "error"):
            self.other += 1
        elif kind == "subscribed":
            pending.set_result(None)
        else:
            pending.set_exception(ConnectionError(f"subscribe refused: {event}"))

    def on_lost(self, client: LoadConnection) -> None:
        if client in self.clients:
            self.clients.discard(client)
            if not client.leaving:
                code = client.close_code or 1006
                self.disconnects[code] = self.disconnects.get(code, 0) + 1
                self.disconnects_total += 1
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
            self._send(tag, Peek(self.messages, len(self.clients), self.disconnects_total))
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
        )
        self._reset(next_base)
        return receipts

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
            async with gate:
                began = time.perf_counter()
                try:
                    await self._open(order, channel)
                except Exception as exc:
                    report.failures += 1
                    if len(report.errors) < MAX_ERRORS_KEPT:
                        report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
                latency.record(int((time.perf_counter() - began) * 1_000_000))
                report.connected += 1
                report.subscribed[channel] = report.subscribed.get(channel, 0) + 1

        await asyncio.gather(*(one(c) for c in order.channels))
        report.finished = time.time()
        report.latency = latency.state()
        return report

    async def _open(self, order: ConnectOrder, channel: int) -> None:
        ws: LoadConnection | None = None
        try:
            async with asyncio.timeout(order.timeout):
                ws = await open_connection(order.url, order.timeout)
                ws.channel = channel
                ws.pending = asyncio.get_running_loop().create_future()
                self.clients.add(ws)
                name = order.prefix + str(channel)
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
