"""National delivery service with fakes: verdicts, retries, dead letters, crash safety."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib.deadline import deadline_in
from chalicelib.domain.delivery import Answer, Verdict, backoff_seconds, classify, outcome_reason
from chalicelib.domain.model import Submission
from chalicelib.domain.records import Pharmacy, ResultRecord
from chalicelib.domain.validation import parse_submission
from chalicelib.errors import DependencyUnavailableError
from chalicelib.services.national import BUSY_RETRY_SECONDS, Delivery, NationalDelivery, RetryLater
from tests.factories import FIXED_NOW, VALID_NIR, valid_body

RID = "r" * 24


class FakeNational:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.received: list[dict] = []

    def post_bundle(self, bundle):
        self.received.append(bundle)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, *args))


class Statuses(Recorder):
    """A result's delivery status: a lease any copy can take, and ``failed`` POSTs counted so far."""

    def __init__(self, failed: int = 0, leased: bool = False) -> None:
        super().__init__()
        self.failed, self.leased = failed, leased

    def claim_delivery(self, rid, now, until):
        if self.leased:
            return None
        self.leased = True
        return self.failed

    def count_failure(self, rid, version=1):
        self.failed, self.leased = self.failed + 1, False
        self.calls.append(("count_failure", rid))


def make_service(
    national,
    *,
    record: ResultRecord | None = None,
    decrypt=None,
    statuses=None,
    queue=None,
    max_attempts=8,
    audit=None,
):
    submission = parse_submission(valid_body(FIXED_NOW), now=FIXED_NOW)
    record = record or ResultRecord(
        id=RID,
        pharmacy_id="p" * 16,
        reference_digest="A-1",
        key_id="k" * 16,
        received_at=FIXED_NOW,
        expires_at=0,
        ciphertext=b"x",
    )
    return NationalDelivery(
        get_result=lambda rid: record if rid == record.id else None,
        decrypt=decrypt or (lambda rec: submission),
        get_pharmacy=lambda pid: Pharmacy(pid, "750000001", "Pharmacie", "active"),
        national=national,
        statuses=statuses or Statuses(),
        queue=queue or Recorder(),
        audit=audit or (lambda event: None),
        metrics=Recorder(),
        clock=lambda: FIXED_NOW + timedelta(seconds=3),
        max_attempts=max_attempts,
        backoff_base=2,
        backoff_cap=60,
    )


def test_a_2xx_answer_marks_the_result_reported_and_sends_its_bundle():
    national, statuses = FakeNational(Answer(201)), Statuses()
    assert make_service(national, statuses=statuses).deliver(Delivery(RID, "rh", 1)) == "reported"
    assert statuses.calls[0][:2] == ("mark_reported", RID)
    bundle = national.received[0]
    assert bundle["identifier"]["value"] == RID
    assert VALID_NIR in str(bundle)  # the national system is the one place the NIR goes


def test_a_reported_result_is_counted_in_its_pharmacys_month_of_receipt():
    class Billing(Statuses):
        def mark_reported(self, rid, at, version=1, **billing):
            self.calls.append(("mark_reported", rid, billing))

    statuses = Billing()
    assert make_service(FakeNational(Answer(201)), statuses=statuses).deliver(Delivery(RID, "rh", 1)) == "reported"
    assert statuses.calls[-1] == ("mark_reported", RID, {"pharmacy_id": "p" * 16, "received_at": FIXED_NOW})


def test_a_409_or_duplicate_outcome_counts_as_reported():
    dup = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "duplicate"}]}
    assert classify(Answer(409)) is Verdict.REPORTED
    assert classify(Answer(400, body=dup)) is Verdict.REPORTED


def test_a_permanent_4xx_dead_letters_with_a_reason_free_of_personal_data():
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": f"bad NIR {VALID_NIR}"}],
    }
    queue, statuses = Recorder(), Statuses()
    service = make_service(FakeNational(Answer(400, body=outcome)), queue=queue, statuses=statuses)
    assert service.deliver(Delivery(RID, "rh", 1)) == "dead-lettered"
    assert queue.calls == [("dead_letter", RID, "http-400:invalid", 1)]
    assert [c[:3] for c in statuses.calls] == [
        ("mark_failed", RID, "http-400:invalid"),
        ("mark_dead_lettered", RID, FIXED_NOW + timedelta(seconds=3)),
    ]
    assert VALID_NIR not in str(queue.calls)


