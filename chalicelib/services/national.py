"""National delivery: one queued result id in, one FHIR Bundle out, status recorded.

Each message is handled on its own; the batch reports its failures per message, so one bad result
never holds back or re-sends the others. Crash-safety: the status is updated only after the
receiver answered, so a crash in between re-sends the bundle (the receiver drops it by its
identifier) but never loses it.

Audit: every attempt decrypts the result once and writes exactly one ``result.report`` event — ``success``,
``failed`` (dead-lettered) or ``retry`` (with the answer's code, or the error's type when the attempt broke after
decrypting) — once the receiver answered and before anything is recorded. An attempt whose event cannot be written
fails and is retried (sent and audited again): a result is never marked reported, failed or retried without it.

Versions (corrections, contract v2 §8). A message names a result, never a version: each attempt delivers the result's
current version (``Bundle.meta.versionId``, Observation ``corrected`` or ``entered-in-error``), so a late, early or
duplicate message can only ever send the latest version, and a version superseded before it was delivered is not
sent. A correction committed while an earlier version's POST is under way makes that POST's outcome moot: the status
store raises VersionSupersededError and the message comes back soon to deliver the later version (the receiver that
got the earlier one keeps the later one when it comes, and would keep a later one it already had).

Unexpected failures (AWS refusing past the clients' retries: DynamoDB, KMS, the audit write) keep the message too,
and it comes back once this copy's delivery lease has ended (the invocation's time left, at most the function's
timeout) rather than after the queue's visibility timeout (six times the function's timeout): another copy could
not deliver it before the lease ends anyway. If the queue refuses that too, the visibility timeout brings it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.deadline import ANSWER_MARGIN_SECONDS, seconds_left
from chalicelib.domain.corrections import VersionSupersededError
from chalicelib.domain.delivery import Answer, Verdict, backoff_seconds, classify, outcome_reason
from chalicelib.domain.devices import device_name
from chalicelib.domain.fhir import build_bundle, observation_status
from chalicelib.domain.model import Submission
from chalicelib.domain.records import AuditEvent, ResultRecord
from chalicelib.errors import NotFoundError
from chalicelib.observability import logger


class NationalPort(Protocol):
    def post_bundle(self, bundle: dict[str, Any]) -> Answer: ...


class StatusPort(Protocol):
    def claim_delivery(self, result_id: str, now: datetime, until: datetime) -> int | None: ...

    def count_failure(self, result_id: str, version: int = 1) -> None: ...

    def mark_reported(
        self,
        result_id: str,
        at: datetime,
        version: int = 1,
        *,
        pharmacy_id: str | None = None,
        received_at: datetime | None = None,
    ) -> None: ...

    def mark_failed(self, result_id: str, reason: str, version: int = 1) -> None: ...

    def mark_dead_lettered(self, result_id: str, now: datetime, version: int = 1) -> None: ...


class QueuePort(Protocol):
    def retry_later(self, receipt_handle: str, seconds: int) -> None: ...

    def dead_letter(self, result_id: str, reason: str, attempts: int, version: int = 1) -> None: ...


class Metrics(Protocol):
    def count(self, name: str, value: float = 1) -> None: ...

    def latency(self, name: str, seconds: float) -> None: ...


#: When another copy holds the delivery lease: soon, since that copy usually ends within seconds.
BUSY_RETRY_SECONDS = 5


class RetryLater(Exception):
    """The message stays in the queue and comes back after its (new) visibility timeout."""


@dataclass(frozen=True)
class Delivery:
    result_id: str
    receipt_handle: str
    attempt: int  # SQS ApproximateReceiveCount of this copy (the attempt budget is counted on the result)


@dataclass
class NationalDelivery:
    get_result: Callable[[str], ResultRecord | None]
    decrypt: Callable[[ResultRecord], Submission]
    get_pharmacy: Callable[[str], Any]
    national: NationalPort
    statuses: StatusPort
    queue: QueuePort
    audit: Callable[[AuditEvent], None]
    metrics: Metrics
    clock: Callable[[], datetime]
    max_attempts: int = 8
    backoff_base: float = 2.0
    backoff_cap: float = 900.0
    #: How long a copy may hold the result's delivery lease when the invocation's time left is unknown.
    lease_seconds: float = 60.0

    def deliver(self, delivery: Delivery) -> str:
        """Deliver one result; returns the outcome, raises RetryLater (or what failed) to keep the message."""
        try:
            return self._deliver(delivery)
        except RetryLater:
            raise
        except Exception:
            self._come_back_after_lease(delivery)
            raise

    def _come_back_after_lease(self, delivery: Delivery) -> None:
        """After an unexpected failure: the message back once this copy's lease has ended (see the module)."""
        try:
            self.queue.retry_later(delivery.receipt_handle, max(1, math.ceil(self._lease())))
        except Exception as exc:  # the queue's visibility timeout brings it back instead
            logger().info(
                "national retry not rescheduled", extra={"result_id": delivery.result_id, "error": type(exc).__name__}
            )

    def _deliver(self, delivery: Delivery) -> str:
        record = self.get_result(delivery.result_id)
        if record is None:
            return "gone"  # erased or past retention: nothing left to deliver
        if record.national_status == "reported":
            return "already-reported"
        if record.national_status == "failed":
            if record.national_dead_lettered or not record.national_failure:
                # Dead-lettered by another message of the same result (e.g. one queued again by reconciliation):
                # only an operator's redrive (which sets it pending again) sends it anew.
                return "already-dead-lettered"
            # Failed, but its dead letter was never written (SQS refused it after the status was set, and the message
            # came back): written now. Two copies may both write it; a letter is never lost.
            return self._dead_letter(record, record.national_failure, record.national_attempts)
        now = self.clock()
        failed_before = self.statuses.claim_delivery(record.id, now, now + timedelta(seconds=self._lease()))
        if failed_before is None:
            # Another copy of this result's message is delivering it (or just finished): look again later.
            self.queue.retry_later(delivery.receipt_handle, BUSY_RETRY_SECONDS)
            raise RetryLater("delivery-in-progress")
        submission = self.decrypt(record)  # KMS trouble raises: the message is retried (the lease then expires)
        try:
            answer = self._post(record, submission)
        except Exception as exc:  # the read is audited even when the attempt breaks after it
            self._audit(record, "retry", f"error:{type(exc).__name__}")
            raise
        verdict = classify(answer)
        version = record.version
        if verdict is Verdict.REPORTED:
            now = self.clock()
            self._audit(record, "success", f"v{version}" if version > 1 else None)
            try:
                self.statuses.mark_reported(
                    record.id, now, version=version, pharmacy_id=record.pharmacy_id, received_at=record.received_at
                )
            except VersionSupersededError:
                return self._superseded(delivery)
            self.metrics.count("NationalReported")
            since = record.corrected_at or record.received_at
            self.metrics.latency("NationalDeliveryLatency", (now - since).total_seconds())
            return "reported"
        reason = outcome_reason(answer.status, answer.body)
        attempts = failed_before + 1  # only the lease holder counts: no other copy changed it meanwhile
        if verdict is Verdict.PERMANENT or attempts >= self.max_attempts:
            final = reason if verdict is Verdict.PERMANENT else f"retries-exhausted:{reason}"
            self._audit(record, "failed", final)
            try:  # the status first: a result another message reported meanwhile gets no dead letter
                self.statuses.mark_failed(record.id, final, version=version)
            except NotFoundError:
                return "already-reported"
            except VersionSupersededError:
                return self._superseded(delivery)
            return self._dead_letter(record, final, attempts)
        self._audit(record, "retry", reason)
        self.statuses.count_failure(record.id, version=version)
        delay = backoff_seconds(attempts, base=self.backoff_base, cap=self.backoff_cap, retry_after=answer.retry_after)
        self.queue.retry_later(delivery.receipt_handle, delay)
        self.metrics.count("NationalRetried")
        raise RetryLater(reason)

    def _dead_letter(self, record: ResultRecord, reason: str, attempts: int) -> str:
        """Write the failed result's dead letter, then mark it written (a failure of either: the message comes back)."""
        self.queue.dead_letter(record.id, reason, attempts, version=record.version)
        self.statuses.mark_dead_lettered(record.id, self.clock(), version=record.version)
        self.metrics.count("NationalDeadLettered")
        return "dead-lettered"

    def _superseded(self, delivery: Delivery) -> str:
        """A correction made a later version during this attempt: the message comes back soon to deliver it."""
        self.queue.retry_later(delivery.receipt_handle, BUSY_RETRY_SECONDS)
        raise RetryLater("version-superseded")

    def _lease(self) -> float:
        """Until the invocation ends: no copy's POST can outlast it, so an expired lease means no POST under way."""
        return seconds_left(self.lease_seconds) + ANSWER_MARGIN_SECONDS

    def _post(self, record: ResultRecord, submission: Submission) -> Answer:
        bundle = build_bundle(
            result_id=record.id,
            submission=submission,
            pharmacy=self.get_pharmacy(record.pharmacy_id),
            device_name=device_name(submission.test.device_id) if submission.test.device_id else None,
            timestamp=record.corrected_at or record.received_at,  # stable per version: retries are byte-identical
            version=record.version,
            status=observation_status(record),
        )
        return self.national.post_bundle(bundle)

    def _audit(self, record: ResultRecord, outcome: str, reason: str | None) -> None:
        self.audit(
            AuditEvent(
                actor="system:national",
                action="result.report",
                outcome=outcome,
                record=record.id,
                pharmacy_id=record.pharmacy_id,
                reason=reason,
                at=self.clock(),
            )
        )


def reconcile(
    pending_before: Callable[[datetime], list[str]],
    claim: Callable[[str, datetime, datetime], bool],
    enqueue: Callable[[list[str]], None],
    *,
    now: datetime,
    cutoff: datetime,
) -> int:
    """Queue again every result pending since before ``cutoff`` and not already queued again since then.

    A lost message strands nothing; a slow queue does not snowball into duplicate messages.
    """
    ids = [rid for rid in pending_before(cutoff) if claim(rid, now, cutoff)]
    if ids:
        enqueue(ids)
    return len(ids)
