"""Use cases of the pharmacy API: submit a result, follow a result.

Every authenticated request ends in exactly one commit that re-checks the key and pharmacy,
consumes the nonce and writes one audit event — together with the new result when there is one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.model import Submission
from chalicelib.domain.records import AuditEvent, AuthGrant, ResultRecord, new_id
from chalicelib.domain.validation import is_valid_pharmacy_reference, parse_submission
from chalicelib.errors import (
    AuthenticationError,
    ConflictError,
    DuplicateReferenceError,
    FieldError,
    NotFoundError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chalicelib.services.authn import KeyDirectory, SignedRequest, authenticate
from chalicelib.services.ports import Envelope, PharmacyDirectory, ResultStore

RESULT_PURPOSE = "result"
ACCEPTED = "accepted"


class _AlreadyStored(Exception):
    """The body is the one already accepted under its pharmacy reference: answer that result (200)."""

    def __init__(self, result_id: str, reference: str) -> None:
        super().__init__("already stored")
        self.result_id = result_id
        self.reference = reference


@dataclass
class ResultsService:
    store: ResultStore
    keys: KeyDirectory
    pharmacies: PharmacyDirectory
    envelope: Envelope
    clock: Callable[[], datetime]
    stage: str
    daily_quota_default: int = 2000
    signature_window_seconds: int = 300
    retention_days: int = 90
    new_result_id: Callable[[], str] = field(default=new_id)
    allowed_authorities: frozenset[str] = frozenset()  # empty: whatever Host the client signed

    # -- authentication ---------------------------------------------------------------------------
    def _authenticate(self, request: SignedRequest, action: str, request_id: str | None) -> AuthGrant:
        nonces = _DeferredNonce()
        try:
            if self.allowed_authorities and request.authority.lower() not in self.allowed_authorities:
                # A request signed for another host (another stage, a proxy) is not for us.
                raise AuthenticationError("wrong_authority")
            principal = authenticate(
                request, keys=self.keys, nonces=nonces, now=self.clock(), window_seconds=self.signature_window_seconds
            )
        except AuthenticationError as exc:
            self._audit_auth_failure(exc, action, request_id)
            raise
        assert nonces.nonce is not None
        return AuthGrant(principal.key_id, principal.pharmacy_id, nonces.nonce, nonces.expires_at)

    def _audit_auth_failure(self, exc: AuthenticationError, action: str, request_id: str | None) -> None:
        self.store.record_audit(
            AuditEvent(
                actor=f"key:{exc.key_id}" if exc.key_id else "anonymous",
                action="auth.failure",
                outcome="denied",
                reason=f"{action}:{exc.reason}",
                at=self.clock(),
                request_id=request_id,
            )
        )

    def _event(
        self,
        grant: AuthGrant,
        action: str,
        outcome: str,
        record: str | None,
        request_id: str | None,
        reason: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            actor=f"key:{grant.key_id}",
            action=action,
            outcome=outcome,
            record=record,
            pharmacy_id=grant.pharmacy_id,
            reason=reason,
            at=self.clock(),
            request_id=request_id,
        )

    def _commit_auth(self, grant: AuthGrant, event: AuditEvent, request_id: str | None) -> None:
        try:
            self.store.commit_auth(grant, event)
        except AuthenticationError as exc:
            self._audit_auth_failure(exc, event.action, request_id)
            raise

    # -- POST /v1/results -------------------------------------------------------------------------
    def submit(
        self, request: SignedRequest, *, content_type: str | None, request_id: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Authenticate, validate, encrypt and store one result; ``(status, body)`` on success.

        Raises AuthenticationError (401), UnsupportedMediaTypeError (415), ValidationError (400),
        ConflictError (409), RateLimitedError (429), DependencyUnavailableError (503).
        """
        grant = self._authenticate(request, "result.create", request_id)
        try:
            raw, canonical = self._load(request.body, content_type)
            body_sha256 = hashlib.sha256(canonical).hexdigest()
            submission = self._validate(raw, grant, body_sha256)
        except _AlreadyStored as stored:
            event = self._event(grant, "result.create", "duplicate", stored.result_id, request_id)
            self._commit_auth(grant, event, request_id)
            return 200, self._answer(stored.result_id, stored.reference)
        except (UnsupportedMediaTypeError, ValidationError) as exc:
            self._commit_auth(
                grant,
                self._event(grant, "result.create", "rejected", None, request_id, reason=type(exc).__name__),
                request_id,
            )
            raise
        now = self.clock()
        result_id = self.new_result_id()
        plaintext = json.dumps(
            {"submission": submission.to_record(), "body_sha256": body_sha256}, separators=(",", ":")
        ).encode()
        ciphertext = self.envelope.encrypt(plaintext, self._context(result_id, grant.pharmacy_id))
        record = ResultRecord(
            id=result_id,
            pharmacy_id=grant.pharmacy_id,
            pharmacy_reference=submission.pharmacy_reference,
            key_id=grant.key_id,
            received_at=now,
            expires_at=int((now + timedelta(days=self.retention_days)).timestamp()),
            ciphertext=ciphertext,
            channels=tuple(submission.notify),
            patient_status="pending" if submission.notify else "not_requested",
        )
        pharmacy = self.pharmacies.get_pharmacy(grant.pharmacy_id)
        quota = pharmacy.daily_quota if pharmacy.daily_quota is not None else self.daily_quota_default
        try:
            self.store.commit_new_result(
                grant,
                self._event(grant, "result.create", "success", result_id, request_id),
                record,
                quota_day=now.strftime("%Y-%m-%d"),
                quota_limit=quota,
            )
        except DuplicateReferenceError:
            return self._answer_duplicate(grant, submission.pharmacy_reference, body_sha256, request_id)
        except AuthenticationError as exc:
            self._audit_auth_failure(exc, "result.create", request_id)
            raise
        return 201, self._answer(result_id, submission.pharmacy_reference)

    @staticmethod
    def _load(body: bytes, content_type: str | None) -> tuple[Any, bytes]:
        """The JSON document and its canonical form (key order and spacing ignored); 415 or 400 otherwise."""
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise UnsupportedMediaTypeError("the body must be application/json")
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationError([FieldError("body", "must be a JSON document")]) from exc
        return raw, json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def _validate(self, raw: Any, grant: AuthGrant, body_sha256: str) -> Submission:
        """The submission, or ValidationError; but a body identical to one already accepted is that result
        (``_AlreadyStored``) even if a rule would now refuse it: a retry after ``sampled_at`` aged past its
        limit is still "identical body → 200" (contract §2)."""
        try:
            return parse_submission(raw, now=self.clock())
        except ValidationError:
            reference = raw.get("pharmacy_reference") if isinstance(raw, dict) else None
            if isinstance(reference, str) and is_valid_pharmacy_reference(reference):
                existing_id, same = self._stored_body_matches(grant, reference, body_sha256)
                if existing_id is not None and same:
                    raise _AlreadyStored(existing_id, reference) from None
            raise

    def _stored_body_matches(self, grant: AuthGrant, reference: str, body_sha256: str) -> tuple[str | None, bool]:
        """The result already stored under ``reference`` for this pharmacy, and whether its body was this one."""
        existing_id = self.store.find_reference(grant.pharmacy_id, reference)
        existing = self.store.get_result(existing_id) if existing_id else None
        if existing is None or existing.pharmacy_id != grant.pharmacy_id:
            return existing_id, False
        stored = json.loads(
            self.envelope.decrypt(existing.ciphertext, self._context(existing.id, existing.pharmacy_id))
        )
        return existing.id, stored.get("body_sha256") == body_sha256

    def _answer_duplicate(
        self, grant: AuthGrant, reference: str, body_sha256: str, request_id: str | None
    ) -> tuple[int, dict[str, Any]]:
        existing_id, same = self._stored_body_matches(grant, reference, body_sha256)
        outcome = "duplicate" if same else "conflict"
        self._commit_auth(grant, self._event(grant, "result.create", outcome, existing_id, request_id), request_id)
        if not same or existing_id is None:
            raise ConflictError("pharmacy_reference was already used for a different result")
        return 200, self._answer(existing_id, reference)

    @staticmethod
    def _answer(result_id: str, reference: str) -> dict[str, Any]:
        return {"id": result_id, "pharmacy_reference": reference, "status": ACCEPTED}

    def _context(self, result_id: str, pharmacy_id: str) -> dict[str, str]:
        return {"purpose": RESULT_PURPOSE, "result_id": result_id, "pharmacy_id": pharmacy_id}

    # -- GET /v1/results/{id} -------------------------------------------------------------------
    def follow(self, request: SignedRequest, result_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        """The statuses of one of the caller's results; anyone else's is NotFoundError, like a missing one."""
        grant = self._authenticate(request, "result.read", request_id)
        record = self.store.get_result(result_id) if _plausible_id(result_id) else None
        mine = record is not None and record.pharmacy_id == grant.pharmacy_id
        self._commit_auth(
            grant,
            self._event(
                grant,
                "result.read",
                "success" if mine else "not_found",
                result_id if _plausible_id(result_id) else None,
                request_id,
                reason=None if mine else "unknown_or_foreign",
            ),
            request_id,
        )
        if record is None or not mine:
            raise NotFoundError("no such result")
        return record.public_view()

    def decrypt_submission(self, record: ResultRecord) -> Submission:
        """Decrypt a stored result (for the workers); the context binds it to this record."""
        data = json.loads(self.envelope.decrypt(record.ciphertext, self._context(record.id, record.pharmacy_id)))
        return Submission.from_record(data["submission"])


def _plausible_id(result_id: str) -> bool:
    return 16 <= len(result_id) <= 64 and all(c.isalnum() or c in "-_" for c in result_id)


class _DeferredNonce:
    """A NonceStore that remembers the nonce instead of writing it: the commit writes it atomically."""

    def __init__(self) -> None:
        self.nonce: str | None = None
        self.expires_at = 0

    def use_once(self, key_id: str, nonce: str, expires_at: int) -> bool:
        self.nonce = nonce
        self.expires_at = expires_at
        return True
