"""``POST /v1/results/{id}/correction``: correct or withdraw one of the caller's results (contract v2 §8).

One signed request, one commit (``services/pharmacy_request.py``) with exactly one audit event: ``result.correct``
``success`` (reason ``<reason>:v<version>``), ``duplicate``, ``conflict``, ``rejected`` or ``not_found``.

Order of the checks: the owner's result (else 404, as for a missing one); the ``correction_reference`` already used
on it (identical body: ``200`` with the same answer, whatever has happened since; another body: 409); the body
(submission rules, 400); a withdrawn result (409); the 30-day window (409). Then the next version is sealed (its own
ciphertext, bound to the result and the version) and committed (``adapters/corrections.py``); a correction that
lost a race with another one on the same result starts again from the version that won.

After the commit, as the resend does: the patient's message is sent at once when one is due (queued on failure),
and the result is queued for national delivery (reconciliation queues it again if that fails: the commit left it
pending). Both workers read the result's current version, so any message of this result, early, late or twice,
carries the latest version and never an earlier one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from chalicelib.domain.channels import message_channels
from chalicelib.domain.corrections import (
    CorrectionReferenceConflictError,
    CorrectionRequest,
    NextVersion,
    ResultWithdrawnError,
    check_window,
    earlier_use,
)
from chalicelib.domain.json_body import canonical_json
from chalicelib.domain.records import AuditEvent, AuthGrant, Correction, ResultRecord
from chalicelib.domain.validation import is_valid_pharmacy_reference, parse_correction
from chalicelib.errors import ConflictError, DependencyUnavailableError, ValidationError
from chalicelib.services.authn import SignedRequest
from chalicelib.services.notify import QueueNotify, send_in_request
from chalicelib.services.pharmacy_request import PharmacyGate, PharmacyRequest
from chalicelib.services.vault import ResultVault

ACTION = "result.correct"
#: Metrics (namespace Relais): one per committed correction, by kind.
CORRECTED_METRIC = "ResultCorrected"
WITHDRAWN_METRIC = "ResultWithdrawn"
#: Corrections kept per result: every version's ciphertext stays on the result's item (400 KB at most).
MAX_CORRECTIONS = 20
#: Tries against concurrent corrections of the same result before answering 503 (nothing written).
RACE_ATTEMPTS = 3


class TooManyCorrectionsError(ConflictError):
    """The result already has ``MAX_CORRECTIONS`` corrections (HTTP 409)."""

    detail: ClassVar[str] = f"this result already has {MAX_CORRECTIONS} corrections, the most a result may have"


class CorrectionCommits(Protocol):
    def commit_correction(
        self, grant: AuthGrant, audit: AuditEvent, record: ResultRecord, change: NextVersion
    ) -> None: ...


class Generations(Protocol):
    def current_generation(self, result_id: str) -> int: ...

    def may_have_sent(self, result_id: str, generation: int) -> bool: ...


class Metrics(Protocol):
    def count(self, name: str, value: float = 1) -> None: ...


@dataclass(frozen=True)
class Corrected:
    """The answer: ``202`` for a new version, ``200`` for the same correction again."""

    result_id: str
    version: int
    created: bool

    def view(self) -> dict[str, Any]:
        return {"id": self.result_id, "version": self.version}


@dataclass
class CorrectionService:
    gate: PharmacyGate
    get_result: Callable[[str], ResultRecord | None]
    commits: CorrectionCommits
    vault: ResultVault
    generations: Generations
    notify: Callable[[str, int], object]  # sends the patient's message of a generation now (raises on failure)
    enqueue_notify: QueueNotify
    enqueue_national: Callable[[str], None]
    metrics: Metrics
    clock: Callable[[], datetime]
    #: (pharmacy id, reference) → its keyed hash: a ``correction_reference`` is kept only so, like a
    #: ``pharmacy_reference`` (pharmacy software may put personal data in it; ``adapters/reference_key.py``).
    reference_digest: Callable[[str, str], str]
    version_conflict: type[Exception] = Exception  # the store's "another correction won" error
    sms_extra_regions: frozenset[str] = frozenset()  # where an SMS may go beyond France (as for a submission)
    request_seconds: int = 10  # the API function's time limit (send_in_request's backstop arrives after it)

    def correct(self, request: SignedRequest, result_id: str, *, request_id: str | None = None) -> Corrected:
        """Authenticate, check and commit one correction; see the module docstring for the answers."""
        req = self.gate.open(request, ACTION, request_id)
        raw = req.json_body()
        record = req.own_result(self.get_result, result_id)
        body_sha256 = hashlib.sha256(canonical_json(raw)).hexdigest()
        for _ in range(RACE_ATTEMPTS):
            again = self._answer_again(req, record, raw, body_sha256)
            if again is not None:
                return again
            try:
                correction = parse_correction(
                    raw, now=self.clock(), notify=record.channels, sms_extra_regions=self.sms_extra_regions
                )
            except ValidationError as exc:
                req.reject(exc, result_id)
            change = self._next_version(req, record, correction, body_sha256)
            try:
                req.commit_with(
                    functools.partial(self.commits.commit_correction, record=record, change=change),
                    "success",
                    result_id,
                    reason=f"{correction.reason}:v{change.correction.version}",
                )
            except self.version_conflict:
                record = req.own_result(self.get_result, result_id)  # the version that won (404 if erased)
                continue
            self._after(record, change)
            return Corrected(result_id, change.correction.version, created=True)
        raise DependencyUnavailableError("dynamodb", retry_after=1)

    def _answer_again(self, req: PharmacyRequest, record: ResultRecord, raw: Any, body_sha256: str) -> Corrected | None:
        """The answer to a ``correction_reference`` already used on this result (200, or 409), else None."""
        reference = raw.get("correction_reference") if isinstance(raw, dict) else None
        if not isinstance(reference, str) or not is_valid_pharmacy_reference(reference):
            return None
        earlier = earlier_use(record.corrections, self._digest(record, reference))
        if earlier is None:
            return None
        if self.vault.open_version(record, earlier.version).correction_sha256 != body_sha256:
            req.commit("conflict", record.id, reason="correction_reference")
            raise CorrectionReferenceConflictError("correction_reference was already used for another correction")
        req.commit("duplicate", record.id)
        if record.patient_status == "pending" and message_channels(record.channels):
            # The patient's message may be what the first request could not send (it answered 503: its backstop
            # copy could not be queued either). Sending the current generation again is safe: claims send it once.
            send_in_request(
                self.notify,
                self.enqueue_notify,
                record.id,
                self.generations.current_generation(record.id),
                request_seconds=self.request_seconds,
            )
        return Corrected(record.id, earlier.version, created=False)

    def _next_version(
        self, req: PharmacyRequest, record: ResultRecord, correction: CorrectionRequest, body_sha256: str
    ) -> NextVersion:
        if record.withdrawn:
            req.reject(ResultWithdrawnError("the result was withdrawn"), record.id)
        if len(record.corrections) >= MAX_CORRECTIONS:
            req.reject(TooManyCorrectionsError("this result has too many corrections"), record.id)
        now = self.clock()
        current = self.vault.open(record)
        try:
            check_window(current.submission.test.sampled_at, now)
        except ConflictError as exc:
            req.reject(exc, record.id)
        version = record.version + 1
        previous_generation = self.generations.current_generation(record.id)
        # A notifier may have sent the message and not recorded it yet (patient_sent_at comes after the send): its
        # claim says so. A withdrawal decided on "nothing went out" commits only if that still holds.
        messages = bool(message_channels(record.channels))
        contacted = record.patient_sent_at is not None or (
            messages and self.generations.may_have_sent(record.id, previous_generation)
        )
        ciphertext = self.vault.seal(
            record.id,
            record.pharmacy_id,
            correction.apply(current.submission),
            current.body_sha256,  # the submission's: its identical retry is still a 200
            version=version,
            correction_sha256=body_sha256,
        )
        return NextVersion(
            ciphertext=ciphertext,
            correction=Correction(version, correction.reason, now, self._digest(record, correction.reference)),
            withdrawn=correction.withdraws,
            patient_status=_patient_status(record, withdraws=correction.withdraws, contacted=contacted),
            previous_generation=previous_generation,
            unbill=correction.withdraws and now.astimezone(UTC).date() == record.received_at.astimezone(UTC).date(),
            nothing_sent=correction.withdraws and not contacted and messages,
        )

    def _digest(self, record: ResultRecord, reference: str) -> str:
        """The keyed hash a ``correction_reference`` of this result is kept as (unique per result)."""
        return self.reference_digest(record.pharmacy_id, f"correction:{record.id}:{reference}")

    def _after(self, record: ResultRecord, change: NextVersion) -> None:
        """Count it, queue national delivery, and send the patient's message when one is due."""
        self.metrics.count(WITHDRAWN_METRIC if change.withdrawn else CORRECTED_METRIC)
        with contextlib.suppress(Exception):  # the commit left it pending: reconciliation queues it again
            self.enqueue_national(record.id)
        if change.patient_status != "pending":
            return
        generation = change.previous_generation + 1
        send_in_request(self.notify, self.enqueue_notify, record.id, generation, request_seconds=self.request_seconds)


def _patient_status(record: ResultRecord, *, withdraws: bool, contacted: bool) -> str:
    """The patient status after the correction: ``pending`` when a message is due (a result with channels; for a
    withdrawal, only when a message had gone out — ``contacted``, or may have: one on its way counts), else
    ``not_requested`` (a withdrawal before any message: there is nothing to tell) or the status it had (no
    channel). A result whose only channel is ``paper`` is ``pending`` after a correction (its slip's link is
    revoked: the pharmacy makes a new slip) and ``failed`` after a withdrawal made once a slip was: the slip's link
    no longer opens, no message can tell the patient and no new slip can be made (a withdrawn result gets none), so
    the pharmacy must tell the patient itself."""
    if not record.channels:
        return record.patient_status
    if withdraws and not contacted:
        return "not_requested"
    if withdraws and not message_channels(record.channels):
        return "failed"
    return "pending"
