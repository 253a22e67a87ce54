"""Short end-to-end runs of the scenarios where clients come and go: storm counting
frames, restart (clients coming back by themselves) and stormload (a stream while others
connect), against a real redis-server, pushhub and the reference, with tiny numbers.

These assert correctness (everyone connected and came back, nothing lost among the
messages counted, refusals retried), never speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 50


def run_load(tmp_path: Path, *args: str, clients: int = CLIENTS) -> list[dict[str, Any]]:
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "load", *args, "--clients", str(clients), "--workers", "2"]
    cmd += ["--json-out", str(out), "--max-duration", "80", "--progress-every", "60"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=90, check=False)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
    )
    return [orjson.loads(line) for line in out.read_text().splitlines()]


def runs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in records if r.get("kind") == "run"}


def assert_nothing_lost(record: dict[str, Any]) -> None:
    assert record["connected"] == CLIENTS, record
    assert record["connect_failures"] == 0, record
    assert record["disconnects"] == 0, record
    assert record["expected"] > 0, record
    assert record["delivered"] == record["expected"], record
    assert (record["lost"], record["duplicated"]) == (0, 0), record
    assert record["latency_p99_ms"] is not None, record
    assert record["ok"], record


def test_restart_every_client_comes_back_and_nothing_counted_is_lost(tmp_path: Path) -> None:
    records = run_load(
        tmp_path, "restart", "--target", "both", "--channels", "2", "--duration", "1"
    )
    by_target = runs(records)
    assert set(by_target) == {"reference", "pushhub"}
    for target, record in by_target.items():
        assert_nothing_lost(record)
        assert (record["reconnected"], record["reconnect_failures"]) == (CLIENTS, 0), record
        assert 0 < record["restart_stop_s"] <= record["outage_s"] < record["all_back_s"], record
        assert 0 < record["reconnect_p50_ms"] <= record["reconnect_p99_ms"], record
        assert record["reconnect_p99_ms"] <= record["all_back_s"] * 1000 * 1.02, record
        # Messages of the outage (and the guard before it) are not expected from anyone:
        # fewer expected than every message to every subscriber of its channel.
        assert record["expected"] < record["published"] * CLIENTS / 2, record
        # Every client's subscribed reply came in the reconnect phase, and the stream.
        assert record["frames_received"] >= CLIENTS, record
        code = 1012 if target == "pushhub" else 1001
        assert f"restart closed {CLIENTS} with {code}" in record["notes"], record
    (ratio,) = [r for r in records if r.get("kind") == "ratio"]
    assert "all_back_s" in ratio


def test_stormload_measures_the_stream_during_a_storm_that_is_refused_and_retried(
    tmp_path: Path,
) -> None:
    records = run_load(
        tmp_path,
        "stormload", "--target", "both", "--storm-clients", "200", "--max-handshakes", "4",
        "--duration", "1", "--rate", "50",
    )  # fmt: skip
    by_target = runs(records)
    for record in by_target.values():
        assert_nothing_lost(record)
        assert (record["storm_clients"], record["storm_connected"]) == (200, 200), record
        assert record["storm_failures"] == 0, record
        assert record["storm_connect_per_s"] > 0, record
        assert record["baseline_latency_p99_ms"] is not None, record
        assert record["all_subscribed_s"] > 0, record
    # Four handshakes at a time: pushhub refuses most of the storm, which retries.
    assert by_target["pushhub"]["connect_refused"] > 0
    assert by_target["reference"]["connect_refused"] == 0  # no admission control


def test_storm_on_one_channel_counts_frames_and_presence_lines(tmp_path: Path) -> None:
    records = run_load(tmp_path, "storm", "--target", "both", "--channels", "1", "--presence")
    by_target = runs(records)
    ref, ours = by_target["reference"], by_target["pushhub"]
    for record in (ref, ours):
        assert_nothing_lost(record)
        assert record["all_subscribed_s"] > 0, record
    # The reference sends a subscribed reply per client and nothing else.
    assert (ref["frames_received"], ref["presence_events_received"]) == (CLIENTS, 0)
    # pushhub: a subscribed reply per client, then the joins, gathered per tick into
    # one frame per member: at most every client sees every join, in fewer frames.
    assert ours["presence"] is True
    presence = ours["presence_events_received"]
    assert 0 < presence <= CLIENTS * CLIENTS
    assert CLIENTS < ours["frames_received"] < CLIENTS + presence
