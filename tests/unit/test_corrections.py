"""Rules of corrections and withdrawals (contract v2 §8): the body, the window, the reference, one commit each."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain.corrections import (
    CorrectionReferenceConflictError,
    CorrectionWindowClosedError,
    NextVersion,
    ResultWithdrawnError,
    check_window,
    earlier_use,
)
from chalicelib.domain.json_body import canonical_json
from chalicelib.domain.records import AuditEvent, AuthGrant, Correction, ResultRecord
from chalicelib.domain.validation import parse_correction, parse_submission
from chalicelib.errors import ValidationError
from chalicelib.services.corrections import CorrectionService
from chalicelib.services.vault import ResultVault
from tests.factories import FIXED_NOW, valid_body
from tests.unit.test_pharmacy_request import RID, FakeStore, gate, signed

NOTIFY = ("sms",)


def fields_of(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {error.field for error in exc.value.errors}


def parse(body: object, now=FIXED_NOW):
    return parse_correction(body, now=now, notify=NOTIFY)


# -- the body ----------------------------------------------------------------------------------------------------
def test_a_correction_of_the_result_alone_is_valid():
    parsed = parse({"correction_reference": "C-1", "reason": "wrong_result", "result": "positive"})
    assert (parsed.reference, parsed.reason, parsed.result, parsed.withdraws) == (
        "C-1",
        "wrong_result",
        "positive",
        False,
    )


def test_an_empty_correction_is_refused():
    with pytest.raises(ValidationError) as exc:
        parse({"correction_reference": "C-1", "reason": "wrong_test"})
    assert fields_of(exc) == {"body"}


@pytest.mark.parametrize("extra", [{"result": "positive"}, {"patient": valid_body()["patient"]}, {"test": {}}])
def test_entered_in_error_with_any_other_field_is_refused(extra):
    with pytest.raises(ValidationError) as exc:
        parse({"correction_reference": "W-1", "reason": "entered_in_error", **extra})
    assert fields_of(exc) == set(extra)


def test_entered_in_error_alone_withdraws():
    assert parse({"correction_reference": "W-1", "reason": "entered_in_error"}).withdraws


def test_result_and_test_together_are_refused():
    body = {"correction_reference": "C-1", "reason": "wrong_test", "result": "positive", "test": valid_body()["test"]}
    with pytest.raises(ValidationError) as exc:
        parse(body)
    assert fields_of(exc) == {"result"}


def test_reference_reason_and_unknown_fields_follow_the_submission_rules():
    with pytest.raises(ValidationError) as exc:
        parse({"correction_reference": "bad ref!", "reason": "oops", "result": "maybe", "extra": 1})
    assert fields_of(exc) == {"correction_reference", "reason", "result", "extra"}
    with pytest.raises(ValidationError) as exc:
        parse({"reason": "wrong_result", "result": "maybe"})
    assert fields_of(exc) == {"correction_reference", "result"}


def test_a_corrected_patient_is_validated_with_the_results_channels():
    patient = dict(valid_body()["patient"])
    del patient["phone"]  # the result is notified by SMS: a phone is required
    with pytest.raises(ValidationError) as exc:
        parse({"correction_reference": "C-1", "reason": "wrong_patient", "patient": patient})
    assert fields_of(exc) == {"patient.phone"}


def test_a_corrected_test_may_be_as_old_as_the_window_not_older():
    test = dict(valid_body()["test"])
    test["sampled_at"] = (FIXED_NOW - timedelta(days=20)).isoformat()
    parsed = parse({"correction_reference": "C-1", "reason": "wrong_test", "test": test})
    assert parsed.test is not None and parsed.test.sampled_at == FIXED_NOW - timedelta(days=20)
    test["sampled_at"] = (FIXED_NOW - timedelta(days=31)).isoformat()
    with pytest.raises(ValidationError) as exc:
        parse({"correction_reference": "C-1", "reason": "wrong_test", "test": test})
    assert fields_of(exc) == {"test.sampled_at"}


def test_apply_replaces_what_is_given_and_keeps_the_rest():
    submission = parse_submission(valid_body(), now=FIXED_NOW)
    corrected = parse({"correction_reference": "C-1", "reason": "wrong_result", "result": "positive"}).apply(submission)
    assert corrected.test.result == "positive"
    assert corrected.patient == submission.patient and corrected.test.kind == submission.test.kind
    withdrawn = parse({"correction_reference": "W-1", "reason": "entered_in_error"}).apply(submission)
    assert withdrawn == submission


# -- the window and the reference --------------------------------------------------------------------------------
def test_the_window_closes_30_days_after_sampling():
    sampled = FIXED_NOW - timedelta(days=30)
    check_window(sampled, FIXED_NOW)  # the last moment
    with pytest.raises(CorrectionWindowClosedError):
        check_window(sampled, FIXED_NOW + timedelta(seconds=1))


def test_a_reference_is_found_among_the_results_corrections_only():
    corrections = (Correction(2, "wrong_result", FIXED_NOW, "C-1"), Correction(3, "wrong_test", FIXED_NOW, "C-2"))
    assert earlier_use(corrections, "C-2") == corrections[1]
    assert earlier_use(corrections, "C-3") is None


# -- the service, with fakes -------------------------------------------------------------------------------------
class ClearEnvelope:
    """Encryption stand-in that keeps the context with the plaintext and checks it on decrypt, like the SDK."""

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        return json.dumps({"context": dict(context), "plaintext": plaintext.decode()}).encode()

    def decrypt(self, ciphertext: bytes, context: Mapping[str, str]) -> bytes:
        data = json.loads(ciphertext)
        assert data["context"] == dict(context), "ciphertext of another record or version"
        return str(data["plaintext"]).encode()


@dataclass
class FakeResults:
    record: ResultRecord
    store: FakeStore
    commits: list[NextVersion] = field(default_factory=list)
    messages: list[tuple[str, int]] = field(default_factory=list)
    queued: list[tuple[str, int, int]] = field(default_factory=list)  # (id, generation, delay): the sends' backstops
    in_flight: bool = False  # the current generation's claim: a message may be out, not recorded yet

    def get_result(self, result_id: str) -> ResultRecord | None:
        return self.record if result_id == self.record.id else None

    def commit_correction(self, grant: AuthGrant, audit: AuditEvent, record: ResultRecord, change: NextVersion) -> None:
        self.store.commits.append((grant, audit))
        self.commits.append(change)
        self.record = replace(
            record,
            version=change.correction.version,
            ciphertext=change.ciphertext,
            earlier_ciphertexts=(*record.earlier_ciphertexts, record.ciphertext),
            corrections=(*record.corrections, change.correction),
            withdrawn=change.withdrawn,
        )

    def current_generation(self, result_id: str) -> int:
        return 0

    def may_have_sent(self, result_id: str, generation: int) -> bool:
        return self.in_flight


class Counter:
    def __init__(self) -> None:
        self.names: list[str] = []

    def count(self, name: str, value: float = 1) -> None:
        self.names.append(name)


def service(now_offset: timedelta = timedelta(0)) -> tuple[CorrectionService, FakeResults, FakeStore, Counter]:
    vault = ResultVault(ClearEnvelope())
    submission = parse_submission(valid_body(), now=FIXED_NOW)
    first = ResultRecord(
        RID, "ph_1", "REF-1", "pk_1", FIXED_NOW, 2_000_000_000, vault.seal(RID, "ph_1", submission, "sha"),
        channels=NOTIFY, patient_status="sent", patient_sent_at=FIXED_NOW,
    )  # fmt: skip
    store = FakeStore()
    results = FakeResults(first, store)
    metrics = Counter()
    svc = CorrectionService(
        gate=gate(store),
        get_result=results.get_result,
        commits=results,
        vault=vault,
        generations=results,
        notify=lambda rid, generation: results.messages.append((rid, generation)),
        enqueue_notify=lambda rid, generation, delay_seconds=0: results.queued.append((rid, generation, delay_seconds)),
        enqueue_national=lambda rid: None,
        metrics=metrics,
        clock=lambda: FIXED_NOW + now_offset,
        reference_digest=lambda pharmacy_id, reference: f"keyed({pharmacy_id}|{reference})",
    )
    return svc, results, store, metrics


def keyed(reference: str) -> str:
    """How the service's keyed hash (a stand-in here) keeps a correction_reference of RID."""
    return f"keyed(ph_1|correction:{RID}:{reference})"


