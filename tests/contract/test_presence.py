"""The presence contract (pushhub/engine/base.py), written once and run on every engine.

"Nodes" are engines sharing one store: ``MemoryEngine`` objects on one ``MemoryBroker``,
or ``RedisEngine`` objects on one real redis-server. Time is never slept: every call
takes ``now_ms`` from the test, which moves the clock by passing a later number.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pushhub.engine.base import Engine, PresenceCount, PresenceEntry, PresenceMember
from pushhub.engine.memory import MemoryBroker, MemoryEngine
from pushhub.engine.redis import RedisEngine
from pushhub.protocol import member_key
from tests.engine_events import Ignore, Recorder, presence_frame
from tests.support import RedisServer

#: Every wait for a delivery is bounded by this, so a lost event fails the test fast.
DELIVERY_TIMEOUT = 5.0

#: The injected clock starts here (ms); entries live TTL ms and leases LEASE ms.
T0 = 1_000_000
TTL = 15_000
LEASE = 5_000

#: The Redis engines of this suite use a prefix of their own, to see that it is used.
PREFIX = "presence-test:"

CHANNEL = "room:1"


def entry(conn_id: str, user: str | None = None, info: bytes | None = None) -> PresenceEntry:
    return PresenceEntry(conn_id, member_key(user, conn_id), info)


def joined(user: str, info: Any = None, channel: str = CHANNEL) -> dict[str, Any]:
    return {"type": "join", "channel": channel, "user": user, "info": info}


def left(user: str, channel: str = CHANNEL) -> dict[str, Any]:
    return {"type": "leave", "channel": channel, "user": user}


@dataclass
class Store:
    """The shared state behind the nodes of one test, and a way to lose all of it."""

    make: Callable[[], Engine]
    lose_everything: Callable[[], None]


class Watcher(Recorder):
    """A node subscribed to channels, collecting the presence events published on them
    (as the frames a node would send for them)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._fences = itertools.count()

    async def watch(self, *channels: str) -> None:
        for channel in channels:
            await self.engine.subscribe(channel)

    async def events(self, channel: str = CHANNEL) -> list[dict[str, Any]]:
        """The presence events on ``channel`` since the last call, in order.

        A fence payload published after the operations under test arrives after every
        event they published (one publisher's payloads keep their order, and a script's
        PUBLISH happens before the script returns), so nothing is still in flight.
        """
        fence = b"fence-%d" % next(self._fences)
        await self.engine.publish(channel, fence)
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while True:
                got, event = await self.received.get()
                if (got, event) == (channel, fence):
                    break
                frame = presence_frame(got, event)
                if frame is not None:  # a presence event, not some other message
                    self._events.setdefault(got, []).append(frame)
        return self._events.pop(channel, [])


StartNode = Callable[[], Awaitable[Engine]]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    """The backing store; the redis-server is started (and flushed) only if needed."""
    if request.param == "memory":
        broker = MemoryBroker()
        return Store(lambda: MemoryEngine(broker), broker.flush)
    url: str = request.getfixturevalue("redis_url")
    server: RedisServer = request.getfixturevalue("redis_server")
    ids = itertools.count()

    def flushall() -> None:
        assert server.cli("FLUSHALL").strip() == "OK"

    return Store(
        lambda: RedisEngine(url, node_id=f"presence-{next(ids)}", key_prefix=PREFIX), flushall
    )


@pytest.fixture
async def start_node(store: Store) -> AsyncIterator[StartNode]:
    """Start nodes on the shared store; every engine is closed after the test."""
    started: list[Engine] = []

    async def start() -> Engine:
        engine = store.make()
        await engine.start(Ignore())
        started.append(engine)
        return engine

    yield start
    for engine in started:
        await engine.close()


@pytest.fixture
async def node(start_node: StartNode) -> Engine:
    return await start_node()


@pytest.fixture
async def other(start_node: StartNode) -> Engine:
    return await start_node()


@pytest.fixture
async def watcher(store: Store) -> AsyncIterator[Watcher]:
    engine = store.make()
    watcher = Watcher(engine)
    await engine.start(watcher)
    await watcher.watch(CHANNEL)
    yield watcher
    await engine.close()


async def count(engine: Engine, channel: str = CHANNEL) -> PresenceCount:
    (result,) = await engine.presence_counts([channel])
    return result


