"""Make moto behave like AWS where Relais depends on it: isolated transactions, O(1) sends, no lost message.

moto's ``TransactWriteItems`` deep-copies every table it touches before it starts, and puts the copies
back when the transaction fails, without a lock. Problems follow:

- two concurrent transactions can undo each other's writes or see a half-applied one, and a read or a stream
  reader can see a write that is then undone (DynamoDB serializes transactions and isolates them from reads);
- a transaction costs O(size of the tables it touches), not O(items it touches): after a few thousand
  results the local stack spends ~200 ms per accepted result copying tables, and keeps slowing down.

The patch runs moto's DynamoDB writes one at a time, makes reads and stream reads wait for a transaction in
progress, and replaces the table copies with an undo log of the items the transaction actually writes (and of
the stream records it appended): a failed transaction restores exactly those, in time proportional to the
transaction. SQS is patched by :mod:`infra.local.moto_sqs` (sends, receives, deletes and visibility changes at
SQS's cost, under the queue's lock). Only the embedded AWS is patched; nothing of it ships.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from infra.local import faults

_LOCK = threading.RLock()
_ACTIVE = threading.local()
_PATCHED = False


@dataclass
class _UndoLog:
    """What one transaction overwrote: items as they were, and each stream's length before it."""

    items: list[tuple[Any, Any, Any, Any]] = field(default_factory=list)  # (table, hash, range, item before)
    streams: dict[int, tuple[Any, int]] = field(default_factory=dict)

    def remember(self, table: Any, hash_value: Any, range_value: Any) -> None:
        self.items.append((table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value))))
        shard = table.stream_shard
        if shard is not None and id(shard) not in self.streams:
            self.streams[id(shard)] = (shard, len(shard.items))

    def undo(self) -> None:
        for table, hash_value, range_value, before in reversed(self.items):
            if range_value is not None:
                if before is None:
                    table.items[hash_value].pop(range_value, None)
                else:
                    table.items[hash_value][range_value] = before
            elif before is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = before
        for shard, length in self.streams.values():
            del shard.items[length:]


def _key_of_put(backend: Any, table_name: str, attrs: dict[str, Any]) -> dict[str, Any]:
    table = backend.get_table(table_name)
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {name: attrs[name] for name in names if name in attrs}


def _remember(backend: Any, table_name: str, key: dict[str, Any]) -> None:
    log: _UndoLog | None = getattr(_ACTIVE, "log", None)
    if log is None:
        return
    table = backend.get_table(table_name)
    try:
        hash_value, range_value = backend.get_keys_value(table, key)
    except Exception:  # a malformed key fails the write itself, which then changes nothing
        return
    log.remember(table, hash_value, range_value)


def _locked_write(original: Any, key_of: Any) -> Any:
    @functools.wraps(original)
    def write(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            _remember(self, table_name, key_of(self, table_name, *args, **kwargs))
            return original(self, table_name, *args, **kwargs)

    return write


def _transaction(original: Any) -> Any:
    @functools.wraps(original)
    def transact_write_items(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            log = _ACTIVE.log = _UndoLog()
            try:
                return original(self, *args, **kwargs)
            except BaseException:
                log.undo()
                raise
            finally:
                _ACTIVE.log = None

    return transact_write_items


def _without_table_snapshots(module: Any) -> None:
    """moto's transaction snapshots tables with ``copy.deepcopy(table)``; the undo log replaces it."""
    from moto.dynamodb.models.table import Table

    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    module.copy = SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)


def patch_moto(env: Mapping[str, str] | None = None) -> None:
    """Make moto's DynamoDB, Streams and SQS behave (and fail) as AWS does (see the module), with the faults that
    ``env`` (default: ``os.environ``) asks for, see :mod:`infra.local.faults`; once per process."""
    global _PATCHED  # noqa: PLW0603 - one patch per process
    if _PATCHED:
        return
    from moto.dynamodb import models

    from infra.local.moto_sqs import patch_sqs

    faults.install_from_env(os.environ if env is None else env)

    backend = models.DynamoDBBackend
    backend.put_item = _locked_write(  # type: ignore[method-assign]
        backend.put_item, lambda self, table_name, attrs, *a, **k: _key_of_put(self, table_name, attrs)
    )
    backend.update_item = _locked_write(  # type: ignore[method-assign]
        backend.update_item, lambda self, table_name, key, *a, **k: key
    )
    backend.delete_item = _locked_write(  # type: ignore[method-assign]
        backend.delete_item, lambda self, table_name, key, *a, **k: key
    )
    backend.transact_write_items = _transaction(backend.transact_write_items)  # type: ignore[method-assign]
    _without_table_snapshots(models)
    # Reads wait for a transaction in progress: no read (and no stream reader) sees a write it may undo. A stream
    # reader that saw a record later undone would also skip the next record, which reuses its sequence number.
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    for cls, names in (
        (backend, ("batch_write_item", "get_item", "batch_get_item", "query", "scan")),
        (DynamoDBStreamsBackend, ("get_shard_iterator", "get_records")),
    ):
        for name in names:
            setattr(cls, name, _under(_LOCK, getattr(cls, name)))
    patch_sqs()
    _PATCHED = True


def _under(lock: Any, original: Any) -> Any:
    @functools.wraps(original)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    return locked