def body(**fields: Any) -> bytes:
    return json.dumps(
        {"correction_reference": "C-1", "reason": "wrong_result", "result": "positive", **fields}
    ).encode()


def test_a_correction_commits_version_2_with_one_audit_event_and_sends_the_next_generation():
    svc, results, store, metrics = service()
    answer = svc.correct(signed(body()), RID)
    assert (answer.version, answer.created) == (2, True)
    [(_, event)] = store.commits
    assert (event.action, event.outcome, event.reason) == ("result.correct", "success", "wrong_result:v2")
    assert svc.vault.open(results.record).submission.test.result == "positive"
    assert results.messages == [(RID, 1)] and metrics.names == ["ResultCorrected"]
    assert results.queued == [(RID, 1, 10 + 5)]  # its backstop, past the API's time limit
    assert [c.reference for c in results.record.corrections] == [keyed("C-1")]  # never the reference itself


def test_the_same_correction_again_answers_the_same_version_without_a_new_one():
    svc, results, store, _ = service()
    svc.correct(signed(body()), RID)
    again = svc.correct(signed(body()), RID)
    assert (again.version, again.created) == (2, False)
    assert len(results.commits) == 1
    assert [e.outcome for _, e in store.commits] == ["success", "duplicate"]


def test_the_same_correction_again_sends_the_patient_s_message_still_pending_and_nothing_once_sent():
    """The first request may have answered 503 with its message neither sent nor queued: the retry sends it (claims
    keep it to one per generation); once the message is out, a retry sends nothing."""
    svc, results, _, _ = service()
    svc.correct(signed(body()), RID)
    results.messages.clear()
    results.queued.clear()
    results.record = replace(results.record, patient_status="pending")

    svc.correct(signed(body()), RID)
    assert results.messages == [(RID, 0)]  # the current generation (the fake's)
    assert results.queued == [(RID, 0, 15)]

    results.record = replace(results.record, patient_status="sent")
    svc.correct(signed(body()), RID)
    assert results.messages == [(RID, 0)]


