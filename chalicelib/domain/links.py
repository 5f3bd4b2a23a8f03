"""Patient links: tokens, their hashes, and the rules that decide whether a link may still open.

A link token is 256 random bits (``secrets``), base64url without padding (43 characters). It only
ever exists in the message sent to the patient and in the URL fragment of the result page: Relais
stores its SHA-256 hash, never the token. The rules here are pure Python, checked against an
injected clock (DynamoDB's TTL only cleans up; it deletes late and is never trusted for expiry).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from chalicelib.domain.records import AuditEvent

TOKEN_BYTES = 32  # 256 bits; the contract asks for at least 128
#: A string Relais could have issued as a token: base64url, 22 (128 bits) to 64 characters. Any other string is
#: looked up as an unknown token, never hashed (services/patient.py).
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,64}")
BIRTH_DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_TTL_HOURS = 7 * 24  # contract §4: configurable up to 7 days

#: Link states (only "active" opens the result).
ACTIVE, EXPIRED, REVOKED, LOCKED = "active", "expired", "revoked", "locked"

#: Compared against when the token is unknown, so that unknown and known tokens do similar work.
DUMMY_BIRTH_DATE = "0000-00-00"


class ClaimBusyError(Exception):
    """Another worker holds the lease of this send claim: retry the message once the lease may have ended."""

    def __init__(self, lease_left_seconds: int) -> None:
        super().__init__("send claim leased by another worker")
        self.lease_left_seconds = max(0, lease_left_seconds)


class SupersededError(Exception):
    """The result's link generation moved on (a resend): the write of an older generation is dropped."""


@dataclass(frozen=True)
class SendRecord:
    """A channel sent and not yet recorded on its claim: written with the attempt's end (``LinkStore.finish``)."""

    channel: str
    link_expires_at: datetime | None  # None: a message without a link (a withdrawal's)
    audit: AuditEvent  # the send's audit event (its ``at`` is the send's time)


def new_token() -> str:
    """A fresh link token: 256 random bits, base64url without padding."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The only form of a token Relais keeps: SHA-256, hex.

    No salt is needed: a token has 256 bits of entropy, so its hash cannot be reversed by guessing.
    """
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def is_wellformed_token(value: object) -> bool:
    """True for a string that could be a token (length and alphabet only)."""
    return isinstance(value, str) and TOKEN_PATTERN.fullmatch(value) is not None


def is_wellformed_birth_date(value: object) -> bool:
    """True for a real calendar date written ``YYYY-MM-DD``."""
    if not isinstance(value, str) or BIRTH_DATE_PATTERN.match(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def birth_dates_match(given: str, stored: str) -> bool:
    """Constant-time comparison of two ``YYYY-MM-DD`` strings."""
    return hmac.compare_digest(given.encode("ascii", "replace"), stored.encode("ascii", "replace"))


def link_expiry(now: datetime, ttl_hours: int) -> datetime:
    """When a link issued ``now`` stops opening; the TTL is bounded to 1 hour … 7 days."""
    if not 1 <= ttl_hours <= MAX_TTL_HOURS:
        raise ValueError("link_ttl_hours must be between 1 and 168")
    return now + timedelta(hours=ttl_hours)


@dataclass(frozen=True)
class Link:
    """A stored link (hash only). ``generation`` changes at each resend; older ones are revoked."""

    link_id: str
    token_hash: str
    result_id: str
    pharmacy_id: str
    generation: int
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    revoked: bool = False


def link_state(link: Link, *, now: datetime, current_generation: int, lock_attempts: int) -> str:
    """Whether ``link`` may open its result ``now``: active, expired, revoked or locked.

    Locked wins over everything (the lock is for good), then revoked (a newer link exists or the
    link was revoked explicitly), then expired.
    """
    if link.attempts >= lock_attempts:
        return LOCKED
    if link.revoked or link.generation != current_generation:
        return REVOKED
    if now >= link.expires_at:
        return EXPIRED
    return ACTIVE


def rate_window(now: datetime, window_seconds: int) -> tuple[int, int]:
    """The fixed window ``now`` falls in: ``(window index, seconds until it ends)``."""
    epoch = int(now.timestamp())
    index = epoch // window_seconds
    return index, max(1, (index + 1) * window_seconds - epoch)


def client_key(client_ip: str, stage: str) -> str:
    """The per-client counter key: SHA-256 of the address (an address is personal data: never stored as such).

    The stage is mixed in so that counters of two stages never share keys. IPv4 addresses are few
    enough to be brute-forced from their hash: these counters therefore live only one window (TTL).
    """
    return hashlib.sha256(f"{stage}|{client_ip}".encode()).hexdigest()
