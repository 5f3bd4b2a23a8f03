"""Every decryption of a result is audited, once, retries included (issue 11, item 10; contract §5).

The decryptions are counted where they happen (``ResultVault.open``, the one way to open a result) and compared
with the audit events of the reader: the national worker (a retry then a success), the notifier (a send, a failed
send, its retry) and the patient page (a wrong birth date, then the right one).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.delivery import Answer
from chalicelib.services.vault import ResultVault
from tests.integration.helpers import BIRTH_DATE
from tests.integration.patient_support import new_result, notified_token, notify, patient_env, view
from tests.integration.test_national_delivery import _drain, _seed_results, national
from tests.integration.test_notify import use_sender

__all__ = ["national", "patient_env"]


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Result id → how many times its ciphertext was opened."""
    counted: Counter[str] = Counter()
    original = ResultVault.open

    def counting_open(self: ResultVault, record: Any) -> Any:
        counted[record.id] += 1
        return original(self, record)

    monkeypatch.setattr(ResultVault, "open", counting_open)
    return counted


def _events(result_id: str, actor_prefix: str) -> list[tuple[str, str | None]]:
    return [
        (e["outcome"], e.get("reason"))
        for e in bootstrap.store().audit_events(result_id)
        if e["actor"].startswith(actor_prefix)
    ]


def test_each_national_attempt_audits_its_decryption_retry_included(national, decryptions, monkeypatch):
    (rid,) = _seed_results(1)
    client = bootstrap.national_client()
    answers = [Answer(503)]  # the first attempt is answered 503, the retry goes through to the stand-in
    real_post = client.post_bundle
    monkeypatch.setattr(client, "post_bundle", lambda bundle: answers.pop() if answers else real_post(bundle))
    bootstrap.national_queue().enqueue([rid])
    _drain(30)
    assert bootstrap.store().get_result(rid).national_status == "reported"
    events = _events(rid, "system:national")
    assert sorted(events, key=str) == [("retry", "http-503"), ("success", None)]
    assert decryptions[rid] == len(events) == 2


def test_each_notification_read_is_audited_once_failed_send_and_retry_included(patient_env, decryptions):
    rid = new_result(patient_env["pharmacy"], notify=("sms", "email"))
    sender = use_sender({"email"})
    with pytest.raises(Exception, match="DeliveryError"):
        notify(rid)
    sender.fail.clear()
    assert notify(rid, attempt=2) == "sent"
    events = _events(rid, "system:notifier")
    assert sorted(outcome for outcome, _ in events) == ["retry", "success", "success"]
    assert decryptions[rid] == len(events) == 3


def test_each_patient_look_up_that_decrypts_is_audited_once(patient_env, decryptions):
    rid, token = notified_token(patient_env["pharmacy"])
    before = decryptions[rid]
    assert view(patient_env["client"], token, "1999-01-01").status_code == 404
    assert view(patient_env["client"], token, BIRTH_DATE).status_code == 200
    events = _events(rid, "link:")
    assert sorted(outcome for outcome, _ in events) == ["denied", "success"]
    assert decryptions[rid] - before == len(events) == 2


def test_a_patient_look_up_flushes_its_decryption_metric_with_its_answer(patient_env, capfd):
    _rid, token = notified_token(patient_env["pharmacy"])
    bootstrap.metrics().flush()  # the notifier's own read (called here without its batch, which flushes)
    capfd.readouterr()
    assert view(patient_env["client"], token, BIRTH_DATE).status_code == 200
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"_aws"' in line]
    assert [line.get("ResultDecrypted") for line in lines] == [[1.0]]  # one EMF document, flushed by the request
