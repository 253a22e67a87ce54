"""The Redis engine: Pub/Sub between nodes through a shared Redis.

The only module that imports redis-py. Every redis-py error becomes ``EngineUnavailable``
here, and no redis-py type or bytes-for-str crosses into the rest of pushhub.

One Pub/Sub connection per node, read by one task. It is a raw redis-py ``Connection``
rather than redis-py's ``PubSub`` helper because the reconnect rules matter too much to
leave implicit: after any failure the connection is thrown away, a new one is made with
capped, jittered backoff, and every channel the node still wants is subscribed again.
A watchdog publishes to the node's own probe channel every few seconds and expects to
hear it back; a connection that stays open but deaf (a failover that kept the TCP
session) is torn down and rebuilt, and the engine reports itself unready meanwhile.

The reader hands each Pub/Sub message to the node's ``EngineEvents`` once, typed: a raw
payload as ``on_message``, and the envelopes the Lua scripts publish (``envelope.py``)
as ``on_durable``, ``on_join`` or ``on_leave``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from pushhub.backoff import Backoff
from pushhub.channels import ChannelRule, ChannelRules, lua_pattern
from pushhub.engine import envelope
from pushhub.engine.base import (
    Engine,
    EngineEvents,
    HistoryMessage,
    HistoryRead,
    PresenceCount,
    PresenceEntry,
    PresenceMember,
)
from pushhub.errors import EngineError, EngineUnavailable
from pushhub.protocol import MAX_JSON_DEPTH
from pushhub.ratelog import RateLimitedLog
from pushhub.stream import Position

if TYPE_CHECKING:
    from pushhub.config import Settings

logger = logging.getLogger("pushhub.engine.redis")

#: Channels per SUBSCRIBE command when resubscribing after a reconnect.
RESUBSCRIBE_BATCH = 500

_IO_ERRORS = (RedisError, OSError, TimeoutError)

_MARK = envelope.MARK


def _library_code(listing: Any) -> str | None:
    """The code of the first library in a FUNCTION LIST WITHCODE reply, if any."""
    for library in listing or ():
        fields = dict(zip(library[::2], library[1::2], strict=False))
        code = fields.get(b"library_code") or fields.get("library_code")
        if code is not None:
            return code.decode() if isinstance(code, bytes) else str(code)
    return None


_Arg = bytes | str | int

_PRESENCE_LUA = files("pushhub.engine").joinpath("lua/presence.lua").read_text()
_DURABLE_LUA = files("pushhub.engine").joinpath("lua/durable.lua").read_text()
_LIMITS_LUA = files("pushhub.engine").joinpath("lua/limits.lua").read_text()


def _lua_string(text: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in ":_-" else f"\\{ord(c):03d}" for c in text) + '"'


def function_library(
    key_prefix: str,
    rules: tuple[ChannelRule, ...],
    idempotency_ttl_ms: int,
    max_payload: int = 64 * 1024,
) -> str:
    """The Redis Function library, with the prefix, channel rules and the largest payload
    ``FCALL pushhub_publish`` accepts (the nodes' ``max_message_size``) compiled in."""
    compiled = ", ".join(
        f"{{{_lua_string(lua_pattern(r.pattern))}, {int(r.options.durable)}, "
        f"{r.options.history_size}, {r.options.history_ttl * 1000}}}"
        for r in rules
    )
    return (
        _DURABLE_LUA.replace("__PREFIX__", _lua_string(key_prefix))
        .replace("__IDEMPOTENCY_TTL_MS__", str(idempotency_ttl_ms))
        .replace("__MAX_PAYLOAD__", str(max_payload))
        .replace("__RULES__", "{" + compiled + "}")
    )


#: Channels per pipeline when refreshing presence, to bound one round trip's size.
REFRESH_BATCH = 200


class RedisEngine:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        key_prefix: str = "pushhub:",
        rules: tuple[ChannelRule, ...] = (),
        idempotency_ttl: float = 300.0,
        max_payload: int = 64 * 1024,
        max_json_depth: int = MAX_JSON_DEPTH,
        max_connections: int = 64,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        probe_interval: float = 2.0,
        backoff: Backoff | None = None,
    ) -> None:
        # A bounded pool that makes a burst wait for a free connection (up to the command
        # timeout) instead of failing: redis-py's default pool answers "Too many
        # connections" when 250 sockets disconnect at once.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=command_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            health_check_interval=0,
        )
        # Fail fast: a publish during an outage answers 503 now rather than after retries.
        self._client: Redis = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._url = url
        self._prefix = key_prefix
        self._presence = self._client.register_script(_PRESENCE_LUA)
        self._limits = self._client.register_script(_LIMITS_LUA)
        self._idempotency_ttl_ms = int(idempotency_ttl * 1000)
        self._library = function_library(key_prefix, rules, self._idempotency_ttl_ms, max_payload)
        self._rules = ChannelRules(rules)
        self._functions_error: str | None = None
        self._resync: set[str] | None = None  # channels awaiting resubscription
        self._connected_once = False
        self._command_timeout = command_timeout
        self._probe_interval = probe_interval
        self._probe_channel = f"__pushhub__.probe.{node_id}"
        self._backoff = backoff or Backoff(base=0.1, cap=5.0)
        self._events: EngineEvents | None = None
        #: ``events.on_message``, bound once: the plain-message path is the hot one.
        self._on_message: Callable[[str, bytes], None] | None = None
        self._depth = max_json_depth
        self.dropped = 0
        self._errors = RateLimitedLog(logger)
        self._wanted: set[str] = set()  # channels the node holds
        self._live: set[str] = set()  # confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._write_lock = asyncio.Lock()
        self._ready = False
        self._ready_event = asyncio.Event()
        self._connect_timeout = connect_timeout
        self._probe_heard = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._session: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, events: EngineEvents) -> None:
        self._events, self._on_message = events, events.on_message
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read_forever(), name="pushhub-redis-reader")
        self._watchdog = loop.create_task(self._watch(), name="pushhub-redis-watchdog")
        # Start ready when Redis is there; start anyway (unready, reconnecting) when not,
        # so that a node booted during a Redis outage serves /healthz and recovers alone.
        try:
            await asyncio.wait_for(self._ready_event.wait(), self._connect_timeout + 1)
        except TimeoutError:
            logger.warning("Redis is not reachable at start-up; the node starts unready")

    async def close(self) -> None:
        """Stop the reader and the watchdog and close every connection, within a bound:
        a shutdown never hangs on a Redis that stopped answering (each step gets
        ``connect_timeout``, and a step that runs out is logged and left behind)."""
        self._closing = True
        tasks = [t for t in (self._watchdog, self._reader, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self._connect_timeout)
            if stuck:
                logger.warning("%d Redis engine tasks did not stop in time", len(stuck))
        self._watchdog = self._reader = None
        # A pool handed to Redis() is ours to close, not the client's.
        for step in (self._client.aclose, self._client.connection_pool.disconnect):
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await step()
            except TimeoutError:
                logger.warning("closing the Redis connections took over %gs", self._connect_timeout)
            except _IO_ERRORS:
                pass

    # -- the Pub/Sub connection -------------------------------------------------------

    def _new_connection(self) -> AbstractConnection:
        pool = self._client.connection_pool
        # No read timeout on the Pub/Sub socket: silence is normal there; the watchdog
        # decides when silence means deafness.
        kwargs: dict[str, Any] = {**pool.connection_kwargs, "socket_timeout": None}
        conn: AbstractConnection = pool.connection_class(**kwargs)
        return conn

    async def _read_forever(self) -> None:
        while not self._closing:
            conn = self._new_connection()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await self._load_functions()
                self._conn = conn
                self._session = asyncio.get_running_loop().create_task(self._session_loop(conn))
                await self._session
            except asyncio.CancelledError:
                if self._closing or self._session is None or not self._session.cancelled():
                    raise
                logger.warning("Redis Pub/Sub connection is deaf (probe not heard); reconnecting")
            except _IO_ERRORS as exc:
                if self._ready or self._backoff.attempt == 0:
                    logger.warning("Redis Pub/Sub connection lost: %s; reconnecting", exc)
                else:
                    logger.debug("Redis Pub/Sub reconnect failed: %s", exc)
            finally:
                self._drop_connection(conn)
                with contextlib.suppress(*_IO_ERRORS):
                    await conn.disconnect()
            if not self._closing:
                await asyncio.sleep(self._backoff.next())

    async def _load_functions(self) -> None:
        """Load the Function library. Functions live in Redis's memory, so this runs on
        every (re)connect: a restart without persistence forgets them."""
        try:
            current = await self._client.function_list(library="pushhub", withcode=True)
            code = _library_code(current)
            if code is not None and code != self._library:
                logger.warning(
                    "replacing a pushhub Function library with different channel rules or "
                    "key prefix: every node sharing this Redis needs the same [[channels]] "
                    "and key_prefix, or FCALL pushhub_publish follows the last node started"
                )
            if code != self._library:
                await self._client.function_load(self._library, replace=True)
            self._functions_error = None
        except ResponseError as exc:
            # Redis older than 7.0, or functions disabled: everything but durable
            # channels still works, so say so once and go on.
            if self._functions_error is None:
                logger.error(
                    "cannot load pushhub's Redis Functions (%s): durable channels need "
                    "Redis 7.0 or newer",
                    exc,
                )
            self._functions_error = str(exc)

    def _drop_connection(self, conn: AbstractConnection) -> None:
        if self._conn is conn:
            self._conn = None
        self._session = None
        self._ready = False
        self._ready_event.clear()
        self._live.clear()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(EngineUnavailable("Redis Pub/Sub connection lost"))
        self._waiters.clear()

    async def _session_loop(self, conn: AbstractConnection) -> None:
        # The probe channel goes first: its confirmation is what makes the engine ready.
        channels = [self._probe_channel, *self._wanted]
        self._resync = set(self._wanted) if self._connected_once else None
        for start in range(0, len(channels), RESUBSCRIBE_BATCH):
            await conn.send_command("SUBSCRIBE", *channels[start : start + RESUBSCRIBE_BATCH])
        while True:
            reply = await conn.read_response(timeout=math.inf, push_request=True)
            try:
                self._dispatch(reply)
            except Exception:
                # Supervised: the reader ends only with its connection. Whatever one
                # reply raises is logged (rate-limited) and the next one is read.
                self._errors.exception("dispatch", "handling a Redis Pub/Sub reply failed")

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind = reply[0]
        if kind == b"message":
            channel = reply[1].decode()
            if channel == self._probe_channel:
                self._probe_heard.set()
            elif self._on_message is not None:
                payload = reply[2]
                # A one-byte slice is CPython's cached object: no copy, and cheaper
                # than startswith on this path, the one every message takes.
                if payload[:1] != _MARK:
                    self._on_message(channel, payload)
                else:
                    self._on_envelope(channel, payload)
        elif kind == b"subscribe":
            channel = reply[1].decode()
            if channel == self._probe_channel:
                if not self._ready:
                    logger.info("Redis Pub/Sub connected (%d channels)", len(self._wanted))
                self._ready = True
                self._ready_event.set()
                self._backoff.reset()
                self._connected_once = True
            elif channel in self._wanted:
                self._live.add(channel)
            else:
                # A subscribe that timed out, or a channel dropped while resubscribing:
                # Redis now sends what nobody here wants, so take it back.
                self._spawn_unsubscribe(channel)
            if self._resync is not None:
                self._resync.discard(channel)
                if not self._resync:
                    self._resync = None
                    if self._events is not None:
                        self._events.on_resubscribed()
            for fut in self._waiters.pop(channel, ()):
                if not fut.done():
                    fut.set_result(None)

    def _on_envelope(self, channel: str, payload: bytes) -> None:
        if self._events is not None and not envelope.dispatch(
            channel, payload, self._events, self._depth
        ):
            # A raw PUBLISH that begins with 0x1E but is no envelope pushhub wrote.
            self.dropped += 1
            self._errors.debug("envelope", "dropped an unreadable envelope on %s", channel)

    def _spawn_unsubscribe(self, channel: str) -> None:
        async def unsubscribe() -> None:
            if channel not in self._wanted:
                with contextlib.suppress(EngineUnavailable, *_IO_ERRORS):
                    await self._send("UNSUBSCRIBE", channel)

        task = asyncio.get_running_loop().create_task(unsubscribe())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, *args: str) -> None:
        conn = self._conn
        if conn is None or not self._ready:
            raise EngineUnavailable("Redis Pub/Sub connection is not ready")
        async with self._write_lock:
            if self._conn is not conn:
                raise EngineUnavailable("Redis Pub/Sub connection was replaced")
            await conn.send_command(*args)

    # -- the watchdog -------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            if not self._ready or self._session is None:
                continue
            session = self._session
            self._probe_heard.clear()
            try:
                receivers = await self._client.publish(self._probe_channel, b"probe")
                if receivers:
                    await asyncio.wait_for(self._probe_heard.wait(), self._probe_interval * 2)
                    continue
            except TimeoutError:
                pass
            except _IO_ERRORS:
                continue  # Redis is down: the reader finds out by itself
            # Redis does not count us as a subscriber, or the probe never came back.
            if session is self._session:
                session.cancel()

    # -- the contract ---------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._wanted.add(channel)
        if channel in self._live:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(fut)
        try:
            await self._send("SUBSCRIBE", channel)
            await asyncio.wait_for(asyncio.shield(fut), self._command_timeout)
        except (EngineUnavailable, *_IO_ERRORS) as exc:
            self._wanted.discard(channel)
            raise EngineUnavailable(f"cannot subscribe to {channel!r}: {exc}") from None
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[channel]

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        # Forget it now, not on Redis's confirmation: a subscribe that follows before the
        # confirmation arrives must send its own SUBSCRIBE, which Redis applies in order.
        was_live = channel in self._live
        self._live.discard(channel)
        if was_live:
            with contextlib.suppress(EngineUnavailable, *_IO_ERRORS):
                await self._send("UNSUBSCRIBE", channel)

    async def publish(self, channel: str, payload: bytes) -> None:
        try:
            await self._client.publish(channel, payload)
        except _IO_ERRORS as exc:
            raise EngineUnavailable(f"publish failed: {exc}") from None

    async def publish_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, payload in items:
                    pipe.publish(channel, payload)
                await pipe.execute()
        except _IO_ERRORS as exc:
            raise EngineUnavailable(f"publish failed: {exc}") from None

    async def check(self) -> None:
        if not self._ready:
            raise EngineUnavailable("Redis Pub/Sub connection is not ready")
        try:
            await asyncio.wait_for(self._client.ping(), self._command_timeout)
        except _IO_ERRORS as exc:
            raise EngineUnavailable(f"Redis does not answer PING: {exc}") from None

    @property
    def ready(self) -> bool:
        return self._ready

    # -- presence --------------------------------------------------------------------

    def _presence_keys(self, channel: str) -> list[str]:
        base = f"{self._prefix}presence:{{{channel}}}:"
        return [base + part for part in ("conns", "conninfo", "members", "counts", "info")]

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except _IO_ERRORS as exc:
            raise EngineUnavailable(f"Redis operation failed: {exc}") from None

    async def presence_join(
        self, channel: str, entry: PresenceEntry, now_ms: int, ttl_ms: int, emit: bool
    ) -> None:
        args: list[_Arg] = ["join", channel, entry.conn_id, entry.member, entry.info or b""]
        args += [now_ms + ttl_ms, ttl_ms * 2, int(emit)]
        await self._call(self._presence(keys=self._presence_keys(channel), args=args))

    async def presence_leave(self, channel: str, conn_id: str, emit: bool) -> None:
        args: list[_Arg] = ["leave", channel, conn_id, int(emit)]
        await self._call(self._presence(keys=self._presence_keys(channel), args=args))

    async def presence_refresh(
        self, items: Sequence[tuple[str, Sequence[str]]], now_ms: int, ttl_ms: int, emit: bool
    ) -> dict[str, list[str]]:
        missing: dict[str, list[str]] = {}
        for start in range(0, len(items), REFRESH_BATCH):
            batch = items[start : start + REFRESH_BATCH]
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, conn_ids in batch:
                    args: list[_Arg] = ["refresh", channel, now_ms, now_ms + ttl_ms]
                    args += [ttl_ms * 2, int(emit), *conn_ids]
                    await self._presence(keys=self._presence_keys(channel), args=args, client=pipe)
                results = await self._call(pipe.execute())
            for (channel, _), lost in zip(batch, results, strict=True):
                if lost:
                    missing[channel] = [c.decode() for c in lost]
        return missing

    async def presence_page(
        self, channel: str, after: str | None, limit: int
    ) -> list[PresenceMember]:
        args: list[_Arg] = ["page", channel, after or "", limit]
        flat = await self._call(self._presence(keys=self._presence_keys(channel), args=args))
        return [
            PresenceMember(flat[i].decode(), int(flat[i + 1]), flat[i + 2] or None)
            for i in range(0, len(flat), 3)
        ]

    async def presence_counts(self, channels: Sequence[str]) -> list[PresenceCount]:
        async with self._client.pipeline(transaction=False) as pipe:
            for channel in channels:
                conns, _, members, _, _ = self._presence_keys(channel)
                pipe.zcard(members)
                pipe.zcard(conns)
            flat = await self._call(pipe.execute())
        return [PresenceCount(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def _node_channels_key(self, node_id: str) -> str:
        return f"{self._prefix}node:{{{node_id}}}:channels"

    async def node_heartbeat(
        self,
        node_id: str,
        now_ms: int,
        lease_ms: int,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
    ) -> bool:
        key = self._node_channels_key(node_id)
        added, removed = list(added), list(removed)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zadd(f"{self._prefix}nodes", {node_id: now_ms + lease_ms})
            if added:
                pipe.sadd(key, *added)
            if removed:
                pipe.srem(key, *removed)
            # Outlive the lease by far: a reaper needs this set after the node died.
            pipe.pexpire(key, lease_ms * 20)
            results = await self._call(pipe.execute())
        return bool(results[0] == 0)

    async def node_leave(self, node_id: str) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrem(f"{self._prefix}nodes", node_id)
            pipe.delete(self._node_channels_key(node_id))
            await self._call(pipe.execute())

    async def reap_dead_nodes(self, node_id: str, now_ms: int) -> list[str]:
        nodes_key = f"{self._prefix}nodes"
        dead = await self._call(
            self._client.zrangebyscore(nodes_key, "-inf", f"({now_ms}", withscores=True)
        )
        reaped = []
        for raw, expiry in dead:
            dead_id = raw.decode()
            if dead_id == node_id:
                continue
            # One reaper per lapse of a lease: the first to take this key does the work.
            # The key names the lapsed expiry, so a node that comes back and dies again
            # is reaped again.
            claim = f"{self._prefix}node:{{{dead_id}}}:reaper:{int(expiry)}"
            if not await self._call(self._client.set(claim, node_id, nx=True, px=30_000)):
                continue
            key = self._node_channels_key(dead_id)
            for channel in await self._call(self._client.smembers(key)):
                name = channel.decode()
                emit = int(self._rules.options(name).join_leave)
                args: list[_Arg] = ["reap", name, dead_id + ".", emit]
                await self._call(self._presence(keys=self._presence_keys(name), args=args))
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.zrem(nodes_key, dead_id)
                await self._call(pipe.execute())
            reaped.append(dead_id)
        return reaped

    # -- durable channels --------------------------------------------------------------

    async def publish_durable(
        self, channel: str, payload: bytes, idempotency_key: str | None = None
    ) -> Position:
        options = self._rules.options(channel)
        if not options.durable:
            raise EngineError(f"{channel!r} is not a durable channel")
        self._require_functions()
        args = [
            payload,
            idempotency_key or "",
            options.history_size,
            options.history_ttl * 1000,
            self._prefix,
            self._idempotency_ttl_ms,
        ]
        offset, epoch = await self._call(
            self._client.fcall("pushhub_publish_with", 1, channel, *args)
        )
        return Position(int(offset), epoch.decode())

    def _require_functions(self) -> None:
        if self._functions_error is not None:
            raise EngineUnavailable(
                f"durable channels need Redis 7.0+ Functions: {self._functions_error}"
            )

    def _ttl_ms(self, channel: str) -> str:
        return str(self._rules.options(channel).history_ttl * 1000)

    async def read_history(
        self,
        channel: str,
        after: int | None,
        limit: int,
        reverse: bool = False,
        max_bytes: int = 0,
    ) -> HistoryRead:
        self._require_functions()
        args = ["" if after is None else str(after), str(limit), "1" if reverse else "0"]
        args += [self._ttl_ms(channel), self._prefix, str(max_bytes)]
        flat = await self._call(self._client.fcall("pushhub_history", 1, channel, *args))
        messages = [HistoryMessage(int(flat[i]), flat[i + 1]) for i in range(3, len(flat), 2)]
        return HistoryRead(Position(int(flat[1]), flat[0].decode()), int(flat[2]), messages)

    async def clear_history(self, channel: str) -> Position:
        self._require_functions()
        offset, epoch = await self._call(
            self._client.fcall("pushhub_clear", 1, channel, self._ttl_ms(channel), self._prefix)
        )
        return Position(int(offset), epoch.decode())

    async def stream_positions(self, channels: Sequence[str]) -> list[Position | None]:
        async with self._client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.hmget(f"{self._prefix}meta:{{{channel}}}", "epoch", "offset")
            rows = await self._call(pipe.execute())
        return [
            Position(int(offset), epoch.decode()) if epoch is not None else None
            for epoch, offset in rows
        ]

    # -- limits shared across nodes ------------------------------------------------------

    def _user_key(self, user: str) -> str:
        return f"{self._prefix}userconns:{{{user}}}"

    async def acquire_user_connection(
        self, user: str, conn_id: str, now_ms: int, ttl_ms: int, limit: int
    ) -> bool:
        args: list[_Arg] = ["acquire", conn_id, now_ms, now_ms + ttl_ms, ttl_ms * 2, limit]
        return bool(await self._call(self._limits(keys=[self._user_key(user)], args=args)))

    async def refresh_user_connections(
        self, items: Sequence[tuple[str, Sequence[str]]], now_ms: int, ttl_ms: int
    ) -> None:
        for start in range(0, len(items), REFRESH_BATCH):
            async with self._client.pipeline(transaction=False) as pipe:
                for user, conn_ids in items[start : start + REFRESH_BATCH]:
                    args: list[_Arg] = ["refresh", now_ms + ttl_ms, ttl_ms * 2, *conn_ids]
                    await self._limits(keys=[self._user_key(user)], args=args, client=pipe)
                await self._call(pipe.execute())

    async def release_user_connection(self, user: str, conn_id: str) -> None:
        args: list[_Arg] = ["release", conn_id]
        await self._call(self._limits(keys=[self._user_key(user)], args=args))

    async def rate_limit(self, key: str, rate: float, burst: int, now_ms: int) -> bool:
        args: list[_Arg] = ["gcra", now_ms, f"{1000.0 / rate:.6f}", burst]
        limiter = f"{self._prefix}rate:{{{key}}}"
        return bool(await self._call(self._limits(keys=[limiter], args=args)))


def from_url(url: str, settings: Settings) -> RedisEngine:
    """``redis://``, ``rediss://``, ``unix://``: the Redis engine, configured from
    ``settings`` (the node id names its probe channel)."""
    return RedisEngine(
        url,
        node_id=settings.node_id,
        key_prefix=settings.key_prefix,
        rules=settings.channels,
        idempotency_ttl=settings.idempotency_ttl,
        max_payload=settings.max_message_size,
        max_json_depth=settings.max_json_depth,
    )


if TYPE_CHECKING:  # mypy proves the Redis engine keeps the whole contract
    _conforms: Engine = RedisEngine("redis://", node_id="x")