async def all_members(engine: Engine, channel: str = CHANNEL) -> list[PresenceMember]:
    return await engine.presence_page(channel, None, 1000)


# -- join and leave ----------------------------------------------------------------------


async def test_join_adds_an_entry_and_emits_a_join_event_with_the_member_info(
    node: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice", b'{"name":"Alice"}'), T0, TTL, True)

    assert await count(node) == PresenceCount(users=1, connections=1)
    assert await all_members(node) == [PresenceMember("u:alice", 1, b'{"name":"Alice"}')]
    assert await watcher.events() == [joined("alice", {"name": "Alice"})]


async def test_join_and_leave_without_emit_change_presence_silently(
    node: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, False)
    assert await count(node) == PresenceCount(1, 1)

    await node.presence_leave(CHANNEL, "n1.1", False)
    assert await count(node) == PresenceCount(0, 0)

    assert await watcher.events() == []


async def test_a_user_with_three_connections_on_two_nodes_is_one_member_with_three(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.2", "alice"), T0, TTL, True)

    assert await count(node) == PresenceCount(users=1, connections=3)
    assert await all_members(other) == [PresenceMember("u:alice", 3, None)]
    assert await watcher.events() == [joined("alice")]


async def test_no_leave_while_another_connection_of_the_user_remains_and_one_after_the_last(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.2", "alice"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "alice"), T0, TTL, True)
    assert await watcher.events() == [joined("alice")]

    await node.presence_leave(CHANNEL, "n1.1", True)
    await other.presence_leave(CHANNEL, "n2.1", True)
    assert await watcher.events() == []
    assert await count(node) == PresenceCount(users=1, connections=1)

    await node.presence_leave(CHANNEL, "n1.2", True)
    assert await watcher.events() == [left("alice")]
    assert await count(other) == PresenceCount(0, 0)
    assert await all_members(other) == []


async def test_anonymous_connections_are_members_of_their_own(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1"), T0, TTL, True)

    assert await count(node) == PresenceCount(users=2, connections=2)
    assert await all_members(node) == [
        PresenceMember("c:n1.1", 1, None),
        PresenceMember("c:n2.1", 1, None),
    ]
    anonymous_join = {"type": "join", "channel": CHANNEL, "user": None, "info": None}
    assert await watcher.events() == [
        {**anonymous_join, "client": "n1.1"},
        {**anonymous_join, "client": "n2.1"},
    ]

    await node.presence_leave(CHANNEL, "n1.1", True)

    assert await watcher.events() == [
        {"type": "leave", "channel": CHANNEL, "user": None, "client": "n1.1"}
    ]
    assert await count(node) == PresenceCount(users=1, connections=1)


async def test_leave_is_idempotent(node: Engine, other: Engine, watcher: Watcher) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "bob"), T0, TTL, True)
    await watcher.events()

    await node.presence_leave(CHANNEL, "n1.1", True)
    await node.presence_leave(CHANNEL, "n1.1", True)
    await other.presence_leave(CHANNEL, "n1.1", True)
    await node.presence_leave(CHANNEL, "never-joined", True)
    await node.presence_leave("room:nobody", "n1.1", True)

    assert await watcher.events() == [left("alice")]
    assert await count(node) == PresenceCount(users=1, connections=1)
    assert await count(node, "room:nobody") == PresenceCount(0, 0)


async def test_joining_again_with_the_same_connection_id_does_not_count_twice(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0 + 1000, TTL, True)
    await other.presence_join(CHANNEL, entry("n1.1", "alice"), T0 + 2000, TTL, True)

    assert await count(node) == PresenceCount(users=1, connections=1)
    assert await all_members(node) == [PresenceMember("u:alice", 1, None)]
    assert await watcher.events() == [joined("alice")]

    # One leave undoes it: the rejoins added nothing to undo.
    await node.presence_leave(CHANNEL, "n1.1", True)
    assert await watcher.events() == [left("alice")]
    assert await count(node) == PresenceCount(0, 0)


async def test_member_info_is_the_latest_given_and_none_keeps_the_earlier_info(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice", b'{"v":1}'), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "alice", b'{"v":2}'), T0, TTL, True)
    assert await all_members(node) == [PresenceMember("u:alice", 2, b'{"v":2}')]

    await node.presence_join(CHANNEL, entry("n1.2", "alice", None), T0, TTL, True)
    assert await all_members(node) == [PresenceMember("u:alice", 3, b'{"v":2}')]

    # Rejoining a known connection with new info updates it too.
    await node.presence_join(CHANNEL, entry("n1.1", "alice", b'{"v":3}'), T0, TTL, True)
    assert await all_members(other) == [PresenceMember("u:alice", 3, b'{"v":3}')]

    assert await watcher.events() == [joined("alice", {"v": 1})]


async def test_info_is_stored_per_member(node: Engine) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice", b'{"a":1}'), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.2", "bob", b'{"b":2}'), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.3", None, b'{"c":3}'), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.4", "carol"), T0, TTL, True)

    assert await all_members(node) == [
        PresenceMember("c:n1.3", 1, b'{"c":3}'),
        PresenceMember("u:alice", 1, b'{"a":1}'),
        PresenceMember("u:bob", 1, b'{"b":2}'),
        PresenceMember("u:carol", 1, None),
    ]