@pytest.mark.parametrize("answer", [Answer(500), Answer(503, retry_after=5), Answer(None), Answer(429)])
def test_server_errors_timeouts_and_throttling_are_retried_later_with_backoff(answer):
    queue = Recorder()
    with pytest.raises(RetryLater):
        make_service(FakeNational(answer), queue=queue).deliver(Delivery(RID, "rh", 3))
    ((name, receipt, seconds),) = queue.calls
    assert (name, receipt) == ("retry_later", "rh")
    assert 1 <= seconds <= 60
    if answer.retry_after:
        assert seconds >= 5


def test_retries_end_in_the_dead_letter_queue_after_the_results_last_attempt():
    queue, statuses = Recorder(), Statuses(failed=3)
    service = make_service(FakeNational(Answer(500)), queue=queue, statuses=statuses, max_attempts=4)
    assert service.deliver(Delivery(RID, "rh", 1)) == "dead-lettered"  # this copy's first receive, the 4th POST
    ((name, rid, reason, attempts),) = queue.calls
    assert (name, rid, attempts) == ("dead_letter", RID, 4) and reason.startswith("retries-exhausted:http-500")
    assert [c[:2] for c in statuses.calls] == [("mark_failed", RID), ("mark_dead_lettered", RID)]


def test_attempts_are_counted_per_result_not_per_message_copy():
    """A copy received many times (duplicates, throttled receives) does not spend the result's attempts."""
    queue, statuses = Recorder(), Statuses(failed=1)
    with pytest.raises(RetryLater):
        make_service(FakeNational(Answer(500)), queue=queue, statuses=statuses, max_attempts=4).deliver(
            Delivery(RID, "rh", 9)
        )
    assert statuses.calls == [("count_failure", RID)] and statuses.failed == 2
    assert queue.calls[0][:2] == ("retry_later", "rh")


def test_a_copy_that_finds_another_copy_delivering_comes_back_later_without_posting():
    national, queue = FakeNational(Answer(201)), Recorder()
    with pytest.raises(RetryLater):
        make_service(national, queue=queue, statuses=Statuses(leased=True)).deliver(Delivery(RID, "rh", 1))
    assert national.received == [] and queue.calls == [("retry_later", "rh", BUSY_RETRY_SECONDS)]


def test_a_crash_after_the_post_resends_the_same_bundle_and_never_loses_it():
    national = FakeNational(Answer(201), Answer(200))

    class CrashingStatuses(Statuses):
        crashed = False

        def mark_reported(self, rid, at, version=1, **_billing):
            if not self.crashed:
                self.crashed = True
                raise RuntimeError("process died")
            self.calls.append(("mark_reported", rid))

    statuses = CrashingStatuses()
    service = make_service(national, statuses=statuses)
    with pytest.raises(RuntimeError):
        service.deliver(Delivery(RID, "rh", 1))
    statuses.leased = False  # the crashed invocation's lease ended with it
    assert service.deliver(Delivery(RID, "rh", 2)) == "reported"
    assert national.received[0] == national.received[1]  # same identifier: the receiver drops the second
    assert statuses.calls == [("mark_reported", RID)]


def test_kms_failure_while_decrypting_leaves_the_message_for_a_retry():
    def fail(record):
        raise DependencyUnavailableError("kms")

    national = FakeNational(Answer(201))
    with pytest.raises(DependencyUnavailableError):
        make_service(national, decrypt=fail).deliver(Delivery(RID, "rh", 1))
    assert national.received == []


def record_with(national_status: str) -> ResultRecord:
    return ResultRecord(
        id=RID,
        pharmacy_id="p" * 16,
        reference_digest="A",
        key_id="k" * 16,
        received_at=FIXED_NOW,
        expires_at=0,
        ciphertext=b"",
        national_status=national_status,
    )


def test_an_already_reported_or_erased_result_is_acknowledged_without_sending():
    national = FakeNational(Answer(201))
    assert make_service(national, record=record_with("reported")).deliver(Delivery(RID, "rh", 1)) == "already-reported"
    assert make_service(national).deliver(Delivery("x" * 24, "rh", 1)) == "gone"
    assert national.received == []


def test_backoff_grows_exponentially_with_jitter_and_respects_the_cap():
    rng = random.Random(7)
    delays = [backoff_seconds(n, base=2, cap=60, rng=rng) for n in range(1, 9)]
    assert delays[0] <= 2 and max(delays) <= 60
    assert all(backoff_seconds(6, base=2, cap=60, rng=random.Random(s)) >= 30 for s in range(20))


