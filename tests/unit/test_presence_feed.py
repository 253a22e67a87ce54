"""The presence feed: join/leave lines gathered per channel and tick, counts past the
member bound, a resync notice when events resume or overflow. Plain calls."""

from __future__ import annotations

from typing import Any

import orjson

from pushhub.presence_feed import PresenceFeed


def feed(max_members: int = 3, max_bytes: int = 1000) -> PresenceFeed:
    return PresenceFeed(lambda channel: max_members, max_bytes)


def frames(f: PresenceFeed) -> dict[str, list[dict[str, Any]]]:
    return {
        channel: [orjson.loads(line) for line in frame.split("\n")] for channel, frame in f.flush()
    }


def join(user: str) -> str:
    return orjson.dumps({"type": "join", "channel": "c", "user": user, "info": None}).decode()


def leave(user: str) -> str:
    return orjson.dumps({"type": "leave", "channel": "c", "user": user}).decode()


def test_a_ticks_events_go_out_as_one_frame_in_order() -> None:
    f = feed()

    assert f.add("c", join("a"), 1, 1) is True
    assert f.add("c", join("b"), 2, 2) is False
    assert f.add("c", leave("a"), 1, 1) is False
    assert f.add("d", join("z"), 1, 1) is True

    out = frames(f)
    assert [(e["type"], e["user"]) for e in out["c"]] == [
        ("join", "a"),
        ("join", "b"),
        ("leave", "a"),
    ]
    assert [e["user"] for e in out["d"]] == ["z"]
    assert f.flush() == []  # a new tick starts empty
    assert len(f) == 0


def test_past_the_bound_counts_replace_events_once_per_change() -> None:
    f = feed(max_members=2)
    f.add("c", join("a"), 1, 1)
    f.add("c", join("b"), 2, 2)
    assert [e["type"] for e in frames(f)["c"]] == ["join", "join"]

    f.add("c", join("x"), 3, 3)
    assert frames(f)["c"] == [
        {
            "type": "presence_count",
            "channel": "c",
            "users": 3,
            "connections": 3,
            "join_leave": False,
        }
    ]
    assert f.counting("c")

    f.add("c", None, 3, 3)  # same counts: nothing to say
    assert frames(f) == {}
    f.add("c", join("y"), 4, 4)
    f.add("c", join("w"), 5, 6)
    (only,) = frames(f)["c"]
    assert (only["users"], only["connections"], only["join_leave"]) == (5, 6, False)


def test_falling_back_to_the_bound_resumes_events_with_a_resync_notice() -> None:
    f = feed(max_members=2)
    f.add("c", join("x"), 3, 3)
    frames(f)

    f.add("c", leave("x"), 2, 2)
    (notice,) = frames(f)["c"]
    assert (notice["type"], notice["join_leave"], notice["users"]) == ("presence_count", True, 2)
    assert not f.counting("c")

    f.add("c", leave("b"), 1, 1)
    assert [e["type"] for e in frames(f)["c"]] == ["leave"]


def test_a_tick_over_the_byte_bound_drops_its_events_and_asks_for_a_resync() -> None:
    line = join("a")
    f = feed(max_members=0, max_bytes=3 * len(line))

    for _ in range(10):
        f.add("c", line, 1, 1)

    (notice,) = frames(f)["c"]
    assert (notice["type"], notice["join_leave"]) == ("presence_count", True)
    f.add("c", line, 1, 1)
    assert [e["type"] for e in frames(f)["c"]] == ["join"]


def test_a_bound_of_zero_never_switches_to_counts() -> None:
    f = feed(max_members=0)
    f.add("c", join("a"), 10_000, 10_000)

    assert [e["type"] for e in frames(f)["c"]] == ["join"]


def test_forget_drops_the_tick_and_the_mode() -> None:
    f = feed(max_members=1)
    f.add("c", join("a"), 2, 2)
    frames(f)
    f.add("c", join("b"), 3, 3)

    f.forget("c")

    assert not f.counting("c")
    assert f.flush() == []


def test_counts_go_out_at_most_once_per_count_every_ticks_and_the_last_change_is_kept() -> None:
    f = PresenceFeed(lambda channel: 2, 1000, count_every=3)
    sent: list[int] = []
    for n in range(3, 10):  # the count changes every tick
        f.add("c", None, n, n)
        for _, frame in f.flush():
            sent.append(orjson.loads(frame)["users"])
    # Churn stopped at 9: the held-back change goes out within count_every ticks.
    for _ in range(3):
        for _, frame in f.flush():
            sent.append(orjson.loads(frame)["users"])

    assert sent == [3, 6, 9]
    assert len(f) == 0
