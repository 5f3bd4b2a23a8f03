"""Count AWS API calls by service and operation, whatever client or library makes them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient


@contextmanager
def counting_aws_calls() -> Iterator[Counter[str]]:
    """Patch botocore's single call path; yields a Counter of "service:Operation".

    The Counter's ``"seconds:<service>"`` entries hold the time spent inside the calls (in µs),
    so a benchmark can tell its own code's cost from the (moto) service's.
    """
    counts: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counted(self: BaseClient, operation_name: str, api_params: Any) -> Any:
        service = self.meta.service_model.service_name
        counts[f"{service}:{operation_name}"] += 1
        started = time.perf_counter()
        try:
            return original(self, operation_name, api_params)
        finally:
            counts[f"seconds:{service}"] += int((time.perf_counter() - started) * 1_000_000)

    BaseClient._make_api_call = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def by_service(counts: Counter[str]) -> dict[str, int]:
    services: Counter[str] = Counter()
    for key, n in counts.items():
        if not key.startswith("seconds:"):
            services[key.split(":", 1)[0]] += n
    return dict(services)


def seconds_in(counts: Counter[str], service: str | None = None) -> float:
    """Seconds spent inside AWS calls (of one service, or all)."""
    return (
        sum(n for k, n in counts.items() if k.startswith("seconds:") and (service is None or k == f"seconds:{service}"))
        / 1e6
    )
