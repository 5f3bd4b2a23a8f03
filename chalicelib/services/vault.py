"""Sealing and opening stored results: the one place that knows a result's encryption context.

A result's plaintext (the validated submission and the SHA-256 of its canonical body, which idempotency
compares) is encrypted under a context of opaque ids — purpose, result id, pharmacy id — which the
envelope checks on decrypt: a ciphertext copied onto another record does not open there. Workers (national
delivery, notification, the patient page) open results through this object alone, so it is also where
decryptions are counted (``on_open``: the ``ResultDecrypted`` metric, which an alarm compares with the results
accepted, ``docs/operations.md#decryption-spike``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.domain.model import Submission
from chalicelib.domain.records import ResultRecord
from chalicelib.services.ports import Envelope

RESULT_PURPOSE = "result"
#: The pharmacy reference is sealed on its own (``part``), under the result's purpose (so with the same cached data
#: key: no KMS call more): ``GET /v1/results/{id}`` answers it without opening the submission.
REFERENCE_PART = "reference"
#: Metric counting decryptions of results (namespace Relais, dimension service=relais), whoever reads.
DECRYPTED_METRIC = "ResultDecrypted"


@dataclass(frozen=True)
class OpenedResult:
    """What a result's ciphertext holds."""

    submission: Submission
    body_sha256: str


def result_context(result_id: str, pharmacy_id: str) -> dict[str, str]:
    """The encryption context of one result: opaque ids only (never personal data)."""
    return {"purpose": RESULT_PURPOSE, "result_id": result_id, "pharmacy_id": pharmacy_id}


def reference_context(result_id: str, pharmacy_id: str) -> dict[str, str]:
    """The encryption context of one result's pharmacy reference: the result's, and the part."""
    return {**result_context(result_id, pharmacy_id), "part": REFERENCE_PART}


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class ResultVault:
    envelope: Envelope
    on_open: Callable[[], None] = _nothing  # called once per decryption, before it

    def seal(self, result_id: str, pharmacy_id: str, submission: Submission, body_sha256: str) -> bytes:
        """The ciphertext to store for a new result, bound to ``result_id`` and ``pharmacy_id``."""
        plaintext = json.dumps(
            {"submission": submission.to_record(), "body_sha256": body_sha256}, separators=(",", ":")
        ).encode()
        return self.envelope.encrypt(plaintext, result_context(result_id, pharmacy_id))

    def seal_reference(self, result_id: str, pharmacy_id: str, reference: str) -> bytes:
        """The ciphertext of a new result's pharmacy reference (it may hold personal data: kept in clear nowhere)."""
        return self.envelope.encrypt(reference.encode(), reference_context(result_id, pharmacy_id))

    def open_reference(self, record: ResultRecord) -> str:
        """A stored result's pharmacy reference, without opening its submission."""
        context = reference_context(record.id, record.pharmacy_id)
        return self.envelope.decrypt(record.reference_ciphertext, context).decode()

    def open(self, record: ResultRecord) -> OpenedResult:
        """Decrypt a stored result; DecryptionError when the ciphertext is not this record's."""
        self.on_open()
        data = json.loads(self.envelope.decrypt(record.ciphertext, result_context(record.id, record.pharmacy_id)))
        return OpenedResult(Submission.from_record(data["submission"]), str(data.get("body_sha256", "")))

    def open_submission(self, record: ResultRecord) -> Submission:
        """The submission of a stored result (what the workers need)."""
        return self.open(record).submission
