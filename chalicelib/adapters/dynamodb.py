"""What every DynamoDB adapter shares: one translation of the SDK's failures, and the conditional update.

A failure to reach or use DynamoDB (network, throttling past the SDK's retries, a service error) becomes a
``DependencyUnavailableError`` (503 with Retry-After: nothing was accepted). A failed condition is not a failure
but an answer, which each adapter turns into its own domain error.

A single write to an item that a transaction in flight holds is refused with ``TransactionConflictException``,
which the SDK does not retry (it is not a throttling or transient error to botocore). Such items are common: a
result's item is written by the notifier's transactions while the national worker updates its status. Single
writes are therefore tried again as transactions are (``adapters/transaction.py``): after an exponential pause
with full jitter, up to :data:`ATTEMPTS` tries, never past the invocation's deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pynamodb.exceptions import PynamoDBConnectionError, PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.deadline import seconds_left
from chalicelib.errors import DependencyUnavailableError

T = TypeVar("T")

#: Keys per BatchGetItem (the service's limit): long reads of operators' commands go in batches of this size.
READ_BATCH = 100
#: ``progress(done, total)``: told after each batch of a long read (operators' commands show it).
Progress = Callable[[int, int], None]

#: The service's code of a write refused by its condition.
_CONDITION_FAILED = "ConditionalCheckFailedException"
#: The service's code of a single write refused because a transaction in flight holds its item.
_HELD_BY_A_TRANSACTION = "TransactionConflictException"

#: Tries of a write that conflicts with a transaction (or of a transaction that conflicts, or is throttled); then 503.
ATTEMPTS = 8
#: The pause before the n-th retry is uniform in [0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**n)].
BACKOFF_BASE_SECONDS = 0.01
BACKOFF_CAP_SECONDS = 0.5
#: How long retries may take outside an invocation with a deadline (CLI, tests).
RETRY_BUDGET_SECONDS = 5.0


def error_code(exc: PynamoDBException) -> str | None:
    """The service's error code behind ``exc`` (``ConditionalCheckFailedException``…); None when no answer came.

    pynamodb's ``cause_response_code`` raises AttributeError when the cause is a transport error (a botocore read
    timeout is also a ``requests`` exception, whose ``response`` is None): a timeout must stay a 503, not a 500.
    """
    response = getattr(exc.cause, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return code if isinstance(code, str) else None


@contextmanager
def dynamodb_errors() -> Iterator[None]:
    """Translate transport and service failures of DynamoDB into a 503-worthy error."""
    try:
        yield
    except (PynamoDBConnectionError, TransactWriteError) as exc:  # get, put, update, query, scan, transactions
        raise DependencyUnavailableError("dynamodb") from exc


def retrying_conflicts(
    write: Callable[[], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """``write()``, tried again while DynamoDB refuses it because a transaction in flight holds its item."""
    attempt = 1
    stop = time.monotonic() + min(RETRY_BUDGET_SECONDS, seconds_left(RETRY_BUDGET_SECONDS))
    while True:
        try:
            return write()
        except PynamoDBException as exc:
            pause = jitter() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
            if error_code(exc) != _HELD_BY_A_TRANSACTION or attempt >= ATTEMPTS or time.monotonic() + pause >= stop:
                raise
            sleep(pause)
            attempt += 1


def update_if(item: Model, actions: list[Action], condition: Condition) -> bool:
    """One conditional ``UpdateItem``: True when done (``item`` then holds the new values), False when
    ``condition`` did not hold (nothing written). Tried again while a transaction holds the item."""
    with dynamodb_errors():
        try:
            retrying_conflicts(lambda: item.update(actions=actions, condition=condition))
        except UpdateError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
    return True
