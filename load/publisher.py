"""Publishing at a scheduled rate through the real paths: ``PUBLISH`` into Redis, or
``POST /api/publish`` on the server under test.

Each message's data is ``{"s": sequence, "t": publish time in ns, "p": padding}``; the
timestamp is taken when its batch is handed to the socket, so latency measures the path
from the publisher's write to the client's read, and any lag of the publisher behind its
schedule is reported separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from load.ledger import Ledger
from load.schedule import RateSchedule
from load.wire import count_replies, parse_response_head, publish_request, resp_command

#: Messages sent in one go when the publisher has fallen behind its schedule.
MAX_BATCH = 200
#: Shortest pause between sends; messages falling due meanwhile go out together.
MIN_SLEEP_S = 0.001

Message = tuple[str, bytes]  # (channel name, data as JSON)


class PublishError(RuntimeError):
    pass


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Message]) -> None: ...

    async def close(self) -> None: ...


class RedisPublisher:
    """``PUBLISH`` over one pipelined RESP connection: commands are written without
    waiting, a reader counts the replies, and an error reply fails the next send."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._auth = [p.encode() for p in (parts.username, parts.password) if p]
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Task[None] | None = None
        self._outstanding = 0
        self._error: str | None = None
        self._idle = asyncio.Event()

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection(self._host, self._port)
        if self._auth:
            self._writer.write(resp_command(b"AUTH", *self._auth))
            reply = await reader.readline()
            if not reply.startswith(b"+"):
                raise PublishError(f"Redis AUTH failed: {reply[:200]!r}")
        self._replies = asyncio.get_running_loop().create_task(self._read_replies(reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                self._error = self._error or "Redis closed the connection"
                self._idle.set()
                return
            buf += chunk
            last = buf.rfind(b"\r\n")
            if last < 0:
                continue
            end = last + 2
            count, error = count_replies(buf[:end])
            buf = buf[end:]
            if error is not None and self._error is None:
                self._error = error.decode(errors="replace")
            self._outstanding -= count
            if self._outstanding <= 0:
                self._idle.set()

    async def send(self, batch: Sequence[Message]) -> None:
        if self._error is not None:
            raise PublishError(f"PUBLISH failed: {self._error}")
        assert self._writer is not None, "start() first"
        self._writer.write(b"".join(resp_command(b"PUBLISH", c.encode(), d) for c, d in batch))
        self._outstanding += len(batch)
        self._idle.clear()
        if self._writer.transport.get_write_buffer_size() > 1 << 20:
            await self._writer.drain()

    async def close(self) -> None:
        if self._writer is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5)
        if self._replies is not None:
            self._replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replies
        self._writer.close()
        self._writer = None


class _HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> None:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(publish_request(self.host, self.port, body))
        head = parse_response_head(await self.reader.readuntil(b"\r\n\r\n"))
        reply = await self.reader.readexactly(head.content_length)
        if not head.keep_alive:
            await self.close()
        if head.status != 200:
            raise PublishError(f"POST /api/publish answered {head.status}: {reply[:200]!r}")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


class HttpPublisher:
    """``POST /api/publish`` over a few keep-alive connections, requests in parallel."""

    def __init__(self, host: str, port: int, connections: int = 8) -> None:
        self._idle: asyncio.Queue[_HttpConnection] = asyncio.Queue()
        self._all = [_HttpConnection(host, port) for _ in range(connections)]
        for conn in self._all:
            self._idle.put_nowait(conn)

    async def start(self) -> None:
        pass

    async def _post(self, channel: str, data: bytes) -> None:
        conn = await self._idle.get()
        try:
            body = orjson.dumps({"channel": channel, "data": orjson.Fragment(data)})
            await conn.post(body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await conn.close()
            raise PublishError(f"POST /api/publish failed: {exc!r}") from None
        finally:
            self._idle.put_nowait(conn)

    async def send(self, batch: Sequence[Message]) -> None:
        if len(batch) == 1:
            await self._post(*batch[0])
        else:
            await asyncio.gather(*(self._post(c, d) for c, d in batch))

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    scheduled: int
    sent: int
    first_seq: int
    stop_seq: int
    #: Wall-clock (time.time_ns) of the first send and the end of the last.
    started_ns: int
    finished_ns: int
    max_lag_s: float


def payload(seq: int, now_ns: int, padding: str) -> bytes:
    return orjson.dumps({"s": seq, "t": now_ns, "p": padding})


async def publish_on_schedule(
    publisher: Publisher,
    schedule: RateSchedule,
    ledger: Ledger,
    pick: Callable[[int], int],
    channel_name: Callable[[int], str],
    padding: str,
    until: Callable[[], bool] | None = None,
) -> PublishOutcome:
    """Publish ``schedule.total`` messages on time; message i goes to channel ``pick(i)``.

    ``until``: checked before each send; when it returns True, stop early (a stream that
    runs until the scenario says so)."""
    first_seq = ledger.published
    sent = 0
    max_lag = 0.0
    started_ns = 0
    clock = time.monotonic
    while sent < schedule.total:
        if until is not None and until():
            break
        now = clock()
        due = schedule.due_by(now)
        if due <= sent:
            # Never less than a millisecond: uvloop's timers have millisecond resolution, so
            # a shorter sleep returns at once and the loop would spin until the due time.
            await asyncio.sleep(max(MIN_SLEEP_S, schedule.due_at(sent) - now))
            continue
        count = min(due - sent, MAX_BATCH)
        max_lag = max(max_lag, schedule.lag(sent, now))
        stamp = time.time_ns()
        started_ns = started_ns or stamp
        batch = []
        for i in range(sent, sent + count):
            channel = pick(i)
            batch.append(
                (channel_name(channel), payload(ledger.record(channel, stamp), stamp, padding))
            )
        await publisher.send(batch)
        sent += count
    return PublishOutcome(
        schedule.total, sent, first_seq, ledger.published, started_ns, time.time_ns(), max_lag
    )
