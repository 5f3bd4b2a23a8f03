"""Pharmacy API routes: ``POST /v1/results``, ``GET /v1/results/{id}``, ``POST /v1/results/{id}/resend``,
``POST /v1/results/{id}/slip``, ``POST /v1/results/{id}/correction``, ``GET /v1/statement``,
``GET /.well-known/jwks.json``, ``GET /v1/health``."""

from __future__ import annotations

import json

from chalice.app import Blueprint, CaseInsensitiveMapping, Request, Response

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

    The deployed API treats every media type as binary (``infra/template.py``): API Gateway then returns the PDF
    whatever the order of ``Accept`` types, and a JSON or HTML answer (not base64-encoded) as text. So the slip
    is refused (406, before the body, the signature or any write) only when ``Accept`` rules a PDF out, as HTTP
    reads it (:func:`accepts_pdf`); no ``Accept``, ``*/*`` or ``application/*`` get the PDF. Chalice, after the
    view, replaces a binary answer whose type the request's ``Accept`` does not name (nor ``*/*``) by its own 400:
    the request is told what it accepted (:func:`_accepted_as_pdf`) once the slip is made."""
    request = pharmacy_api.current_request
    if not accepts_pdf(request.headers.get("accept")):
        return problem(406, detail=f"the slip is a PDF: send Accept: {PDF} (or */*, or no Accept)")
    signed = signed_request(request, max_body_bytes=bootstrap.settings().max_body_bytes)
    pdf = bootstrap.slip_service().slip(signed, result_id, request_id=request_id(request))
    log_request_keys(result_id=result_id)
    _accepted_as_pdf(request)
    return Response(
        body=pdf,
        status_code=200,
        headers={
            "Content-Type": PDF,
            "Cache-Control": "no-store",
            "Content-Disposition": 'inline; filename="relais-slip.pdf"',
        },
    )


def accepts_pdf(accept: str | None) -> bool:
    """Whether ``accept`` lets the answer be ``application/pdf`` (RFC 9110 §12.5.1): yes without ``Accept``;
    otherwise the most specific range that matches (``application/pdf``, then ``application/*``, then ``*/*``)
    decides, by its weight (``q=0``: not acceptable). A range whose ``q`` is not a number is ignored."""
    if accept is None or not accept.strip():
        return True
    specificity = {PDF: 3, "application/*": 2, "*/*": 1}
    best: tuple[int, float] = (0, 0.0)  # (specificity, weight) of the most specific matching range so far
    for media_range in accept.split(","):
        media, *parameters = (part.strip().lower() for part in media_range.split(";"))
        rank = specificity.get(media.replace(" ", ""), 0)
        if rank <= best[0]:
            continue
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = -1.0
        if weight >= 0:
            best = (rank, weight)
    return best[1] > 0


def _accepted_as_pdf(request: Request) -> None:
    """Tell Chalice's after-view check that the request accepted the PDF: it knows neither an absent ``Accept``
    (anything, in HTTP) nor ``application/*``; :func:`accepts_pdf` already said yes. ``Accept`` is not signed."""
    request.headers = CaseInsensitiveMapping({**request.headers, "accept": PDF})


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
