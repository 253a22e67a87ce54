"""Every HTTP response carries the security headers; pages carry a Content-Security-Policy
that allows pushhub's own files and the inline code of its own pages, nothing else."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.support import PushhubNode

BASE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: [sources]}."""
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


def sha256_source(text: str) -> str:
    """A CSP hash source, computed as CSP Level 2 defines it."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_every_http_response_carries_nosniff_no_referrer_and_no_framing(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory()
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        responses = [
            await http.get("/"),
            await http.get("/static/dashboard.js"),
            await http.get("/static/dashboard.css"),
            await http.get("/static/examples/orders.html"),
            await http.get("/healthz"),
            await http.get("/readyz"),
            await http.get("/api/stats"),
            await http.get("/api/stats", headers={"Sec-Fetch-Site": "cross-site"}),  # 403
            await http.post("/api/publish", content=b"{}", headers={"Content-Type": "text/plain"}),
            await http.get("/api/publish"),  # 405
            await http.get("/no-such-page"),  # 404
        ]
    async with connect(node.ws_url, proxy=None, open_timeout=5) as ws:
        assert ws.response is not None
        upgrade = ws.response.headers

    for resp in responses:
        for name, value in BASE.items():
            assert resp.headers.get(name) == value, (resp.request.url, name)
    # /ws goes around Starlette: its handshake is the WebSocket layer's alone.
    assert "x-frame-options" not in upgrade


async def test_pages_get_a_policy_of_own_files_only_and_json_answers_none(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory()
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        pages = [await http.get("/"), await http.get("/static/examples/orders.html")]
        files = [await http.get("/static/pushhub.js"), await http.get("/no-such-page")]
        json_answers = [await http.get("/healthz"), await http.get("/api/stats")]

    for resp in pages + files:
        policy = directives(resp.headers["content-security-policy"])
        assert policy["default-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert policy["object-src"] == ["'none'"]
        assert policy["base-uri"] == ["'none'"]
        for directive in ("script-src", "style-src"):
            sources = policy[directive]
            assert sources[0] == "'self'"
            # Inline code only by hash: nothing injected into a page runs.
            assert all(s.startswith("'sha256-") for s in sources[1:]), sources
    for resp in json_answers:
        assert resp.headers["content-type"] == "application/json"
        assert "content-security-policy" not in resp.headers


async def test_the_inline_scripts_and_styles_of_the_static_pages_are_allowed_by_hash(
    tmp_path: Path, node_factory: Callable[..., PushhubNode]
) -> None:
    script = '\n    document.title = "served";\n  '
    style = "\n    body { color: rebeccapurple; }\n  "
    loaded = "ignored: a script with src runs its file, never this text"
    (tmp_path / "index.html").write_text(
        f"<!doctype html><title>x</title><style>{style}</style>\r\n"
        f'<script type="module">{script}</script><script src="/static/a.js">{loaded}</script>'
    )
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "page.html").write_text("<script>\r\nwindow.more = 1\r\n</script>")
    node = node_factory(env={"PUSHHUB_STATIC_DIR": str(tmp_path)})

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        page = await http.get("/")

    policy = directives(page.headers["content-security-policy"])
    # Browsers hash the text after turning CRLF into LF.
    assert sorted(policy["script-src"][1:]) == sorted(
        [sha256_source(script), sha256_source("\nwindow.more = 1\n")]
    )
    assert policy["style-src"][1:] == [sha256_source(style)]
    assert sha256_source(loaded) not in policy["script-src"]
