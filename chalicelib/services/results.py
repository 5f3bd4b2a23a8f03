"""Use cases of the pharmacy API: submit a result, follow a result.

Each request is a :class:`~chalicelib.services.pharmacy_request.PharmacyRequest` that ends in exactly one
commit; a new result is stored in that same commit, with its pharmacy reference (idempotency), the daily
quota count and the monthly usage count. The reference is stored and looked up only as its keyed hash
(``reference_digest``, ``adapters/reference_key.py``): it may hold personal data, and it sits in a DynamoDB key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.json_body import canonical_json
from chalicelib.domain.records import ResultRecord, new_id
from chalicelib.domain.validation import is_valid_pharmacy_reference, parse_submission
from chalicelib.errors import (
    DuplicateReferenceError,
    PharmacyReferenceConflictError,
    RateLimitedError,
    ValidationError,
)
from chalicelib.services.authn import SignedRequest
from chalicelib.services.pharmacy_request import PharmacyGate, PharmacyRequest
from chalicelib.services.ports import PharmacyDirectory, ResultStore
from chalicelib.services.receipts import Receipts, ReceiptSigner
from chalicelib.services.vault import ResultVault

ACCEPTED = "accepted"


@dataclass(frozen=True)
class Accepted:
    """The answer to a submission: a new result (``created``), or the one already stored under its reference, with
    the receipt of its acceptance (contract §6)."""

    result_id: str
    pharmacy_reference: str
    created: bool
    receipt: str

    def view(self) -> dict[str, Any]:
        """The response body (contract: ``id``, ``pharmacy_reference``, ``status``, ``receipt``)."""
        return {
            "id": self.result_id,
            "pharmacy_reference": self.pharmacy_reference,
            "status": ACCEPTED,
            "receipt": self.receipt,
        }


@dataclass
class ResultsService:
    gate: PharmacyGate
    store: ResultStore
    pharmacies: PharmacyDirectory
    vault: ResultVault
    clock: Callable[[], datetime]
    reference_digest: Callable[[str, str], str]  # (pharmacy id, reference) → its keyed hash
    receipts: Receipts
    daily_quota_default: int = 2000
    retention_days: int = 90
    sms_extra_regions: frozenset[str] = frozenset()  # where an SMS may go besides France
    new_result_id: Callable[[], str] = field(default=new_id)

    # -- POST /v1/results -------------------------------------------------------------------------
    def submit(self, request: SignedRequest, *, request_id: str | None = None) -> Accepted:
        """Authenticate, validate, encrypt and store one result.

        Raises AuthenticationError (401), UnsupportedMediaTypeError (415), ValidationError (400),
        PharmacyReferenceConflictError (409), RateLimitedError (429), DependencyUnavailableError (503).
        """
        req = self.gate.open(request, "result.create", request_id)
        # The signing key opens before anything is committed (KMS trouble: 503, nothing stored), and this very key
        # signs the receipt after the commit: nothing there can fail on AWS once the result is stored.
        signer = self.receipts.ready()
        raw = req.json_body()
        body_sha256 = hashlib.sha256(canonical_json(raw)).hexdigest()
        try:
            submission = parse_submission(raw, now=self.clock(), sms_extra_regions=self.sms_extra_regions)
        except ValidationError as exc:
            stored = self._identical_stored(req, raw, body_sha256)
            if stored is None:
                req.reject(exc)
            # A body identical to one already accepted is that result even if a rule would now refuse it:
            # a retry after ``sampled_at`` aged past its limit is still "identical body → 200" (contract §2).
            req.commit("duplicate", stored.id)
            return self._accepted(req, signer, stored, raw["pharmacy_reference"], created=False)
        now = self.clock()
        result_id = self.new_result_id()
        record = ResultRecord(
            id=result_id,
            pharmacy_id=req.pharmacy_id,
            reference_digest=self.reference_digest(req.pharmacy_id, submission.pharmacy_reference),
            key_id=req.grant.key_id,
            received_at=now,
            expires_at=int((now + timedelta(days=self.retention_days)).timestamp()),
            ciphertext=self.vault.seal(result_id, req.pharmacy_id, submission, body_sha256),
            reference_ciphertext=self.vault.seal_reference(result_id, req.pharmacy_id, submission.pharmacy_reference),
            channels=tuple(submission.notify),
            patient_status="pending" if submission.notify else "not_requested",
        )
        pharmacy = self.pharmacies.get_pharmacy(req.pharmacy_id)
        quota = pharmacy.daily_quota if pharmacy.daily_quota is not None else self.daily_quota_default
        try:
            req.commit_with(
                lambda grant, event: self.store.commit_new_result(
                    grant, event, record, quota_day=now.strftime("%Y-%m-%d"), quota_limit=quota
                ),
                "success",
                result_id,
            )
        except DuplicateReferenceError:
            return self._answer_duplicate(req, signer, submission.pharmacy_reference, body_sha256)
        except RateLimitedError:  # an answer like any other: the nonce is spent and the refusal audited
            req.commit("rate_limited", reason="daily_quota")
            raise
        return self._accepted(req, signer, record, submission.pharmacy_reference, created=True)

    @staticmethod
    def _accepted(
        req: PharmacyRequest, signer: ReceiptSigner, record: ResultRecord, reference: str, *, created: bool
    ) -> Accepted:
        """The answer, with its receipt: what was accepted, when it first was, and this request's exact bytes."""
        receipt = signer.acceptance(
            result_id=record.id,
            pharmacy_id=record.pharmacy_id,
            pharmacy_reference=reference,
            body=req.request.body,
            accepted_at=record.received_at,
        )
        return Accepted(record.id, reference, created=created, receipt=receipt)

    def _identical_stored(self, req: PharmacyRequest, raw: Any, body_sha256: str) -> ResultRecord | None:
        """The result already stored under the body's reference when its body was this one, else None."""
        reference = raw.get("pharmacy_reference") if isinstance(raw, dict) else None
        if not isinstance(reference, str) or not is_valid_pharmacy_reference(reference):
            return None
        return self._stored_body_matches(req, reference, body_sha256)[1]

    def _stored_body_matches(
        self, req: PharmacyRequest, reference: str, body_sha256: str
    ) -> tuple[str | None, ResultRecord | None]:
        """The id of the result already stored under ``reference`` for this pharmacy, and that result when its
        body was this one (else None)."""
        existing_id = self.store.find_reference(req.pharmacy_id, self.reference_digest(req.pharmacy_id, reference))
        existing = self.store.get_result(existing_id) if existing_id else None
        if existing is None or existing.pharmacy_id != req.pharmacy_id:
            return existing_id, None
        return existing.id, existing if self.vault.open(existing).body_sha256 == body_sha256 else None

    def _answer_duplicate(
        self, req: PharmacyRequest, signer: ReceiptSigner, reference: str, body_sha256: str
    ) -> Accepted:
        existing_id, same = self._stored_body_matches(req, reference, body_sha256)
        req.commit("duplicate" if same else "conflict", existing_id)
        if same is None:
            raise PharmacyReferenceConflictError("pharmacy_reference was already used for a different result")
        return self._accepted(req, signer, same, reference, created=False)

    # -- GET /v1/results/{id} -------------------------------------------------------------------
    def follow(self, request: SignedRequest, result_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        """The statuses of one of the caller's results; anyone else's is NotFoundError, like a missing one."""
        req = self.gate.open(request, "result.read", request_id)
        record = req.own_result(self.store.get_result, result_id)
        reference = self.vault.open_reference(record)  # kept in clear nowhere; the submission stays closed
        national_receipt = self.receipts.national(record)  # before the commit: a key that cannot open is a 503
        req.commit("success", result_id)
        return record.public_view(reference, national_receipt=national_receipt)
