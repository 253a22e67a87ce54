"""Per-pattern channel options: what a channel does, decided by the first matching rule.

Rules come from ``[[channels]]`` tables in the configuration file, in file order; a
channel that matches no rule gets the defaults. Patterns are shell-style globs
(``room:*``); they cannot be confused with channel names, which never contain ``*``,
``?`` or ``[``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from pushhub.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    #: Track who is subscribed (REST and socket presence queries).
    presence: bool = True
    #: Send join/leave events to the channel's subscribers (needs ``presence``).
    join_leave: bool = True


DEFAULT_OPTIONS = ChannelOptions()


@dataclass(frozen=True, slots=True)
class ChannelRule:
    pattern: str
    options: ChannelOptions


_OPTION_TYPES: dict[str, type] = {f.name: bool for f in fields(ChannelOptions)}


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
        if not isinstance(pattern, str) or not 1 <= len(pattern) <= 255:
            raise ConfigError(f"{key}.pattern", pattern, "a glob such as 'room:*'")
        values: dict[str, Any] = {}
        for name, value in table.items():
            if name == "pattern":
                continue
            expected = _OPTION_TYPES.get(name)
            if expected is None:
                known = ", ".join(sorted(_OPTION_TYPES))
                raise ConfigError(f"{key}.{name}", value, f"a known channel option ({known})")
            if not isinstance(value, expected):
                raise ConfigError(f"{key}.{name}", value, f"a {expected.__name__}")
            values[name] = value
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
