"""Requests from this machine's own pages: loopback addresses, Host names and origins.

Without API keys (and, for WebSockets, without a JWT key or an origin allowlist) pushhub
trusts the machine it runs on. A loopback TCP peer alone does not prove a request comes
from it: a browser on this machine connects from loopback on behalf of every page it
shows. Two attacks use that, and these rules stop them:

- **Cross-site requests** (CSRF, cross-site WebSocket hijacking): any page may send a
  "simple" POST or open a WebSocket to ``127.0.0.1``. Browsers mark such requests with
  the page's ``Origin`` and, in current versions, ``Sec-Fetch-Site``.
- **DNS rebinding**: a page on ``evil.example`` re-resolves its own name to
  ``127.0.0.1``; the browser then treats pushhub's answers as the page's own, and lets it
  read them. Its requests still say ``Host: evil.example``, so a loopback Host is required.

Plain functions of header values, no I/O: used by the HTTP API (api.py) and the
WebSocket origin policy (limits.py).
"""

from __future__ import annotations

import ipaddress
import re

#: A Host header's optional port: a colon and one to five ASCII digits.
_PORT = re.compile(r"(?::[0-9]{1,5})?")
#: ``localhost`` itself or any name under it (RFC 6761). Browsers resolve these to
#: loopback themselves, without DNS, so a rebinding page cannot take such a name.
_LOCALHOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*localhost")
#: ``Sec-Fetch-Site`` values of requests a page of another site did not cause: the
#: page's own origin, or the user (typed URL, bookmark).
_OWN_FETCHES = frozenset({"same-origin", "none"})


def _loopback_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # ::ffff:127.0.0.1 is how a dual-stack socket shows an IPv4 loopback peer.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_loopback_address(address: str | None) -> bool:
    """Whether a client address (an IP literal, the TCP peer) is a loopback address."""
    if address is None:
        return False
    try:
        return _loopback_ip(ipaddress.ip_address(address))
    except ValueError:
        return False


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name: ``localhost`` or a
    name under ``.localhost``, an address in 127.0.0.0/8, or ``[::1]``, each with an
    optional port. Anything else, a missing Host included, is not."""
    if not host:
        return False
    host = host.lower()
    if host.startswith("["):
        literal, bracket, port = host[1:].partition("]")
        if not bracket or not _PORT.fullmatch(port):
            return False
        try:
            return _loopback_ip(ipaddress.IPv6Address(literal))
        except ValueError:
            return False
    name, colon, port = host.partition(":")
    if colon and not _PORT.fullmatch(colon + port):
        return False
    if _LOCALHOST.fullmatch(name):
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


def is_loopback_origin(origin: str) -> bool:
    """Whether an ``Origin`` header is a page served from a loopback name over http or
    https (any port). ``null`` and every other origin are not."""
    scheme, sep, rest = origin.lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and is_loopback_host(rest)


def _shown(value: str) -> str:
    """A header value quoted for an error message, cut short."""
    return repr(value[:100])


def browser_refusal(host: str | None, origin: str | None, fetch_site: str | None) -> str | None:
    """Why a request trusted for coming from this machine is refused, or None.

    It must be addressed to a loopback name (DNS rebinding), and must not come from a
    page of another site: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none`` and
    an ``Origin`` that is not a loopback origin are refused. Non-browser clients send
    neither header and pass.
    """
    if not is_loopback_host(host):
        return (
            "no API keys are configured, so the HTTP API answers requests addressed to a "
            f"loopback name only (localhost, 127.0.0.1, [::1]), not Host {_shown(host or '')}"
        )
    if fetch_site is not None and fetch_site.lower() not in _OWN_FETCHES:
        return (
            "no API keys are configured, so the HTTP API refuses requests from pages of "
            f"other sites (Sec-Fetch-Site: {_shown(fetch_site)})"
        )
    if origin is not None and not is_loopback_origin(origin):
        return (
            "no API keys are configured, so the HTTP API refuses requests from pages not "
            f"served from this machine (Origin: {_shown(origin)})"
        )
    return None