async def test_info_is_forgotten_when_the_member_leaves(node: Engine, watcher: Watcher) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice", b'{"v":1}'), T0, TTL, True)
    await node.presence_leave(CHANNEL, "n1.1", True)

    await node.presence_join(CHANNEL, entry("n1.2", "alice"), T0, TTL, True)

    assert await all_members(node) == [PresenceMember("u:alice", 1, None)]
    assert await watcher.events() == [joined("alice", {"v": 1}), left("alice"), joined("alice")]


async def test_join_events_carry_user_ids_exactly(node: Engine, watcher: Watcher) -> None:
    user = 'Zoë "z" \\ / 🚀 <b>'
    await node.presence_join(CHANNEL, entry("n1.1", user, b'{"s":"\\u00e9"}'), T0, TTL, True)
    await node.presence_leave(CHANNEL, "n1.1", True)

    assert await watcher.events() == [joined(user, {"s": "é"}), left(user)]


# -- expiry and refresh -----------------------------------------------------------------------


async def test_an_entry_refreshed_at_t_survives_until_t_plus_ttl(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await watcher.events()
    t = T0 + 10_000

    assert await node.presence_refresh([(CHANNEL, ["n1.1"])], t, TTL, True) == {}
    # Refreshes from another node, of its own (here: no) entries, expire what is stale.
    await other.presence_refresh([(CHANNEL, [])], T0 + TTL + 1, TTL, True)
    await other.presence_refresh([(CHANNEL, [])], t + TTL, TTL, True)
    assert await count(node) == PresenceCount(users=1, connections=1)
    assert await watcher.events() == []

    await other.presence_refresh([(CHANNEL, [])], t + TTL + 1, TTL, True)
    assert await count(node) == PresenceCount(0, 0)
    assert await watcher.events() == [left("alice")]


async def test_an_entry_not_refreshed_is_removed_with_a_leave_by_a_refresh_from_another_node(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.2"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "bob"), T0, TTL, True)
    await watcher.events()
    assert await other.presence_refresh([(CHANNEL, ["n2.1"])], T0 + TTL, TTL, True) == {}
    assert await count(node) == PresenceCount(users=3, connections=3)

    later = T0 + TTL + 1
    assert await other.presence_refresh([(CHANNEL, ["n2.1"])], later, TTL, True) == {}

    assert await count(node) == PresenceCount(users=1, connections=1)
    assert await all_members(node) == [PresenceMember("u:bob", 1, None)]
    events = await watcher.events()
    anonymous_left = {"type": "leave", "channel": CHANNEL, "user": None, "client": "n1.2"}
    assert sorted(events, key=repr) == sorted([left("alice"), anonymous_left], key=repr)


async def test_a_late_refresh_keeps_the_refreshing_nodes_own_entries(
    node: Engine, watcher: Watcher
) -> None:
    # A refresh delayed past the TTL (a Redis stall) must not expire the live entries it
    # is refreshing: its own are extended before anything stale is removed.
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await watcher.events()

    assert await node.presence_refresh([(CHANNEL, ["n1.1"])], T0 + TTL + 5000, TTL, True) == {}

    assert await count(node) == PresenceCount(users=1, connections=1)
    assert await watcher.events() == []


async def test_expiry_of_one_connection_emits_no_leave_while_the_user_has_another(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "alice"), T0, TTL, True)
    await watcher.events()
    await other.presence_refresh([(CHANNEL, ["n2.1"])], T0 + TTL, TTL, True)

    await other.presence_refresh([(CHANNEL, ["n2.1"])], T0 + TTL + 1, TTL, True)

    assert await all_members(node) == [PresenceMember("u:alice", 1, None)]
    assert await watcher.events() == []


async def test_refresh_without_emit_removes_expired_entries_silently(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, False)

    await other.presence_refresh([(CHANNEL, [])], T0 + TTL + 1, TTL, False)

    assert await count(node) == PresenceCount(0, 0)
    assert await watcher.events() == []


async def test_refresh_reports_the_entries_lost_with_the_state_and_rejoin_restores_them(
    store: Store, node: Engine, other: Engine
) -> None:
    alice1, alice2, anon = entry("n1.1", "alice"), entry("n1.2", "alice"), entry("n1.3")
    for e in (alice1, alice2, anon):
        await node.presence_join(CHANNEL, e, T0, TTL, True)
    await other.presence_join("room:2", entry("n2.1", "bob"), T0, TTL, True)

    store.lose_everything()

    items = [(CHANNEL, ["n1.1", "n1.2", "n1.3"]), ("room:2", ["n2.1"])]
    missing = await node.presence_refresh(items, T0 + 1000, TTL, True)
    assert {channel: sorted(ids) for channel, ids in missing.items()} == {
        CHANNEL: ["n1.1", "n1.2", "n1.3"],
        "room:2": ["n2.1"],
    }
    assert await node.presence_counts([CHANNEL, "room:2"]) == [
        PresenceCount(0, 0),
        PresenceCount(0, 0),
    ]

    for e in (alice1, alice2, anon):
        await node.presence_join(CHANNEL, e, T0 + 1000, TTL, True)

    assert await count(other) == PresenceCount(users=2, connections=3)
    assert await other.presence_refresh([(CHANNEL, ["n1.1", "n1.2"])], T0 + 2000, TTL, True) == {}


async def test_refresh_reports_only_channels_with_missing_entries(
    node: Engine, other: Engine
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join("room:2", entry("n1.2", "alice"), T0, TTL, True)
    await other.presence_leave("room:2", "n1.2", True)

    missing = await node.presence_refresh(
        [(CHANNEL, ["n1.1"]), ("room:2", ["n1.2"]), ("room:3", [])], T0 + 1000, TTL, True
    )

    assert missing == {"room:2": ["n1.2"]}
    assert await node.presence_refresh([], T0 + 1000, TTL, True) == {}


# -- counts and pages -----------------------------------------------------------------------


async def test_counts_answer_users_and_connections_for_several_channels(
    node: Engine, other: Engine
) -> None:
    await node.presence_join("room:a", entry("n1.1", "alice"), T0, TTL, True)
    await other.presence_join("room:a", entry("n2.1", "alice"), T0, TTL, True)
    await other.presence_join("room:a", entry("n2.2"), T0, TTL, True)
    await node.presence_join("room:b", entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join("room:b", entry("n1.2", "bob"), T0, TTL, True)

    counts = await other.presence_counts(["room:a", "room:empty", "room:b", "room:a"])

    assert counts == [
        PresenceCount(users=2, connections=3),
        PresenceCount(users=0, connections=0),
        PresenceCount(users=2, connections=2),
        PresenceCount(users=2, connections=3),
    ]
    assert await other.presence_counts([]) == []


async def test_page_lists_members_in_key_order_with_their_connections_and_info(
    node: Engine, other: Engine
) -> None:
    await node.presence_join(CHANNEL, entry("n1.1", "carol", b'{"c":1}'), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.1", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.2", "bob", b"[]"), T0, TTL, True)
    await other.presence_join(CHANNEL, entry("n2.2", "alice", b'{"a":1}'), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.3"), T0, TTL, True)

    assert await node.presence_page(CHANNEL, None, 100) == [
        PresenceMember("c:n1.3", 1, None),
        PresenceMember("u:alice", 2, b'{"a":1}'),
        PresenceMember("u:bob", 1, b"[]"),
        PresenceMember("u:carol", 1, b'{"c":1}'),
    ]
    assert await node.presence_page(CHANNEL, None, 2) == [
        PresenceMember("c:n1.3", 1, None),
        PresenceMember("u:alice", 2, b'{"a":1}'),
    ]
    assert await node.presence_page(CHANNEL, "u:alice", 2) == [
        PresenceMember("u:bob", 1, b"[]"),
        PresenceMember("u:carol", 1, b'{"c":1}'),
    ]
    # ``after`` need not be a member: paging continues from where it would sort.
    assert await node.presence_page(CHANNEL, "u:b", 100) == [
        PresenceMember("u:bob", 1, b"[]"),
        PresenceMember("u:carol", 1, b'{"c":1}'),
    ]
    assert await node.presence_page(CHANNEL, "u:carol", 100) == []
    assert await node.presence_page("room:empty", None, 100) == []


async def test_page_order_is_the_order_of_code_points_for_non_ascii_users(node: Engine) -> None:
    users = ["é", "z", "Z", "ä", "日本", "😀", "a b", "a"]
    for n, user in enumerate(users):
        await node.presence_join(CHANNEL, entry(f"n1.{n}", user), T0, TTL, True)

    members = await all_members(node)

    assert [m.key for m in members] == sorted(f"u:{u}" for u in users)


async def pages(engine: Engine, limit: int) -> AsyncIterator[list[PresenceMember]]:
    after: str | None = None
    while True:
        page = await engine.presence_page(CHANNEL, after, limit)
        if page:
            yield page
        if len(page) < limit:
            return
        after = page[-1].key


async def test_paging_with_after_visits_each_of_250_members_exactly_once(
    node: Engine, other: Engine
) -> None:
    users = [f"user-{n:03d}" for n in range(250)]
    for n, user in enumerate(users):
        joiner = node if n % 2 else other
        await joiner.presence_join(CHANNEL, entry(f"n{n % 2}.{n}", user), T0, TTL, False)

    sizes, seen = [], []
    async for page in pages(node, 100):
        sizes.append(len(page))
        seen += [m.key for m in page]

    assert sizes == [100, 100, 50]
    assert seen == [f"u:{u}" for u in users]


async def test_paging_is_stable_while_members_leave_and_join_between_pages(
    node: Engine, other: Engine
) -> None:
    for n in range(250):
        await node.presence_join(CHANNEL, entry(f"n1.{n}", f"user-{n:03d}"), T0, TTL, False)

    seen: list[str] = []
    after: str | None = None
    page_number = 0
    while page := await node.presence_page(CHANNEL, after, 100):
        seen += [m.key for m in page]
        after = page[-1].key
        page_number += 1
        if page_number == 1:
            # Members already returned leave; newcomers join before, among and after them.
            for n in range(0, 100, 3):
                await other.presence_leave(CHANNEL, f"n1.{n}", False)
            for user in ("user-000a", "user-150a", "user-999", "aaa"):
                await other.presence_join(CHANNEL, entry(f"n2.{user}", user), T0, TTL, False)
            # And one not yet returned leaves.
            await other.presence_leave(CHANNEL, "n1.200", False)

    survivors = [f"u:user-{n:03d}" for n in range(250) if n != 200]
    assert len(seen) == len(set(seen))
    assert set(survivors) <= set(seen)
    assert "u:user-200" not in seen
    assert "u:user-150a" in seen
    assert "u:user-999" in seen
    assert seen == sorted(seen)


# -- node leases and reaping -------------------------------------------------------------------


async def test_heartbeat_is_false_for_a_new_lease_and_true_while_the_lease_exists(
    node: Engine,
) -> None:
    assert await node.node_heartbeat("n1", T0, LEASE) is False
    assert await node.node_heartbeat("n1", T0 + 1000, LEASE, ["room:1"]) is True
    assert await node.node_heartbeat("n1", T0 + 2000, LEASE, (), ["room:1"]) is True
    assert await node.node_heartbeat("n2", T0, LEASE) is False


async def test_heartbeat_is_false_again_after_the_state_is_lost(store: Store, node: Engine) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])

    store.lose_everything()

    assert await node.node_heartbeat("n1", T0 + 1000, LEASE, [CHANNEL]) is False
    assert await node.node_heartbeat("n1", T0 + 2000, LEASE) is True


async def test_reap_removes_only_the_entries_of_nodes_whose_lease_lapsed(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    # n1 dies; n10 shares its id's first characters and stays alive.
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL, "room:2"])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join("room:2", entry("n1.2"), T0, TTL, True)
    await other.node_heartbeat("n10", T0, LEASE, [CHANNEL])
    await other.presence_join(CHANNEL, entry("n10.1", "bob"), T0, TTL, True)
    await watcher.events()

    now = T0 + LEASE + 1
    await other.node_heartbeat("n10", now, LEASE)
    reaped = await other.reap_dead_nodes("n10", now)

    assert reaped == ["n1"]
    assert await all_members(other) == [PresenceMember("u:bob", 1, None)]
    assert await other.presence_counts([CHANNEL, "room:2"]) == [
        PresenceCount(1, 1),
        PresenceCount(0, 0),
    ]
    assert await watcher.events() == [left("alice")]