def test_outcome_reasons_keep_codes_and_drop_free_text():
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "code": "invalid",
                "details": {"coding": [{"code": "MSG_BAD_FORMAT"}], "text": "Claire Martin"},
                "diagnostics": "Claire Martin",
            },
            {"code": "not a code with spaces"},
        ],
    }
    assert outcome_reason(422, body) == "http-422:invalid,MSG_BAD_FORMAT"
    assert outcome_reason(None, None) == "no-answer"


def test_record_round_trip_keeps_the_submission():
    submission = parse_submission(valid_body(FIXED_NOW), now=FIXED_NOW)
    assert Submission.from_record(submission.to_record()) == submission


def test_a_result_already_dead_lettered_by_another_message_is_not_sent_again():
    national = FakeNational(Answer(201))
    assert (
        make_service(national, record=record_with("failed")).deliver(Delivery(RID, "rh", 1)) == "already-dead-lettered"
    )
    assert national.received == []


def test_a_failed_result_whose_dead_letter_was_never_written_gets_it_when_its_message_comes_back():
    """SQS refused the letter after the status was set: the message came back (the attempt raised), and finds the
    result failed with no letter written. It writes the letter (reason and attempts as recorded), posting nothing."""
    national, queue, statuses = FakeNational(Answer(201)), Recorder(), Statuses()
    failed = replace(record_with("failed"), national_failure="retries-exhausted:http-503", national_attempts=6)
    service = make_service(national, record=failed, queue=queue, statuses=statuses)

    assert service.deliver(Delivery(RID, "rh", 2)) == "dead-lettered"
    assert queue.calls == [("dead_letter", RID, "retries-exhausted:http-503", 6)]
    assert [c[:2] for c in statuses.calls] == [("mark_dead_lettered", RID)]
    assert national.received == []

    written = replace(failed, national_dead_lettered=True)
    queue.calls.clear()
    assert (
        make_service(national, record=written, queue=queue).deliver(Delivery(RID, "rh", 3)) == "already-dead-lettered"
    )
    assert queue.calls == []


def test_a_dead_letter_sqs_refuses_leaves_the_message_to_come_back():
    class RefusingQueue(Recorder):
        def dead_letter(self, *args, **kwargs):
            raise DependencyUnavailableError("sqs")

    queue, statuses = RefusingQueue(), Statuses()
    with pytest.raises(DependencyUnavailableError):
        make_service(FakeNational(Answer(400)), queue=queue, statuses=statuses).deliver(Delivery(RID, "rh", 1))
    assert [c[:2] for c in statuses.calls] == [("mark_failed", RID)], "failed, not marked as dead-lettered"
    assert [c[:2] for c in queue.calls] == [("retry_later", "rh")], "back once this copy's lease has ended"


def test_a_result_reported_meanwhile_is_not_marked_failed():
    from chalicelib.errors import NotFoundError

    class ReportedMeanwhile(Statuses):
        def mark_failed(self, rid, reason, version=1):
            raise NotFoundError("reported")

    queue = Recorder()
    service = make_service(FakeNational(Answer(400)), statuses=ReportedMeanwhile(), queue=queue)
    assert service.deliver(Delivery(RID, "rh", 1)) == "already-reported"
    assert queue.calls == [], "no dead letter for a result another delivery reported"


def test_a_dead_letter_moved_by_sqs_has_no_invented_reason():
    from chalicelib.adapters.queues import _describe

    body = '{"result_id": "%s"}' % RID
    by_sqs = _describe({"Body": body, "Attributes": {"ApproximateReceiveCount": "5", "SentTimestamp": "0"}})
    assert (by_sqs["reason"], by_sqs["moved_by"], by_sqs["attempts"]) == (None, "sqs", 5)
    attrs = {"reason": {"StringValue": "http-422:invalid"}, "attempts": {"StringValue": "1"}}
    by_relais = _describe({"Body": body, "MessageAttributes": attrs, "Attributes": {"SentTimestamp": "0"}})
    assert (by_relais["reason"], by_relais["moved_by"]) == ("http-422:invalid", "relais")


# -- every decryption is audited, retries included (issue 11, item 10) ------------------------------------------------
class AuditedReads:
    """Counts the decryptions and records the audit events, in one timeline."""

    def __init__(self, *, fail_audit: bool = False) -> None:
        self.timeline: list[str] = []
        self.fail_audit = fail_audit
        self.submission = parse_submission(valid_body(FIXED_NOW), now=FIXED_NOW)

    def decrypt(self, record: ResultRecord) -> Submission:
        self.timeline.append("decrypt")
        return self.submission

    def audit(self, event) -> None:
        if self.fail_audit:
            raise DependencyUnavailableError("dynamodb")
        self.timeline.append(f"{event.action}:{event.outcome}:{event.reason}")


