"""Pharmacy API routes: ``POST /v1/results``, ``GET /v1/results/{id}``, ``POST /v1/results/{id}/resend``,
``POST /v1/results/{id}/slip``, ``POST /v1/results/{id}/correction``, ``GET /v1/statement``,
``GET /.well-known/jwks.json``, ``GET /v1/health``."""

from __future__ import annotations

import json

from chalice.app import Blueprint, Response

from chalicelib import bootstrap
from chalicelib.observability import log_request_keys
from chalicelib.routes.edge import request_id, signed_request
from chalicelib.routes.problems import problem, problem_boundary

pharmacy_api = Blueprint(__name__)

# Every media type reaches the view, which answers 415 itself as problem+json (after authentication).
_ANY = ["*/*"]
PDF = "application/pdf"


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body=json.dumps(body),
        status_code=status,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
    )


@pharmacy_api.route("/v1/results", methods=["POST"], content_types=_ANY)
@problem_boundary
def submit_result() -> Response:
    request = pharmacy_api.current_request
    settings = bootstrap.settings()
    signed = signed_request(request, max_body_bytes=settings.max_body_bytes)
    accepted = bootstrap.results_service().submit(signed, request_id=request_id(request))
    log_request_keys(result_id=accepted.result_id)
    return _json(201 if accepted.created else 200, accepted.view(), {"Location": f"/v1/results/{accepted.result_id}"})


@pharmacy_api.route("/v1/results/{result_id}", methods=["GET"])
@problem_boundary
def follow_result(result_id: str) -> Response:
    request = pharmacy_api.current_request
    signed = signed_request(request, max_body_bytes=bootstrap.settings().max_body_bytes)
    answer = bootstrap.results_service().follow(signed, result_id, request_id=request_id(request))
    log_request_keys(result_id=result_id)  # the caller's own result: known, not merely what the path said
    return _json(200, answer)


@pharmacy_api.route("/v1/results/{result_id}/resend", methods=["POST"], content_types=_ANY)
@problem_boundary
def resend_link(result_id: str) -> Response:
    request = pharmacy_api.current_request
    signed = signed_request(request, max_body_bytes=bootstrap.settings().max_body_bytes)
    body = bootstrap.resend_service().resend(signed, result_id, request_id=request_id(request))
    log_request_keys(result_id=result_id)
    return _json(202, body)


@pharmacy_api.route("/v1/results/{result_id}/slip", methods=["POST"], content_types=_ANY)
@problem_boundary
def print_slip(result_id: str) -> Response:
    """The paper slip (contract v2 §7): a PDF, binary (``app.py`` lists ``application/pdf`` among the binary types).

    API Gateway returns a binary body only when the request's first ``Accept`` type is a binary one (``*/*`` is
    not), and Chalice replaces a binary answer the request did not accept by its own 400 — after the view ran, so
    after the slip was stored. ``Accept`` is therefore checked first, before the body, the signature or any write:
    anything but ``application/pdf`` first is a 406 that changes nothing (as a malformed request, not audited)."""
    request = pharmacy_api.current_request
    if not accepts_pdf_first(request.headers.get("accept")):
        return problem(406, detail=f"send Accept: {PDF} (the slip is a PDF; */* is not enough)")
    signed = signed_request(request, max_body_bytes=bootstrap.settings().max_body_bytes)
    pdf = bootstrap.slip_service().slip(signed, result_id, request_id=request_id(request))
    log_request_keys(result_id=result_id)
    return Response(
        body=pdf,
        status_code=200,
        headers={
            "Content-Type": PDF,
            "Cache-Control": "no-store",
            "Content-Disposition": 'inline; filename="relais-slip.pdf"',
        },
    )


def accepts_pdf_first(accept: str | None) -> bool:
    """Whether the first media range of ``accept`` is ``application/pdf`` (parameters allowed, but not ``q=0``)."""
    media, *parameters = (accept or "").split(",", 1)[0].split(";")
    refused = any(p.replace(" ", "").lower() in {"q=0", "q=0.0", "q=0.00", "q=0.000"} for p in parameters)
    return media.strip().lower() == PDF and not refused


@pharmacy_api.route("/v1/results/{result_id}/correction", methods=["POST"], content_types=_ANY)
@problem_boundary
def correct_result(result_id: str) -> Response:
    request = pharmacy_api.current_request
    signed = signed_request(request, max_body_bytes=bootstrap.settings().max_body_bytes)
    corrected = bootstrap.correction_service().correct(signed, result_id, request_id=request_id(request))
    log_request_keys(result_id=result_id)
    return _json(202 if corrected.created else 200, corrected.view())


@pharmacy_api.route("/v1/statement", methods=["GET"])
@problem_boundary
def statement() -> Response:
    request = pharmacy_api.current_request
    signed = signed_request(request, max_body_bytes=bootstrap.settings().max_body_bytes)
    month = request.query_params.get("month") if request.query_params else None
    answer = bootstrap.statement_service().statement(signed, month, request_id=request_id(request))
    return _json(200, answer)


@pharmacy_api.route("/.well-known/jwks.json", methods=["GET"])
@problem_boundary
def jwks() -> Response:
    """The public keys of receipts (contract §6): no authentication, cacheable."""
    from chalicelib.adapters.receipt_keys import JWKS_MAX_AGE

    document = bootstrap.receipt_keyring().published(bootstrap.settings().result_retention_days)
    # A stage without a key yet (none is made before the first receipt, or the stage's start: infra/local/stack.py)
    # must not have that empty set cached: the first receipt would not verify for JWKS_MAX_AGE.
    caching = f"public, max-age={JWKS_MAX_AGE}" if document["keys"] else "no-store"
    return Response(
        body=json.dumps(document),
        status_code=200,
        headers={"Content-Type": "application/jwk-set+json", "Cache-Control": caching},
    )


@pharmacy_api.route("/v1/health", methods=["GET"])
@problem_boundary
def health() -> Response:
    bootstrap.settings()  # fails (500) when the stage is not configured
    return _json(200, {"status": "ok"})
