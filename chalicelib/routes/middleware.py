"""HTTP middleware: request ids, one access log line per request, problem+json for Chalice's own errors."""

from __future__ import annotations

import time
from typing import Any

from chalice.app import Request, Response

from chalicelib.domain.records import new_id
from chalicelib.observability import logger
from chalicelib.routes.problems import PROBLEM_JSON, problem


def http_middleware(event: Request, get_response: Any) -> Response:
    started = time.perf_counter()
    context = event.context if isinstance(event.context, dict) else {}
    rid = context.get("requestId") or new_id(16)
    context["requestId"] = rid
    log = logger()
    log.append_keys(request_id=rid)
    try:
        response: Response = get_response(event)
        if response.status_code in (405, 415) and response.headers.get("Content-Type") != PROBLEM_JSON:
            allow = str(response.headers.get("Allow") or "")
            response = problem(response.status_code, headers={"Allow": allow} if allow else None)
        response.headers["X-Request-Id"] = str(rid)
        log.info(
            "request",
            extra={
                "method": event.method,
                "route": context.get("resourcePath"),
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return response
    finally:
        log.remove_keys(["request_id"])
