"""In-process limits: frame rates per connection, connections per client IP, origins.

These run on every frame or handshake, so they cost no Redis round trip. Limits shared
across nodes (connections per user, publishes per API key) live in the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pushhub import auth, loopback
from pushhub.config import Settings
from pushhub.ratelog import RateLimitedLog

logger = logging.getLogger("pushhub.limits")


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; ``take`` spends one."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def full(self) -> bool:
        """Whether the bucket has refilled to its burst (nothing to remember)."""
        now = self._clock()
        return self._tokens + (now - self._last) * self.rate >= self.burst

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass(slots=True)
class _IpState:
    open: int
    bucket: TokenBucket


#: Releases between sweeps of idle addresses.
SWEEP_EVERY = 1024


class ConnectionGate:
    """Open connections and new connections per second, per client IP, on this node."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_open = settings.max_connections_per_ip
        self._rate = settings.connections_per_second_per_ip
        self._clock = clock
        self._ips: dict[str, _IpState] = {}
        self._admissions = 0

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; the reason it is refused, or None."""
        state = self._ips.get(ip)
        if state is None:
            burst = max(1.0, self._rate)
            state = self._ips[ip] = _IpState(0, TokenBucket(self._rate, burst, self._clock))
        if state.open >= self._max_open:
            return f"more than {self._max_open} open connections from this address"
        if not state.bucket.take():
            return f"more than {self._rate:g} new connections a second from this address"
        state.open += 1
        return None

    def release(self, ip: str) -> None:
        state = self._ips.get(ip)
        if state is not None:
            state.open -= 1
        self._admissions += 1
        if self._admissions >= SWEEP_EVERY:
            self.sweep()

    def sweep(self) -> None:
        """Forget addresses with nothing open and a full budget: the table stays bounded
        by recent activity, and an address that opens and closes sockets one after
        another still spends its per-second budget (it is remembered until refilled)."""
        self._admissions = 0
        for ip in [ip for ip, st in self._ips.items() if st.open <= 0 and st.bucket.full()]:
            del self._ips[ip]


class OriginPolicy:
    """Which browser origins may open a WebSocket."""

    def __init__(self, allowed: tuple[str, ...], allow_missing: bool) -> None:
        self._any = not allowed
        self._exact = {o for o in allowed if "://*." not in o}
        # "https://*.example.com" -> ("https://", ".example.com", port suffix kept in host)
        self._wildcards = [tuple(o.split("*", 1)) for o in allowed if "://*." in o]
        self._allow_missing = allow_missing
        # Any page a developer visits can cause refusals, in a loop: log a few.
        self._refusals = RateLimitedLog(logger, interval=60.0)

    def handshake_refusal(
        self, origin: str | None, host: str | None, settings: Settings
    ) -> str | None:
        """Why a WebSocket handshake is refused (the message of the 403), or None.

        With ``allowed_origins`` configured, or tokens enforced, the allowlist decides
        (``allows``). In development mode without an allowlist, every socket may read
        every channel as any user, so only this machine's own pages may connect: a
        foreign page would otherwise read it all (cross-site WebSocket hijacking), and a
        DNS-rebinding page carries a foreign Host. A missing Origin (a non-browser
        client) is decided by ``allow_missing_origin`` as always.
        """
        if not self._any or auth.enforcing(settings):
            return None if self.allows(origin) else "origin not allowed"
        if not loopback.is_loopback_host(host):
            reason = (
                "development mode without allowed_origins: connect to a loopback name "
                "(localhost, 127.0.0.1, [::1]), or set allowed_origins"
            )
        elif origin is not None and not loopback.is_loopback_origin(origin):
            reason = (
                "origin not allowed: in development mode without allowed_origins only "
                "pages served from this machine may connect"
            )
        elif origin is None and not self._allow_missing:
            reason = "origin not allowed"
        else:
            return None
        self._refusals.warning(
            "handshake", "refused a WebSocket (Host %r, Origin %r): %s", host, origin, reason
        )
        return reason

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return self._allow_missing
        if self._any:
            return True
        origin = origin.lower()
        if origin in self._exact:
            return True
        for scheme, suffix in self._wildcards:
            if not origin.startswith(scheme) or not origin.endswith(suffix):
                continue
            label = origin[len(scheme) : len(origin) - len(suffix)]
            # One or more DNS labels, nothing that could smuggle a port, path or user.
            parts = label.split(".")
            if all(part and all(c.isalnum() or c == "-" for c in part) for part in parts):
                return True
        return False
