"""``POST /v1/patient/result``: a patient opens their result with the link token and their birth date.

Order of the checks (each failure is the same 404 to the outside, with its own audit reason inside):

1. the client address's failures in the current window (over the limit → 429, ``Retry-After``);
2. the link, found by the token's hash: unknown, locked, revoked (older generation) or expired
   (checked here against the clock) → 404, without decrypting anything;
3. only then the result is decrypted and the birth date compared in constant time; a wrong date adds
   one to the link's counter atomically (locked for good at ``lock_attempts``) → 404.

Every failure counts against the client address and writes one audit event (actor ``link:<link id>``,
or ``anonymous`` for an unknown token); a success writes one too, and fails the request (503) if
it cannot be written: no result is shown without its audit trail.

Timing. Unknown and known tokens do similar work: the link lookup always makes the same two reads,
an unknown or inactive link also reads a (missing) result, compares the birth date with a dummy one and
makes the conditional update a wrong birth date makes (on an item that never exists, so it writes nothing),
so that response times tell neither an unknown token from a known one nor an expired link from a wrong date.
What remains is the decryption with a cached data key (about a millisecond), small against network jitter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.links import (
    ACTIVE,
    DUMMY_BIRTH_DATE,
    LOCKED,
    Link,
    birth_dates_match,
    client_key,
    is_wellformed_birth_date,
    is_wellformed_token,
    link_state,
    rate_window,
    token_hash,
)
from chalicelib.domain.model import Submission
from chalicelib.domain.records import AuditEvent, Pharmacy, ResultRecord, utc_iso
from chalicelib.errors import FieldError, NotFoundError, RateLimitedError, ValidationError

ACTION = "patient.view"
#: Read instead of a result when the link is unknown or inactive (a well-formed id that never exists).
DUMMY_RESULT_ID = "0000000000000000000000"
#: Counted against instead of a link when the link is unknown or inactive: a conditional update on an item that
#: never exists (a SHA-256 of all zeroes has no known preimage), which fails without writing anything.
DUMMY_TOKEN_HASH = "0" * 64


class PatientLinks(Protocol):
    def find_link(self, token_sha256: str) -> tuple[Link | None, int]: ...

    def record_wrong_birth_date(self, token_sha256: str, lock_attempts: int) -> int: ...

    def client_failures(self, client_key: str, window: int) -> int: ...

    def count_client_failure(self, client_key: str, window: int, window_seconds: int) -> int: ...


class PatientResults(Protocol):
    def get_result(self, result_id: str) -> ResultRecord | None: ...

    def record_audit(self, event: AuditEvent) -> None: ...


def parse_view_request(raw: object) -> tuple[str, str]:
    """Check the body's shape strictly: ``{"token": str, "birth_date": "YYYY-MM-DD"}`` and nothing else.

    ValidationError names the fields and rules only, never the values.
    """
    if not isinstance(raw, dict):
        raise ValidationError([FieldError("body", "must be a JSON object")])
    errors = [FieldError(str(name)[:64], "unknown field") for name in raw if name not in ("token", "birth_date")]
    token, birth_date = raw.get("token"), raw.get("birth_date")
    if not is_wellformed_token(token):
        errors.append(FieldError("token", "required: a base64url string of 22 to 64 characters"))
    if not is_wellformed_birth_date(birth_date):
        errors.append(FieldError("birth_date", "required: a date written YYYY-MM-DD"))
    if errors:
        raise ValidationError(errors)
    assert isinstance(token, str) and isinstance(birth_date, str)
    return token, birth_date


@dataclass
class PatientService:
    results: PatientResults
    links: PatientLinks
    decrypt: Callable[[ResultRecord], Submission]
    get_pharmacy: Callable[[str], Pharmacy]
    clock: Callable[[], datetime]
    stage: str
    lock_attempts: int = 5
    ip_failures: int = 20
    ip_window_seconds: int = 600

    def view(self, token: str, birth_date: str, *, client_ip: str, request_id: str | None = None) -> dict[str, Any]:
        """The result for a right token and birth date; NotFoundError (404) for every kind of wrong."""
        now = self.clock()
        client = client_key(client_ip or "unknown", self.stage)
        window, retry_after = rate_window(now, self.ip_window_seconds)
        if self.links.client_failures(client, window) >= self.ip_failures:
            self._audit(now, "anonymous", None, None, "rate_limited", "client_failures", request_id)
            raise RateLimitedError("too many failures from this client", retry_after=retry_after)

        digest = token_hash(token)
        link, generation = self.links.find_link(digest)
        state = (
            link_state(link, now=now, current_generation=generation, lock_attempts=self.lock_attempts)
            if link is not None
            else "unknown"
        )
        record = self.results.get_result(link.result_id if link is not None and state == ACTIVE else DUMMY_RESULT_ID)
        if (
            link is None
            or state != ACTIVE
            or record is None
            or record.expires_at <= int(now.timestamp())
            or record.withdrawn  # a withdrawal revokes every link; this holds even for one it did not reach
        ):
            birth_dates_match(birth_date, DUMMY_BIRTH_DATE)  # same comparison work as a known link
            self.links.record_wrong_birth_date(DUMMY_TOKEN_HASH, self.lock_attempts)  # same write round trip
            reason = state if state != ACTIVE else "result_gone"
            self._fail(now, client, window, link, reason, request_id)

        assert link is not None and record is not None
        submission = self.decrypt(record)
        if not birth_dates_match(birth_date, submission.patient.birth_date.isoformat()):
            attempts = self.links.record_wrong_birth_date(digest, self.lock_attempts)
            self._fail(
                now, client, window, link, LOCKED if attempts >= self.lock_attempts else "wrong_birth_date", request_id
            )

        pharmacy = self.get_pharmacy(record.pharmacy_id)
        self._audit(now, f"link:{link.link_id}", record.id, record.pharmacy_id, "success", None, request_id)
        return {
            "patient": {"given_name": submission.patient.given_name, "family_name": submission.patient.family_name},
            "pharmacy": {"name": pharmacy.name},
            "test": {
                "kind": submission.test.kind,
                "sampled_at": submission.test.sampled_at.isoformat(),
                "result": submission.test.result,
            },
            "link_expires_at": utc_iso(link.expires_at),
            "corrected_at": utc_iso(record.corrected_at) if record.corrected_at else None,  # contract v2 §8
        }

    def _fail(
        self, now: datetime, client: str, window: int, link: Link | None, reason: str, request_id: str | None
    ) -> None:
        """Count the failure against the client, audit it, and answer the one generic 404."""
        self.links.count_client_failure(client, window, self.ip_window_seconds)
        if link is None:
            self._audit(now, "anonymous", None, None, "denied", "unknown", request_id)
        else:
            outcome = "locked" if reason == LOCKED else "denied"
            self._audit(now, f"link:{link.link_id}", link.result_id, link.pharmacy_id, outcome, reason, request_id)
        raise NotFoundError("no such link")

    def _audit(
        self,
        now: datetime,
        actor: str,
        record: str | None,
        pharmacy_id: str | None,
        outcome: str,
        reason: str | None,
        request_id: str | None,
    ) -> None:
        self.results.record_audit(
            AuditEvent(
                actor=actor,
                action=ACTION,
                outcome=outcome,
                at=now,
                record=record,
                pharmacy_id=pharmacy_id,
                reason=reason,
                request_id=request_id,
            )
        )
