"""RFC 9457 problem documents: the only shape of an error Relais sends. Never echoes input."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from chalice.app import Response

from chalicelib.errors import (
    AuthenticationError,
    ConflictError,
    DependencyUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RelaisError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chalicelib.observability import logger
from chalicelib.services.authn import public_reason

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: ("invalid-request", "The request is invalid"),
    401: ("not-authenticated", "Not authenticated"),
    403: ("forbidden", "Refused by the web application firewall"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "The answer cannot be given in a type the request accepts"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "The body is too large"),
    415: ("unsupported-media-type", "The body must be application/json"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal-error", "Internal error"),
    503: ("unavailable", "A dependency is unavailable; nothing was accepted, retry later"),
}


def problem(
    status: int,
    *,
    errors: list[dict[str, str]] | None = None,
    errors_truncated: bool = False,
    detail: str | None = None,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response with a fixed title per status (and field errors for 400, with
    ``"errors_truncated": true`` when more were found than listed; a reason for an explained 401)."""
    slug, title = _TITLES.get(status, ("error", "Error"))
    body: dict[str, Any] = {"type": f"urn:relais:problem:{slug}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if reason:
        body["reason"] = reason
    if errors is not None:
        body["errors"] = errors
        if errors_truncated:
            body["errors_truncated"] = True
    return Response(
        body=json.dumps(body),
        status_code=status,
        headers={"Content-Type": PROBLEM_JSON, "Cache-Control": "no-store", **(headers or {})},
    )


def to_problem(exc: RelaisError, *, explain_auth_failures: bool = False) -> Response:
    """Map a domain error to its HTTP problem (details are fixed strings, never the error's text). A 401 says why
    only when ``explain_auth_failures`` (the local and sandbox stages: ``config.EXPLAINING_STAGES``)."""
    if isinstance(exc, ValidationError):
        errors = [{"field": e.field, "message": e.message} for e in exc.errors]
        return problem(400, errors=errors, errors_truncated=exc.truncated)
    if isinstance(exc, AuthenticationError):
        reason = public_reason(exc) if explain_auth_failures else None
        return problem(401, reason=reason, headers={"WWW-Authenticate": 'Signature realm="relais"'})
    if isinstance(exc, NotFoundError):
        return problem(404)
    if isinstance(exc, ConflictError):
        return problem(409, detail=type(exc).detail)  # the kind's fixed sentence, never the instance's
    if isinstance(exc, PayloadTooLargeError):
        return problem(413)
    if isinstance(exc, UnsupportedMediaTypeError):
        return problem(415)
    if isinstance(exc, RateLimitedError):
        return problem(429, detail=exc.detail, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, DependencyUnavailableError):
        return problem(503, headers={"Retry-After": str(exc.retry_after)})
    return problem(500)


F = TypeVar("F", bound=Callable[..., Any])


def problem_boundary(view: F) -> F:
    """Turn any error raised by a view into a problem response; log its type, never its text."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except RelaisError as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "dependency", None)
            logger().info("request refused", extra={"error": type(exc).__name__, "reason": reason})
            return to_problem(exc, explain_auth_failures=_explains(exc))
        except Exception as exc:
            logger().error("unexpected error", extra={"error": type(exc).__name__, "where": _where(exc)})
            return problem(500)

    return wrapper  # type: ignore[return-value]


def _explains(exc: RelaisError) -> bool:
    """Whether this stage tells a vendor why their signature failed (read only for a 401)."""
    from chalicelib import bootstrap

    return isinstance(exc, AuthenticationError) and bool(bootstrap.settings().explain_auth_failures)


def _where(exc: BaseException) -> str:
    """File and line where an unexpected error was raised (code location only, never its message)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb else "?"
