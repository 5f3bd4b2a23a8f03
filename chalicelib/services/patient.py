"""``POST /v1/patient/result``: a patient opens their result with the link token and their birth date.

Order of the checks (each failure is the same 404 to the outside, with its own audit reason inside):

1. the client address's failures in the current window: each request is counted as one *before* it is answered
   (a conditional ``ADD``, refused at the limit → 429, ``Retry-After``), and a success takes its count back, so
   that requests in flight together can never answer more failures than the limit;
2. the link, found by the token's hash: unknown, locked, revoked (older generation) or expired
   (checked here against the clock) → 404, without decrypting anything. A token that is a string but not
   one Relais could have issued (not 22 to 64 base64url characters) is an unknown token, answered and
   audited alike; it is never hashed: the lookup is made with :data:`DUMMY_TOKEN_HASH` instead;
3. one comparison is reserved on the link (a conditional ``ADD`` on its counter, refused once it reaches
   ``lock_attempts``: locked → 404), and only then the result is decrypted and the birth date compared in
   constant time. A wrong date keeps its reservation (the link locks for good at ``lock_attempts``) → 404; the
   right date gives it back. Reserving *before* comparing bounds the comparisons of wrong dates to
   ``lock_attempts`` per link, ever, whatever the number of requests in flight.

Every failure counts against the client address and writes one audit event (actor ``link:<link id>``,
or ``anonymous`` for an unknown token); a success writes one too, and fails the request (503) if
it cannot be written: no result is shown without its audit trail.

Timing. Unknown and known tokens do similar work: the link lookup always makes the same two reads,
an unknown or inactive link also reads a (missing) result, makes the conditional update a reservation makes
(on an item that never exists, so it writes nothing) and compares the birth date with a dummy one,
so that response times tell neither an unknown token from a known one nor an expired link from a wrong date.
What remains is the decryption with a cached data key (about a millisecond), small against network jitter,
and, for a string that cannot be a token, the SHA-256 of a few dozen bytes it skips (about a microsecond).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, Protocol

from chalicelib.domain.json_body import unknown_field_error
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

    def reserve_attempt(self, token_sha256: str, lock_attempts: int) -> int | None: ...

    def release_attempt(self, token_sha256: str) -> None: ...

    def reserve_client_attempt(self, client_key: str, window: int, window_seconds: int, limit: int) -> bool: ...

    def release_client_attempt(self, client_key: str, window: int) -> None: ...


class PatientResults(Protocol):
    def get_result(self, result_id: str) -> ResultRecord | None: ...

    def record_audit(self, event: AuditEvent) -> None: ...


def parse_view_request(raw: object) -> tuple[str, str]:
    """Check the body's shape strictly: ``{"token": str, "birth_date": "YYYY-MM-DD"}`` and nothing else.

    Any string is a token here: one that could not have been issued is for the service to answer as an unknown
    one (contract §4: one 404 for every token that opens nothing), so that a 400 never tells a caller which
    strings are shaped like tokens. ValidationError names the fields and rules only, never the values, nor an
    unknown key that does not look like an identifier (it could be a value pasted as a key).
    """
    if not isinstance(raw, dict):
        raise ValidationError([FieldError("body", "must be a JSON object")])
    unknown = (unknown_field_error("", name) for name in raw if name not in ("token", "birth_date"))
    errors = list(dict.fromkeys(unknown))  # several unsafe keys make one "body: contains an unknown field"
    token, birth_date = raw.get("token"), raw.get("birth_date")
    if not isinstance(token, str):
        errors.append(FieldError("token", "required: a string"))
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
        if not self.links.reserve_client_attempt(client, window, self.ip_window_seconds, self.ip_failures):
            self._audit(now, "anonymous", None, None, "rate_limited", "client_failures", request_id)
            raise RateLimitedError("too many failures from this client", retry_after=retry_after)

        # a token Relais could not have issued is looked up as the dummy hash, which no link has: never hashed
        digest = token_hash(token) if is_wellformed_token(token) else DUMMY_TOKEN_HASH
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
            self.links.reserve_attempt(DUMMY_TOKEN_HASH, self.lock_attempts)  # same write round trip
            birth_dates_match(birth_date, DUMMY_BIRTH_DATE)  # same comparison work as a known link
            reason = state if state != ACTIVE else "result_gone"
            self._fail(now, link, reason, request_id)

        assert link is not None and record is not None
        attempts = self.links.reserve_attempt(digest, self.lock_attempts)
        if attempts is None:  # the last comparisons were reserved by requests in flight since the link was read
            self._fail(now, link, LOCKED, request_id)
        submission = self.decrypt(record)
        if not birth_dates_match(birth_date, submission.patient.birth_date.isoformat()):
            self._fail(now, link, LOCKED if attempts >= self.lock_attempts else "wrong_birth_date", request_id)
        self.links.release_attempt(digest)  # the right date: its comparison does not count

        pharmacy = self.get_pharmacy(record.pharmacy_id)
        self._audit(now, f"link:{link.link_id}", record.id, record.pharmacy_id, "success", None, request_id)
        self.links.release_client_attempt(client, window)  # a success is no failure of this client
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

    def _fail(self, now: datetime, link: Link | None, reason: str, request_id: str | None) -> NoReturn:
        """Audit the failure (already counted against the client) and answer the one generic 404."""
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
