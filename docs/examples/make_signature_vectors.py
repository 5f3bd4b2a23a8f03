"""Write ``docs/signature-test-vectors.json``: signed requests a pharmacy client's signer can be checked against.

    python3 docs/examples/make_signature_vectors.py > docs/signature-test-vectors.json

Reproducible: the key is derived from a published seed, ``created`` and ``nonce`` are fixed, and Ed25519 signatures
are deterministic, so running it again gives the same file byte for byte (``tests/unit/test_signature_vectors.py``
checks it, and checks every vector against Relais' own verifier).

It builds each RFC 9421 signature base by hand, with ``cryptography`` only, as a vendor would in any language:
one ``"component": value`` line per covered component, then the ``"@signature-params"`` line, joined by ``\\n``.

The key is **published**: Relais accepts it on the local stack only (``chalicelib/services/authn.py``,
``PUBLISHED_TEST_PUBLIC_KEY``); every deployed stage refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: The seed of the published test key (SHA-256 of this text): anyone can rebuild the key; only local trusts it.
SEED_TEXT = b"Relais published signature test key - refused by every stage but local"
KEY_ID = "relais-published-test-key"
BASE_URL = "http://127.0.0.1:8000"
#: 2026-11-30T08:30:00Z: the time of every vector (its Date field); the verifier's clock is this.
NOW = 1_796_027_400
RESULT_ID = "3q2-7wAAHi9vXk_QlZ8a1cRt"
WITH_BODY = ("@method", "@authority", "@path", "content-digest", "content-type")
WITHOUT_BODY = ("@method", "@authority", "@path")

SUBMISSION = {
    "pharmacy_reference": "A-2026-000123",
    "performer_rpps": "10003879623",
    "patient": {
        "family_name": "Martin",
        "given_name": "Claire",
        "birth_date": "1984-12-03",
        "sex": "female",
        "phone": "+33612345678",
        "email": "claire@example.org",
    },
    "test": {"kind": "antigen", "device_id": "1232", "sampled_at": "2026-11-30T09:15:00+01:00", "result": "negative"},
    "notify": ["sms", "email"],
}


def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(SEED_TEXT).digest())


def content_digest(body: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def signature_params(covered: tuple[str, ...], created: int, nonce: str, alg: str = "ed25519") -> str:
    components = " ".join(f'"{name}"' for name in covered)
    return f'({components});created={created};keyid="{KEY_ID}";alg="{alg}";nonce="{nonce}"'


def signature_base(method: str, url: str, headers: dict[str, str], covered: tuple[str, ...], params: str) -> str:
    parts = urlsplit(url)
    derived = {"@method": method.upper(), "@authority": parts.netloc.lower(), "@path": parts.path}
    fields = {name.lower(): value for name, value in headers.items()}
    lines = [f'"{name}": {derived[name] if name.startswith("@") else fields[name]}' for name in covered]
    return "\n".join([*lines, f'"@signature-params": {params}'])


def vector(
    name: str,
    method: str,
    path: str,
    body: bytes | None,
    *,
    nonce: str,
    covered: tuple[str, ...] | None = None,
    created: int = NOW,
    alg: str = "ed25519",
    sent_body: bytes | None = None,
    sent_path: str | None = None,
    why: str | None = None,
) -> dict[str, Any]:
    """One request signed with the test key; ``sent_*`` change what is sent after signing (invalid vectors)."""
    covered = covered or (WITH_BODY if body is not None else WITHOUT_BODY)
    headers = {"Date": formatdate(NOW, usegmt=True)}
    if body is not None:
        headers |= {"Content-Type": "application/json", "Content-Digest": content_digest(body)}
    params = signature_params(covered, created, nonce, alg)
    base = signature_base(method, BASE_URL + path, headers, covered, params)
    signature = base64.b64encode(private_key().sign(base.encode("ascii"))).decode()
    headers |= {"Signature-Input": f"sig1={params}", "Signature": f"sig1=:{signature}:"}
    sent = sent_body if sent_body is not None else body
    entry: dict[str, Any] = {"name": name, "valid": why is None}
    if why is not None:
        entry["why"] = why
    entry["request"] = {
        "method": method,
        "url": BASE_URL + (sent_path or path),
        "headers": headers,
        "body": None if sent is None else sent.decode("utf-8"),
    }
    entry |= {"signature_base": base, "signature_input": headers["Signature-Input"], "signature": headers["Signature"]}
    return entry


def document() -> dict[str, Any]:
    key = private_key()
    submission = json.dumps(SUBMISSION, separators=(",", ":")).encode()
    tampered = submission.replace(b'"result":"negative"', b'"result":"positive"')
    results, one, resend = "/v1/results", f"/v1/results/{RESULT_ID}", f"/v1/results/{RESULT_ID}/resend"
    return {
        "key": {
            "key_id": KEY_ID,
            "alg": "ed25519",
            "private_key_pem": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "public_key_pem": key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode(),
        },
        "vectors": [
            vector("result submission", "POST", results, submission, nonce="vector-submit-0001"),
            vector("status read", "GET", one, None, nonce="vector-follow-0002"),
            vector("resend", "POST", resend, b"{}", nonce="vector-resend-0003"),
            vector(
                "result submission also covering date",
                "POST",
                results,
                submission,
                nonce="vector-submit-date-0004",
                covered=(*WITH_BODY, "date"),
            ),
            vector(
                "tampered body",
                "POST",
                results,
                submission,
                nonce="vector-tampered-0005",
                sent_body=tampered,
                why="digest_mismatch: the body was changed after it was digested and signed",
            ),
            vector(
                "digest not covered",
                "POST",
                results,
                submission,
                nonce="vector-nodigest-0006",
                covered=("@method", "@authority", "@path", "content-type"),
                why="component_missing:content-digest: a request with a body must cover content-digest",
            ),
            vector(
                "created outside the window",
                "POST",
                results,
                submission,
                nonce="vector-stale-0007",
                created=NOW - 400,
                why="created_out_of_window: created is 400 s before the request's time (the window is 300 s)",
            ),
            vector(
                "wrong alg",
                "POST",
                results,
                submission,
                nonce="vector-alg-0008",
                alg="rsa-pss-sha512",
                why='alg_not_ed25519: alg must be "ed25519"',
            ),
            vector(
                "path not as signed",
                "GET",
                one,
                None,
                nonce="vector-path-0009",
                sent_path=f"/v1/results/{RESULT_ID[:-1]}A",
                why="signature_mismatch: the request went to another path than the one signed",
            ),
        ],
    }


def render() -> str:
    """The file's exact text."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
