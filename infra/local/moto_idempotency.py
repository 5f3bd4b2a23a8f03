"""DynamoDB's idempotent transactions, which moto lacks.

A ``TransactWriteItems`` call carries a ``ClientRequestToken`` (botocore fills one in, and reuses it for its own
retries of the call). DynamoDB answers a repeat of a *successful* call — same token, same items, within 10 minutes —
with success, without writing again; the same token with other items is ``IdempotentParameterMismatchException``;
the same token while the first call is still in progress is ``TransactionInProgressException`` (botocore retries it,
and the retry then finds the first call's answer).
moto ignores the token: a retry after a read timeout whose first try had committed was executed again there, and a
request's nonce then looked replayed (a 401 for a request that had been accepted) — harsher than AWS, and a source
of flaky runs under load. So was a retry arriving while the first try still waited for its turn: it ran too, and
failed on the nonce the first try had written. Only the embedded AWS is patched; nothing of it ships.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

#: How long DynamoDB remembers a token.
TOKEN_SECONDS = 600

_LOCK = threading.Lock()
#: token → (hash of the items, when, the answer), in the order remembered: "when" is read under the lock at insertion,
#: so the oldest are first and forgetting the expired ones looks at those alone (not every token of ten minutes, which
#: made each transaction O(transactions in the last 10 minutes): 9 % of moto's CPU in a 10,000-result chaos run).
_SEEN: OrderedDict[str, tuple[str, float, Any]] = OrderedDict()
_IN_PROGRESS: set[str] = set()  # tokens of calls not yet answered


def _digest(items: Any) -> str:
    """A digest of the request's items (binary attribute values arrive as bytes)."""

    def encode(value: Any) -> str:
        return value.hex() if isinstance(value, bytes | bytearray) else repr(value)

    return hashlib.sha256(json.dumps(items, sort_keys=True, default=encode).encode()).hexdigest()


def _forget_expired(now: float) -> int:
    """Forget the tokens remembered longer than :data:`TOKEN_SECONDS` (call under ``_LOCK``); how many were looked at
    (the expired ones and the first that is not)."""
    looked = 0
    while _SEEN:
        looked += 1
        _, (_, at, _) = next(iter(_SEEN.items()))
        if now - at <= TOKEN_SECONDS:
            break
        _SEEN.popitem(last=False)
    return looked


def patch_idempotent_transactions() -> None:
    """Make moto's ``TransactWriteItems`` honour ``ClientRequestToken`` as DynamoDB does (see the module)."""
    from moto.dynamodb.exceptions import DynamodbException
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.transact_write_items
    if getattr(original, "_relais_idempotent", False):
        return

    class IdempotentParameterMismatchError(DynamodbException):
        def __init__(self) -> None:
            super().__init__(
                "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                message="The request uses the same client token as a previous, but non-identical request.",
            )

    class TransactionInProgressError(DynamodbException):
        def __init__(self) -> None:
            super().__init__(
                "com.amazonaws.dynamodb.v20120810#TransactionInProgressException",
                message="The transaction with the given request token is already in progress.",
            )

    @functools.wraps(original)
    def transact_write_items(self: Any) -> Any:
        token = self.body.get("ClientRequestToken")
        if not token:
            return original(self)
        digest = _digest(self.body.get("TransactItems"))
        with _LOCK:
            _forget_expired(time.monotonic())
            seen = _SEEN.get(token)
            if seen is None:
                if token in _IN_PROGRESS:
                    raise TransactionInProgressError()  # a retry while the first call waits for its turn
                _IN_PROGRESS.add(token)
        if seen is not None:
            if seen[0] != digest:
                raise IdempotentParameterMismatchError()
            return seen[2]  # a repeat of a call that succeeded: success again, nothing written twice
        try:
            answer = original(self)
            with _LOCK:
                _SEEN[token] = (digest, time.monotonic(), answer)
            return answer
        finally:
            with _LOCK:
                _IN_PROGRESS.discard(token)

    transact_write_items._relais_idempotent = True  # type: ignore[attr-defined]
    DynamoHandler.transact_write_items = transact_write_items  # type: ignore[method-assign]
