"""Sealing and opening stored results: the one place that knows a result's encryption context.

A result's plaintext (the validated submission and the SHA-256 of its canonical body, which idempotency
compares) is encrypted under a context of opaque ids — purpose, result id, pharmacy id and, from version 2 on (a
correction, contract §8), the version — which the envelope checks on decrypt: a ciphertext copied onto another
record, or onto another version of the same record, does not open there. Version 1 keeps the context it always had,
so that results stored before corrections existed still open. Each version is sealed anew (its own data key and
ciphertext); the plaintext of a corrected version also holds the SHA-256 of the correction's canonical body, which
the correction's idempotency compares. Only :meth:`ResultVault.open` (the current version) serves workers and
the patient page; :meth:`ResultVault.open_version` reads an earlier version for the pharmacy's idempotent retry.
Workers (national delivery, notification, the patient page) open results through this object alone, so it is also where
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
    correction_sha256: str = ""  # versions made by a correction: the SHA-256 of its canonical body


def result_context(result_id: str, pharmacy_id: str, version: int = 1) -> dict[str, str]:
    """The encryption context of one version of a result: opaque ids only (never personal data)."""
    context = {"purpose": RESULT_PURPOSE, "result_id": result_id, "pharmacy_id": pharmacy_id}
    if version != 1:
        context["version"] = str(version)
    return context


def reference_context(result_id: str, pharmacy_id: str) -> dict[str, str]:
    """The encryption context of one result's pharmacy reference: the result's, and the part."""
    return {**result_context(result_id, pharmacy_id), "part": REFERENCE_PART}


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class ResultVault:
    envelope: Envelope
    on_open: Callable[[], None] = _nothing  # called once per decryption, before it

    def seal(
        self,
        result_id: str,
        pharmacy_id: str,
        submission: Submission,
        body_sha256: str,
        *,
        version: int = 1,
        correction_sha256: str = "",
    ) -> bytes:
        """The ciphertext to store for ``version`` of a result, bound to ``result_id``, ``pharmacy_id`` and the
        version."""
        data = {"submission": submission.to_record(), "body_sha256": body_sha256}
        if correction_sha256:
            data["correction_sha256"] = correction_sha256
        plaintext = json.dumps(data, separators=(",", ":")).encode()
        return self.envelope.encrypt(plaintext, result_context(result_id, pharmacy_id, version))

    def seal_reference(self, result_id: str, pharmacy_id: str, reference: str) -> bytes:
        """The ciphertext of a new result's pharmacy reference (it may hold personal data: kept in clear nowhere)."""
        return self.envelope.encrypt(reference.encode(), reference_context(result_id, pharmacy_id))

    def open_reference(self, record: ResultRecord) -> str:
        """A stored result's pharmacy reference, without opening its submission."""
        context = reference_context(record.id, record.pharmacy_id)
        return self.envelope.decrypt(record.reference_ciphertext, context).decode()

    def open(self, record: ResultRecord) -> OpenedResult:
        """Decrypt a stored result's current version; DecryptionError when the ciphertext is not this record's."""
        return self._open(record, record.ciphertext, record.version)

    def open_version(self, record: ResultRecord, version: int) -> OpenedResult:
        """Decrypt ``version`` of a stored result (an earlier one while retention keeps it)."""
        if version == record.version:
            return self.open(record)
        return self._open(record, record.earlier_ciphertexts[version - 1], version)

    def _open(self, record: ResultRecord, ciphertext: bytes, version: int) -> OpenedResult:
        self.on_open()
        data = json.loads(self.envelope.decrypt(ciphertext, result_context(record.id, record.pharmacy_id, version)))
        return OpenedResult(
            Submission.from_record(data["submission"]),
            str(data.get("body_sha256", "")),
            str(data.get("correction_sha256", "")),
        )

    def open_submission(self, record: ResultRecord) -> Submission:
        """The submission of a stored result (what the workers need)."""
        return self.open(record).submission