async def test_reap_emits_leave_only_for_members_with_no_connection_left(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.2", "alice"), T0, TTL, True)
    await node.presence_join(CHANNEL, entry("n1.3", "bob"), T0, TTL, True)
    await other.node_heartbeat("n2", T0, LEASE, [CHANNEL])
    await other.presence_join(CHANNEL, entry("n2.1", "bob"), T0, TTL, True)
    await watcher.events()

    now = T0 + LEASE + 1
    await other.node_heartbeat("n2", now, LEASE)
    assert await other.reap_dead_nodes("n2", now) == ["n1"]

    assert await watcher.events() == [left("alice")]
    assert await all_members(other) == [PresenceMember("u:bob", 1, None)]


async def test_a_lease_is_alive_until_its_expiry_and_lapsed_one_millisecond_later(
    node: Engine, other: Engine
) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)

    assert await other.reap_dead_nodes("n2", T0 + LEASE) == []
    assert await count(other) == PresenceCount(1, 1)

    assert await other.reap_dead_nodes("n2", T0 + LEASE + 1) == ["n1"]
    assert await count(other) == PresenceCount(0, 0)


async def test_a_renewed_lease_is_not_reaped(node: Engine, other: Engine) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)

    await node.node_heartbeat("n1", T0 + LEASE, LEASE)

    assert await other.reap_dead_nodes("n2", T0 + LEASE + 1) == []
    assert await count(other) == PresenceCount(1, 1)


