"""Authentication of pharmacy requests: RFC 9421 HTTP Message Signatures with Ed25519.

The contract (``contract.md`` §2) asks for exactly one signature per request, with:

* parameters ``keyid``, ``alg="ed25519"`` (required, exact), ``created`` (within ±window of server time) and
  ``nonce`` (16 to 128 characters, used once per key);
* covered components ``"@method"``, ``"@authority"``, ``"@path"`` and, when the body is non-empty,
  ``"content-digest"`` and ``"content-type"``;
* a ``Content-Digest`` (RFC 9530) holding a ``sha-256`` member that matches the body.

Structured fields are parsed with ``http_sf`` and the signature base is built and checked by
``http_message_signatures``; this module only applies Relais' policy around them. The clock is injected
(``now``), so the library's own wall-clock checks are switched off and replaced by ours.

Every failure raises :class:`~chalicelib.errors.AuthenticationError` whose ``reason`` (one of
:data:`FAILURE_REASONS`) goes to the audit log. The client receives the same generic 401, except on the stages
that explain signature failures to vendors (local, sandbox), where the 401 adds :func:`public_reason`.
The nonce is consumed last, after the signature verified, so unauthenticated callers cannot burn nonces.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NoReturn, Protocol

import http_sf
from cryptography.exceptions import InvalidSignature as CryptographyInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from chalicelib.errors import AuthenticationError

__all__ = [
    "FAILURE_REASONS",
    "PUBLISHED_TEST_PUBLIC_KEY",
    "KeyDirectory",
    "KeyRecord",
    "NonceStore",
    "Principal",
    "SignedRequest",
    "authenticate",
    "is_published_test_key",
    "public_key_from_pem",
    "public_reason",
]

ALGORITHM = "ed25519"
NONCE_MIN_LENGTH = 16
NONCE_MAX_LENGTH = 128
KEY_ID_MAX_LENGTH = 256
#: Seconds added to ``created + window`` for the nonce's TTL, so a nonce outlives every request that could reuse it.
NONCE_TTL_MARGIN = 60

_BASE_COMPONENTS = ("@method", "@authority", "@path")
_BODY_COMPONENTS = ("content-digest", "content-type")
_KNOWN_PARAMETERS = frozenset({"alg", "created", "expires", "keyid", "nonce", "tag"})
_REQUIRED_DIGEST = "sha-256"
_SUPPORTED_DIGESTS = frozenset({"sha-256", "sha-512"})  # what ContentDigest can recompute

#: The public key (SubjectPublicKeyInfo, base64 DER) of the key published with its private half in
#: ``docs/signature-test-vectors.json``: anyone can sign with it, so only the local stack accepts it.
PUBLISHED_TEST_PUBLIC_KEY = "MCowBQYDK2VwAyEAufnM3+lkluXbTSNw/vs+revz7f7Ikwfdus2nlfMofOw="

#: Every ``reason`` that :func:`authenticate` can put into an :class:`AuthenticationError`.
FAILURE_REASONS = frozenset(
    {
        "missing_signature",  # Signature or Signature-Input absent or empty
        "malformed_signature",  # unparsable fields, wrong member/parameter types, library refused the message
        "multiple_signatures",  # more than one signature (or a duplicated label)
        "bad_algorithm",  # alg missing or not exactly "ed25519"
        "stale",  # created older than now - window
        "future",  # created later than now + window
        "expired",  # optional expires parameter in the past
        "bad_nonce",  # nonce missing, not a string, or not 16-128 characters
        "missing_components",  # a required component is not covered
        "missing_digest",  # non-empty body without a Content-Digest field
        "bad_digest",  # Content-Digest unparsable or without a sha-256 member
        "digest_mismatch",  # Content-Digest does not match the body
        "unknown_key",  # keyid not in the key directory
        "bad_key",  # stored public key is not a valid Ed25519 SubjectPublicKeyInfo PEM
        "test_key",  # the published test key, on a stage that does not accept it
        "bad_signature",  # Ed25519 verification failed
        "revoked_key",  # key revoked at or before now (checked after the signature verified)
        "suspended_pharmacy",  # pharmacy not active (checked after the signature verified)
        "replayed_nonce",  # nonce already used with this key
        "wrong_authority",  # "@authority" is not a host name of this stage (services/pharmacy_request.py)
    }
)

#: What a vendor is told on the stages that explain (docs/api.md, "Debugging a 401"), per audited reason.
_PUBLIC_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "missing_signature": "signature_missing",
        "malformed_signature": "signature_malformed",
        "multiple_signatures": "multiple_signatures",
        "bad_algorithm": "alg_not_ed25519",
        "stale": "created_out_of_window",
        "future": "created_out_of_window",
        "expired": "expired",
        "bad_nonce": "nonce_invalid",
        "missing_components": "component_missing",
        "missing_digest": "digest_missing",
        "bad_digest": "digest_invalid",
        "digest_mismatch": "digest_mismatch",
        "unknown_key": "unknown_key",
        "bad_key": "key_invalid",
        "test_key": "key_refused",
        "bad_signature": "signature_mismatch",
        "revoked_key": "key_revoked",
        "suspended_pharmacy": "pharmacy_suspended",
        "replayed_nonce": "nonce_reused",
        "wrong_authority": "wrong_authority",
    }
)


@dataclass(frozen=True)
class KeyRecord:
    """A registered pharmacy public key."""

    key_id: str
    pharmacy_id: str
    public_key_pem: str
    revoked_at: datetime | None
    pharmacy_active: bool


class KeyDirectory(Protocol):
    def get_key(self, key_id: str) -> KeyRecord | None: ...


class NonceStore(Protocol):
    def use_once(self, key_id: str, nonce: str, expires_at: int) -> bool:
        """Record the nonce; return False when it was already used. ``expires_at`` is epoch seconds (TTL)."""
        ...


@dataclass(frozen=True)
class SignedRequest:
    """What the edge hands over: the request as received, before any parsing of the body.

    ``path`` and ``query`` must be the raw, percent-encoded request target (without ``?``); ``authority`` is the
    Host the client addressed. Header names are case-insensitive: they are normalised to lower case here, and
    names differing only by case are combined with ``", "`` as HTTP field lines are.
    """

    method: str
    authority: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    scheme: str = "https"
    client_ip: str = ""  # the address API Gateway saw (not signed: for limits and the audit of failures)

    def __post_init__(self) -> None:
        normalised: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            normalised[key] = f"{normalised[key]}, {value}" if key in normalised else value
        object.__setattr__(self, "headers", MappingProxyType(normalised))
        object.__setattr__(self, "body", bytes(self.body) if self.body is not None else b"")

    @property
    def url(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.authority}{self.path}{query}"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the pharmacy is identified by the key alone."""

    key_id: str
    pharmacy_id: str


