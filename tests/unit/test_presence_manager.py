"""This node's side of presence, over memory engines sharing one broker and a test clock.

The manager's background loops are never started: each test calls ``refresh`` and
``lease`` itself, as the loops would, after moving the clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pushhub.channels import ChannelOptions, ChannelRule, ChannelRules
from pushhub.config import Settings
from pushhub.engine.base import PresenceCount, PresenceEntry, PresenceMember
from pushhub.engine.memory import MemoryBroker, MemoryEngine
from pushhub.presence import PresenceManager
from pushhub.protocol import member_key
from tests.engine_events import Ignore, Join, Leave, presence_frame
from tests.support import Clock, Engines

SETTINGS = Settings()  # presence_ttl 15 s, presence_heartbeat 5 s, node_lease_ttl 5 s
CHANNEL = "room:1"
QUIET = "quiet:1"
RULES = ChannelRules((ChannelRule("quiet:*", ChannelOptions(join_leave=False)),))


class Events(Ignore):
    """Presence events delivered to a subscribed engine, as the frames a node sends for
    them; memory delivers synchronously."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_join(
        self, channel: str, member: str, info: bytes | None, counts: PresenceCount | None
    ) -> None:
        self._record(channel, Join(member, info, counts))

    def on_leave(self, channel: str, member: str, counts: PresenceCount | None) -> None:
        self._record(channel, Leave(member, counts))

    def _record(self, channel: str, event: Join | Leave) -> None:
        frame = presence_frame(channel, event)
        assert frame is not None
        self.seen.append(frame)

    def take(self, channel: str = CHANNEL) -> list[dict[str, Any]]:
        """The events on ``channel`` since the last take (events elsewhere are dropped)."""
        seen, self.seen = self.seen, []
        return [event for event in seen if event["channel"] == channel]


def entry(conn_id: str, user: str | None = None, info: bytes | None = None) -> PresenceEntry:
    return PresenceEntry(conn_id, member_key(user, conn_id), info)


StartEngine = Callable[[], Awaitable[MemoryEngine]]
MakeManager = Callable[[str], Awaitable[PresenceManager]]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def start_engine(broker: MemoryBroker, engines: Engines) -> StartEngine:
    """Start another node's engine on the shared broker."""
    return lambda: engines.start(MemoryEngine(broker))


@pytest.fixture
async def events(broker: MemoryBroker, engines: Engines) -> Events:
    events = Events()
    engine = await engines.start(MemoryEngine(broker), events)
    await engine.subscribe(CHANNEL)
    await engine.subscribe(QUIET)
    return events


@pytest.fixture
def make_manager(start_engine: StartEngine, clock: Clock) -> MakeManager:
    """A node's presence manager on its own engine, on the shared broker and clock."""

    async def make(node_id: str) -> PresenceManager:
        return PresenceManager(await start_engine(), SETTINGS, RULES, node_id, clock)

    return make


@pytest.fixture
async def manager(make_manager: MakeManager) -> PresenceManager:
    return await make_manager("n1")


@pytest.fixture
async def observer(start_engine: StartEngine) -> MemoryEngine:
    """Another node's engine, to look at the shared state from outside."""
    return await start_engine()


async def count(engine: MemoryEngine, channel: str = CHANNEL) -> PresenceCount:
    (result,) = await engine.presence_counts([channel])
    return result


# -- join and leave ------------------------------------------------------------------------------


