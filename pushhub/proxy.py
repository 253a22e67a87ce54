"""Who the client is behind trusted proxies: ``X-Forwarded-For`` read from the right.

Pure: no I/O, no ASGI. ``PushhubApp`` applies it to every ``http`` and ``websocket``
scope (docs/security.md, "Client addresses").

Each proxy appends the address of the peer it received the request from. So the
right-most entry was written by the proxy that connected to us (trusted), the one to its
left by the proxy before it, and so on; everything left of the first untrusted address
was written by the client itself and may be anything. The client is therefore the
right-most entry that is not a trusted proxy. Taking the left-most entry, as uvicorn's
``proxy_headers`` does when every address is trusted, lets a client name itself
``127.0.0.1``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, MutableMapping
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Schemes a trusted proxy may report in ``X-Forwarded-Proto``.
_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def parse_address(text: str) -> IPAddress | None:
    """An address from an ``X-Forwarded-For`` entry or a peer name, or None.

    Accepts ``192.0.2.1``, ``192.0.2.1:443``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:443``. IPv4-mapped IPv6 addresses (a dual-stack listener's view of
    an IPv4 peer) become the IPv4 address, so they match IPv4 networks and the loopback
    rule. Anything else (``unknown``, RFC 7239 obfuscated names, garbage) is None.
    """
    text = text.strip()
    if not text or len(text) > 64:  # the longest address with a zone and port is shorter
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not _is_port(rest)):
            return None
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        host, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return len(text) >= 2 and text[0] == ":" and text[1:].isascii() and text[1:].isdigit()


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: IPAddress) -> bool:
        # `in` is False across IP versions, so IPv4 and IPv6 networks can be mixed.
        return any(address in network for network in self._networks)

    def _trusted_peer(self, peer_host: str | None) -> bool:
        if peer_host is None:
            return False
        address = parse_address(peer_host)
        return address is not None and self.trusts(address)

    def client(self, peer_host: str | None, xff_header_values: Iterable[str]) -> str | None:
        """The client's address, or None when it cannot be known.

        ``peer_host`` is the TCP peer; ``xff_header_values`` every ``X-Forwarded-For``
        header of the request, in order (several headers are one comma-separated list).

        - The peer is not a trusted proxy: the peer, whatever the headers say.
        - Otherwise walk the list from the right, skipping trusted proxies; the first
          untrusted address is the client.
        - Every entry is a trusted proxy (a request from the proxy hosts themselves):
          the left-most entry.
        - No entry, or an entry where the client should be is not an address: None,
          "unknown". Never the proxy's own address: a same-host proxy would then make
          every client loopback.
        """
        if not self._trusted_peer(peer_host):
            return peer_host
        entries = [e for value in xff_header_values for e in value.split(",") if e.strip()]
        if not entries:
            return None
        address: IPAddress | None = None
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                # A proxy we trust wrote something that is not an address here.
                return None
            if not self.trusts(address):
                return str(address)
        return str(address)  # all trusted: the left-most, the last one parsed

    def scheme(
        self, peer_host: str | None, proto_header_values: Iterable[str], websocket: bool
    ) -> str | None:
        """The scheme a trusted peer reports in ``X-Forwarded-Proto``, or None to keep
        the connection's own. The right-most value counts: it is the one the proxy that
        talked to us set or appended."""
        if not self._trusted_peer(peer_host):
            return None
        values = [e.strip().lower() for v in proto_header_values for e in v.split(",")]
        values = [v for v in values if v]
        if not values or values[-1] not in _SCHEMES:
            return None
        scheme = values[-1]
        if websocket:
            return scheme.replace("http", "ws")
        return scheme.replace("ws", "http")

    def rewrite(self, scope: MutableMapping[str, Any]) -> None:
        """Put the real client (and scheme) in an ``http`` or ``websocket`` scope.

        In place, as uvicorn's proxy middleware did, so uvicorn's own log lines name the
        client too. An unknown client becomes ``client: None``, ASGI's "unknown": never
        loopback for the HTTP API, and keyed ``"unknown"`` by the per-IP limits, so all
        such requests share one budget, as they would have shared the proxy's.
        """
        peer = scope.get("client")
        host = str(peer[0]) if peer else None
        if not self._trusted_peer(host):
            return  # the common case without a proxy: no header is even looked at
        forwarded_for: list[str] = []
        forwarded_proto: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for.append(bytes(value).decode("latin-1"))
            elif name == b"x-forwarded-proto":
                forwarded_proto.append(bytes(value).decode("latin-1"))
        client = self.client(host, forwarded_for)
        scope["client"] = None if client is None else (client, 0)
        scheme = self.scheme(host, forwarded_proto, websocket=scope.get("type") == "websocket")
        if scheme is not None:
            scope["scheme"] = scheme


@functools.lru_cache(maxsize=8)
def trusted_proxies(networks: tuple[str, ...]) -> TrustedProxies:
    """The parsed ``TrustedProxies`` for a ``Settings.trusted_proxies`` tuple, made once."""
    return TrustedProxies(networks)
