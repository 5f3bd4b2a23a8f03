"""How every AWS call is made: timeouts and retries sized to the function that makes it.

botocore's defaults (60 s read timeout, legacy retries) outlast an API function's 10 s: a stalled call would
be cut by Lambda mid-request instead of failing cleanly (503 + Retry-After). :func:`call_budget` gives each
function's calls connect and read timeouts and a number of attempts (botocore's ``standard`` retry mode,
which backs off with jitter on throttling and transient errors) such that one call, retries included,
takes at most half the function's timeout. ``bootstrap.py`` applies it to every client it builds — boto3
clients, the encryption SDK's KMS clients (through the session's default config) and pynamodb's
connections — so there is one place where AWS clients are configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: botocore's standard mode: the n-th retry waits at most min(20, 2**n) seconds (throttling scale 1).
_MAX_BACKOFF = 20


@dataclass(frozen=True)
class CallBudget:
    connect_timeout: float
    read_timeout: float
    max_attempts: int  # attempts in all, the first included (botocore's ``total_max_attempts``)

    def worst_case_seconds(self) -> float:
        """The longest one call can take: every attempt timing out, every backoff at its cap."""
        backoff = sum(min(_MAX_BACKOFF, 2**n) for n in range(self.max_attempts - 1))
        return float(self.max_attempts * (self.connect_timeout + self.read_timeout) + backoff)

    def botocore_config(self) -> Any:
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
        )


def call_budget(function_timeout_seconds: int, *, attempts: int | None = None) -> CallBudget:
    """Timeouts and attempts so that one AWS call, retries included, fits in half of the function's timeout
    (the other half is for the function's other calls and its own work). ``attempts``: a given number (1 for a call
    that must not be repeated, whose one attempt then gets the whole budget), else 2, or 3 from 20 s."""
    if function_timeout_seconds < 4:
        raise ValueError("a function needs at least 4 s to make an AWS call with one retry")
    budget = function_timeout_seconds / 2
    if attempts is None:
        attempts = 3 if function_timeout_seconds >= 20 else 2
    backoff = sum(min(_MAX_BACKOFF, 2**n) for n in range(attempts - 1))
    per_attempt = (budget - backoff) / attempts
    connect = min(1.0, per_attempt / 4)
    read = min(5.0, per_attempt - connect)
    chosen = CallBudget(connect_timeout=round(connect, 2), read_timeout=round(read, 2), max_attempts=attempts)
    if chosen.worst_case_seconds() > budget:  # pragma: no cover - the arithmetic above guarantees it
        raise AssertionError("AWS call budget over half the function's timeout")
    return chosen
