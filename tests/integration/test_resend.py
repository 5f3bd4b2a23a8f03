"""``POST /v1/results/{id}/resend``: owner only, revokes older links, at most 3 a day."""

from __future__ import annotations

import json

import boto3

from tests.integration.helpers import audit_events, problem, register_pharmacy, signed_headers
from tests.integration.patient_support import (
    new_result,
    notified_token,
    notify,
    patient_env,
    result_item,
    sent_emails,
    sent_sms,
    token_in,
    view,
)

__all__ = ["patient_env"]
WRONG_DATE = "1984-12-04"


def resend(client, actor, result_id: str, body: bytes = b"{}", content_type: str = "application/json"):
    path = f"/v1/results/{result_id}/resend"
    headers = signed_headers(actor, "POST", path, body, content_type=content_type)
    return client.http.post(path, body=body, headers=headers)


def test_a_resend_revokes_the_old_link_and_sends_a_new_one(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, old = notified_token(actor)
    response = resend(client, actor, rid)
    assert response.status_code == 202
    body = json.loads(response.body)
    assert body["id"] == rid
    assert body["patient"]["status"] == "sent" and body["patient"]["channels"] == ["sms"]
    assert body["patient"]["link_expires_at"] and body["patient"]["sent_at"]
    assert len(sent_sms()) == 2
    new = token_in(sent_sms()[-1][1])
    assert new != old
    assert view(client, old).status_code == 404
    assert view(client, new).status_code == 200
    assert any(e["reason"] == "revoked" for e in audit_events("patient.view", "denied"))
    assert audit_events("result.resend", "success")


def test_a_resend_gives_a_fresh_link_after_a_lock(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, old = notified_token(actor)
    for _ in range(5):
        view(client, old, WRONG_DATE)
    assert view(client, old).status_code == 404
    assert resend(client, actor, rid).status_code == 202
    assert view(client, token_in(sent_sms()[-1][1])).status_code == 200


def test_a_resend_goes_on_every_channel_of_the_result(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor)
    assert notify(rid) == "sent"
    assert resend(client, actor, rid).status_code == 202
    assert len(sent_sms()) == 2 and len(sent_emails()) == 2


def test_at_most_three_resends_per_result_and_day(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    for _ in range(3):
        assert resend(client, actor, rid).status_code == 202
    refused = resend(client, actor, rid)
    assert refused.status_code == 429
    problem(refused)
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    assert len(sent_sms()) == 4
    assert audit_events("result.resend", "rate_limited")


def test_another_pharmacy_or_an_unknown_id_gets_404(patient_env, aws):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    other = register_pharmacy()
    for r in (resend(client, other, rid), resend(client, actor, "Z" * 24), resend(client, actor, "bad!id")):
        assert r.status_code == 404
        problem(r)
    assert len(sent_sms()) == 1
    assert view(client, token).status_code == 200  # nothing was revoked


def test_an_unsigned_resend_is_401_and_changes_nothing(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    r = client.http.post(f"/v1/results/{rid}/resend", body=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert view(client, token).status_code == 200


def test_the_body_must_be_an_empty_object(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    assert resend(client, actor, rid, b'{"phone": "+33600000000"}').status_code == 400
    assert resend(client, actor, rid, b"{}", content_type="text/plain").status_code == 415
    assert len(sent_sms()) == 1


def test_a_result_without_channels_cannot_be_resent(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=())
    r = resend(client, actor, rid)
    assert r.status_code == 409
    assert problem(r)["detail"]
    assert result_item(rid)["patient_status"]["S"] == "not_requested"


def _queued_notifications(monkeypatch) -> list[dict]:
    """Every ``SendMessage`` to the notify queue from now on: body, delay, and how many SMS had gone out then."""
    from chalicelib import bootstrap

    sqs = bootstrap.client("sqs")
    queued: list[dict] = []
    real = sqs.send_message

    def recording(**params):
        if params["QueueUrl"] == bootstrap.settings().notify_queue_url:
            queued.append({**json.loads(params["MessageBody"]), "delay": params.get("DelaySeconds", 0),
                           "sms_before": len(sent_sms())})  # fmt: skip
        return real(**params)

    monkeypatch.setattr(sqs, "send_message", recording)
    return queued


def test_a_resend_queues_a_delayed_copy_of_its_message_before_sending_it_which_then_sends_nothing(
    patient_env, monkeypatch
):
    """The copy, with ids only, arrives after the API's time limit: had the request died mid-send it would send the
    message; the request sent it, so the copy finds the result ``sent`` and sends nothing."""
    from chalicelib import bootstrap
    from chalicelib.events.notify import handle_notify_batch
    from tests.integration.patient_support import sqs_event

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    queued = _queued_notifications(monkeypatch)

    assert resend(client, actor, rid).status_code == 202

    delay = bootstrap.settings().function_timeout_seconds + 5
    assert queued == [{"result_id": rid, "generation": 1, "delay": delay, "sms_before": 1}]  # before the send
    assert len(sent_sms()) == 2
    copy = {"result_id": rid, "generation": 1}
    assert handle_notify_batch(sqs_event(copy), None) == {"batchItemFailures": []}
    assert len(sent_sms()) == 2
    assert result_item(rid)["patient_status"]["S"] == "sent"


def test_when_sending_fails_the_resend_s_queued_copy_sends_it(patient_env, monkeypatch):
    from chalicelib import bootstrap
    from chalicelib.adapters.messaging import DeliveryError
    from chalicelib.events.notify import handle_notify_batch
    from tests.integration.patient_support import sqs_event

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)

    class Down:
        def send_sms(self, phone, text):
            raise DeliveryError("sms", "Throttling")

        def send_email(self, address, content):
            raise DeliveryError("email", "Throttling")

    service = bootstrap.notify_service()
    working, service.sender = service.sender, Down()
    queued = _queued_notifications(monkeypatch)
    r = resend(client, actor, rid)
    assert r.status_code == 202
    assert json.loads(r.body)["patient"]["status"] == "pending"
    assert [(q["result_id"], q["generation"]) for q in queued] == [(rid, 1)]  # one copy, queued before the send
    attributes = boto3.client("sqs", region_name="eu-west-3").get_queue_attributes(
        QueueUrl=bootstrap.settings().notify_queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # not before the request's time limit

    service.sender = working  # the provider is back when the copy arrives
    assert handle_notify_batch(sqs_event({"result_id": rid, "generation": 1}), None) == {"batchItemFailures": []}
    assert len(sent_sms()) == 2
    assert result_item(rid)["patient_status"]["S"] == "sent"


def test_a_late_message_of_the_old_generation_sends_nothing(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    assert resend(client, actor, rid).status_code == 202
    assert notify(rid, generation=0) in ("not_pending", "superseded")
    assert len(sent_sms()) == 2


def test_a_resend_past_the_pharmacy_s_daily_sms_cap_is_429_until_midnight_and_changes_nothing(patient_env):
    from dataclasses import replace

    from chalicelib import bootstrap

    bootstrap.override(settings=replace(bootstrap.settings(), sms_per_pharmacy_per_day=1))
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)

    refused = resend(client, actor, rid)

    assert refused.status_code == 429
    assert problem(refused)["detail"] == "this pharmacy's daily sms limit is reached until midnight UTC"
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    assert len(sent_sms()) == 1
    assert view(client, token).status_code == 200  # no new generation: the link still opens
    (event,) = audit_events("result.resend", "rate_limited")
    assert event["reason"] == "sms_per_pharmacy_day"