async def test_channels_recorded_by_several_heartbeats_are_all_reaped(
    node: Engine, other: Engine
) -> None:
    await node.node_heartbeat("n1", T0, LEASE, ["room:a"])
    await node.presence_join("room:a", entry("n1.1", "alice"), T0, TTL, True)
    await node.node_heartbeat("n1", T0 + 1000, LEASE, ["room:b"])
    await node.presence_join("room:b", entry("n1.1", "alice"), T0 + 1000, TTL, True)

    assert await other.reap_dead_nodes("n2", T0 + 1000 + LEASE + 1) == ["n1"]

    assert await other.presence_counts(["room:a", "room:b"]) == [
        PresenceCount(0, 0),
        PresenceCount(0, 0),
    ]


async def test_a_node_never_reaps_itself(node: Engine) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)

    assert await node.reap_dead_nodes("n1", T0 + LEASE * 10) == []

    assert await count(node) == PresenceCount(1, 1)
    assert await node.node_heartbeat("n1", T0 + LEASE * 10, LEASE) is True


async def test_a_dead_node_is_reaped_exactly_once_across_reapers(
    start_node: StartNode, watcher: Watcher
) -> None:
    dead, reaper_a, reaper_b = await start_node(), await start_node(), await start_node()
    await dead.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await dead.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    await watcher.events()
    now = T0 + LEASE + 1

    first = await reaper_a.reap_dead_nodes("n2", now)
    second = await reaper_b.reap_dead_nodes("n3", now)
    again = await reaper_a.reap_dead_nodes("n2", now + 1000)

    assert (first, second, again) == (["n1"], [], [])
    assert await watcher.events() == [left("alice")]


