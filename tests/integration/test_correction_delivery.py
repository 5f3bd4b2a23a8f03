"""Versions to the national system (contract v2 §8): in order, never an earlier over a later, duplicates dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import urllib3

from chalicelib import bootstrap
from infra.local import local_iam
from tests.integration.test_national_delivery import TOKEN, _drain, _pharmacy, _submit, national
from tests.signing import sign, to_signed_request

__all__ = ["national"]
URL = "https://api.relais.example/v1/results"


def _correct(key_id: str, private_key: object, rid: str, body: dict) -> int:
    raw = json.dumps(body).encode()
    url = f"{URL}/{rid}/correction"
    headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
    with local_iam.running_as("app.app"):  # the route's doing, whatever function's step it is called from
        return bootstrap.correction_service().correct(to_signed_request("POST", url, headers, raw), rid).version


def _deliver(rid: str) -> None:
    bootstrap.national_queue().enqueue([rid])
    _drain(20)


def _kept(server, rid: str) -> list[tuple[int, str, bool]]:
    """(version, Observation status, superseded) of what the stand-in kept for ``rid``, in arrival order."""
    return [
        (r["version"], r["bundle"]["entry"][0]["resource"]["status"], r["superseded"])
        for r in server.state.records
        if r["bundle"]["identifier"]["value"] == rid
    ]


def test_a_corrected_result_reaches_the_receiver_as_version_2_with_status_corrected(national):
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-1")
    _deliver(rid)
    first_reported_at = bootstrap.store().get_result(rid).national_reported_at
    assert first_reported_at is not None
    assert (
        _correct(
            key_id, private_key, rid, {"correction_reference": "C1", "reason": "wrong_result", "result": "positive"}
        )
        == 2
    )
    pending = bootstrap.store().get_result(rid)
    assert (pending.national_status, pending.national_reported_at) == ("pending", None)  # not reported: no time
    _deliver(rid)
    assert _kept(national, rid) == [(1, "final", True), (2, "corrected", False)]
    latest = national.state.records[-1]["bundle"]
    assert latest["meta"] == {"versionId": "2"} and latest["identifier"]["value"] == rid
    record = bootstrap.store().get_result(rid)
    assert record.national_status == "reported"
    assert record.national_reported_at is not None and record.national_reported_at > first_reported_at  # v2's
    events = [(e["action"], e["outcome"], e.get("reason")) for e in bootstrap.store().audit_events(rid)]
    assert ("result.report", "success", "v2") in events


def test_a_withdrawal_reaches_the_receiver_as_entered_in_error(national):
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-2")
    _deliver(rid)
    _correct(key_id, private_key, rid, {"correction_reference": "W1", "reason": "entered_in_error"})
    _deliver(rid)
    assert _kept(national, rid)[-1] == (2, "entered-in-error", False)


def test_late_and_duplicate_messages_never_send_an_earlier_version_again(national):
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-3")
    _correct(key_id, private_key, rid, {"correction_reference": "C1", "reason": "wrong_result", "result": "positive"})
    # The first version's message arrives only now, twice, with the correction's: the latest version alone is sent.
    bootstrap.national_queue().enqueue([rid, rid, rid])
    _drain(30)
    assert _kept(national, rid) == [(2, "corrected", False)]
    assert [d["version"] for d in national.state.deliveries if d["identifier"] == rid] == [2]
    assert bootstrap.store().get_result(rid).national_status == "reported"


def test_a_correction_during_an_earlier_versions_post_delivers_the_later_one_next(national, monkeypatch):
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-4")
    client = bootstrap.national_client()
    original = client.post_bundle
    corrected = []

    def post_then_correct(bundle):
        answer = original(bundle)
        if not corrected:  # the pharmacy corrects while version 1's POST is under way
            corrected.append(
                _correct(
                    key_id,
                    private_key,
                    rid,
                    {"correction_reference": "C1", "reason": "wrong_result", "result": "invalid"},
                )
            )
        return answer

    monkeypatch.setattr(client, "post_bundle", post_then_correct)
    _deliver(rid)
    assert _kept(national, rid) == [(1, "final", True), (2, "corrected", False)]
    record = bootstrap.store().get_result(rid)
    assert (record.national_status, record.version) == ("reported", 2)


def test_the_receiver_keeps_a_later_version_when_an_earlier_one_comes_after_it(national):
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-5")
    _correct(key_id, private_key, rid, {"correction_reference": "C1", "reason": "wrong_result", "result": "positive"})
    _deliver(rid)
    late = json.loads(json.dumps(national.state.records[-1]["bundle"]))
    late["meta"]["versionId"] = "1"
    late["entry"][0]["resource"]["status"] = "final"
    answer = urllib3.request(
        "POST",
        f"http://127.0.0.1:{national.server_address[1]}/fhir",
        body=json.dumps(late).encode(),
        headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status == 200
    assert _kept(national, rid) == [(2, "corrected", False)]


def test_reconciliation_queues_a_corrected_result_only_a_threshold_after_its_correction(national):
    statuses = bootstrap.national_statuses()
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-6")
    _deliver(rid)
    _correct(key_id, private_key, rid, {"correction_reference": "C1", "reason": "wrong_result", "result": "positive"})
    now = datetime.now(UTC)
    assert rid in statuses.pending_before(now + timedelta(seconds=1))
    assert not statuses.claim_requeue(rid, now, now - timedelta(minutes=5)), "just corrected: its own message is queued"
    later = now + timedelta(minutes=10)
    assert statuses.claim_requeue(rid, later, later - timedelta(minutes=5)), "a lost message is found"


def test_a_version_that_cannot_be_delivered_is_dead_lettered_with_its_version(national, monkeypatch):
    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "V-7")
    _deliver(rid)
    _correct(key_id, private_key, rid, {"correction_reference": "C1", "reason": "wrong_result", "result": "positive"})
    original = bootstrap.national_client().post_bundle
    monkeypatch.setattr(
        bootstrap.national_client(), "post_bundle", lambda bundle: original({**bundle, "type": "not-a-bundle-type"})
    )
    _deliver(rid)
    letters = bootstrap.national_queue().dead_letters()
    assert [(d["result_id"], d["version"]) for d in letters] == [(rid, 2)]
    assert bootstrap.store().get_result(rid).national_status == "failed"
