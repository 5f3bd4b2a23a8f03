"""Logging and metrics plumbing (Powertools), configured so that no event or payload is ever logged.

Log lines carry opaque ids, routes, statuses and durations only. Never pass a request body,
a submission, a token or an exception message from a third-party library to the logger.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any


@cache
def logger() -> Any:
    from aws_lambda_powertools import Logger

    os.environ.setdefault("POWERTOOLS_LOG_DEDUPLICATION_DISABLED", "1")
    return Logger(service="relais", log_uncaught_exceptions=False, log_record_order=["timestamp", "level", "message"])
