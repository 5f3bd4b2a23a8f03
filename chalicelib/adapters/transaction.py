"""One ``TransactWriteItems`` whose items have names, so that a cancellation says which of them failed.

DynamoDB answers a cancelled transaction with one reason per item, in the order of the request. pynamodb's
``TransactWrite`` does not send items in the order they were added but grouped by kind (condition checks, deletes,
puts, then updates), so reading a reason "by position" depended on that grouping. :class:`Transaction` sends its
items exactly in the order they are added and remembers each one's name: ``tx.failed("quota")``.

The stores' transactions commit here, with one policy: a conflict with another transaction, or throttling, is
tried again after an exponential pause with full jitter (two transactions that met must not meet again at the
same moment), up to :data:`ATTEMPTS` tries and never past the invocation's deadline (``chalicelib/deadline.py``);
a failed condition is an answer (``commit`` returns False: ask :meth:`Transaction.failed`); anything else, or a
conflict that outlasts the retries, is DependencyUnavailableError (503 + Retry-After: nothing was written).
Each try carries its own ``ClientRequestToken``, except after ``TransactionInProgressException`` (the try whose
answer was lost to a read timeout is still running): that token is asked again, and DynamoDB then answers with the
outcome of the try in progress instead of running the transaction a second time. (The
audit chain keeps its own loop: after any failure it re-reads the chain's head and builds new items.)
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.connection import Connection
from pynamodb.constants import (
    CLIENT_REQUEST_TOKEN,
    TRANSACT_CONDITION_CHECK,
    TRANSACT_ITEMS,
    TRANSACT_PUT,
    TRANSACT_UPDATE,
    TRANSACT_WRITE_ITEMS,
)
from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import (
    ATTEMPTS,
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    RETRY_BUDGET_SECONDS,
    dynamodb_errors,
    error_code,
)
from chalicelib.deadline import seconds_left

#: Cancellation reasons of an item: its condition did not hold; another transaction was writing it; its table or
#: partition was throttled (DynamoDB cancels the whole transaction with this reason at that item).
_CONDITION_FAILED, _CONFLICT, _THROTTLED = "ConditionalCheckFailed", "TransactionConflict", "ThrottlingError"
#: Whole-request failures (no reason per item) worth another try.
_TRANSIENT = ("TransactionConflictException", "ThrottlingException")
#: An earlier try under the same token is still running: ask again, with that token.
_IN_PROGRESS = "TransactionInProgressException"


class Transaction:
    """Named items written together or not at all: ``check``, ``put`` and ``update``, then ``commit``."""

    def __init__(
        self,
        connection: Connection,
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._connection = connection
        self._sleep = sleep
        self._jitter = jitter
        self._names: list[str] = []
        self._items: list[dict[str, Any]] = []
        self._reasons: list[str | None] = []

    def check(self, name: str, model: type[Model], hash_key: str, *, condition: Condition) -> None:
        """Require ``condition`` of the item ``hash_key`` of ``model``, without writing it."""
        self._add(name, TRANSACT_CONDITION_CHECK, model.get_operation_kwargs_from_class(hash_key, condition=condition))

    def put(self, name: str, item: Model, *, condition: Condition | None = None) -> None:
        """Write ``item`` whole (if ``condition`` holds)."""
        self._add(name, TRANSACT_PUT, item.get_save_kwargs_from_instance(condition=condition))

    def update(self, name: str, item: Model, *, actions: list[Action], condition: Condition | None = None) -> None:
        """Apply ``actions`` to the item of ``item``'s key (if ``condition`` holds)."""
        self._add(name, TRANSACT_UPDATE, item.get_update_kwargs_from_instance(actions=actions, condition=condition))

    def _add(self, name: str, kind: str, operation: dict[str, Any]) -> None:
        if name in self._names:
            raise ValueError(f"two items named {name!r} in one transaction")
        self._names.append(name)
        self._items.append({kind: operation})

    def commit(self) -> bool:
        """Write every item, or none: True once written, False when a condition failed (see :meth:`failed`).

        Conflicts and throttling are tried again (:data:`ATTEMPTS`); any other failure, or a conflict that
        persists, raises DependencyUnavailableError.
        """
        attempt = 1
        stop = time.monotonic() + min(RETRY_BUDGET_SECONDS, seconds_left(RETRY_BUDGET_SECONDS))
        token = uuid.uuid4().hex
        with dynamodb_errors():
            while True:
                self._reasons = []
                try:
                    self._send(token)
                    return True
                except TransactWriteError as exc:
                    self._reasons = [reason.code if reason else None for reason in exc.cancellation_reasons or []]
                    code = error_code(exc)
                    in_progress = code == _IN_PROGRESS
                    if self._reasons:
                        transient = _CONFLICT in self._reasons or _THROTTLED in self._reasons
                    else:
                        transient = in_progress or code in _TRANSIENT
                    if not in_progress:
                        token = uuid.uuid4().hex  # a try that ended: the next one is a new request
                    pause = self._jitter() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
                    if transient and attempt < ATTEMPTS and time.monotonic() + pause < stop:
                        self._sleep(pause)
                        attempt += 1
                        continue
                    if _CONDITION_FAILED not in self._reasons:
                        raise
                    return False

    def failed(self, name: str) -> bool:
        """Whether the item ``name`` failed its condition in the last, cancelled, commit."""
        if name not in self._names:  # a mistake, not "it did not fail"
            raise ValueError(f"no item named {name!r} in this transaction")
        index = self._names.index(name)
        return index < len(self._reasons) and self._reasons[index] == _CONDITION_FAILED

    def _send(self, token: str) -> None:
        """One ``TransactWriteItems`` with the items in the order they were added (errors as pynamodb's own)."""
        try:
            self._connection.dispatch(
                TRANSACT_WRITE_ITEMS, {TRANSACT_ITEMS: list(self._items), CLIENT_REQUEST_TOKEN: token}
            )
        except (BotoCoreError, ClientError) as exc:
            raise TransactWriteError("Failed to write transaction items", exc) from exc
