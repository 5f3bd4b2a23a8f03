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
transaction. In SQS, a send no longer counts the whole queue (O(queue length) per message), and receives,
deletes and visibility changes take the queue's lock (concurrent consumers could lose, repeat or resurrect
messages). Only the embedded AWS is patched; nothing of it ships.
"""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

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


def _send_without_counting_the_queue() -> None:
    """moto's SendMessage reads ``queue.attributes`` for one flag, which counts every message in the queue
    three times (visible, delayed, in flight): each send costs O(queue length), a backlog O(n²). The counts
    are discarded there, so during a send they read as 0; GetQueueAttributes still counts."""
    from moto.sqs.models import Queue, SQSBackend

    for name in (
        "approximate_number_of_messages",
        "approximate_number_of_messages_delayed",
        "approximate_number_of_messages_not_visible",
    ):
        counted = getattr(Queue, name)

        def count(self: Any, __counted: Any = counted) -> int:
            return 0 if getattr(_ACTIVE, "sending", False) else int(__counted.fget(self))

        setattr(Queue, name, property(count, doc=counted.__doc__))

    original = SQSBackend.send_message

    @functools.wraps(original)
    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        _ACTIVE.sending = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _ACTIVE.sending = False

    SQSBackend.send_message = send_message  # type: ignore[method-assign]


def patch_moto() -> None:
    """Make moto's DynamoDB, Streams and SQS behave as AWS does where Relais depends on it (see the module)."""
    global _PATCHED  # noqa: PLW0603 - one patch per process
    if _PATCHED:
        return
    from moto.dynamodb import models

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
    _send_without_counting_the_queue()
    _queue_operations_under_the_queue_lock()
    from infra.local.moto_idempotency import patch_idempotent_transactions

    patch_idempotent_transactions()
    _PATCHED = True


def _under(lock: Any, original: Any) -> Any:
    @functools.wraps(original)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    return locked


def _queue_operations_under_the_queue_lock() -> None:
    """moto's ReceiveMessage, DeleteMessage and ChangeMessageVisibility change a queue's message list and its set of
    in-flight messages without the lock SendMessage appends under: with concurrent consumers a message sent during a
    delete could vanish, a message could be received twice or come back after its deletion, and a receive could fail
    ("Set changed size during iteration"). Each now runs under the queue's own lock; a long poll waits outside it."""
    from moto.core.utils import unix_time
    from moto.sqs.models import Queue, SQSBackend

    delete = Queue.delete_message

    @functools.wraps(delete)
    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)

    Queue.delete_message = delete_message  # type: ignore[method-assign]

    change = SQSBackend.change_message_visibility

    @functools.wraps(change)
    def change_message_visibility(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return change(self, queue_name, *args, **kwargs)

    SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]

    receive = SQSBackend.receive_message

    @functools.wraps(receive)
    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, visibility_timeout: int, *args: Any
    ) -> Any:
        queue = self.get_queue(queue_name)
        polling_end = unix_time() + (wait_seconds_timeout or 0)
        while True:
            with queue._messages_lock:
                messages = receive(self, queue_name, count, 0, visibility_timeout, *args)
            remaining = polling_end - unix_time()
            if messages or remaining <= 0:
                return messages
            queue.wait_for_messages(min(1.0, remaining))

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign,assignment]
