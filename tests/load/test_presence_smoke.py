"""One short run of the presence-query benchmark against a real pushhub and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_presence_benchmark_measures_every_query_at_every_member_count(tmp_path: Path) -> None:
    out = tmp_path / "presence.jsonl"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "load.presence", "--members", "30,250", "--requests", "5"),
            *("--max-duration", "60", "--json-out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["members"], r["query"]) for r in rows] == [
        (30, "REST count"),
        (30, "REST first page (100)"),
        (30, "socket presence (first 100)"),
        (250, "REST count"),
        (250, "REST first page (100)"),
        (250, "REST middle page (100, by cursor)"),
        (250, "socket presence (first 100)"),
    ]
    assert all(r["requests"] == 5 and 0 < r["p50_ms"] <= r["max_ms"] for r in rows)
    assert "| 250 | REST count | 5 |" in result.stdout