async def test_concurrent_reapers_reap_a_dead_node_once(
    start_node: StartNode, watcher: Watcher
) -> None:
    dead = await start_node()
    reapers = [await start_node() for _ in range(4)]
    await dead.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    for n in range(20):
        await dead.presence_join(CHANNEL, entry(f"n1.{n}", f"user-{n}"), T0, TTL, True)
    await watcher.events()
    now = T0 + LEASE + 1

    results = await asyncio.gather(
        *(r.reap_dead_nodes(f"r{i}", now) for i, r in enumerate(reapers))
    )

    assert sorted(results) == [[], [], [], ["n1"]]
    events = await watcher.events()
    assert sorted(e["user"] for e in events) == sorted(f"user-{n}" for n in range(20))
    assert {e["type"] for e in events} == {"leave"}


async def test_a_node_reaped_and_back_is_reaped_again_when_its_lease_lapses_again(
    node: Engine, other: Engine, watcher: Watcher
) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)
    assert await other.reap_dead_nodes("n2", T0 + LEASE + 1) == ["n1"]

    # n1 was only paused: it finds its lease gone and restores its presence...
    back = T0 + LEASE + 2
    assert await node.node_heartbeat("n1", back, LEASE, [CHANNEL]) is False
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), back, TTL, True)
    await watcher.events()

    # ...then dies for good: its lease lapses again and the survivor removes it again.
    assert await other.reap_dead_nodes("n2", back + LEASE + 1) == ["n1"]
    assert await count(other) == PresenceCount(0, 0)
    assert await watcher.events() == [left("alice")]


