"""Make moto behave like DynamoDB where Relais depends on it: serialized transactions.

moto's ``TransactWriteItems`` snapshots every table it touches and restores the snapshot when the
transaction fails, without a lock: two concurrent transactions can undo each other's writes or see a
half-applied one. DynamoDB serializes transactions (and makes retries idempotent). The local stack's
moto server and the in-process tests therefore run moto's transactions one at a time. Only the
embedded AWS is patched; nothing of it ships.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_PATCHED = False


def serialize_dynamodb_transactions() -> None:
    """Wrap moto's DynamoDB transaction (and single-item writes racing with it) in one process-wide lock."""
    global _PATCHED  # noqa: PLW0603 - one patch per process
    if _PATCHED:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("transact_write_items", "put_item", "update_item", "delete_item", "batch_write_item"):
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, functools.wraps(original)(locked))
    _PATCHED = True
