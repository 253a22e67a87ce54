"""Where a durable channel's stream stands: one type for the wire, the engines, recovery.

A position is the offset of a message (or of the newest message given out) and the
epoch of the history it belongs to. The epoch names one life of a channel's history;
a history lost (expired, cleared, Redis data lost) comes back under a new epoch with
offsets from 1 again (docs/durability.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    epoch: str


#: The position of a channel that has no history (never published, expired, lost).
NO_HISTORY = Position(0, "")
