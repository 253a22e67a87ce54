"""This node's side of presence: its connections' entries, heartbeats, lease and reaping.

The engine holds the shared state (``PresenceStore`` in ``pushhub.engine.base``; see
docs/presence.md); the manager keeps the local truth, which connection of this node is
present in which channel, and keeps the shared state in line with it:

* every ``presence_heartbeat`` seconds, one refresh per channel (batched into pipelines)
  extends this node's entries and brings back any that are gone, which restores
  presence within one heartbeat after Redis loses its data;
* every ``node_lease_ttl / 5`` seconds, the node renews its lease and reaps nodes whose
  lease lapsed, so members of a crashed node leave within about ``node_lease_ttl`` plus
  that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from pushhub.channels import ChannelRules
from pushhub.config import Settings
from pushhub.engine.base import PresenceEntry, PresenceStore, SharedLimits
from pushhub.errors import EngineError
from pushhub.ratelog import RateLimitedLog

logger = logging.getLogger("pushhub.presence")


class PresenceEngine(PresenceStore, SharedLimits, Protocol):
    """What the manager needs of an engine: the presence state, and the per-user
    connection slots its heartbeat keeps alive with the entries."""


class PresenceManager:
    def __init__(
        self,
        engine: PresenceEngine,
        settings: Settings,
        rules: ChannelRules,
        node_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._rules = rules
        self._node_id = node_id
        self._clock = clock
        self._ttl_ms = int(settings.presence_ttl * 1000)
        self._lease_ms = int(settings.node_lease_ttl * 1000)
        self._heartbeat = settings.presence_heartbeat
        self._lease_interval = settings.node_lease_ttl / 5
        self._local: dict[str, dict[str, PresenceEntry]] = {}
        self._users: dict[str, set[str]] = {}  # user -> this node's connection ids
        self._added: set[str] = set()
        self._removed: set[str] = set()
        self._resend_channels = True
        self._leased = False
        self._lease_lost = False
        self._tasks: list[asyncio.Task[None]] = []
        self._errors = RateLimitedLog(logger)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _emit(self, channel: str) -> bool:
        return self._rules.options(channel).join_leave

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # Take the lease before any connection joins, so that even a node killed in its
        # first second is known to the reapers.
        try:
            await self.lease()
        except EngineError as exc:
            logger.warning("could not take the node lease yet: %s", exc)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self._lease_interval, self.lease), name="presence-lease"),
            # Reaping runs apart from renewing: a long reap (a dead node with thousands
            # of channels) must never delay this node's own lease.
            loop.create_task(self._every(self._lease_interval, self.reap), name="presence-reap"),
            loop.create_task(self._every(self._heartbeat, self.refresh), name="presence-refresh"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(EngineError):
            await self._engine.node_leave(self._node_id)

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            name = getattr(step, "__name__", "step")
            try:
                await step()
            except EngineError as exc:
                # The engine logs the outage itself; the next tick retries.
                logger.debug("presence %s failed: %s", name, exc)
            except Exception:
                # Supervised: a bug or a bad reply costs one tick, never the task.
                self._errors.exception(name, "presence %s failed", name)

    # -- entries ---------------------------------------------------------------------

    async def join(self, channel: str, entry: PresenceEntry) -> None:
        """Record ``entry`` in ``channel`` locally and in the engine."""
        local = self._local.get(channel)
        if local is None:
            local = self._local[channel] = {}
            self._removed.discard(channel)
            self._added.add(channel)
        local[entry.conn_id] = entry
        try:
            if channel in self._added:
                # Record the channel before the entry: a reaper must find every entry
                # of this node if it dies right after.
                had_lease = await self._engine.node_heartbeat(
                    self._node_id, self.now_ms(), self._lease_ms, (channel,)
                )
                self._added.discard(channel)
                if not had_lease and self._leased:
                    # The lease was lost under us: the next lease() restores everything.
                    self._lease_lost = True
            await self._engine.presence_join(
                channel, entry, self.now_ms(), self._ttl_ms, self._emit(channel)
            )
            if not self.tracks(channel, entry.conn_id):
                # Left while joining (its connection closed between the round trips):
                # that leave may have reached the engine first, so undo the join now
                # rather than leave a ghost member until presence_ttl.
                await self._engine.presence_leave(channel, entry.conn_id, self._emit(channel))
        except EngineError as exc:
            # The next refresh finds the entry missing and adds it then.
            logger.warning("presence join in %s failed: %s", channel, exc)

    async def leave(self, channel: str, conn_id: str) -> None:
        local = self._local.get(channel)
        if local is None or local.pop(conn_id, None) is None:
            return
        if not local:
            del self._local[channel]
            self._removed.add(channel)
            self._added.discard(channel)
        try:
            await self._engine.presence_leave(channel, conn_id, self._emit(channel))
        except EngineError as exc:
            # The entry expires after presence_ttl, with its leave event.
            logger.warning("presence leave in %s failed: %s", channel, exc)

    def track_user(self, user: str, conn_id: str) -> None:
        """Keep a connection's per-user slot (see Node.authenticate) alive by heartbeat."""
        self._users.setdefault(user, set()).add(conn_id)

    def untrack_user(self, user: str, conn_id: str) -> None:
        conns = self._users.get(user)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self._users[user]

    def tracks(self, channel: str, conn_id: str) -> bool:
        return conn_id in self._local.get(channel, ())

    # -- periodic work ------------------------------------------------------------------

    async def refresh(self) -> None:
        """Extend this node's entries; join again any that the engine lost."""
        now = self.now_ms()
        if self._users:
            items = [(user, list(conns)) for user, conns in self._users.items()]
            await self._engine.refresh_user_connections(items, now, self._ttl_ms)
        if not self._local:
            return
        by_emit: dict[bool, list[tuple[str, list[str]]]] = {True: [], False: []}
        for channel, entries in self._local.items():
            by_emit[self._emit(channel)].append((channel, list(entries)))
        for emit, items in by_emit.items():
            if not items:
                continue
            missing = await self._engine.presence_refresh(items, now, self._ttl_ms, emit)
            for channel, conn_ids in missing.items():
                local = self._local.get(channel, {})
                restored = [local[c] for c in conn_ids if c in local]
                for entry in restored:
                    await self._engine.presence_join(channel, entry, now, self._ttl_ms, emit)
                if restored:
                    logger.info("restored %d presence entries in %s", len(restored), channel)

    async def lease(self) -> None:
        """Renew this node's lease and record its channels."""
        if self._resend_channels:
            added, removed = set(self._local), set()
        else:
            added, removed = self._added, self._removed
        self._added, self._removed = set(), set()
        try:
            had_lease = await self._engine.node_heartbeat(
                self._node_id, self.now_ms(), self._lease_ms, added, removed
            )
        except EngineError:
            self._resend_channels = True
            raise
        self._resend_channels = False
        lost = self._lease_lost or (self._leased and not had_lease)
        self._leased, self._lease_lost = True, False
        if lost and self._local:
            # Reaped while alive (a long pause) or Redis lost its data: record every
            # channel again now, and refresh so the entries come back within this tick.
            logger.warning("node lease was lost; restoring presence")
            await self._engine.node_heartbeat(
                self._node_id, self.now_ms(), self._lease_ms, set(self._local), ()
            )
            await self.refresh()

    async def reap(self) -> None:
        """Remove the entries of nodes whose lease lapsed, with their leave events."""
        reaped = await self._engine.reap_dead_nodes(self._node_id, self.now_ms())
        for dead in reaped:
            logger.warning("node %s stopped renewing its lease; removed its presence", dead)
