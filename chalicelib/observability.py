"""Logging and metrics plumbing (Powertools), configured so that no event or payload is ever logged.

Log lines carry opaque ids, routes, statuses and durations only. Never pass a request body,
a submission, a token or an exception message from a third-party library to the logger.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

#: Opaque ids a request's log line may carry besides its request id (``routes/middleware.py`` removes them after
#: each request): the authenticated pharmacy and the result the request created or read. Never a value a client chose.
REQUEST_KEYS = ("pharmacy_id", "result_id")


def log_request_keys(**ids: str) -> None:
    """Add opaque ids (``REQUEST_KEYS``) to the current request's log lines."""
    unknown = set(ids) - set(REQUEST_KEYS)
    if unknown:
        raise ValueError(f"not a request log key: {', '.join(sorted(unknown))}")
    logger().append_keys(**ids)


@cache
def logger() -> Any:
    from aws_lambda_powertools import Logger

    os.environ.setdefault("POWERTOOLS_LOG_DEDUPLICATION_DISABLED", "1")
    return Logger(service="relais", log_uncaught_exceptions=False, log_record_order=["timestamp", "level", "message"])
