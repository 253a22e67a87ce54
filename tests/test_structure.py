"""The seams of the package, checked on the source: what each module may import.

Modules are parsed with ``ast``, never imported, so the check has no side effects and
sees every import: top level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pushhub"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, frozenset[str]]:
    """Every module of the package -> the full names of everything it imports."""
    found: dict[str, frozenset[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found[name] = frozenset(imports(ast.parse(path.read_text(), str(path)), package))
    return found


def imports(tree: ast.AST, package: str) -> set[str]:
    """Full module names imported in ``tree``. ``from a import b`` counts as ``a`` and
    ``a.b`` (b may be a submodule); relative imports are resolved against ``package``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def importers_of(target: str) -> set[str]:
    """Modules that import ``target`` or anything under it."""
    return {
        name
        for name, imported in modules().items()
        if any(i == target or i.startswith(target + ".") for i in imported)
    }


def test_the_walk_finds_every_module_and_its_imports() -> None:
    found = modules()

    assert {"pushhub", "pushhub.engine", "pushhub.engine.redis", "pushhub.hub"} <= set(found)
    assert "redis.asyncio" in found["pushhub.engine.redis"]
    assert "pushhub.connection" in found["pushhub.hub"]


def test_relative_imports_are_resolved_against_their_package() -> None:
    tree = ast.parse("from . import hub\nfrom ..errors import ConfigError\nfrom .base import X")

    assert imports(tree, "pushhub.engine") >= {
        "pushhub.engine.hub",
        "pushhub.errors",
        "pushhub.errors.ConfigError",
        "pushhub.engine.base",
    }


def test_only_the_redis_engine_imports_redis() -> None:
    assert importers_of("redis") == {"pushhub.engine.redis"}


def test_only_the_transport_speaks_websocket_asgi() -> None:
    # The transport talks raw ASGI (see its docstring); nothing wraps Starlette's WebSocket.
    assert importers_of("starlette.websockets") == set()
    speakers = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if '"websocket.accept"' in path.read_text() or '"websocket.send"' in path.read_text()
    }
    # server.py is the other end: uvicorn's protocol, which receives what the app sends.
    assert speakers == {"pushhub.transport", "pushhub.server"}


@pytest.mark.parametrize("module", ["pushhub.hub", "pushhub.connection"])
@pytest.mark.parametrize("forbidden", ["starlette", "redis"])
def test_local_fan_out_knows_nothing_of_starlette_or_redis(module: str, forbidden: str) -> None:
    assert module not in importers_of(forbidden)


@pytest.mark.parametrize("forbidden", ["pushhub.connection", "pushhub.hub", "pushhub.node"])
def test_engines_know_nothing_of_connections_hub_or_node(forbidden: str) -> None:
    engines = {name for name in modules() if name.startswith("pushhub.engine")}

    assert engines, "no engine modules found"
    assert not engines & importers_of(forbidden)


def test_protocol_does_no_asyncio() -> None:
    assert "pushhub.protocol" not in importers_of("asyncio")


@pytest.mark.parametrize("forbidden", ["asyncio", "pushhub.connection", "pushhub.node"])
def test_recovery_state_is_plain_code(forbidden: str) -> None:
    # Held frames and the stream tracker are decided without I/O, so they are tested
    # with plain calls; the node does the awaiting.
    assert "pushhub.recovery" not in importers_of(forbidden)


@pytest.mark.parametrize(
    "forbidden", ["pushhub.session", "pushhub.node", "pushhub.auth", "pushhub.protocol"]
)
def test_a_connection_is_only_the_outbound_side(forbidden: str) -> None:
    # Who the client is and what it may do is its session's; the connection queues.
    assert "pushhub.connection" not in importers_of(forbidden)


@pytest.mark.parametrize(
    "forbidden", ["starlette", "redis", "pushhub.transport", "pushhub.api", "pushhub.hub"]
)
def test_a_session_knows_nothing_of_transports_or_the_hub(forbidden: str) -> None:
    # A session reaches channels only through the node, so SSE or any other transport
    # can drive the same sessions.
    assert "pushhub.session" not in importers_of(forbidden)


def test_only_the_redis_engine_reads_the_envelope() -> None:
    # The byte envelope lives beside the Lua that writes it; the node gets typed events.
    assert importers_of("pushhub.engine.envelope") == {"pushhub.engine.redis"}


def test_protocol_knows_no_envelope() -> None:
    tree = ast.parse((PACKAGE / "protocol.py").read_text())
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    names |= {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    assert names, "no names found in protocol.py"
    assert not {name for name in names if "envelope" in name.lower()}
    assert "\\x1e" not in (PACKAGE / "protocol.py").read_text()


@pytest.mark.parametrize("engine", ["pushhub.engine.redis", "pushhub.engine.memory"])
def test_config_and_the_registry_import_no_engine_module(engine: str) -> None:
    # config.py asks pushhub.engine for the schemes; only the chosen engine is imported,
    # when create_engine is called.
    importers = importers_of(engine)

    assert "pushhub.config" not in importers
    assert "pushhub.engine" not in importers
    assert "pushhub.app" not in importers


@pytest.mark.parametrize("module", ["pushhub.node", "pushhub.presence", "pushhub.api"])
def test_nothing_outside_the_engines_names_an_engine_module(module: str) -> None:
    # The node, the presence manager and the API type against pushhub.engine.base.
    assert module not in importers_of("pushhub.engine.redis")
    assert module not in importers_of("pushhub.engine.memory")
    assert module not in importers_of("pushhub.engine.envelope")


@pytest.mark.parametrize("module", ["pushhub.presence_feed", "pushhub.stream"])
def test_the_presence_feed_and_stream_positions_are_plain_code(module: str) -> None:
    # Decided without I/O or a clock, so tested with plain calls; the node does the timing.
    assert module in modules(), f"{module} not found"
    assert not {i for i in modules()[module] if i.startswith(("asyncio", "pushhub."))}
