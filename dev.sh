#!/usr/bin/env bash
# pushhub's two commands, on a fresh Debian/Ubuntu machine with Python 3.11+:
#   ./dev.sh serve   install what the server needs, start it on http://127.0.0.1:8000
#   ./dev.sh test    install what the tests need (redis-server, chromium), run the whole suite:
#                    format check, lint, type check, tests with branch coverage
# Extra arguments go to `pushhub serve` or to pytest.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else say "need root (or sudo) to run: $*"; exit 1
    fi
}

APT_UPDATED=
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "please install: $* (no apt-get on this machine)"; exit 1
    fi
    if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    say "pushhub needs Python 3.11 or newer"; exit 1
}

ensure_venv() {  # $1: the pip extra to install ("" or "test")
    local extra="$1" python stamp want
    if [ ! -x "$PY" ]; then
        python="$(find_python)"
        if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            apt_install "$(basename "$python")-venv" || apt_install python3-venv
            "$python" -m venv "$VENV"
        fi
    fi
    stamp="$VENV/.installed-${extra:-base}"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing pushhub${extra:+ with [$extra]} into $VENV"
        "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
        "$PY" -m pip install -q --disable-pip-version-check -e ".${extra:+[$extra]}"
        echo "$want" >"$stamp"
    fi
}

ensure_test_tools() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
        apt_install redis-server redis-tools
    # tests/browser drive Debian's Chromium through Playwright: the distribution's package,
    # never a browser build downloaded by `playwright install`.
    [ -x /usr/bin/chromium ] || apt_install chromium
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    serve)
        ensure_venv ""
        exec "$VENV/bin/pushhub" serve "$@"
        ;;
    test)
        ensure_test_tools
        ensure_venv test
        say "ruff format --check"; "$VENV/bin/ruff" format --check .
        say "ruff check"; "$VENV/bin/ruff" check .
        say "mypy --strict"; "$VENV/bin/mypy"
        # Two pytest-xdist workers (one a core; tests/conftest.py keeps each module, and
        # tests/security and tests/browser whole, on one worker; `-n 0`: one process). Branch coverage of pushhub, the node processes the tests start
        # included (see [tool.coverage] in pyproject.toml). The fail_under ratchet holds
        # for the whole suite; a run given arguments (some tests) reports coverage
        # without it. `--no-cov` turns measuring off.
        opts=(-n 2 --dist loadscope --cov --cov-report=term:skip-covered)
        [ $# -gt 0 ] && opts+=(--cov-fail-under=0)
        say "pytest"; exec "$VENV/bin/pytest" "${opts[@]}" "$@"
        ;;
    *)
        echo "usage: ./dev.sh serve [pushhub serve options] | ./dev.sh test [pytest options]" >&2
        exit 2
        ;;
esac
