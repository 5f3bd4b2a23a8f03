"""``POST /v1/results/{id}/correction`` on moto: versions, ownership, idempotency, links, usage (contract v2 §8)."""

from __future__ import annotations

import json
from typing import Any

from infra.local import local_iam
from tests.integration.helpers import audit_events, get_result, problem, register_pharmacy, signed_headers
from tests.integration.patient_support import (
    new_result,
    notified_token,
    patient_env,
    result_item,
    sent_sms,
    token_in,
    view,
)

__all__ = ["patient_env"]


def correct(client: Any, actor: Any, result_id: str, body: dict[str, Any]) -> Any:
    path = f"/v1/results/{result_id}/correction"
    raw = json.dumps(body).encode()
    return client.http.post(path, body=raw, headers=signed_headers(actor, "POST", path, raw))


def positive(reference: str = "C-1") -> dict[str, Any]:
    return {"correction_reference": reference, "reason": "wrong_result", "result": "positive"}


def withdrawal(reference: str = "W-1") -> dict[str, Any]:
    return {"correction_reference": reference, "reason": "entered_in_error"}


def test_a_correction_makes_version_2_shown_to_the_pharmacy(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    response = correct(client, actor, rid, positive())
    assert response.status_code == 202
    assert json.loads(response.body) == {"id": rid, "version": 2}
    followed = json.loads(get_result(client, actor, rid).body)
    assert followed["version"] == 2 and followed["withdrawn"] is False
    assert [(c["version"], c["reason"]) for c in followed["corrections"]] == [(2, "wrong_result")]
    assert followed["national"]["status"] == "pending"
    [event] = audit_events("result.correct", "success")
    assert event["record"] == rid and event["reason"] == "wrong_result:v2"
    [stored] = result_item(rid)["corrections"]["L"]
    assert stored["M"]["reference"]["S"] not in ("C-1", "") and "C-1" not in json.dumps(result_item(rid), default=str)


def test_each_version_has_its_own_ciphertext_bound_to_its_version(patient_env):
    from chalicelib import bootstrap
    from chalicelib.errors import DecryptionError

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    first = bytes(result_item(rid)["payload"]["B"])
    assert correct(client, actor, rid, positive()).status_code == 202
    item = result_item(rid)
    assert bytes(item["payload"]["B"]) != first
    assert [bytes(p["B"]) for p in item["earlier_payloads"]["L"]] == [first]
    record = bootstrap.store().get_result(rid)
    assert record is not None
    assert bootstrap.vault().open(record).submission.test.result == "positive"
    assert bootstrap.vault().open_version(record, 1).submission.test.result == "negative"
    # Version 1's ciphertext does not open as version 2: the version is in its encryption context.
    swapped = type(record)(**{**record.__dict__, "ciphertext": first})
    try:
        bootstrap.vault().open(swapped)
    except DecryptionError:
        pass
    else:
        raise AssertionError("an earlier version's ciphertext opened as the current one")


def test_the_same_correction_again_is_200_and_another_body_under_its_reference_409(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    assert correct(client, actor, rid, positive()).status_code == 202
    again = correct(client, actor, rid, positive())
    assert again.status_code == 200 and json.loads(again.body) == {"id": rid, "version": 2}
    other = {"correction_reference": "C-1", "reason": "wrong_result", "result": "invalid"}
    refused = correct(client, actor, rid, other)
    assert refused.status_code == 409
    problem(refused)
    assert json.loads(get_result(client, actor, rid).body)["version"] == 2
    assert audit_events("result.correct", "duplicate") and audit_events("result.correct", "conflict")


def test_another_pharmacys_result_is_the_same_404_as_a_missing_one(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    stranger = register_pharmacy()
    foreign = correct(client, stranger, rid, positive())
    missing = correct(client, stranger, "A" * 24, positive())
    assert foreign.status_code == missing.status_code == 404
    assert json.loads(foreign.body) == json.loads(missing.body)
    assert result_item(rid).get("version", {"N": "1"})["N"] == "1"


def test_an_invalid_correction_is_400_and_changes_nothing(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    before = result_item(rid)
    for body in (
        {"correction_reference": "C-1", "reason": "wrong_result"},
        {"correction_reference": "C-2", "reason": "entered_in_error", "result": "positive"},
        {"correction_reference": "C-3", "reason": "wrong_patient", "patient": {"family_name": "X"}},
    ):
        response = correct(client, actor, rid, body)
        assert response.status_code == 400, body
        problem(response)
    assert result_item(rid) == before


def test_a_correction_revokes_the_old_link_and_sends_a_new_one(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, old = notified_token(actor)
    assert json.loads(view(client, old).body)["corrected_at"] is None
    assert correct(client, actor, rid, positive()).status_code == 202
    assert view(client, old).status_code == 404
    assert "corrigé" in sent_sms()[-1][1]
    new = token_in(sent_sms()[-1][1])
    shown = view(client, new)
    assert shown.status_code == 200
    answer = json.loads(shown.body)
    assert answer["test"]["result"] == "positive"
    corrections = json.loads(get_result(client, actor, rid).body)["corrections"]
    assert answer["corrected_at"] == corrections[-1]["at"]


def test_a_correction_before_the_first_message_went_out_sends_the_first_message_not_a_corrected_one(patient_env):
    """No link was given yet (the first message still queued): there is no earlier link to call void. The patient
    gets one message, the first one's text, for the corrected result; the queued first message is superseded."""
    from tests.integration.patient_support import notify

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("sms",))
    assert correct(client, actor, rid, positive()).status_code == 202

    [(_, text)] = sent_sms()
    assert "corrigé" not in text and "corrected" not in text
    assert notify(rid, generation=0) == "not_pending"  # the first message, delivered late: nothing more
    assert len(sent_sms()) == 1
    assert json.loads(view(client, token_in(text)).body)["test"]["result"] == "positive"


def test_a_patient_given_a_link_on_one_channel_before_the_attempt_failed_is_told_of_the_correction(patient_env):
    """The SMS went out, the e-mail then failed for good (status ``failed``): the patient holds a link, so the
    correction's message says the result was corrected and the earlier link no longer works."""
    import pytest

    from chalicelib.services.notify import NotifyFailedError
    from tests.integration.patient_support import notify
    from tests.integration.test_notify import use_sender

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor)
    sender = use_sender({"email"})
    for attempt in range(1, 6):  # every attempt fails on the e-mail, the last one for good
        with pytest.raises(NotifyFailedError):
            notify(rid, attempt=attempt)
    assert result_item(rid)["patient_status"]["S"] == "failed" and len(sent_sms()) == 1
    sender.fail.clear()

    assert correct(client, actor, rid, positive()).status_code == 202

    assert len(sent_sms()) == 2
    assert "corrigé" in sent_sms()[-1][1]


def test_a_withdrawal_revokes_every_link_and_refuses_further_corrections(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, old = notified_token(actor)
    sent_before = len(sent_sms())
    response = correct(client, actor, rid, withdrawal())
    assert response.status_code == 202 and json.loads(response.body)["version"] == 2
    assert view(client, old).status_code == 404
    assert len(sent_sms()) == sent_before + 1
    assert "/r#" not in sent_sms()[-1][1]
    followed = json.loads(get_result(client, actor, rid).body)
    assert followed["withdrawn"] is True and followed["corrections"][0]["reason"] == "entered_in_error"
    later = correct(client, actor, rid, positive("C-9"))
    assert later.status_code == 409
    path = f"/v1/results/{rid}/resend"
    resent = client.http.post(path, body=b"{}", headers=signed_headers(actor, "POST", path, b"{}"))
    assert resent.status_code == 409 and len(sent_sms()) == sent_before + 1


def test_a_correction_needs_no_message_when_the_patient_asked_for_none(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=())
    sent_before = len(sent_sms())
    assert correct(client, actor, rid, positive()).status_code == 202
    assert len(sent_sms()) == sent_before
    assert json.loads(get_result(client, actor, rid).body)["patient"]["status"] == "not_requested"


# -- a withdrawal racing the first message (patient_sent_at is written after the send) ------------------------------


def _correct_once_before(monkeypatch: Any, step: str, patient_env: Any, rid: str, body: dict[str, Any]) -> list[Any]:
    """Make the notifier's ``LinkStore.<step>`` (``acquire_claim``, ``finish``…) send this correction first, once
    (the correction's own message then goes through the real step); the list receives the correction's answer."""
    from chalicelib.adapters.links import LinkStore

    real, answers = getattr(LinkStore, step), []

    def correction_first(self: Any, result_id: str, generation: int, **kwargs: Any) -> Any:
        if not answers:
            answers.append(None)  # set before the call: the correction's own send comes through here too
            answers[0] = correct(patient_env["client"], patient_env["pharmacy"], rid, body)
        return real(self, result_id, generation, **kwargs)

    monkeypatch.setattr(LinkStore, step, correction_first)
    return answers


def test_a_withdrawal_while_the_first_sms_is_out_but_not_recorded_tells_the_patient(patient_env, monkeypatch):
    """The notifier sent the SMS and has not recorded it yet: the withdrawal finds its claim held, counts the
    message as sent, and the patient is told of the withdrawal (before, it was ``not_requested``: nothing said)."""
    from tests.integration.patient_support import notify

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    answers = _correct_once_before(monkeypatch, "finish", patient_env, rid, withdrawal())

    assert notify(rid) == "superseded"
    assert answers[0].status_code == 202
    first, notice = sent_sms()
    assert "/r#" in first[1] and "/r#" not in notice[1], "the result's link, then the withdrawal's notice"
    assert result_item(rid)["patient_status"]["S"] == "sent"


def test_a_withdrawal_that_found_no_message_out_commits_only_if_none_left_meanwhile(patient_env, monkeypatch):
    """A notifier takes the lease between the withdrawal's read and its commit: the commit is refused, read again,
    and the withdrawal's notice is due (the message being sent would otherwise go unexplained)."""
    from chalicelib import bootstrap
    from chalicelib.adapters.corrections import CorrectionStore

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("sms",))
    commit, commits = CorrectionStore.commit_correction, []

    def lease_taken_first(self: Any, grant: Any, audit: Any, record: Any, change: Any) -> None:
        commits.append(change.nothing_sent)
        if len(commits) == 1:
            bootstrap.link_store().acquire_claim(rid, 0, lease_seconds=60, keep_until=record.expires_at)
        commit(self, grant, audit, record, change)

    monkeypatch.setattr(CorrectionStore, "commit_correction", lease_taken_first)

    assert correct(client, actor, rid, withdrawal()).status_code == 202
    assert commits == [True, False], "refused on a held lease, then decided again"
    [(_, notice)] = sent_sms()
    assert "/r#" not in notice
    assert len(audit_events("result.correct", "success")) == 1


def test_a_first_message_whose_generation_a_withdrawal_moved_on_is_never_sent(patient_env, monkeypatch):
    """The notifier reads the generation once it holds the lease: a withdrawal that committed with no message out
    (before the lease was taken) leaves nothing to send, not a message whose link is already void."""
    from tests.integration.patient_support import notify

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    answers = _correct_once_before(monkeypatch, "acquire_claim", patient_env, rid, withdrawal())

    assert notify(rid) == "superseded"
    assert answers[0].status_code == 202
    assert sent_sms() == []
    assert result_item(rid)["patient_status"]["S"] == "not_requested"


def test_a_correction_while_the_first_sms_is_out_but_not_recorded_says_corrected(patient_env, monkeypatch):
    """The patient holds the first link (sent, its record not written yet): the correction's message says the
    result was corrected and the earlier link no longer works, not the first message's text again."""
    from tests.integration.patient_support import notify

    client = patient_env["client"]
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    answers = _correct_once_before(monkeypatch, "finish", patient_env, rid, positive())

    assert notify(rid) == "superseded"
    assert answers[0].status_code == 202
    first, corrected = sent_sms()
    assert "corrigé" not in first[1] and "corrigé" in corrected[1]
    assert json.loads(view(client, token_in(corrected[1])).body)["test"]["result"] == "positive"


def _earlier_generation_on_its_way(rid: str) -> None:
    """A notifier of generation 0 holds its lease (still to send), and a resend moved the generation to 1 without
    its own message starting yet."""
    from chalicelib import bootstrap
    from chalicelib.adapters.tables import StateItem

    keep = int(result_item(rid)["expires_at"]["N"])
    bootstrap.link_store().acquire_claim(rid, 0, lease_seconds=60, keep_until=keep)
    StateItem(pk=f"linkcur#{rid}").update(actions=[StateItem.n.set(1), StateItem.expires_at.set(keep)])


def test_a_withdrawal_counts_a_message_of_an_earlier_generation_still_on_its_way(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("sms",))
    _earlier_generation_on_its_way(rid)

    assert correct(client, actor, rid, withdrawal()).status_code == 202

    [(_, notice)] = sent_sms()
    assert "/r#" not in notice, "the withdrawal's notice is due"


def test_a_withdrawal_commit_is_refused_by_an_earlier_generation_s_lease_taken_meanwhile(patient_env, monkeypatch):
    from chalicelib.adapters.corrections import CorrectionStore
    from chalicelib.adapters.tables import StateItem

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("sms",))
    StateItem(pk=f"linkcur#{rid}").update(actions=[StateItem.n.set(1)])  # a resend, its message not started
    commit, decided = CorrectionStore.commit_correction, []

    def lease_taken_first(self: Any, grant: Any, audit: Any, record: Any, change: Any) -> None:
        decided.append(change.nothing_sent)
        if len(decided) == 1:
            with local_iam.running_as(None):  # a notifier's doing and the test's look, not the API's
                _earlier_generation_on_its_way(rid)
        commit(self, grant, audit, record, change)

    monkeypatch.setattr(CorrectionStore, "commit_correction", lease_taken_first)

    assert correct(client, actor, rid, withdrawal()).status_code == 202
    assert decided == [True, False]
    [(_, notice)] = sent_sms()
    assert "/r#" not in notice


def test_the_api_s_calls_for_a_withdrawal_are_checked_against_its_policy(patient_env, monkeypatch):
    """A withdrawal decided on "nothing sent" asks the send claims (BatchGetItem) and commits on their condition
    checks (ConditionCheckItem): the local IAM check (every integration test runs under it) refuses both when the
    API's policy lacks them, and the pharmacy gets a 503 with nothing changed."""
    from tests.integration.helpers import without_action

    client, actor = patient_env["client"], patient_env["pharmacy"]
    withdrawn = new_result(actor, notify=("sms",))
    for action in ("dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem"):
        with monkeypatch.context() as one_missing:
            without_action(one_missing, "app.app", "StateTable", action)

            assert correct(client, actor, withdrawn, withdrawal()).status_code == 503
            refused = local_iam.refused()
            assert {str(d) for d in refused} == {f"api function: {action} on StateTable"}
            refused.clear()  # shown: the fixture would otherwise fail the test for it
    assert result_item(withdrawn)["version"]["N"] == "1"
