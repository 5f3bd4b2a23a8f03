"""What every DynamoDB adapter shares: one translation of the SDK's failures, and the conditional update.

A failure to reach or use DynamoDB (network, throttling past the SDK's retries, a service error) becomes a
``DependencyUnavailableError`` (503 with Retry-After: nothing was accepted). A failed condition is not a failure
but an answer, which each adapter turns into its own domain error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pynamodb.exceptions import PynamoDBConnectionError, PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.errors import DependencyUnavailableError

#: Keys per BatchGetItem (the service's limit): long reads of operators' commands go in batches of this size.
READ_BATCH = 100
#: ``progress(done, total)``: told after each batch of a long read (operators' commands show it).
Progress = Callable[[int, int], None]

#: The service's code of a write refused by its condition.
_CONDITION_FAILED = "ConditionalCheckFailedException"


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


def update_if(item: Model, actions: list[Action], condition: Condition) -> bool:
    """One conditional ``UpdateItem``: True when done (``item`` then holds the new values), False when
    ``condition`` did not hold (nothing written)."""
    with dynamodb_errors():
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
    return True
