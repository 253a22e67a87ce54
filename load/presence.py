"""``python -m load.presence``: presence query latency against a real pushhub and Redis.

For each member count (100, 1,000 and 10,000 by default) it connects that many real
WebSocket clients, each as its own user, subscribes them all to one channel with presence
on (join/leave events off: the question here is the cost of reading presence, not of
fanning joins out to 10,000 sockets), waits until the REST count agrees, then times
sequential requests: the O(1) count, the first page of 100 members, a page in the middle
(by cursor), and the socket's ``presence`` query. Everything targets 127.0.0.1 and is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from load import runtime
from load.harness import LIFTED_LIMITS
from load.processes import HOST, RedisProcess, ServerProcess

CHANNEL = "presence-bench:room"
CONNECT_CONCURRENCY = 200


def config() -> str:
    lines = [f"{name} = {value}" for name, value in LIFTED_LIMITS.items()]
    # The probe socket sends its queries back to back: lift the per-socket frame rate too.
    lines += ["max_connections_per_user = 0", "max_frames_per_second = 100000"]
    lines += ["frame_burst = 1000000", "", "[[channels]]"]
    lines += ['pattern = "presence-bench:*"', "presence = true", "join_leave = false"]
    return "\n".join(lines) + "\n"


async def join(url: str, user: str) -> ClientConnection:
    ws = await connect(url, compression=None, open_timeout=30, max_queue=4)
    await ws.send(json.dumps({"type": "connect", "user": user, "id": 1}))
    await ws.send(json.dumps({"type": "subscribe", "channel": CHANNEL, "id": 2}))
    async with asyncio.timeout(30):
        while True:
            for line in str(await ws.recv()).split("\n"):
                event = json.loads(line)
                if event.get("id") == 2:
                    if event["type"] != "subscribed":
                        raise RuntimeError(f"{user} could not subscribe: {event}")
                    return ws


async def populate(url: str, start: int, count: int) -> list[ClientConnection]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> ClientConnection:
        async with gate:
            return await join(url, f"user{i:06d}")

    return list(await asyncio.gather(*(one(i) for i in range(start, start + count))))


async def timed(requests: int, call: Callable[[], Awaitable[None]]) -> dict[str, float]:
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "max_ms": round(samples[-1], 3),
    }


async def measure(
    http: httpx.AsyncClient, probe: ClientConnection, members: int, requests: int
) -> list[dict[str, Any]]:
    base = f"/api/presence/{CHANNEL}"
    middle = ""
    if members > 200:  # a cursor half way through the members
        cursor = ""
        for _ in range(members // 200):
            body = (await http.get(base, params={"limit": "100", "cursor": cursor})).json()
            cursor = body["next_cursor"]
        middle = cursor

    async def count() -> None:
        resp = await http.get(f"{base}/count")
        assert resp.json()["users"] == members, resp.text

    async def first_page() -> None:
        resp = await http.get(base, params={"limit": "100"})
        assert len(resp.json()["members"]) == min(100, members)

    async def middle_page() -> None:
        resp = await http.get(base, params={"limit": "100", "cursor": middle})
        assert len(resp.json()["members"]) == 100

    async def socket_query() -> None:
        await probe.send(json.dumps({"type": "presence", "channel": CHANNEL, "id": 7}))
        while True:
            for line in str(await probe.recv()).split("\n"):
                if json.loads(line).get("id") == 7:
                    return

    rows = []
    queries: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("REST count", count),
        ("REST first page (100)", first_page),
        ("socket presence (first 100)", socket_query),
    ]
    if middle:
        queries.insert(2, ("REST middle page (100, by cursor)", middle_page))
    for name, call in queries:
        rows.append({"members": members, "query": name, "requests": requests})
        rows[-1].update(await timed(requests, call))
    return rows


async def run(counts: Sequence[int], requests: int, max_duration: float) -> list[dict[str, Any]]:
    runtime.raise_nofile_limit()
    redis = RedisProcess()
    server: ServerProcess | None = None
    rows: list[dict[str, Any]] = []
    try:
        redis.start()
        server = ServerProcess("pushhub", redis.url, config=config())
        server.start()
        url = f"ws://{HOST}:{server.port}/ws"
        async with (
            asyncio.timeout(max_duration),
            httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=30) as http,
        ):
            clients: list[ClientConnection] = []
            for members in sorted(counts):
                began = time.monotonic()
                clients += await populate(url, len(clients), members - len(clients))
                print(
                    f"presence: {members:,} members joined in {time.monotonic() - began:.1f}s",
                    file=sys.stderr,
                )
                rows += await measure(http, clients[0], members, requests)
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    finally:
        if server is not None:
            server.stop()
        redis.stop()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| members | query | requests | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['members']:,} | {r['query']} | {r['requests']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.presence", description=__doc__)
    parser.add_argument("--members", default="100,1000,10000", help="member counts, ascending")
    parser.add_argument("--requests", type=int, default=200, help="requests per query (200)")
    parser.add_argument("--max-duration", type=float, default=600, help="hard cap, seconds")
    parser.add_argument("--json-out", help="also write the rows as JSON lines here")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.members.split(",") if c.strip()]
    if not counts or min(counts) < 1 or max(counts) > 15_000 or not 1 <= args.requests <= 10_000:
        print("load.presence: members 1-15000, requests 1-10000", file=sys.stderr)
        return 2
    rows = runtime.run(run(counts, args.requests, args.max_duration))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