@pytest.mark.parametrize(
    ("answer", "attempt", "event"),
    [
        (Answer(201), 1, "result.report:success:None"),
        (Answer(503), 1, "result.report:retry:http-503"),
        (Answer(503), 8, "result.report:failed:retries-exhausted:http-503"),
        (Answer(422), 1, "result.report:failed:http-422"),
    ],
)
def test_every_attempt_writes_one_audit_event_for_its_one_decryption(answer, attempt, event):
    reads = AuditedReads()
    statuses = Statuses(failed=attempt - 1)  # the result's attempts, whatever the message copy's receive count
    service = make_service(FakeNational(answer), decrypt=reads.decrypt, audit=reads.audit, statuses=statuses)
    with contextlib.suppress(RetryLater):
        service.deliver(Delivery(RID, "rh", 1))
    assert reads.timeline == ["decrypt", event]


def test_an_attempt_that_breaks_after_decrypting_still_audits_its_read():
    class Broken:
        def post_bundle(self, bundle):
            raise ConnectionResetError

    reads = AuditedReads()
    with pytest.raises(ConnectionResetError):
        make_service(Broken(), decrypt=reads.decrypt, audit=reads.audit).deliver(Delivery(RID, "rh", 1))
    assert reads.timeline == ["decrypt", "result.report:retry:error:ConnectionResetError"]


@pytest.mark.parametrize("answer", [Answer(201), Answer(503), Answer(422)])
def test_an_attempt_whose_audit_cannot_be_written_fails_and_records_nothing(answer):
    statuses, queue = Statuses(), Recorder()
    reads = AuditedReads(fail_audit=True)
    service = make_service(
        FakeNational(answer), decrypt=reads.decrypt, audit=reads.audit, statuses=statuses, queue=queue
    )
    with pytest.raises(DependencyUnavailableError):
        service.deliver(Delivery(RID, "rh", 1))
    assert statuses.calls == []  # the message comes back (after the lease): sent and audited again
    assert queue.calls == [("retry_later", "rh", LEASE_OUTSIDE_DEADLINE)]  # no dead letter, no count


#: The lease (and so the wait after an unexpected failure) outside any invocation deadline: 60 s + the margin.
LEASE_OUTSIDE_DEADLINE = 61


class FailingOnce(Statuses):
    def mark_reported(self, rid, at, version=1, **_billing):
        raise DependencyUnavailableError("dynamodb")


def test_an_unexpected_failure_brings_the_message_back_once_the_lease_has_ended():
    """Not after the queue's visibility timeout (six times the function's): once no other copy is kept out."""
    queue, statuses = Recorder(), FailingOnce()
    service = make_service(FakeNational(Answer(201)), statuses=statuses, queue=queue)
    with pytest.raises(DependencyUnavailableError):
        service.deliver(Delivery(RID, "rh", 1))
    assert queue.calls == [("retry_later", "rh", LEASE_OUTSIDE_DEADLINE)]

    queue.calls.clear()
    statuses.leased = False  # the first copy's lease ended
    with deadline_in(20.0), pytest.raises(DependencyUnavailableError):  # a Lambda invocation with 20 s left
        service.deliver(Delivery(RID, "rh", 2))
    assert queue.calls == [("retry_later", "rh", 20)]  # 19 s left to answer in, plus the answer's margin


def test_a_failure_the_queue_cannot_reschedule_still_raises_the_first_error(monkeypatch):
    from chalicelib.services import national as module

    class Refusing(Recorder):
        def retry_later(self, receipt_handle, seconds):
            raise ConnectionError("sqs")

    logged: list[tuple[str, dict[str, object]]] = []

    class Logger:
        def info(self, message: str, extra: dict[str, object]) -> None:
            logged.append((message, extra))

    monkeypatch.setattr(module, "logger", Logger)  # the log line itself, whatever stream a shared logger holds
    with pytest.raises(DependencyUnavailableError):
        make_service(FakeNational(Answer(201)), statuses=FailingOnce(), queue=Refusing()).deliver(
            Delivery(RID, "rh", 1)
        )
    assert logged == [("national retry not rescheduled", {"result_id": RID, "error": "ConnectionError"})]
