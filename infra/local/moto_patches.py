"""The embedded AWS (moto) as AWS behaves where Relais depends on it, at AWS's cost, and failing as AWS fails.

moto's ``TransactWriteItems`` deep-copies every table it touches before it starts, and puts the copies back when the
transaction fails, without a lock. Problems follow:

- two concurrent transactions can undo each other's writes or see a half-applied one, and a read or a stream
  reader can see a write that is then undone (DynamoDB isolates transactions from each other and from reads);
- a transaction costs O(size of the tables it touches), not O(items it touches): after a few thousand
  results the local stack spends ~200 ms per accepted result copying tables, and keeps slowing down.

The patch runs moto's DynamoDB writes one at a time (moto's structures are not thread-safe; a single write's whole
request, so that it answers the item as its own write found and left it), makes reads and stream
reads wait for a transaction in progress, and replaces the table copies with an undo log of the items the
transaction actually writes (and of the stream records it appended): a failed transaction restores exactly those,
in time proportional to the transaction.

Running writes one at a time must not make moto kinder than DynamoDB, which does not queue a write behind a
transaction but refuses it. With ``transaction_conflicts`` on (:mod:`infra.local.faults`), a transaction holds its
items (condition checks included) from its arrival, before it waits for its turn, until it ends; then, as DynamoDB:

- a ``TransactWriteItems`` with an item held by another transaction is cancelled (``TransactionCanceledException``)
  with the reason ``TransactionConflict`` at that item's index and ``None`` at the others, and writes nothing;
- a ``PutItem``, ``UpdateItem`` or ``DeleteItem`` of a held item fails with ``TransactionConflictException``;
- reads are not refused (they wait for the transaction, and see all of it or none of it).

SQS (:mod:`infra.local.moto_sqs`) and throttling (:mod:`infra.local.throttling`) are patched by :func:`patch_moto`
too, and so is the server's request dispatch (:func:`_patch_dispatch`), which cost more than most calls
themselves, and so are the serialization of DynamoDB's answers and the parsing of update expressions
(:mod:`infra.local.moto_fast`). Only the embedded AWS is patched; nothing of it ships.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

from infra.local import faults

_LOCK = threading.RLock()
_ACTIVE = threading.local()
_PATCHED = False

#: DynamoDB's message for a write refused because a transaction holds its item (both forms of the refusal).
CONFLICT_MESSAGE: Final = "Transaction is ongoing for the item"

#: Items held by transactions in flight: (backend, table, hash key, range key).
_HELD: set[tuple[int, str, Any, Any]] = set()
_HELD_LOCK = threading.Lock()


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


def _item(backend: Any, table_name: str, key: dict[str, Any]) -> tuple[int, str, Any, Any] | None:
    """What identifies an item across requests (None for a malformed key: the request itself will fail on it)."""
    try:
        hash_value, range_value = backend.get_keys_value(backend.get_table(table_name), key)
    except Exception:
        return None
    return (id(backend), table_name, hash_value, range_value)


def _transaction_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[int, str, Any, Any] | None]:
    """The item of each action of a ``TransactWriteItems``, in order (None where the action is malformed)."""
    items: list[tuple[int, str, Any, Any] | None] = []
    for action in transact_items:
        try:
            ((kind, operation),) = action.items()
            table_name = operation["TableName"]
            key = _key_of_put(backend, table_name, operation["Item"]) if kind == "Put" else operation["Key"]
        except Exception:
            items.append(None)
            continue
        items.append(_item(backend, table_name, key))
    return items


def _hold(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[int, str, Any, Any]]:
    """Hold the transaction's items, or cancel it as DynamoDB does when another transaction holds one of them."""
    from moto.dynamodb.exceptions import TransactionCanceledException

    items = _transaction_items(backend, transact_items)
    with _HELD_LOCK:
        conflicts = {index for index, item in enumerate(items) if item is not None and item in _HELD}
        if not conflicts:
            held = {item for item in items if item is not None}
            _HELD.update(held)
            return list(held)
    raise TransactionCanceledException(
        [
            ("TransactionConflict", CONFLICT_MESSAGE, None) if i in conflicts else (None, None, None)
            for i in range(len(items))
        ]
    )


def _let_go(held: list[tuple[int, str, Any, Any]]) -> None:
    with _HELD_LOCK:
        _HELD.difference_update(held)


def _refuse_if_held(backend: Any, table_name: str, key: dict[str, Any]) -> None:
    """A single write of an item that a transaction in flight holds fails, as in DynamoDB."""
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException

    item = _item(backend, table_name, key)
    with _HELD_LOCK:
        held = item is not None and item in _HELD
    if held:
        raise DynamodbException(ERROR_TYPE_PREFIX + "TransactionConflictException", CONFLICT_MESSAGE)


def _refuse_if_held_request(handler: Any, key_of: Any) -> None:
    try:
        table_name, key = handler.body["TableName"], key_of(handler.dynamodb_backend, handler.body)
    except Exception:  # malformed: moto's own validation answers it
        return
    _refuse_if_held(handler.dynamodb_backend, table_name, key)


