"""Per-key request rate, counted in the state table: every instance of the API shares one count per key and second.

One conditional ``UpdateItem`` per authenticated request, on an item no transaction holds (``keyrate#<key>#<second>``,
deleted by TTL a minute later): concurrent requests of one key add to it without conflicting, and the one past the
limit finds the condition false and writes nothing.
"""

from __future__ import annotations

from datetime import datetime

from chalicelib.adapters.dynamodb import update_if
from chalicelib.adapters.tables import StateItem, epoch_seconds

KEEP_SECONDS = 60


class KeyRateLimiter:
    def __init__(self, *, per_second: int) -> None:
        self._limit = per_second

    def retry_after(self, key_id: str, now: datetime) -> int:
        """Count one request of ``key_id`` in the current second: 0 when it is within the limit, else the seconds
        to wait (nothing is counted then)."""
        second = epoch_seconds(now)
        item = StateItem(pk=f"keyrate#{key_id}#{second}")
        counted = update_if(
            item,
            [StateItem.n.add(1), StateItem.expires_at.set(second + KEEP_SECONDS)],
            StateItem.n.does_not_exist() | (StateItem.n < self._limit),
        )
        return 0 if counted else 1
