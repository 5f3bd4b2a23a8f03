"""Receipts (contract §6): what Relais signs for a pharmacy, and ``GET /v1/statement``.

* ``POST /v1/results`` → ``receipt``: the exact body bytes (``body_sha256``) were accepted as ``result_id`` at
  ``accepted_at``. An idempotent 200 signs again what was accepted: the same ``result_id``, reference and
  ``accepted_at`` (the first acceptance's), and the SHA-256 of the bytes of *that* request — so a retry of the same
  bytes gets the very same receipt (Ed25519 is deterministic) until the signing key rotates. Nothing is stored.
* ``GET /v1/results/{id}`` → ``national.receipt`` once ``national.status`` is ``reported``, signed when read.
* ``GET /v1/statement?month=YYYY-MM`` → the month's counts billed to the caller and a receipt over them (plus ``iss``
  and ``issued_at``: a month in progress has other counts tomorrow).

The signing key is opened (``ready``) before the request's commit: a KMS failure then answers 503 with nothing stored,
rather than a stored result without its receipt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.domain.receipts import acceptance_payload, issuer, report_payload, sign
from chalicelib.domain.records import ResultRecord, utc_iso
from chalicelib.errors import FieldError, ValidationError
from chalicelib.services.authn import SignedRequest
from chalicelib.services.pharmacy_request import PharmacyGate


class SigningKeys(Protocol):
    def signer(self) -> tuple[str, Ed25519PrivateKey]: ...


@dataclass(frozen=True)
class Receipts:
    keys: SigningKeys
    stage: str

    def ready(self) -> None:
        """Open the signing key now (a KMS Decrypt the first time in a process), before anything is committed."""
        self.keys.signer()

    def _sign(self, payload: dict[str, Any]) -> str:
        kid, private_key = self.keys.signer()
        return sign(private_key, kid, payload)

    def acceptance(
        self, *, result_id: str, pharmacy_id: str, pharmacy_reference: str, body: bytes, accepted_at: datetime
    ) -> str:
        return self._sign(
            acceptance_payload(
                stage=self.stage,
                result_id=result_id,
                pharmacy_id=pharmacy_id,
                pharmacy_reference=pharmacy_reference,
                body=body,
                accepted_at=accepted_at,
            )
        )

    def national(self, record: ResultRecord) -> str | None:
        """The national receipt of a reported result; None before."""
        if record.national_status != "reported" or record.national_reported_at is None:
            return None
        return self._sign(
            report_payload(
                stage=self.stage,
                result_id=record.id,
                pharmacy_id=record.pharmacy_id,
                reported_at=record.national_reported_at,
            )
        )

    def statement(self, fields: dict[str, Any], issued_at: datetime) -> str:
        return self._sign({"iss": issuer(self.stage), **fields, "issued_at": utc_iso(issued_at)})


_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def parse_month(value: str | None, now: datetime) -> str:
    """``month`` of ``GET /v1/statement``: ``YYYY-MM``, not after the current UTC month; ValidationError otherwise."""
    if value is None or value == "":
        raise ValidationError([FieldError("month", "is required (YYYY-MM)")])
    if not _MONTH.fullmatch(value):
        raise ValidationError([FieldError("month", "must be a month as YYYY-MM, e.g. 2026-11")])
    if value > now.strftime("%Y-%m"):
        raise ValidationError([FieldError("month", "is in the future: a statement covers a month begun or past")])
    return value


class StatementCounts(Protocol):
    def statement_counts(self, pharmacy_id: str, month: str) -> tuple[int, int]: ...


@dataclass
class StatementService:
    """``GET /v1/statement``: counts only (no personal data is read); the request's one commit records
    ``statement.read`` like every signed request (it also spends the nonce)."""

    gate: PharmacyGate
    counts: StatementCounts
    receipts: Receipts
    clock: Callable[[], datetime]

    def statement(self, request: SignedRequest, month: str | None, *, request_id: str | None = None) -> dict[str, Any]:
        req = self.gate.open(request, "statement.read", request_id)
        now = self.clock()
        try:
            month = parse_month(month, now)
        except ValidationError as exc:
            req.reject(exc)
        self.receipts.ready()
        accepted, reported = self.counts.statement_counts(req.pharmacy_id, month)
        req.commit("success", reason=f"month:{month}")
        fields = {"pharmacy_id": req.pharmacy_id, "month": month, "accepted": accepted, "reported": reported}
        return {**fields, "receipt": self.receipts.statement(fields, now)}
