"""The parent's side of the client workers: spawn them, ask them, wait for their answers.

Requests carry a tag and answers may come back in any order, so the parent can peek at a
worker for progress while that worker is still busy opening connections.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from load import worker


class WorkerDied(RuntimeError):
    pass


class WorkerHandle:
    def __init__(self, process: BaseProcess, pipe: Connection, index: int) -> None:
        self.process = process
        self.pipe = pipe
        self.index = index
        self._tags = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self._listening = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def listen(self) -> None:
        fd = self.pipe.fileno()
        asyncio.get_running_loop().add_reader(fd, self._on_readable)
        # uvloop makes a watched fd non-blocking; a large answer (receipts) arriving in
        # pieces must block recv() until complete, not fail it half-read.
        os.set_blocking(fd, True)
        self._listening = True

    def unlisten(self) -> None:
        if self._listening:
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self._listening = False

    def expect(self, tag: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[tag] = fut
        return fut

    def _on_readable(self) -> None:
        try:
            while self.pipe.poll():
                tag, payload = self.pipe.recv()
                fut = self._pending.pop(tag, None)
                if fut is None or fut.done():
                    continue
                if isinstance(payload, BaseException):
                    fut.set_exception(payload)
                else:
                    fut.set_result(payload)
        except (EOFError, OSError):
            self.unlisten()
            err = WorkerDied(
                f"client worker {self.index} exited (exit code {self.process.exitcode})"
            )
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()

    async def ask(self, command: str, arg: Any = None, wait_s: float = 60) -> Any:
        tag = next(self._tags)
        fut = self.expect(tag)
        self.pipe.send((tag, command, arg))
        try:
            return await asyncio.wait_for(fut, wait_s)
        finally:
            self._pending.pop(tag, None)


class WorkerPool:
    def __init__(self, count: int, cpus: Sequence[int], deadline: float) -> None:
        self.count = count
        self.cpus = tuple(cpus)
        self.deadline = deadline
        self.workers: list[WorkerHandle] = []

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def start(self, wait_s: float = 60) -> None:
        # spawn, not fork: forking a process that runs an event loop copies its state.
        ctx = multiprocessing.get_context("spawn")
        hellos = []
        for index in range(self.count):
            ours, theirs = ctx.Pipe()
            spec = worker.WorkerSpec(index, self.cpus, self.deadline)
            proc = ctx.Process(target=worker.main, args=(theirs, spec), daemon=True)
            proc.start()
            theirs.close()
            handle = WorkerHandle(proc, ours, index)
            hellos.append(handle.expect("hello"))
            handle.listen()
            self.workers.append(handle)
        await asyncio.wait_for(asyncio.gather(*hellos), wait_s)

    async def ask_each(self, requests: Sequence[tuple[str, Any]], wait_s: float) -> list[Any]:
        """Send ``requests[i]`` to worker i and return the answers in order."""
        return list(
            await asyncio.gather(
                *(
                    w.ask(cmd, arg, wait_s)
                    for w, (cmd, arg) in zip(self.workers, requests, strict=True)
                )
            )
        )

    async def ask_all(self, command: str, arg: Any = None, wait_s: float = 60) -> list[Any]:
        return await self.ask_each([(command, arg)] * len(self.workers), wait_s)

    def kill(self) -> None:
        """Stop every worker now, without asking (for when asking was interrupted)."""
        for w in self.workers:
            w.unlisten()
            if w.process.is_alive():
                w.process.kill()
                w.process.join(2)
            w.pipe.close()
        self.workers = []

    async def close(self, wait_s: float = 20) -> None:
        live = [w for w in self.workers if w.process.is_alive()]
        if live:
            await asyncio.gather(
                *(w.ask("close", None, wait_s) for w in live), return_exceptions=True
            )
        end = time.monotonic() + 5
        for w in self.workers:
            w.unlisten()
            w.process.join(max(0.1, end - time.monotonic()))
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(2)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(2)
            w.pipe.close()
        self.workers = []