def _single_write(original: Any, key_of: Any) -> Any:
    """A PutItem, UpdateItem or DeleteItem request (moto's handler), atomic as DynamoDB's.

    With ``transaction_conflicts`` on, it is checked at its arrival, before moto reads or waits for anything (its
    UpdateItem reads the item first, which waits for a transaction in progress). Then the whole handler runs under
    the write lock: moto reads the item before the write (for ``ALL_OLD``, ``UPDATED_*``) and writes the answer's
    attributes from the live item after it, each outside the backend's write, so a concurrent write to the same
    item could slip in between and two ``ADD n :one`` could both answer the same ``n`` (DynamoDB answers each
    write's own before and after)."""

    @functools.wraps(original)
    def handle(self: Any) -> Any:
        if faults.current().transaction_conflicts:
            _refuse_if_held_request(self, key_of)
        with _LOCK:
            return original(self)

    return handle


def _locked_write(original: Any, key_of: Any) -> Any:
    @functools.wraps(original)
    def write(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            _remember(self, table_name, key_of(self, table_name, *args, **kwargs))
            return original(self, table_name, *args, **kwargs)

    return write


def _transaction(original: Any) -> Any:
    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        held = _hold(self, transact_items) if faults.current().transaction_conflicts else []
        try:
            with _LOCK:
                log = _ACTIVE.log = _UndoLog()
                try:
                    return original(self, transact_items, *args, **kwargs)
                except BaseException:
                    log.undo()
                    raise
                finally:
                    _ACTIVE.log = None
        finally:
            _let_go(held)

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
    from infra.local.throttling import patch_throttling

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
    from moto.dynamodb.responses import DynamoHandler

    handler = DynamoHandler
    handler.put_item = _single_write(  # type: ignore[method-assign]
        handler.put_item, lambda backend, body: _key_of_put(backend, body["TableName"], body["Item"])
    )
    handler.update_item = _single_write(handler.update_item, lambda backend, body: body["Key"])  # type: ignore[method-assign]
    handler.delete_item = _single_write(handler.delete_item, lambda backend, body: body["Key"])  # type: ignore[method-assign]
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
    # moto's read handlers turn the live item into the answer after the backend's read: a write in between would
    # answer half of it. DynamoDB reads each item whole (and a TransactGetItems all of them at once).
    for name in ("get_item", "batch_get_item", "query", "scan", "transact_get_items"):
        setattr(handler, name, _under(_LOCK, getattr(handler, name)))
    patch_sqs()
    patch_throttling()
    _patch_dispatch()
    from infra.local.moto_idempotency import patch_idempotent_transactions

    patch_idempotent_transactions()
    _patch_model_data()
    from infra.local.moto_fast import patch_fast_paths

    patch_fast_paths()
    _PATCHED = True


def _patch_dispatch() -> None:
    """Dispatch each request to its service without listing moto's package directory every time.

    moto's server finds a request's backend under one lock shared by every request, and there lists its own package
    directory (``os.listdir`` and an ``isdir`` per service: ~200 system calls) and tries every service's URL
    patterns: per request, whatever the service. Neither changes while the server runs: the list is taken once and
    each host's backend remembered. Its HTTP handler also sends the headers and the body in separate small writes;
    with Nagle's algorithm on, a keep-alive client then waits for a delayed ACK between them, as with the local API.
    """
    from moto import backends
    from moto.moto_server import werkzeug_app
    from werkzeug.serving import WSGIRequestHandler

    modules = frozenset(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment,return-value]
    dispatcher = werkzeug_app.DomainDispatcherApplication
    original = dispatcher.get_backend_for_host
    known: dict[str | None, Any] = {}

    @functools.wraps(original)
    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    dispatcher.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    WSGIRequestHandler.disable_nagle_algorithm = True


def _patch_model_data() -> None:
    """``GET /moto-api/data.json?service=sns&service=ses``: the model dump of those services only.

    moto dumps every tracked instance of every service, DynamoDB items included, each attribute tried through
    ``json.dumps``: after a 10,000-result chaos run that took longer than the CLI's 30 s, and ``relais local outbox``
    (which needs only SNS and SES) failed. Without ``service`` the dump is moto's whole one, as before.
    """
    from urllib.parse import parse_qs, urlsplit

    from moto.core import model_instances
    from moto.moto_api._internal.responses import MotoAPIResponse

    original = MotoAPIResponse.model_data
    dumping = threading.Lock()  # moto's dump reads the module's registry: one filtered dump at a time swaps it

    @functools.wraps(original)
    def model_data(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        wanted = parse_qs(urlsplit(full_url).query).get("service")
        if not wanted:
            return original(self, request, full_url, headers)
        with dumping:
            everything = model_instances.model_data  # instances register through their own reference to it
            model_instances.model_data = {s: models for s, models in everything.items() if s in wanted}  # type: ignore[assignment]
            try:
                return original(self, request, full_url, headers)
            finally:
                model_instances.model_data = everything

    MotoAPIResponse.model_data = model_data  # type: ignore[method-assign]


def _under(lock: Any, original: Any) -> Any:
    @functools.wraps(original)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    return locked
