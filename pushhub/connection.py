"""One client connection: a bounded outbound queue drained by its own writer task.

Broadcast never waits for a client. ``send`` appends an already-encoded frame to the
queue and returns at once; the writer task is the only code that awaits the socket.
When the queue holds more than its byte limit, the client is not keeping up: the
queue is dropped and the connection closed with ``CloseCode.SLOW`` (reconnectable),
so one slow reader never holds back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Generator
from enum import Enum
from typing import Any, Protocol

from pushhub.errors import CloseCode
from pushhub.ratelog import RateLimitedLog
from pushhub.recovery import Held

logger = logging.getLogger("pushhub.connection")

#: How many bytes of queued frames the writer joins into one WebSocket frame. Joining
#: (with "\n", see docs/protocol.md) saves a syscall and a frame header per message
#: when a client falls behind a burst; the cap keeps single frames reasonable.
COALESCE_BYTES = 64 * 1024

#: Seconds a closing connection may take to send what was queued, and its close frame,
#: before the transport is aborted (the ``close_timeout`` setting).
FLUSH_TIMEOUT = 2.0


class Sender(Protocol):
    """What a connection needs from its transport: send a text frame, close, abort."""

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        """Drop the socket now, whatever is unsent: for a peer that stopped reading."""


class Outbox:
    """Connections with frames to send, flushed together once per event-loop round.

    ``Connection.send`` only queues; the flush runs right after the code that queued
    (one ``call_soon`` for all connections), so everything a single Redis read brought
    in is joined per client before anything is written.
    """

    __slots__ = ("_dirty", "_errors", "_scheduled")

    def __init__(self, errors: RateLimitedLog | None = None) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False
        self._errors = errors or RateLimitedLog(logger)

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            try:
                conn.flush()
            except Exception:
                # One failing client must not cost the others their flush.
                conn._dirty = False
                self._errors.exception("flush", "flushing %s failed", conn.id)


class ConnectionState(Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_TRANSITIONS = {
    ConnectionState.OPEN: {ConnectionState.CLOSING, ConnectionState.CLOSED},
    ConnectionState.CLOSING: {ConnectionState.CLOSED},
    ConnectionState.CLOSED: set(),
}


class Connection:
    """A client's outbound side and the channels it holds (who the client is, and
    what it may do, is its ``Session``'s).

    The writer task exists only while there is something to send: an idle connection
    (the common case, thousands per node) costs no task, no coroutine frame and no
    event, which is most of what makes it cheap.
    """

    __slots__ = (
        "_close_task",
        "_dirty",
        "_drained",
        "_low_water",
        "_on_close",
        "_outbox",
        "_queue",
        "_queued_bytes",
        "_sender",
        "_writer",
        "channels",
        "close_code",
        "close_timeout",
        "held",
        "id",
        "max_queue_bytes",
        "state",
    )

    def __init__(
        self,
        conn_id: str,
        sender: Sender,
        max_queue_bytes: int,
        outbox: Outbox | None = None,
        on_close: Callable[[Connection], None] | None = None,
        close_timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        self.id = conn_id
        self.channels: set[str] = set()
        self.max_queue_bytes = max_queue_bytes
        self.state = ConnectionState.OPEN
        self.close_code: int | None = None
        #: Channels being set up: frames that arrive meanwhile wait here, with their
        #: offsets, to be merged after the replay (see Node.subscribe).
        self.held: dict[str, Held] | None = None
        self.close_timeout = close_timeout
        #: Called once when a close is decided (the session's hook), so what the
        #: connection holds is released at once instead of when the socket is gone.
        self._on_close = on_close
        self._low_water: tuple[int, asyncio.Future[None]] | None = None
        self._sender = sender
        self._queue: list[str] = []
        self._queued_bytes = 0  # queued plus in flight
        self._outbox = outbox if outbox is not None else Outbox()
        self._dirty = False  # waiting in the outbox for its flush
        self._writer: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._close_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.state.value} channels={len(self.channels)}>"

    def _transition(self, new: ConnectionState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(
                f"connection {self.id} cannot go from {self.state.value} to {new.value}; "
                "a closed connection cannot be reopened, make a new one"
            )
        self.state = new

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, frame: str) -> bool:
        """Offer a frame without waiting. False if the connection is closing or overflowed."""
        if self.state is not ConnectionState.OPEN:
            return False
        # len(str) undercounts non-ASCII bytes by at most 4x; good enough for a guard rail
        # and far cheaper than encoding the frame once per subscriber.
        before = self._queued_bytes
        self._queued_bytes += len(frame)
        # A frame bigger than the whole limit still goes to a client that is keeping
        # up (nothing queued or in flight): the limit catches clients falling behind.
        if self._queued_bytes > self.max_queue_bytes and before:
            logger.warning(
                "closing slow connection %s: %d bytes queued (limit %d)",
                self.id,
                self._queued_bytes,
                self.max_queue_bytes,
            )
            self.close(CloseCode.SLOW, "slow consumer")
            return False
        self._queue.append(frame)
        if self._writer is None and not self._dirty:
            self._dirty = True
            self._outbox.mark(self)
        return True

    def flush(self) -> None:
        """Send what is queued, now, without waiting (the outbox calls this).

        Frames queued since the last flush go out joined into as few frames as possible,
        so a burst (a Redis read that brought many messages) costs one frame per client.
        The transport's send finishes without suspending whenever the socket can take the
        bytes, which is nearly always: a broadcast then costs no task and no loop round
        per subscriber. Only a send that must wait for the socket goes on in a writer
        task, which also takes whatever is queued behind it.
        """
        self._dirty = False
        if self._writer is not None or not self._queue:
            return
        batch, self._queue = self._queue, []
        parts = _coalesce(batch)
        for i, (text, size) in enumerate(parts):
            coro = self._sender.send_text(text)
            try:
                waiting = coro.send(None)
            except StopIteration:
                self._queued_bytes = max(0, self._queued_bytes - size)
                continue
            except Exception:
                # The transport reports the disconnect to the reader side, which cleans up.
                logger.debug("send to %s failed", self.id, exc_info=True)
                self._queue = []
                self._queued_bytes = 0
                return
            self._queue = [t for t, _ in parts[i + 1 :]] + self._queue
            self._writer = asyncio.get_running_loop().create_task(
                self._write(_Resume(coro, waiting), size)
            )
            return
        if self._low_water is not None:
            self._check_low_water()

    async def wait_below(self, threshold: int) -> bool:
        """Wait until at most ``threshold`` bytes are queued or in flight: how a long
        reply (a recovery replay) is paced to what the client reads. False if the
        connection closed meanwhile."""
        while self.state is ConnectionState.OPEN and self._queued_bytes > threshold:
            fut = asyncio.get_running_loop().create_future()
            self._low_water = (threshold, fut)
            try:
                await fut
            finally:
                self._low_water = None
        return self.state is ConnectionState.OPEN

    def _check_low_water(self) -> None:
        assert self._low_water is not None
        threshold, fut = self._low_water
        if (self._queued_bytes <= threshold or self.state is not ConnectionState.OPEN) and (
            not fut.done()
        ):
            fut.set_result(None)

    def close(self, code: int, reason: str = "", flush: bool = False) -> None:
        """Close the socket with ``code`` without waiting. By default what is queued is
        dropped; with ``flush`` it is sent first (an error frame explaining the close),
        for at most ``FLUSH_TIMEOUT`` seconds."""
        if self.state is not ConnectionState.OPEN:
            return
        self._transition(ConnectionState.CLOSING)
        self.close_code = code
        if not flush:
            self._drop_queue()
        self._close_task = asyncio.get_running_loop().create_task(
            self._send_close(code, reason, flush), name=f"pushhub-close-{self.id}"
        )
        self._decided()

    def _decided(self) -> None:
        """The connection will not be used again: wake a paced reply, tell the node."""
        if self._low_water is not None:
            self._check_low_water()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    def _drop_queue(self) -> None:
        self._queue = []
        self._queued_bytes = 0
        # The writer may be blocked on a socket that is not draining; cancel it rather
        # than wait for it.
        if self._writer is not None:
            self._writer.cancel()

    async def _send_close(self, code: int, reason: str, flush: bool) -> None:
        """Flush (when asked) and send the close frame, within ``close_timeout`` in all;
        a peer that does not take them in time is aborted, never waited on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_timeout
        if flush:
            self.flush()  # what the outbox has not sent yet
        if flush and self._writer is not None:
            self._drained = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained, self.close_timeout)
            self._drop_queue()
        try:
            await asyncio.wait_for(
                self._sender.close(code, reason), max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            logger.info("connection %s did not take its close frame in time; aborting", self.id)
            self._sender.abort()
        except Exception:  # the peer may be gone already; the close is best effort
            logger.debug("close of %s failed", self.id, exc_info=True)

    def closed(self) -> None:
        """Record that the socket is gone (the transport saw the disconnect)."""
        if self.state is not ConnectionState.CLOSED:
            self._transition(ConnectionState.CLOSED)
        self._drop_queue()
        self._decided()

    async def wait_closed(self) -> None:
        """Wait for the writer and a pending close to finish (after ``closed``)."""
        for task in (self._writer, self._close_task):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise
                except Exception:
                    logger.debug("task of %s failed", self.id, exc_info=True)

    async def _write(self, started: _Resume | None = None, size: int = 0) -> None:
        try:
            if started is not None:
                await started
                self._queued_bytes = max(0, self._queued_bytes - size)
            if self._low_water is not None:
                self._check_low_water()
            while self._queue:
                batch, self._queue = self._queue, []
                for text, part in _coalesce(batch):
                    await self._sender.send_text(text)
                    # close() may have zeroed the count meanwhile.
                    self._queued_bytes = max(0, self._queued_bytes - part)
                    if self._low_water is not None:
                        self._check_low_water()
        except Exception:
            # The transport reports the disconnect to the reader side, which cleans up.
            logger.debug("send to %s failed", self.id, exc_info=True)
            self._queue = []
        finally:
            self._writer = None
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)


class _Resume:
    """Awaits the rest of a coroutine that was started by hand and suspended.

    ``Connection.send`` runs the transport's send synchronously; when it has to wait (it
    yielded the future it waits on), this hands that same future to the writer task and
    drives the coroutine on from there, exactly as ``await coro`` would have.
    """

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._waiting
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


def _coalesce(batch: list[str]) -> list[tuple[str, int]]:
    """Join queued frames with "\n" into frames of about COALESCE_BYTES at most; each
    with the queued size it accounts for."""
    if len(batch) == 1:
        return [(batch[0], len(batch[0]))]
    out: list[tuple[str, int]] = []
    parts: list[str] = []
    size = 0
    for frame in batch:
        if parts and size + len(frame) >= COALESCE_BYTES:
            out.append(("\n".join(parts), size))
            parts, size = [], 0
        parts.append(frame)
        size += len(frame)
    out.append(("\n".join(parts), size))
    return out
