"""Receipts (contract §6): what Relais signs for a pharmacy, and ``GET /v1/statement``.

* ``POST /v1/results`` → ``receipt``: the exact body bytes (``body_sha256``) were accepted as ``result_id`` at
  ``accepted_at``. An idempotent 200 signs again what was accepted: the same ``result_id``, reference and
  ``accepted_at`` (the first acceptance's), and the SHA-256 of the bytes of *that* request — so a retry of the same
  bytes gets the very same receipt (Ed25519 is deterministic) until the signing key rotates. Nothing is stored.
* ``GET /v1/results/{id}`` → ``national.receipt`` once ``national.status`` is ``reported``, signed when read.
* ``GET /v1/statement?month=YYYY-MM`` → the month's counts billed to the caller and a receipt over them (plus ``iss``
  and ``issued_at``: a month in progress has other counts tomorrow).

The signing key is opened (``ready``) before the request's commit: a KMS failure then answers 503 with nothing stored,
rather than a stored result without its receipt. ``ready`` returns that key (a :class:`ReceiptSigner`) and the request
signs with it after the commit: never a second look at the keys, which could need DynamoDB or KMS again (a refresh of
the keys' copy, a rotated-in key to open) and fail after the result was stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
class ReceiptSigner:
    """The key that signs this request's receipts, opened before its commit (``Receipts.ready``): signing with it
    after the commit reads nothing and calls nothing (no DynamoDB, no KMS), so it cannot fail on AWS."""

    kid: str
    private_key: Ed25519PrivateKey
    stage: str

    def _sign(self, payload: dict[str, Any]) -> str:
        return sign(self.private_key, self.kid, payload)

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


@dataclass(frozen=True)
class Receipts:
    keys: SigningKeys
    stage: str

    def ready(self) -> ReceiptSigner:
        """The key that signs now, opened now (a KMS Decrypt the first time in a process; the keys' item read again
        every minute), before anything is committed: the request signs all its receipts with this one object."""
        kid, private_key = self.keys.signer()
        return ReceiptSigner(kid, private_key, self.stage)

    def national(self, record: ResultRecord) -> str | None:
        """The national receipt of a reported result (None before, without opening the key)."""
        if record.national_status != "reported" or record.national_reported_at is None:
            return None
        return self.ready().national(record)


_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
#: Days of slack between the last statement month accepted and its counters' expiry: clocks, and a result received
#: on the month's first second (the earliest a shard of that month can expire is that second plus the counters' days).
STATEMENT_MARGIN_DAYS = 2


def oldest_statement_month(now: datetime, counters_kept_days: int) -> str:
    """The oldest month whose counters are all still kept: every counter of month M expires ``counters_kept_days``
    after a result received in M (the usage and the reported counts alike), so no shard of M can have expired while
    ``now`` is before M's first day plus those days (less ``STATEMENT_MARGIN_DAYS``). That is the month after the one
    holding the cutoff below: at least the current month and the 12 before it for the 400 days kept."""
    cutoff = now - timedelta(days=counters_kept_days - STATEMENT_MARGIN_DAYS)
    year, month = (cutoff.year, cutoff.month + 1) if cutoff.month < 12 else (cutoff.year + 1, 1)
    return f"{year:04d}-{month:02d}"


def parse_month(value: str | None, now: datetime, counters_kept_days: int) -> str:
    """``month`` of ``GET /v1/statement``: ``YYYY-MM``, not after the current UTC month nor before the oldest one whose
    counts are all still kept (``oldest_statement_month``); ValidationError otherwise."""
    if value is None or value == "":
        raise ValidationError([FieldError("month", "is required (YYYY-MM)")])
    if not _MONTH.fullmatch(value):
        raise ValidationError([FieldError("month", "must be a month as YYYY-MM, e.g. 2026-11")])
    if value > now.strftime("%Y-%m"):
        raise ValidationError([FieldError("month", "is in the future: a statement covers a month begun or past")])
    oldest = oldest_statement_month(now, counters_kept_days)
    if value < oldest:
        raise ValidationError(
            [FieldError("month", f"is older than the counts kept: the oldest month with a statement now is {oldest}")]
        )
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
    counters_kept_days: int  # how long the monthly counters are kept (``adapters/results_store.USAGE_DAYS``)

    def statement(self, request: SignedRequest, month: str | None, *, request_id: str | None = None) -> dict[str, Any]:
        req = self.gate.open(request, "statement.read", request_id)
        now = self.clock()
        try:
            month = parse_month(month, now, self.counters_kept_days)
        except ValidationError as exc:
            req.reject(exc)
        signer = self.receipts.ready()
        accepted, reported = self.counts.statement_counts(req.pharmacy_id, month)
        req.commit("success", reason=f"month:{month}")
        fields = {"pharmacy_id": req.pharmacy_id, "month": month, "accepted": accepted, "reported": reported}
        return {**fields, "receipt": signer.statement(fields, now)}
