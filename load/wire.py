"""The publisher's two wire formats, as bytes in and out: HTTP/1.1 for
``POST /api/publish`` and RESP for Redis ``PUBLISH``.

General clients (httpx, redis-py) cost tens to hundreds of microseconds per call, enough
to make the publisher the bottleneck at a few thousand publishes per second on a shared
core. Here a request is one write; Redis commands are pipelined and their replies
counted in bulk.
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLISH_PATH = "/api/publish"


def publish_request(host: str, port: int, body: bytes) -> bytes:
    head = (
        f"POST {PUBLISH_PATH} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def resp_command(*args: bytes) -> bytes:
    """One Redis command in RESP, e.g. ``resp_command(b"PUBLISH", channel, data)``."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def count_replies(data: bytes) -> tuple[int, bytes | None]:
    """Count the single-line replies (``:n`` integers, ``+OK``, ``-ERR ...``) in ``data``,
    which must end at a line end; return the count and the first error line, if any."""
    error = None
    if b"-" in data:
        for line in data.split(b"\r\n"):
            if line.startswith(b"-"):
                error = line
                break
    return data.count(b"\r\n"), error


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    content_length: int
    keep_alive: bool


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a response head (through the blank line). Raises ValueError when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    keep_alive = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line: {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            if not value.isdigit():
                raise ValueError(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif name == "connection":
            keep_alive = value.lower() != "close"
        elif name == "transfer-encoding":
            raise ValueError("chunked responses are not expected from /api/publish")
    if length is None:
        raise ValueError("response has no Content-Length")
    return ResponseHead(status, length, keep_alive)
