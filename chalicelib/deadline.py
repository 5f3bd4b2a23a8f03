"""How long the current invocation has left, for whatever retries inside it.

The edges set it — the HTTP middleware from the function's timeout, queue and stream handlers from Lambda's
context — and the code that retries (``adapters/transaction.py``) stops retrying in time to answer: a request
then gets its 503 + Retry-After instead of being cut off by Lambda with the outcome unknown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_deadline: ContextVar[float | None] = ContextVar("relais_deadline", default=None)

#: Kept back from the function's time for answering (writing the response, the log line, the metrics).
ANSWER_MARGIN_SECONDS = 1.0


@contextmanager
def deadline_in(seconds: float) -> Iterator[None]:
    """Within the block, the invocation has ``seconds`` left (minus :data:`ANSWER_MARGIN_SECONDS` for answering)."""
    token = _deadline.set(time.monotonic() + max(0.0, seconds - ANSWER_MARGIN_SECONDS))
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_of(context: Any, default_seconds: float) -> float:
    """Seconds left in a Lambda invocation: from its context when it has one, else ``default_seconds``."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        try:
            return float(remaining()) / 1000.0
        except (TypeError, ValueError):
            pass
    return default_seconds


def seconds_left(default: float) -> float:
    """Seconds before the current deadline; ``default`` outside any (a CLI, a test)."""
    moment = _deadline.get()
    return default if moment is None else moment - time.monotonic()
