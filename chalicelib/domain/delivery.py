"""Rules of national delivery: what an answer means, how long to wait before retrying.

Pure functions, so the policy is testable without a network or a queue.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Verdict(Enum):
    REPORTED = "reported"  # 2xx, or the receiver already has it (409 / duplicate)
    PERMANENT = "permanent"  # the receiver refuses this bundle: retrying cannot help
    RETRY = "retry"  # 5xx, 408, 429, timeouts, connection errors


@dataclass(frozen=True)
class Answer:
    """What came back from the national system (``status`` None: no HTTP answer at all)."""

    status: int | None
    retry_after: float | None = None
    body: Any = None


def classify(answer: Answer) -> Verdict:
    """Map an answer to a verdict (contract §3; issue 3)."""
    status = answer.status
    if status is None or status >= 500 or status in (408, 425, 429):
        return Verdict.RETRY
    if 200 <= status < 300 or status == 409:
        return Verdict.REPORTED
    if _is_duplicate_outcome(answer.body):
        return Verdict.REPORTED
    return Verdict.PERMANENT


def _is_duplicate_outcome(body: Any) -> bool:
    return isinstance(body, dict) and any(
        isinstance(issue, dict) and issue.get("code") == "duplicate" for issue in body.get("issue", [])
    )


_SAFE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$", re.IGNORECASE)


def outcome_reason(status: int | None, body: Any) -> str:
    """A short, personal-data-free reason: the HTTP status and the OperationOutcome's issue codes.

    Free text (``diagnostics``, ``details.text``) is never kept: a receiver may quote the bundle.
    """
    if status is None:
        return "no-answer"
    codes: list[str] = []
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        for issue in body.get("issue", [])[:5]:
            if not isinstance(issue, dict):
                continue
            code = issue.get("code")
            if isinstance(code, str) and _SAFE.match(code):
                codes.append(code)
            for coding in (issue.get("details") or {}).get("coding", [])[:2]:
                value = coding.get("code") if isinstance(coding, dict) else None
                if isinstance(value, str) and _SAFE.match(value):
                    codes.append(value)
    return f"http-{status}" + (":" + ",".join(codes) if codes else "")


def backoff_seconds(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> int:
    """Exponential backoff with equal jitter for ``attempt`` (1 = first failure), at least Retry-After: uniform
    between half the ceiling and the ceiling, so a retry never comes sooner than half the exponential pause."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = (rng or random.SystemRandom()).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return max(1, min(round(delay), 43_200))  # SQS visibility timeout limit: 12 h
