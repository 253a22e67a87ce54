"""One short end-to-end run of each load scenario: the real tool as a subprocess, a real
redis-server and real pushhub (and the reference) processes, tiny numbers.

These assert correctness (every client connected and subscribed, nothing lost or
doubled), never speed: the figures of a 2-second run on a shared CI machine mean nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 20


def run_load(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "results.jsonl"
    # Latency limits off: a loaded CI machine may be slow, and speed is not under test.
    cmd = [sys.executable, "-m", "load", *args, "--clients", str(CLIENTS), "--workers", "2"]
    cmd += ["--json-out", str(out), "--max-duration", "45", "--progress-every", "60"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=50, check=False)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
    )
    return [orjson.loads(line) for line in out.read_text().splitlines()]


def assert_complete(record: dict[str, Any]) -> None:
    assert record["connected"] == CLIENTS, record
    assert record["connect_failures"] == 0, record
    assert record["disconnects"] == 0, record
    assert record["expected"] > 0, record
    assert record["delivered"] == record["expected"], record
    assert (record["lost"], record["duplicated"]) == (0, 0), record
    assert record["ok"], record


def test_fanout_ramp_on_both_targets_delivers_every_message_to_every_client(
    tmp_path: Path,
) -> None:
    records = run_load(
        tmp_path,
        "fanout",
        "--target", "both", "--ramp", "--rate", "20", "--ramp-factor", "2",
        "--max-rate", "40", "--duration", "1", "--max-p99-ms", "60000",
    )  # fmt: skip

    steps = [r for r in records if r.get("kind") == "step"]
    assert [(s["target"], s["rate"]) for s in steps] == [
        ("reference", 20.0), ("reference", 40.0), ("pushhub", 20.0), ("pushhub", 40.0),
    ]  # fmt: skip
    for step in steps:
        assert_complete(step)
        assert step["expected"] == step["published"] * CLIENTS
    summaries = [r for r in records if r.get("kind") == "ramp"]
    assert [(s["target"], s["best_rate"]) for s in summaries] == [
        ("reference", 40.0),
        ("pushhub", 40.0),
    ]
    (ratio,) = [r for r in records if r.get("kind") == "ratio"]
    assert ratio["best_rate"]["ratio"] == 1.0


def test_targeted_over_http_publish_delivers_each_message_to_its_channel(
    tmp_path: Path,
) -> None:
    (record,) = run_load(
        tmp_path, "targeted", "--publish", "http", "--rate", "100", "--duration", "2"
    )
    assert_complete(record)
    assert (record["channels"], record["publish"]) == (CLIENTS, "http")
    assert record["expected"] == record["published"] == 200


def test_idle_connections_stay_subscribed_and_memory_is_measured(tmp_path: Path) -> None:
    (record,) = run_load(tmp_path, "idle", "--duration", "1", "--settle", "0.2")
    assert_complete(record)
    assert record["expected"] == CLIENTS  # one message per channel, one channel per client
    assert record["rss_per_conn_kib"] is not None
    assert record["server_rss_mib"] > 0


def test_storm_connects_every_client_at_once_and_each_subscription_works(
    tmp_path: Path,
) -> None:
    (record,) = run_load(tmp_path, "storm")
    assert_complete(record)
    assert record["connect_per_s"] > 0
