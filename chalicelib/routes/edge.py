"""Translate a Chalice request into the service's SignedRequest, with the body-size guard."""

from __future__ import annotations

from urllib.parse import urlencode

from chalice.app import Request

from chalicelib.errors import PayloadTooLargeError
from chalicelib.services.authn import SignedRequest


def signed_request(request: Request, *, max_body_bytes: int) -> SignedRequest:
    """The request as the signature covers it. Bodies over ``max_body_bytes`` raise 413 first."""
    raw = request.raw_body or b""
    body = raw.encode() if isinstance(raw, str) else raw
    if len(body) > max_body_bytes:
        raise PayloadTooLargeError("body too large")
    context = request.context or {}
    path = context.get("path") or request.path
    query = urlencode(request.query_params or {}, doseq=True)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return SignedRequest(
        method=request.method.upper(),
        authority=headers.get("host", ""),
        path=path,
        query=query,
        headers=headers,
        body=body,
        client_ip=client_ip(request),
    )


def client_ip(request: Request) -> str:
    """The caller's address as API Gateway saw it (never a client-supplied X-Forwarded-For)."""
    identity = (request.context or {}).get("identity") or {}
    return str(identity.get("sourceIp") or "")


def request_id(request: Request) -> str:
    context = request.context or {}
    rid = context.get("requestId")
    return str(rid) if rid else ""
