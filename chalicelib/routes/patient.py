"""Patient routes: the result page (``GET /r`` and its CSS and JS) and ``POST /v1/patient/result``.

Every patient-facing response — HTML, CSS, JS, JSON, errors, including the problem documents the
app's own middleware makes for 405 and 415 — carries the headers of contract §4, added by
:func:`patient_headers`, an HTTP middleware registered *first* (outermost) in ``app.py``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from chalice.app import Blueprint, Request, Response

from chalicelib import bootstrap
from chalicelib.domain.json_body import load_json
from chalicelib.errors import PayloadTooLargeError
from chalicelib.routes.edge import client_ip, request_id
from chalicelib.routes.problems import problem_boundary

patient_api = Blueprint(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_PATIENT_BODY = 1024

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'none'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)
#: Sent with every patient-facing response (contract §4). CSP and HSTS matter for the HTML; they are
#: harmless on the rest, and sending them everywhere keeps the rule simple.
PATIENT_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

_ASSETS = {
    "result.html": "text/html; charset=utf-8",
    "result.css": "text/css; charset=utf-8",
    "result.js": "text/javascript; charset=utf-8",
}


def is_patient_path(path: str) -> bool:
    return path == "/r" or path.startswith("/r/") or path.startswith("/v1/patient/")


def patient_headers(event: Request, get_response: Any) -> Response:
    """HTTP middleware: the security headers on every response to a patient-facing path."""
    response: Response = get_response(event)
    context = event.context if isinstance(event.context, dict) else {}
    path = str(context.get("resourcePath") or event.path or "")
    if is_patient_path(path):
        response.headers.update(PATIENT_HEADERS)
    return response


@cache
def _asset(name: str) -> str:
    """A static file of the page (UTF-8 text), read at first use and kept for the life of the process."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _static(name: str) -> Response:
    return Response(body=_asset(name), status_code=200, headers={"Content-Type": _ASSETS[name], **PATIENT_HEADERS})


@patient_api.route("/r", methods=["GET"])
@problem_boundary
def result_page() -> Response:
    return _static("result.html")


@patient_api.route("/r/result.css", methods=["GET"])
@problem_boundary
def result_css() -> Response:
    return _static("result.css")


@patient_api.route("/r/result.js", methods=["GET"])
@problem_boundary
def result_js() -> Response:
    return _static("result.js")


def _json(status: int, body: object) -> Response:
    return Response(
        body=json.dumps(body), status_code=status, headers={"Content-Type": "application/json", **PATIENT_HEADERS}
    )


@patient_api.route("/v1/patient/result", methods=["POST"], content_types=["*/*"])
@problem_boundary
def view_result() -> Response:
    from chalicelib.services.patient import parse_view_request

    request = patient_api.current_request
    raw = request.raw_body or b""
    if len(raw) > MAX_PATIENT_BODY:
        raise PayloadTooLargeError("body too large")
    document = load_json(raw, request.headers.get("content-type"))
    token, birth_date = parse_view_request(document)
    body = bootstrap.patient_service().view(
        token, birth_date, client_ip=client_ip(request), request_id=request_id(request)
    )
    return _json(200, body)