def test_the_same_reference_with_another_body_is_a_conflict():
    svc, results, store, _ = service()
    svc.correct(signed(body()), RID)
    with pytest.raises(CorrectionReferenceConflictError):
        svc.correct(signed(body(result="invalid")), RID)
    assert len(results.commits) == 1
    assert [e.outcome for _, e in store.commits] == ["success", "conflict"]


def test_after_the_window_a_correction_is_refused_and_committed_as_rejected():
    svc, results, store, _ = service(timedelta(days=31))
    with pytest.raises(CorrectionWindowClosedError):
        svc.correct(signed(body()), RID)
    assert not results.commits
    assert [(e.outcome, e.reason) for _, e in store.commits] == [("rejected", "CorrectionWindowClosedError")]


def test_a_withdrawn_result_takes_no_further_correction():
    svc, results, _, metrics = service()
    withdrawn = svc.correct(
        signed(json.dumps({"correction_reference": "W-1", "reason": "entered_in_error"}).encode()), RID
    )
    assert withdrawn.version == 2 and results.commits[0].withdrawn and metrics.names == ["ResultWithdrawn"]
    assert results.commits[0].unbill  # withdrawn on the day it was received
    with pytest.raises(ResultWithdrawnError):
        svc.correct(signed(body(correction_reference="C-2")), RID)


class LostRace(Exception):
    """The store's "another correction committed first"."""


