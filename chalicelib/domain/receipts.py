"""Receipts (contract §6): compact JWS (RFC 7515) signed with Ed25519 (``alg: EdDSA``) and their public keys (JWK).

A receipt is ``BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)`` with the protected header
``{"alg": "EdDSA", "kid", "typ": "relais-receipt+jwt"}``. The compact serialization is written here (a few lines over
``cryptography``'s Ed25519) rather than with a JOSE library: nothing is added to the deployed functions, and
any JOSE library verifies the result with the JWKS alone (the tests do it with ``joserfc``, which Relais does not use).

Ed25519 is deterministic: the same key and the same payload give the same receipt, byte for byte. The JSON is written
compact with sorted keys, so a payload is one string for one set of values.

Pure: no I/O. The keys come from ``adapters/receipt_keys.py``; the CLI's ``relais receipt verify`` verifies here too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chalicelib.domain.records import utc_iso

ALG = "EdDSA"
TYP = "relais-receipt+jwt"


class ReceiptError(ValueError):
    """A receipt that does not verify; ``reason`` is a fixed code (``bad_signature``, ``unknown_kid``…)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url; ValueError when ``text`` is not base64url."""
    if not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def body_sha256(body: bytes) -> str:
    """``body_sha256`` of a receipt: the base64url SHA-256 of the exact request body bytes."""
    return b64url(hashlib.sha256(body).digest())


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def issuer(stage: str) -> str:
    """``iss`` of every receipt of a stage."""
    return f"relais:{stage}"


def acceptance_payload(
    *, stage: str, result_id: str, pharmacy_id: str, pharmacy_reference: str, body: bytes, accepted_at: datetime
) -> dict[str, Any]:
    """What a ``POST /v1/results`` receipt says: this body was accepted as this result, at this time."""
    return {
        "iss": issuer(stage),
        "result_id": result_id,
        "pharmacy_id": pharmacy_id,
        "pharmacy_reference": pharmacy_reference,
        "body_sha256": body_sha256(body),
        "accepted_at": utc_iso(accepted_at),
    }


def report_payload(*, stage: str, result_id: str, pharmacy_id: str, reported_at: datetime) -> dict[str, Any]:
    """What a national receipt says: the national system acknowledged this result at this time."""
    return {
        "iss": issuer(stage),
        "result_id": result_id,
        "pharmacy_id": pharmacy_id,
        "reported_at": utc_iso(reported_at),
    }


def sign(private_key: Ed25519PrivateKey, kid: str, payload: Mapping[str, Any]) -> str:
    """The compact JWS of ``payload`` under ``private_key`` (named ``kid`` in the protected header)."""
    signing_input = f"{b64url(_json({'alg': ALG, 'kid': kid, 'typ': TYP}))}.{b64url(_json(payload))}"
    return f"{signing_input}.{b64url(private_key.sign(signing_input.encode('ascii')))}"


def public_jwk(kid: str, public_key: Ed25519PublicKey, **extra: str) -> dict[str, str]:
    """The RFC 7517/8037 JWK of an Ed25519 public key (``extra``: ``retired_at``…, members JOSE libraries ignore)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    x = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(x), "kid": kid, "alg": ALG, "use": "sig", **extra}


@dataclass(frozen=True)
class VerifiedReceipt:
    kid: str
    header: dict[str, Any]
    payload: dict[str, Any]


def _part(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(text))
    except ValueError:
        raise ReceiptError("malformed", f"the receipt's {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise ReceiptError("malformed", f"the receipt's {what} is not a JSON object")
    return value


def verify(receipt: str, jwks: Mapping[str, Any]) -> VerifiedReceipt:
    """Check a receipt against a JWKS document (``{"keys": [...]}``): its form, ``typ``, ``alg``, that its ``kid`` is
    published, and its signature. ReceiptError (with a reason) otherwise."""
    parts = receipt.strip().split(".")
    if len(parts) != 3:
        raise ReceiptError("malformed", "a receipt is a compact JWS: three base64url parts separated by dots")
    header, payload = _part(parts[0], "header"), _part(parts[1], "payload")
    if header.get("typ") != TYP:
        raise ReceiptError("wrong_typ", f"the receipt's typ is not {TYP}")
    if header.get("alg") != ALG:
        raise ReceiptError("wrong_alg", f"the receipt's alg is not {ALG}")
    kid = header.get("kid")
    jwk = next((k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid), None)
    if not isinstance(kid, str) or jwk is None:
        raise ReceiptError("unknown_kid", "the receipt's kid is not among the published keys")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise ReceiptError("unknown_kid", "the published key of the receipt's kid is not an Ed25519 key")
    try:
        signature = b64url_decode(parts[2])
        public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except (InvalidSignature, ValueError):
        raise ReceiptError(
            "bad_signature", "the receipt's signature does not verify: it was altered or signed by another key"
        ) from None
    return VerifiedReceipt(kid=kid, header=header, payload=payload)
