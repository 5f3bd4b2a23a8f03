"""HTTP middleware: request ids, one access log line per request, problem+json for Chalice's own errors."""

from __future__ import annotations

import time
from typing import Any

from chalice.app import Request, Response

from chalicelib.deadline import deadline_in
from chalicelib.domain.records import new_id
from chalicelib.observability import REQUEST_KEYS, logger
from chalicelib.routes.problems import PROBLEM_JSON, problem


def http_middleware(event: Request, get_response: Any) -> Response:
    started = time.perf_counter()
    context = event.context if isinstance(event.context, dict) else {}
    rid = context.get("requestId") or new_id(16)
    context["requestId"] = rid
    log = logger()
    log.append_keys(request_id=rid)
    try:
        with deadline_in(_function_timeout()):  # retries inside stop in time to answer
            response: Response = get_response(event)
        if response.status_code in (405, 415) and response.headers.get("Content-Type") != PROBLEM_JSON:
            allow = str(response.headers.get("Allow") or "")
            response = problem(response.status_code, headers={"Allow": allow} if allow else None)
        response.headers["X-Request-Id"] = str(rid)
        seconds = time.perf_counter() - started
        route = context.get("resourcePath")
        log.info(
            "request",
            extra={
                "method": event.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
        if route == "/v1/results" and event.method == "POST":
            _ingest_metrics(response.status_code, seconds)
        _flush_metrics()  # what the request counted (ingest outcomes, decryptions of a patient's look-up)
        return response
    finally:
        log.remove_keys(["request_id", *REQUEST_KEYS])


def _function_timeout() -> float:
    """The API function's timeout (its setting; 10 s when the stage is not configured, which fails later anyway)."""
    from chalicelib import bootstrap
    from chalicelib.config import SettingsError

    try:
        return float(bootstrap.settings().function_timeout_seconds)
    except SettingsError:
        return 10.0


#: Outcome of ``POST /v1/results`` by status, as a metric name (rejections by reason).
_INGEST_OUTCOMES = {
    201: "ResultAccepted",
    200: "ResultDuplicate",
    400: "ResultRejectedInvalid",
    401: "ResultRejectedAuthentication",
    409: "ResultRejectedConflict",
    413: "ResultRejectedTooLarge",
    415: "ResultRejectedMediaType",
    429: "ResultRejectedQuota",
    503: "ResultRejectedUnavailable",
}


def _ingest_metrics(status: int, seconds: float) -> None:
    """Embedded metrics of the ingest path: accepted, rejected by reason, latency (names and numbers only)."""
    from chalicelib import bootstrap

    metrics = bootstrap.metrics()
    metrics.count(_INGEST_OUTCOMES.get(status, "ResultRejectedOther"))
    metrics.latency("IngestLatency", seconds)


def _flush_metrics() -> None:
    from chalicelib import bootstrap

    bootstrap.metrics().flush()