def public_key_from_pem(pem: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a SubjectPublicKeyInfo PEM; ``ValueError`` otherwise."""
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError("not a valid PEM SubjectPublicKeyInfo public key") from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for unknown key types
        raise ValueError("unsupported public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"public key must be Ed25519, not {type(key).__name__.removeprefix('_')}")
    return key


def public_reason(exc: AuthenticationError) -> str:
    """The machine-readable reason a vendor is told (``component_missing:content-digest``…): never a value sent."""
    reason = _PUBLIC_REASONS.get(exc.reason, "signature_invalid")
    return f"{reason}:{exc.component}" if exc.component else reason


def is_published_test_key(key: Ed25519PublicKey) -> bool:
    """Whether ``key`` is the published test key (``PUBLISHED_TEST_PUBLIC_KEY``)."""
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii") == PUBLISHED_TEST_PUBLIC_KEY


@functools.lru_cache(maxsize=256)
def _cached_public_key(key_id: str, pem: str) -> Ed25519PublicKey:
    # Keyed by (key_id, pem) so a re-registered key is never served stale. ValueError is not cached.
    return public_key_from_pem(pem)


# --- library glue -------------------------------------------------------------------------------------------------


class _Message:
    """The request shape http_message_signatures reads: uppercase ``method``, absolute encoded ``url``, ``headers``."""

    __slots__ = ("headers", "method", "url")

    def __init__(self, method: str, url: str, headers: Mapping[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


class _SingleKeyResolver(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, key: Ed25519PublicKey) -> None:
        self._key_id = key_id
        self._key = key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._key if key_id == self._key_id else None

    def resolve_private_key(self, key_id: str) -> NoReturn:
        raise HTTPMessageSignaturesException("verification only")


class _Verifier(HTTPMessageVerifier):
    """The library checks ``created``/``expires`` against the real clock with 5 s skew; we do it with ``now``."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


# --- parsing --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SignatureInput:
    key_id: str
    components: tuple[tuple[str, frozenset[tuple[str, Any]]], ...]
    params: Mapping[str, Any]


class _Duplicate(Exception):
    def __init__(self, context: str) -> None:
        super().__init__(context)
        self.context = context


def _reject_duplicate(_key: str, context: str) -> None:
    raise _Duplicate(context)


def _sf_dictionary(value: str) -> dict[str, Any]:
    """Parse a Dictionary Structured Field strictly: ASCII only, duplicate keys and parameters rejected."""
    parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary", on_duplicate_key=_reject_duplicate)
    if not isinstance(parsed, dict):  # pragma: no cover - tltype="dictionary" always gives a dict
        raise ValueError("not a dictionary")
    return parsed


def _parse_dictionary(value: str) -> dict[str, Any]:
    try:
        return _sf_dictionary(value)
    except _Duplicate as dup:
        raise AuthenticationError(
            "multiple_signatures" if dup.context == "dictionary" else "malformed_signature"
        ) from None
    except Exception:
        raise AuthenticationError("malformed_signature") from None


def _parse_signature_headers(headers: Mapping[str, str]) -> _SignatureInput:
    raw_input = headers.get("signature-input")
    raw_signature = headers.get("signature")
    if not raw_input or not raw_signature:
        raise AuthenticationError("missing_signature")
    inputs = _parse_dictionary(raw_input)
    signatures = _parse_dictionary(raw_signature)
    if not inputs or not signatures:
        raise AuthenticationError("missing_signature")
    if len(inputs) > 1 or len(signatures) > 1:
        raise AuthenticationError("multiple_signatures")
    if inputs.keys() != signatures.keys():
        raise AuthenticationError("malformed_signature")
    (label,) = inputs
    members, params = inputs[label]
    signature_value = signatures[label][0]
    if not isinstance(members, list) or not isinstance(signature_value, bytes):
        raise AuthenticationError("malformed_signature")

    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id or len(key_id) > KEY_ID_MAX_LENGTH:
        raise AuthenticationError("malformed_signature")
    if set(params) - _KNOWN_PARAMETERS:
        raise AuthenticationError("malformed_signature", key_id)

    components = []
    for member in members:
        name, component_params = member
        if not isinstance(name, str):
            raise AuthenticationError("malformed_signature", key_id)
        components.append((name, frozenset(component_params.items())))
    return _SignatureInput(key_id=key_id, components=tuple(components), params=params)


def _epoch(params: Mapping[str, Any], name: str, key_id: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise AuthenticationError("malformed_signature", key_id)
    return value


# --- policy ---------------------------------------------------------------------------------------------------------


def _check_parameters(sig: _SignatureInput, now_s: int, window_seconds: int) -> tuple[int, str]:
    key_id, params = sig.key_id, sig.params
    if params.get("alg") != ALGORITHM:
        raise AuthenticationError("bad_algorithm", key_id)
    created = _epoch(params, "created", key_id)
    expires = _epoch(params, "expires", key_id)
    if created is None:
        raise AuthenticationError("malformed_signature", key_id)
    if created < now_s - window_seconds:
        raise AuthenticationError("stale", key_id)
    if created > now_s + window_seconds:
        raise AuthenticationError("future", key_id)
    if expires is not None and expires < now_s:
        raise AuthenticationError("expired", key_id)
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not NONCE_MIN_LENGTH <= len(nonce) <= NONCE_MAX_LENGTH:
        raise AuthenticationError("bad_nonce", key_id)
    return created, nonce


def _required_components(request: SignedRequest) -> tuple[str, ...]:
    if request.body or "content-digest" in request.headers:
        # A Content-Digest that is sent must be signed (also on empty bodies, as requests-http-signature does).
        return _BASE_COMPONENTS + (_BODY_COMPONENTS if request.body else ("content-digest",))
    return _BASE_COMPONENTS


def _check_components(sig: _SignatureInput, required: tuple[str, ...]) -> None:
    covered = set(sig.components)
    for name in required:
        if (name, frozenset()) not in covered:
            raise AuthenticationError("missing_components", sig.key_id, component=name)


def _check_digest(request: SignedRequest, key_id: str) -> None:
    value = request.headers.get("content-digest")
    if value is None:
        if request.body:
            raise AuthenticationError("missing_digest", key_id)
        return
    try:
        members = _sf_dictionary(value)
    except Exception:
        raise AuthenticationError("bad_digest", key_id) from None
    if _REQUIRED_DIGEST not in members or any(
        name not in _SUPPORTED_DIGESTS or not isinstance(m[0], bytes) for name, m in members.items()
    ):
        raise AuthenticationError("bad_digest", key_id)
    try:
        ContentDigest.verify(value, request.body)  # recomputes every member (sha-256, and sha-512 if present)
    except InvalidSignature:
        raise AuthenticationError("digest_mismatch", key_id) from None
    except Exception:
        raise AuthenticationError("bad_digest", key_id) from None


def _verify_signature(
    request: SignedRequest, key_id: str, key: Ed25519PublicKey, required: tuple[str, ...]
) -> Mapping[str, Any]:
    verifier = _Verifier(signature_algorithm=algorithms.ED25519, key_resolver=_SingleKeyResolver(key_id, key))
    message = _Message(request.method, request.url, request.headers)
    try:
        results = verifier.verify(message, max_age=None, require_components=required, body=request.body)
    except InvalidSignature as exc:
        # The library wraps errors raised while building the signature base (bad URL, absent covered field...)
        # into InvalidSignature; only a failed cryptographic check carries the cryptography exception.
        if exc.__cause__ is None or isinstance(exc.__cause__, CryptographyInvalidSignature):
            raise AuthenticationError("bad_signature", key_id) from None
        raise AuthenticationError("malformed_signature", key_id) from None
    except Exception:
        raise AuthenticationError("malformed_signature", key_id) from None
    if len(results) != 1 or results[0].parameters.get("keyid") != key_id:  # pragma: no cover - defensive
        raise AuthenticationError("malformed_signature", key_id)
    if request.body and results[0].body != request.body:  # pragma: no cover - defensive
        raise AuthenticationError("digest_mismatch", key_id)
    return results[0].parameters


def authenticate(
    request: SignedRequest,
    *,
    keys: KeyDirectory,
    nonces: NonceStore,
    now: datetime,
    window_seconds: int = 300,
    accept_test_key: bool = False,
) -> Principal:
    """Verify the request's signature and return who sent it, or raise :class:`AuthenticationError`.

    The published test key is refused unless ``accept_test_key`` (the local stack only).

    Order: structure and parameters (cheap, no I/O) → key lookup → body digest → Ed25519 signature →
    revocation and pharmacy status → nonce consumption (last, so only authenticated requests spend nonces).
    Errors of the key directory or nonce store (e.g. ``DependencyUnavailableError``) propagate unchanged.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_s = int(now.timestamp())

    sig = _parse_signature_headers(request.headers)
    key_id = sig.key_id
    created, nonce = _check_parameters(sig, now_s, window_seconds)
    required = _required_components(request)
    _check_components(sig, required)

    record = keys.get_key(key_id)
    if record is None:
        raise AuthenticationError("unknown_key", key_id)
    try:
        public_key = _cached_public_key(record.key_id, record.public_key_pem)
    except ValueError:
        raise AuthenticationError("bad_key", key_id) from None
    if not accept_test_key and is_published_test_key(public_key):
        raise AuthenticationError("test_key", key_id)

    _check_digest(request, key_id)
    signed = _verify_signature(request, key_id, public_key, required)
    if signed.get("nonce") != nonce or signed.get("created") != created:  # pragma: no cover - defensive
        raise AuthenticationError("malformed_signature", key_id)

    revoked_at = record.revoked_at
    if revoked_at is not None:
        if revoked_at.tzinfo is None:
            revoked_at = revoked_at.replace(tzinfo=UTC)
        if revoked_at <= now:
            raise AuthenticationError("revoked_key", key_id)
    if not record.pharmacy_active:
        raise AuthenticationError("suspended_pharmacy", key_id)

    if not nonces.use_once(key_id, nonce, expires_at=created + window_seconds + NONCE_TTL_MARGIN):
        raise AuthenticationError("replayed_nonce", key_id)
    return Principal(key_id=key_id, pharmacy_id=record.pharmacy_id)
