"""Per-pattern channel options: what a channel does, decided by the first matching rule.

Rules come from ``[[channels]]`` tables in the configuration file, in file order; a
channel that matches no rule gets the defaults. Patterns are globs with ``*`` and ``?``
(``room:*``); they cannot be confused with channel names, which never contain either.
The same rules are compiled into the Redis Function that durable publishing from
redis-cli uses, so ``lua_pattern`` must match exactly what ``fnmatchcase`` matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from pushhub.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    #: Track who is subscribed (REST and socket presence queries).
    presence: bool = True
    #: Send join/leave events to the channel's subscribers (needs ``presence``). Off by
    #: default on ``subscribe = "public"`` channels (see ``parse_rules``).
    join_leave: bool = True
    #: Keep a capped Redis Stream of the channel: offsets, recovery, history.
    durable: bool = False
    #: Messages kept per durable channel (the stream's exact MAXLEN).
    history_size: int = 300
    #: Seconds a durable channel's history lives after its last publish.
    history_ttl: int = 86400
    #: Whether clients may publish to the channel over the socket (and, when tokens are
    #: enforced, only those who may subscribe to it).
    client_publish: bool = False
    #: Who may subscribe when tokens are enforced: "public" (anyone, anonymous too),
    #: "authenticated" (any valid token) or "granted" (a token whose ``channels`` lists
    #: a matching pattern, or a subscription token). Default deny.
    subscribe: str = "granted"
    #: Whether subscribers may read the channel's presence and history over the socket.
    #: ``presence_read`` is off by default on ``subscribe = "public"`` channels: anyone
    #: may subscribe there, and members' ids and info are not anyone's business.
    presence_read: bool = True
    history_read: bool = True
    #: Past this many members (users), join and leave events stop and subscribers get
    #: ``presence_count`` updates instead (0: no bound). See docs/presence.md.
    join_leave_max_members: int = 1000


DEFAULT_OPTIONS = ChannelOptions()


@dataclass(frozen=True, slots=True)
class ChannelRule:
    pattern: str
    options: ChannelOptions


_OPTION_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(ChannelOptions)}
_CHOICES = {"subscribe": ("public", "authenticated", "granted")}
_INT_BOUNDS = {
    "history_size": (1, 100_000),
    "history_ttl": (1, 365 * 86400),
    "join_leave_max_members": (0, 10_000_000),
}

#: A pattern: channel-name characters plus the wildcards ``*`` (any run) and ``?`` (one).
PATTERN_RE = re.compile(r"[A-Za-z0-9_\-:.@=+#$!~*?]{1,255}")


def parse_rules(raw: Any, where: str) -> tuple[ChannelRule, ...]:
    """``[[channels]]`` tables -> rules. Each needs a ``pattern`` and known option keys."""
    if not isinstance(raw, list):
        raise ConfigError(f"channels (in {where})", raw, "an array of [[channels]] tables")
    rules = []
    for index, table in enumerate(raw):
        key = f"channels[{index}] (in {where})"
        if not isinstance(table, dict):
            raise ConfigError(key, table, "a table with a 'pattern'")
        pattern = table.get("pattern")
        if not isinstance(pattern, str) or not PATTERN_RE.fullmatch(pattern):
            raise ConfigError(
                f"{key}.pattern", pattern, "a glob of channel characters, '*' and '?' ('room:*')"
            )
        values: dict[str, Any] = {}
        for name, value in table.items():
            if name == "pattern":
                continue
            expected = _OPTION_TYPES.get(name)
            if expected is None:
                known = ", ".join(sorted(_OPTION_TYPES))
                raise ConfigError(f"{key}.{name}", value, f"a known channel option ({known})")
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"{key}.{name}", value, f"a {expected.__name__}")
            if name in _CHOICES and value not in _CHOICES[name]:
                raise ConfigError(f"{key}.{name}", value, "one of " + ", ".join(_CHOICES[name]))
            if name in _INT_BOUNDS and isinstance(value, int):
                lo, hi = _INT_BOUNDS[name]
                if not lo <= value <= hi:
                    raise ConfigError(f"{key}.{name}", value, f"an integer from {lo} to {hi}")
            values[name] = value
        if values.get("subscribe") == "public":
            # Privacy by default: on a channel anyone may join, who else is there is
            # shown only when the rule says so (counts stay available to API keys).
            values.setdefault("presence_read", False)
            values.setdefault("join_leave", False)
        rules.append(ChannelRule(pattern, ChannelOptions(**values)))
    return tuple(rules)


class ChannelRules:
    """Resolves a channel name to its options; cached, since it runs per subscribe."""

    def __init__(self, rules: tuple[ChannelRule, ...] = ()) -> None:
        self.rules = rules
        self.options = lru_cache(maxsize=4096)(self._resolve)

    def _resolve(self, channel: str) -> ChannelOptions:
        for rule in self.rules:
            if fnmatchcase(channel, rule.pattern):
                return rule.options
        return DEFAULT_OPTIONS


_LUA_MAGIC = set("^$()%.[]+-")


def lua_pattern(glob: str) -> str:
    """The anchored Lua pattern matching the same names as ``glob``."""
    out = ["^"]
    for ch in glob:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch in _LUA_MAGIC:
            out.append("%" + ch)
        else:
            out.append(ch)
    out.append("$")
    return "".join(out)
