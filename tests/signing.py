"""Test and dev helper: sign requests exactly as a pharmacy client does (contract.md §2).

The pharmacy client is ``requests`` with ``requests_http_signature.HTTPSignatureAuth(signature_algorithm=ED25519,
key=..., key_id=..., use_nonce=True, covered_component_ids=CONTRACT_COMPONENTS)``. :func:`sign` prepares a
``requests.Request`` with that auth and returns the headers it produced. ``created`` and ``nonce`` are pinned by
overriding ``get_created()`` / ``get_nonce()``, the hooks the library documents for this.

Behaviour of the client library worth knowing (it is what real pharmacies will send):

* it always adds a ``Date`` header and covers ``"date"`` as well;
* it always sends and covers ``Content-Digest``, even for an empty body (GET): ``sha-256`` of ``b""``;
* with the contract's component list, a GET without a ``Content-Type`` header fails on the client side
  (``Covered header field "content-type" not found``), so for body-less requests the default here covers
  only ``@method``, ``@authority``, ``@path`` (plus the automatic ``date`` and ``content-digest``).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureAlgorithm, MappingKeyResolver
from requests_http_signature import HTTPSignatureAuth, algorithms

from chalicelib.services.authn import SignedRequest

CONTRACT_COMPONENTS: tuple[str, ...] = ("@method", "@authority", "@path", "content-digest", "content-type")
BODYLESS_COMPONENTS: tuple[str, ...] = ("@method", "@authority", "@path")


def new_keypair() -> tuple[Ed25519PrivateKey, str]:
    """A fresh Ed25519 private key and its public key as a SubjectPublicKeyInfo PEM string."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_key, pem.decode("ascii")


def _private_pem(private_key: Any) -> bytes:
    if isinstance(private_key, bytes):
        return private_key
    pem: bytes = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


class _PinnedAuth(HTTPSignatureAuth):
    """HTTPSignatureAuth with optional fixed ``created`` and ``nonce`` (via its documented override hooks)."""

    def __init__(self, *, created: int | None, nonce: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._created = created
        self._nonce = nonce

    def get_created(self, request: requests.PreparedRequest) -> datetime.datetime:
        if self._created is None:
            return super().get_created(request)
        self.add_date(request, timestamp=self._created)
        return datetime.datetime.fromtimestamp(self._created, tz=datetime.UTC)

    def get_nonce(self, request: requests.PreparedRequest) -> str | None:
        if self._nonce is not None and self.use_nonce:
            return self._nonce
        return super().get_nonce(request)


def sign(
    method: str,
    url: str,
    *,
    key_id: str,
    private_key: Any,
    body: bytes | None = None,
    content_type: str = "application/json",
    created: int | None = None,
    nonce: str | None = None,
    covered: tuple[str, ...] | None = None,
    use_nonce: bool = True,
    include_alg: bool = True,
    signature_algorithm: type[HTTPSignatureAlgorithm] = algorithms.ED25519,
    label: str | None = None,
) -> dict[str, str]:
    """Return every header to send with this request (Signature-Input, Signature, Content-Digest, Date, Host...).

    ``private_key`` is a cryptography private key object or PEM bytes. ``covered`` defaults to the contract's list
    when there is a body and to ``@method``, ``@authority``, ``@path`` otherwise. ``Content-Type`` is sent when
    there is a body or when ``covered`` names it.

    An explicit ``covered`` list without ``content-digest`` is signed with ``http_message_signatures.HTTPMessageSigner``
    directly and no ``Content-Digest`` is sent, because requests-http-signature always adds digest coverage.
    The extra keyword arguments exist to build invalid requests in tests.
    """
    # requests-http-signature always adds digest coverage; only an explicit list without it bypasses the client.
    through_client = covered is None or any("content-digest" in component for component in covered)
    if covered is None:
        covered = CONTRACT_COMPONENTS if body is not None else BODYLESS_COMPONENTS
    headers: dict[str, str] = {}
    if body is not None or "content-type" in covered:
        headers["Content-Type"] = content_type
    prepared = requests.Request(method, url, data=body, headers=headers).prepare()
    key_pem = _private_pem(private_key)

    if through_client:
        auth = _PinnedAuth(
            created=created,
            nonce=nonce,
            signature_algorithm=signature_algorithm,
            key=key_pem,
            key_id=key_id,
            use_nonce=use_nonce,
            include_alg=include_alg,
            label=label,
            covered_component_ids=covered,
        )
        prepared = auth(prepared)
    else:
        signer = HTTPMessageSigner(
            signature_algorithm=signature_algorithm,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: key_pem}),
        )
        when = (
            datetime.datetime.now(tz=datetime.UTC)
            if created is None
            else datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
        )
        signer.sign(
            prepared,
            key_id=key_id,
            created=when,
            nonce=(nonce if nonce is not None else secrets.token_urlsafe(16)) if use_nonce else None,
            include_alg=include_alg,
            label=label,
            covered_component_ids=covered,
        )

    out = {name: str(value) for name, value in prepared.headers.items()}
    if not any(name.lower() == "host" for name in out):
        out["Host"] = _authority(url)
    return out


def _authority(url: str) -> str:
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2]


def to_signed_request(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> SignedRequest:
    """The SignedRequest the edge would build for this request (authority from the URL, raw path and query)."""
    parts = urlsplit(url)
    return SignedRequest(
        method=method,
        authority=_authority(url),
        path=parts.path or "/",
        query=parts.query,
        headers=dict(headers),
        body=body or b"",
        scheme=parts.scheme,
    )