async def test_a_node_that_left_cleanly_is_never_reaped(node: Engine, other: Engine) -> None:
    await node.node_heartbeat("n1", T0, LEASE, [CHANNEL])
    await node.presence_join(CHANNEL, entry("n1.1", "alice"), T0, TTL, True)

    await node.node_leave("n1")

    assert await other.reap_dead_nodes("n2", T0 + LEASE * 10) == []
    assert await count(other) == PresenceCount(1, 1)
    assert await node.node_heartbeat("n1", T0 + LEASE * 10, LEASE) is False


async def test_node_leave_of_an_unknown_node_is_not_an_error(node: Engine) -> None:
    await node.node_leave("never-seen")


# -- Redis only: the keys ---------------------------------------------------------------------


@pytest.fixture
async def redis_node(redis_url: str) -> AsyncIterator[RedisEngine]:
    engine = RedisEngine(redis_url, node_id="presence-keys", key_prefix=PREFIX)
    await engine.start(Ignore())
    yield engine
    await engine.close()


def redis_keys(server: RedisServer) -> list[str]:
    return sorted(line for line in server.cli("KEYS", "*").splitlines() if line)


async def test_redis_presence_keys_carry_the_prefix_a_channel_hash_tag_and_a_ttl(
    redis_server: RedisServer, redis_node: RedisEngine
) -> None:
    await redis_node.presence_join(CHANNEL, entry("n1.1", "alice", b"{}"), T0, TTL, True)
    await redis_node.presence_join("room:2", entry("n1.2"), T0, TTL, True)
    await redis_node.node_heartbeat("n1", T0, LEASE, [CHANNEL, "room:2"])

    keys = redis_keys(redis_server)

    assert keys
    assert all(key.startswith(PREFIX) for key in keys), keys
    presence = [key for key in keys if key.startswith(f"{PREFIX}presence:")]
    assert {key.split(":{")[1].split("}:")[0] for key in presence} == {CHANNEL, "room:2"}
    assert len([k for k in presence if f"{{{CHANNEL}}}" in k]) == 5  # info given: all five
    for key in presence:
        pttl = int(redis_server.cli("PTTL", key))
        assert 0 < pttl <= 2 * TTL, (key, pttl)


async def test_redis_leaves_no_presence_keys_after_every_member_left(
    redis_server: RedisServer, redis_node: RedisEngine
) -> None:
    await redis_node.presence_join(CHANNEL, entry("n1.1", "alice", b"{}"), T0, TTL, True)
    await redis_node.presence_join(CHANNEL, entry("n1.2", "alice", b"{}"), T0, TTL, True)
    await redis_node.presence_join(CHANNEL, entry("n1.3", None, b"{}"), T0, TTL, True)
    await redis_node.presence_join("room:kept", entry("n1.4", "bob"), T0, TTL, True)
    await redis_node.presence_refresh([(CHANNEL, ["n1.1", "n1.2"])], T0 + 1000, TTL, True)

    await redis_node.presence_leave(CHANNEL, "n1.1", True)
    # A refresh that does not list n1.2 (its node is gone) lets it expire with the rest.
    await redis_node.presence_refresh([(CHANNEL, [])], T0 + TTL + 1001, TTL, True)

    assert await count(redis_node) == PresenceCount(0, 0)
    assert [k for k in redis_keys(redis_server) if f"{{{CHANNEL}}}" in k] == []
    assert [k for k in redis_keys(redis_server) if "{room:kept}" in k] != []
