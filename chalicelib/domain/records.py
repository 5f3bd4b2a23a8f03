"""What Relais stores and records, in domain terms (no personal data in clear here)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime


def new_id(nbytes: int = 18) -> str:
    """An opaque, unguessable id: ``nbytes`` random bytes (≥ 16, i.e. ≥ 128 bits), base64url."""
    if nbytes < 16:
        raise ValueError("ids carry at least 128 random bits")
    while True:
        candidate = secrets.token_urlsafe(nbytes)
        # Never a leading "-": command lines would read "--key-id -abc…" as an option (1 id in 64 otherwise).
        if candidate[0] != "-":
            return candidate


def is_plausible_id(value: str) -> bool:
    """Could ``value`` be an id Relais issued (16-64 characters of base64url)? Anything else is looked up
    nowhere and audited as no record."""
    return 16 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


def seconds_to_midnight_utc(now: datetime) -> int:
    """Seconds until the next UTC day, when per-day counters (quota, resends) start again; at least 1."""
    epoch = int(now.timestamp())
    return max(1, 86_400 - epoch % 86_400)


def reference_digest(key: bytes, pharmacy_id: str, reference: str) -> str:
    """The only form of a ``pharmacy_reference`` Relais keeps: HMAC-SHA256 under a secret key, hex.

    Pharmacy software may put a NIR, a phone number or a name in its reference; a plain hash of such a value is
    reversed by trying every candidate (there are few NIRs or phone numbers), a keyed one is not without the key.
    The pharmacy id is part of the message: two pharmacies' equal references have unrelated digests.
    """
    message = f"{pharmacy_id}\n{reference}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_or_none(moment: datetime | None) -> str | None:
    return utc_iso(moment) if moment else None


@dataclass(frozen=True)
class AuditEvent:
    """Who did what to which record, when, and how it ended. Opaque ids only."""

    actor: str  # "key:<key id>", "link:<link id>", "operator:<name>", "system:<component>"
    action: str  # e.g. "result.create", "result.read", "auth.failure"
    outcome: str  # "success", "duplicate", "conflict", "denied", "not_found", "rejected", …
    at: datetime
    record: str | None = None  # result id
    pharmacy_id: str | None = None
    reason: str | None = None  # machine reason, never a submitted value
    request_id: str | None = None
    event_id: str = field(default_factory=lambda: new_id(16))
    client_ip: str | None = None  # on failures only: the caller's address (security log, docs/data-lifecycle.md)
    failures: int | None = None  # an aggregate of failures (one per minute, address and reason): how many


@dataclass(frozen=True)
class AuthGrant:
    """The facts of a verified signature that the commit re-checks atomically."""

    key_id: str
    pharmacy_id: str
    nonce: str
    nonce_expires_at: int  # epoch seconds (TTL)


@dataclass(frozen=True)
class Correction:
    """One correction of a result (``POST /v1/results/{id}/correction``): the version it made, why, when, and the
    keyed hash of the pharmacy's ``correction_reference`` (its idempotency key, unique per result; never the
    reference itself, which may hold personal data). No personal data."""

    version: int
    reason: str  # "wrong_result" | "wrong_patient" | "wrong_test" | "entered_in_error"
    at: datetime
    reference: str  # keyed hash (services/corrections.py)

    def view(self) -> dict[str, object]:
        return {"version": self.version, "reason": self.reason, "at": utc_iso(self.at)}


@dataclass
class ResultRecord:
    """A stored result: ciphertext plus only what must be queried in clear."""

    id: str
    pharmacy_id: str
    reference_digest: str  # keyed hash of the pharmacy's reference, never the reference (reference_digest())
    key_id: str
    received_at: datetime
    expires_at: int  # epoch seconds, retention limit (TTL and code check)
    ciphertext: bytes
    channels: tuple[str, ...] = ()
    national_status: str = "pending"
    national_reported_at: datetime | None = None
    national_failure: str | None = None  # the last attempt's reason code when national_status is failed
    national_attempts: int = 0
    national_dead_lettered: bool = False  # its dead letter was written (national_status failed)
    patient_status: str = "not_requested"
    patient_sent_at: datetime | None = None
    link_expires_at: datetime | None = None
    reference_ciphertext: bytes = b""  # the pharmacy reference, sealed on its own (services/vault.py)
    version: int = 1  # 1 as submitted, +1 per correction or withdrawal; ``ciphertext`` is this version's
    withdrawn: bool = False  # recorded in error (``entered_in_error``): no link opens it any more
    corrections: tuple[Correction, ...] = ()  # oldest first
    earlier_ciphertexts: tuple[bytes, ...] = ()  # versions 1…version-1, kept within retention, never shown

    @property
    def corrected_at(self) -> datetime | None:
        """When the current version was made by a correction (None for the version as submitted)."""
        return self.corrections[-1].at if self.corrections else None

    def public_view(self, pharmacy_reference: str, *, national_receipt: str | None = None) -> dict[str, object]:
        """``GET /v1/results/{id}`` body: statuses only, no identity, no result. The reference is not stored in
        clear: the caller opens it (``ResultVault.open_reference``); ``national_receipt`` once reported (§6)."""
        national: dict[str, object] = {
            "status": self.national_status,
            "reported_at": _iso_or_none(self.national_reported_at),
        }
        if national_receipt is not None:
            national["receipt"] = national_receipt
        return {
            "id": self.id,
            "pharmacy_reference": pharmacy_reference,
            "received_at": utc_iso(self.received_at),
            "national": national,
            "patient": self.patient_view(),
            "version": self.version,
            "withdrawn": self.withdrawn,
            "corrections": [correction.view() for correction in self.corrections],
        }

    def patient_view(self) -> dict[str, object]:
        """The message to the patient, as the pharmacy sees it: status, channels, when sent, link expiry."""
        return {
            "status": self.patient_status,
            "channels": list(self.channels),
            "sent_at": _iso_or_none(self.patient_sent_at),
            "link_expires_at": _iso_or_none(self.link_expires_at),
        }


@dataclass(frozen=True)
class Pharmacy:
    pharmacy_id: str
    finess: str
    name: str
    status: str  # "active" | "suspended"
    daily_quota: int | None = None  # None: the default quota
    created_at: datetime | None = None


@dataclass(frozen=True)
class PharmacyKey:
    key_id: str
    pharmacy_id: str
    public_key_pem: str
    created_at: datetime
    revoked_at: datetime | None = None