def racing_service(interloper_body: dict[str, Any]) -> tuple[CorrectionService, FakeResults, FakeStore]:
    """A service whose first commit loses to another request's correction ``interloper_body``, committed in between
    (what a concurrent request on the same result does between this one's read and its commit)."""
    svc, results, store, _ = service()
    svc.version_conflict = LostRace
    commit = results.commit_correction
    raced: list[bool] = []

    def commit_after_the_interloper(grant, audit, record, change):
        if not raced:
            raced.append(True)
            other = NextVersion(
                ciphertext=svc.vault.seal(
                    RID,
                    "ph_1",
                    svc.vault.open(record).submission,
                    "sha",
                    version=2,
                    correction_sha256=hashlib.sha256(canonical_json(interloper_body)).hexdigest(),
                ),
                correction=Correction(
                    2, interloper_body["reason"], FIXED_NOW, keyed(interloper_body["correction_reference"])
                ),
                withdrawn=False,
                patient_status="pending",
                previous_generation=0,
                unbill=False,
            )
            results.record = replace(
                record,
                version=2,
                ciphertext=other.ciphertext,
                earlier_ciphertexts=(record.ciphertext,),
                corrections=(other.correction,),
            )
            raise LostRace
        commit(grant, audit, record, change)

    results.commit_correction = commit_after_the_interloper  # type: ignore[method-assign]
    return svc, results, store


def test_a_correction_that_loses_a_race_is_made_again_on_the_version_that_won():
    svc, results, store = racing_service({"correction_reference": "C-0", "reason": "wrong_test", "result": "invalid"})
    answer = svc.correct(signed(body()), RID)
    assert (answer.version, answer.created) == (3, True)
    assert [c.reference for c in results.record.corrections] == [keyed("C-0"), keyed("C-1")]
    assert [e.outcome for _, e in store.commits] == ["success"]  # one commit, one audit event


def test_the_same_correction_racing_itself_answers_the_winners_version():
    same = {"correction_reference": "C-1", "reason": "wrong_result", "result": "positive"}
    svc, _, store = racing_service(same)
    answer = svc.correct(signed(body()), RID)
    assert (answer.version, answer.created) == (2, False)
    assert [e.outcome for _, e in store.commits] == ["duplicate"]


@pytest.mark.parametrize(
    ("channels", "sent", "withdraws", "expected"),
    [
        (("paper",), True, False, "pending"),  # the slip's link is revoked: a new slip is due
        (("paper",), True, True, "failed"),  # the slip's link is dead and nothing tells the patient: the pharmacy must
        (("paper",), False, True, "not_requested"),
        (("sms", "paper"), True, True, "pending"),  # the withdrawal's SMS is due
        ((), False, False, "not_requested"),
    ],
)
def test_the_patient_status_after_a_correction_of_a_result_with_paper(channels, sent, withdraws, expected):
    from chalicelib.services.corrections import _patient_status

    status = "sent" if sent else ("pending" if channels else "not_requested")
    record = ResultRecord(
        RID, "ph_1", "REF-1", "pk_1", FIXED_NOW, 2_000_000_000, b"", channels=channels, patient_status=status,
        patient_sent_at=FIXED_NOW if sent else None,
    )  # fmt: skip
    assert _patient_status(record, withdraws=withdraws, contacted=sent) == expected


@pytest.mark.parametrize("in_flight", [False, True])
def test_a_withdrawal_counts_a_message_on_its_way_as_sent(in_flight):
    """patient_sent_at is written after the send: a withdrawal between the two finds the claim held, and the
    patient, who got (or is getting) the first message, is told of the withdrawal. With no message out, nothing is
    sent, and the commit requires that this still holds."""
    svc, results, _, _ = service()
    results.record = replace(results.record, patient_status="pending", patient_sent_at=None)
    results.in_flight = in_flight

    svc.correct(signed(json.dumps({"correction_reference": "W-1", "reason": "entered_in_error"}).encode()), RID)

    (change,) = results.commits
    assert change.patient_status == ("pending" if in_flight else "not_requested")
    assert change.nothing_sent is not in_flight
    assert results.messages == ([(RID, 1)] if in_flight else [])
