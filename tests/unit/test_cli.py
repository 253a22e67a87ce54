"""`python -m pushhub serve` refuses bad configuration with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT


def run_pushhub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PUSHHUB_") and k != "PORT"}
    clean.pop("REDIS_URL", None)
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pushhub", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "key", "value"),
    [
        (["--port", "abc"], {}, "--port", "'abc'"),
        ([], {"PUSHHUB_MAX_SUBSCRIPTIONS": "0"}, "PUSHHUB_MAX_SUBSCRIPTIONS", "'0'"),
    ],
)
def test_bad_setting_stops_serve_with_exit_code_2_and_one_line_naming_it(
    args: list[str], env: dict[str, str], key: str, value: str
) -> None:
    result = run_pushhub("serve", *args, env=env)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert value in lines[0]
    assert result.stdout == ""
