"""Security headers on every HTTP response, and the dashboard's Content-Security-Policy.

A pure ASGI middleware on the Starlette application: it adds headers to each
``http.response.start`` and costs no task per request (Starlette's ``BaseHTTPMiddleware``
would). ``/ws`` goes around Starlette (app.py), so sockets never pass through it.

- ``X-Content-Type-Options: nosniff``: a browser never reads a JSON body or a static file
  as anything but its declared type (no HTML or script sniffed out of data).
- ``Referrer-Policy: no-referrer``: no URL of a pushhub page (its query included) leaves
  in a ``Referer`` header when a page links or loads elsewhere.
- ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``: no other page can frame the
  dashboard and trick clicks on it (clickjacking).
- ``Content-Security-Policy`` on every response but JSON bodies: scripts, styles and
  connections from pushhub's own origin only, no inline code except the inline scripts
  and styles of the pages in the static directory, allowed by their SHA-256 hashes. An
  injected ``<script>`` or event handler does not run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from html.parser import HTMLParser
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("pushhub.headers")

#: On every response.
BASE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class _InlineCode(HTMLParser):
    """Collects the text of inline ``<script>`` (without ``src``) and ``<style>`` elements."""

    def __init__(self) -> None:
        # Character references stay as written: a hash covers the raw text, as browsers
        # hash it.
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._open: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "style" or (tag == "script" and all(name != "src" for name, _ in attrs)):
            self._open, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            (self.scripts if tag == "script" else self.styles).append("".join(self._text))
            self._open = None


def _hash_source(text: str) -> str:
    # Browsers hash the element's text after HTML's newline normalisation, as UTF-8.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def inline_hashes(static_dir: Path) -> tuple[list[str], list[str]]:
    """CSP hash sources of the inline scripts and styles of the HTML pages under
    ``static_dir`` (the dashboard, the examples, an operator's own pages), sorted."""
    scripts: set[str] = set()
    styles: set[str] = set()
    pages = sorted(static_dir.rglob("*.html")) if static_dir.is_dir() else []
    for page in pages:
        try:
            text = page.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("not allowing the inline code of %s: %s", page, exc)
            continue
        parser = _InlineCode()
        parser.feed(text)
        parser.close()
        scripts.update(_hash_source(s) for s in parser.scripts)
        styles.update(_hash_source(s) for s in parser.styles)
    return sorted(scripts), sorted(styles)


def content_security_policy(static_dir: Path) -> str:
    """The policy of every non-JSON response: what the dashboard and the example pages
    need, and nothing an injected script could use."""
    scripts, styles = inline_hashes(static_dir)
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *scripts]),
            " ".join(["style-src 'self'", *styles]),
            # data: for the pages' empty favicon (<link rel="icon" href="data:,">).
            "img-src 'self' data:",
            # 'self' covers fetches to the API. The dashboard's WebSocket URL is a form
            # field: it may name another node, and older browsers (Safari before 15.4)
            # do not let 'self' match ws: and wss:. Where a page may connect matters only
            # to injected code, which script-src already keeps out.
            "connect-src 'self' ws: wss:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.partition(b";")[0].strip().lower() == b"application/json"
    return False


class SecurityHeaders:
    """Adds ``BASE_HEADERS`` to every HTTP response, and the Content-Security-Policy to
    every response but JSON ones.

    JSON bodies are data: a browser shows them as text, and nosniff keeps it from reading
    them as anything else, so a policy there would protect nothing and cost every API
    response a few hundred bytes.
    """

    def __init__(self, app: ASGIApp, static_dir: Path) -> None:
        self.app = app
        # Computed once, when Starlette builds its middleware stack (at start-up): the
        # pages are hashed as they are then; edit them and restart the node.
        policy = content_security_policy(static_dir)
        self._policy = (b"content-security-policy", policy.encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *BASE_HEADERS]
                if not _is_json(headers):
                    headers.append(self._policy)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