async def test_join_is_tracked_locally_and_shared_with_a_join_event(
    manager: PresenceManager, observer: MemoryEngine, events: Events
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice", b'{"v":1}'))

    assert manager.tracks(CHANNEL, "n1.1")
    assert not manager.tracks(CHANNEL, "n1.2")
    assert not manager.tracks("room:other", "n1.1")
    assert await observer.presence_page(CHANNEL, None, 10) == [
        PresenceMember("u:alice", 1, b'{"v":1}')
    ]
    assert events.take() == [
        {"type": "join", "channel": CHANNEL, "user": "alice", "info": {"v": 1}}
    ]


async def test_leave_is_untracked_locally_and_shared_with_a_leave_event(
    manager: PresenceManager, observer: MemoryEngine, events: Events
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice"))
    await manager.join(CHANNEL, entry("n1.2", "alice"))
    events.take()

    await manager.leave(CHANNEL, "n1.1")
    assert not manager.tracks(CHANNEL, "n1.1")
    assert await count(observer) == PresenceCount(users=1, connections=1)
    assert events.take() == []

    await manager.leave(CHANNEL, "n1.2")
    await manager.leave(CHANNEL, "n1.2")
    await manager.leave("room:never", "n1.2")
    assert await count(observer) == PresenceCount(0, 0)
    assert events.take() == [{"type": "leave", "channel": CHANNEL, "user": "alice"}]


async def test_channels_configured_without_join_leave_get_no_events(
    manager: PresenceManager, observer: MemoryEngine, events: Events
) -> None:
    await manager.join(QUIET, entry("n1.1", "alice"))
    assert await count(observer, QUIET) == PresenceCount(1, 1)

    await manager.leave(QUIET, "n1.1")
    assert await count(observer, QUIET) == PresenceCount(0, 0)

    assert events.seen == []


# -- refresh ---------------------------------------------------------------------------------------


async def test_refresh_keeps_entries_alive_past_their_first_ttl(
    manager: PresenceManager, observer: MemoryEngine, clock: Clock, events: Events
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice"))
    events.take()

    for _ in range(4):  # 20 s, past the 15 s TTL, refreshed every heartbeat
        clock.advance(SETTINGS.presence_heartbeat)
        await manager.refresh()

    # Another node's refresh expires what is stale; this node's entry is not.
    await observer.presence_refresh([(CHANNEL, [])], clock.ms, 15_000, True)
    assert await count(observer) == PresenceCount(1, 1)
    assert events.take() == []


async def test_entries_of_a_node_that_stops_refreshing_expire_with_a_leave(
    manager: PresenceManager, observer: MemoryEngine, clock: Clock, events: Events
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice"))
    events.take()

    clock.advance(SETTINGS.presence_ttl + 1)
    await observer.presence_refresh([(CHANNEL, [])], clock.ms, 15_000, True)

    assert await count(observer) == PresenceCount(0, 0)
    assert events.take() == [{"type": "leave", "channel": CHANNEL, "user": "alice"}]


async def test_refresh_restores_every_local_entry_after_the_state_is_lost(
    broker: MemoryBroker, manager: PresenceManager, observer: MemoryEngine, clock: Clock
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice", b'{"v":1}'))
    await manager.join(CHANNEL, entry("n1.2", "alice"))
    await manager.join(CHANNEL, entry("n1.3"))
    await manager.join(QUIET, entry("n1.1", "alice"))
    await manager.leave(CHANNEL, "n1.3")

    broker.flush()
    assert await observer.presence_counts([CHANNEL, QUIET]) == [PresenceCount(0, 0)] * 2

    clock.advance(SETTINGS.presence_heartbeat)
    await manager.refresh()

    assert await observer.presence_counts([CHANNEL, QUIET]) == [
        PresenceCount(users=1, connections=2),
        PresenceCount(users=1, connections=1),
    ]
    assert await observer.presence_page(CHANNEL, None, 10) == [
        PresenceMember("u:alice", 2, b'{"v":1}')
    ]


async def test_refresh_with_nothing_joined_does_nothing(
    manager: PresenceManager, observer: MemoryEngine
) -> None:
    await manager.refresh()

    assert await count(observer) == PresenceCount(0, 0)


# -- lease and reaping ---------------------------------------------------------------------------


async def test_lease_reaps_a_dead_node_once_its_lease_lapses(
    manager: PresenceManager, observer: MemoryEngine, clock: Clock, events: Events
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice"))
    await manager.lease()
    await manager.reap()
    # n2 (another process on the same store) records its lease and a member, then dies.
    await observer.node_heartbeat("n2", clock.ms, 5_000, [CHANNEL])
    await observer.presence_join(CHANNEL, entry("n2.1", "bob"), clock.ms, 15_000, True)
    await observer.presence_join(CHANNEL, entry("n2.2", "alice"), clock.ms, 15_000, True)
    events.take()

    clock.advance(SETTINGS.node_lease_ttl)  # n2's lease is just at its expiry: alive
    await manager.lease()
    await manager.reap()
    assert await count(observer) == PresenceCount(users=2, connections=3)

    clock.advance(1.0)  # one lease tick later, n2 has lapsed; n1 renewed its own lease
    await manager.lease()
    await manager.reap()

    assert await observer.presence_page(CHANNEL, None, 10) == [PresenceMember("u:alice", 1, None)]
    assert events.take() == [{"type": "leave", "channel": CHANNEL, "user": "bob"}]
    assert await observer.reap_dead_nodes("n3", clock.ms) == []


async def test_a_node_that_keeps_its_lease_is_never_reaped_by_another(
    make_manager: MakeManager, observer: MemoryEngine, clock: Clock
) -> None:
    n1, n2 = await make_manager("n1"), await make_manager("n2")
    await n1.join(CHANNEL, entry("n1.1", "alice"))
    await n2.join(CHANNEL, entry("n2.1", "bob"))

    for tick in range(1, 31):  # 30 s of lease ticks on both nodes, a refresh every 5 s
        clock.advance(SETTINGS.node_lease_ttl / 5)
        await n1.lease()
        await n1.reap()
        await n2.lease()
        await n2.reap()
        if tick % 5 == 0:
            await n1.refresh()
            await n2.refresh()

    assert await count(observer) == PresenceCount(users=2, connections=2)


async def test_lease_after_the_state_is_lost_restores_this_nodes_entries_and_record(
    broker: MemoryBroker,
    make_manager: MakeManager,
    observer: MemoryEngine,
    clock: Clock,
    events: Events,
) -> None:
    n1, n2 = await make_manager("n1"), await make_manager("n2")
    await n1.join(CHANNEL, entry("n1.1", "alice"))
    await n1.join(QUIET, entry("n1.2"))
    await n1.lease()
    await n1.reap()
    await n2.lease()
    await n2.reap()

    broker.flush()
    clock.advance(1.0)
    await n1.lease()
    await n1.reap()

    assert await observer.presence_counts([CHANNEL, QUIET]) == [PresenceCount(1, 1)] * 2
    # The lease and the channel record came back too: when n1 later dies, n2 reaps it.
    events.take()
    clock.advance(SETTINGS.node_lease_ttl + 1)
    await n2.lease()
    await n2.reap()
    assert await observer.presence_counts([CHANNEL, QUIET]) == [PresenceCount(0, 0)] * 2
    assert events.take() == [{"type": "leave", "channel": CHANNEL, "user": "alice"}]


async def test_a_join_in_a_new_channel_after_the_state_is_lost_does_not_hide_the_loss(
    broker: MemoryBroker,
    make_manager: MakeManager,
    observer: MemoryEngine,
    clock: Clock,
    events: Events,
) -> None:
    n1, n2 = await make_manager("n1"), await make_manager("n2")
    await n1.join(CHANNEL, entry("n1.1", "alice"))
    await n1.lease()
    await n1.reap()
    await n2.lease()
    await n2.reap()

    broker.flush()
    # Within the same lease tick, a connection of n1 enters a channel new to n1.
    await n1.join("room:2", entry("n1.2", "bob"))
    clock.advance(1.0)
    await n1.lease()
    await n1.reap()
    await n1.refresh()
    assert await observer.presence_counts([CHANNEL, "room:2"]) == [PresenceCount(1, 1)] * 2

    # n1 dies: n2 must remove all of its members, not only those of the newest channel.
    events.take()
    clock.advance(SETTINGS.node_lease_ttl + 1)
    await n2.lease()
    await n2.reap()
    assert await observer.presence_counts([CHANNEL, "room:2"]) == [PresenceCount(0, 0)] * 2
    assert events.take() == [{"type": "leave", "channel": CHANNEL, "user": "alice"}]


async def test_close_drops_the_lease_so_the_node_is_never_reaped(
    manager: PresenceManager, observer: MemoryEngine, clock: Clock
) -> None:
    await manager.join(CHANNEL, entry("n1.1", "alice"))
    await manager.lease()
    await manager.reap()

    await manager.close()

    clock.advance(60)
    assert await observer.reap_dead_nodes("n2", clock.ms) == []
