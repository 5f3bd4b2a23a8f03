"""``POST /v1/results/{id}/slip`` (contract v2 §7): owner only, a new link that revokes the earlier ones, counted
with the resends (3 a day), one audit event, ``paper`` among the channels, nothing written when refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.integration.helpers import (
    BIRTH_DATE,
    PERSONAL_VALUES,
    audit_events,
    distinctive_body,
    problem,
    register_pharmacy,
    scan,
    submit_direct,
)
from tests.integration.helpers import signed_headers as signed
from tests.integration.patient_support import (
    assert_no_leak,
    new_result,
    notified_token,
    notify,
    patient_env,
    result_item,
    sent_emails,
    sent_sms,
    stored_strings,
    token_in,
    view,
)
from tests.integration.test_resend import resend
from tests.pdf_reading import read_slip

__all__ = ["patient_env"]


def slip(client, actor, result_id: str, body: bytes = b"{}", accept: str = "application/pdf"):
    path = f"/v1/results/{result_id}/slip"
    headers = {**signed(actor, "POST", path, body, content_type="application/json"), "Accept": accept}
    return client.http.post(path, body=body, headers=headers)


def slip_token(response) -> str:
    (link,) = read_slip(response.body).qr_codes
    return token_in(link)


def test_a_slip_is_a_one_page_pdf_whose_link_opens_the_result(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))

    response = slip(client, actor, rid)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.body.startswith(b"%PDF-") and len(response.body) < 50 * 1024
    read = read_slip(response.body)
    assert read.pages == 1
    token = slip_token(response)
    assert f"/r#{token}" in read.flat_text
    opened = view(client, token)
    assert opened.status_code == 200
    assert view(client, token, "1984-12-04").status_code == 404  # the birth date is checked, as for any link
    assert not sent_sms() and not sent_emails()  # paper: nothing is sent
    for value in PERSONAL_VALUES:
        assert value not in read.text


def test_paper_alone_is_pending_until_a_slip_then_sent_with_paper_among_the_channels(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    body = distinctive_body()
    body["notify"] = ["paper"]
    del body["patient"]["phone"], body["patient"]["email"]  # paper needs neither
    status, answer = submit_direct(actor, body)
    assert status == 201
    rid = answer["id"]
    assert result_item(rid)["patient_status"]["S"] == "pending"
    assert notify(rid) == "not_pending"  # the notifier sends nothing on paper
    assert result_item(rid)["patient_status"]["S"] == "pending"

    assert slip(client, actor, rid).status_code == 200

    item = result_item(rid)
    assert item["patient_status"]["S"] == "sent"
    assert [c["S"] for c in item["channels"]["L"]] == ["paper"]
    assert item["link_expires_at"]["S"] and item["patient_sent_at"]["S"]


def test_a_slip_for_an_sms_result_revokes_the_sms_link_and_adds_paper(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, sms_token = notified_token(actor)

    response = slip(client, actor, rid)

    assert response.status_code == 200
    assert view(client, sms_token).status_code == 404
    assert view(client, slip_token(response)).status_code == 200
    assert [c["S"] for c in result_item(rid)["channels"]["L"]] == ["sms", "paper"]
    assert len(sent_sms()) == 1  # a slip sends nothing
    assert any(e["reason"] == "revoked" for e in audit_events("patient.view", "denied"))


def test_each_slip_revokes_the_earlier_ones(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))
    first, second = slip_token(slip(client, actor, rid)), slip_token(slip(client, actor, rid))
    assert first != second
    assert view(client, first).status_code == 404
    assert view(client, second).status_code == 200


def test_slips_and_resends_share_the_limit_of_three_a_day(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, _ = notified_token(actor)
    assert resend(client, actor, rid).status_code == 202
    assert slip(client, actor, rid).status_code == 200
    last = slip(client, actor, rid)
    assert last.status_code == 200
    before = result_item(rid)

    refused = slip(client, actor, rid)

    assert refused.status_code == 429
    problem(refused)
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    assert resend(client, actor, rid).status_code == 429
    assert result_item(rid) == before
    assert view(client, slip_token(last)).status_code == 200  # the last slip still opens: nothing was revoked
    (event,) = audit_events("result.slip", "rate_limited")
    assert event["reason"] == "resend_per_day"


def test_one_audit_event_per_slip_with_the_link_id_and_nothing_personal(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))
    response = slip(client, actor, rid)
    token = slip_token(response)

    events = [e for e in audit_events() if e.get("record") == rid and e["action"] != "result.create"]
    assert [(e["action"], e["outcome"]) for e in events] == [("result.slip", "success")]
    assert events[0]["reason"].startswith("paper:link:")
    assert events[0]["actor"] == f"key:{actor.key_id}"
    assert_no_leak(stored_strings(), token)


def test_another_pharmacy_or_an_unknown_id_gets_404_and_nothing_changes(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    before = result_item(rid)
    other = register_pharmacy()
    for r in (slip(client, other, rid), slip(client, actor, "Z" * 24), slip(client, actor, "bad!id")):
        assert r.status_code == 404
        problem(r)
    assert result_item(rid) == before
    assert view(client, token).status_code == 200
    assert not audit_events("result.slip", "success")
    assert len(audit_events("result.slip", "not_found")) == 3


@pytest.mark.parametrize(
    ("body", "content_type", "status"), [(b'{"x": 1}', "application/json", 400), (b"{}", "text/plain", 415)]
)
def test_the_body_must_be_an_empty_json_object(patient_env, body, content_type, status):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    path = f"/v1/results/{rid}/slip"
    headers = {**signed(actor, "POST", path, body, content_type=content_type), "Accept": "application/pdf"}
    r = client.http.post(path, body=body, headers=headers)
    assert r.status_code == status
    problem(r)
    assert view(client, token).status_code == 200


def test_a_pdf_that_cannot_be_made_writes_nothing(patient_env):
    from chalicelib import bootstrap
    from chalicelib.errors import DependencyUnavailableError

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    before = result_item(rid)
    service = bootstrap.slip_service()
    real = service.render

    def broken(text):
        real(text)
        raise DependencyUnavailableError("dynamodb")

    service.render = broken
    r = slip(client, actor, rid)
    assert r.status_code == 503
    assert result_item(rid) == before
    assert not [i for i in link_state() if i["pk"]["S"].startswith("resend#")]  # not counted
    assert view(client, token).status_code == 200
    assert not audit_events("result.slip")


def test_a_withdrawn_result_gets_no_slip(patient_env):
    from chalicelib.adapters.tables import ResultItem

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))
    ResultItem(id=rid).update(actions=[ResultItem.withdrawn_at.set(datetime.now(UTC))])
    r = slip(client, actor, rid)
    assert r.status_code == 409
    problem(r)
    assert result_item(rid)["patient_status"]["S"] == "pending"


def test_a_paper_only_result_cannot_be_resent(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))
    r = resend(client, actor, rid)
    assert r.status_code == 409
    assert "slip" in problem(r)["detail"]


def test_the_slip_states_the_birth_date_will_be_asked_but_shows_none(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper", "sms"))
    text = read_slip(slip(client, actor, rid).body).text
    assert "date de naissance vous sera demandée" in text
    assert BIRTH_DATE not in text and json.dumps(BIRTH_DATE) not in text


def link_state() -> list[dict]:
    """The state table's link items: links, generations, resend counters and send claims."""
    prefixes = ("link#", "linkcur#", "resend#", "notify#")
    return sorted(
        (i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith(prefixes)), key=lambda i: i["pk"]["S"]
    )


def test_a_slip_that_loses_a_race_to_a_resend_writes_nothing(patient_env):
    """The generation moved on between the slip's read and its commit: the one transaction is cancelled whole (no
    counted resend, no link, no status, no audit event) and the answer is 503, to be retried."""
    from chalicelib import bootstrap

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    before = result_item(rid)
    state_before = link_state()
    links = bootstrap.link_store()
    links.current_generation = lambda result_id: 7  # what a concurrent resend would have left it at

    r = slip(client, actor, rid)

    assert r.status_code == 503
    problem(r)
    assert result_item(rid) == before
    assert link_state() == state_before  # no link, no counted resend, no generation
    assert view(client, token).status_code == 200
    assert not audit_events("result.slip")


def test_a_failed_commit_writes_nothing_and_answers_503_with_retry_after(patient_env, monkeypatch):
    """DynamoDB cancels the slip's one transaction for a reason that is no condition and not worth another try: the
    answer is 503 + Retry-After and nothing of the slip is written (no link, count, status or audit event)."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    before, state_before = result_item(rid), link_state()
    real_call = BaseClient._make_api_call
    cancelled: list[int] = []

    def cancelling(self, operation_name, params):
        if operation_name == "TransactWriteItems":
            cancelled.append(len(params["TransactItems"]))
            reasons = [{"Code": "None"}] * len(params["TransactItems"])
            reasons[-1] = {"Code": "ValidationError", "Message": "Item size has exceeded the maximum allowed size"}
            error = {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"}
            raise ClientError({"Error": error, "CancellationReasons": reasons}, operation_name)
        return real_call(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", cancelling)
    r = slip(client, actor, rid)
    monkeypatch.undo()

    assert cancelled  # the slip's transaction was sent, and cancelled
    assert r.status_code == 503
    problem(r)
    assert int(r.headers["Retry-After"]) >= 1
    assert result_item(rid) == before
    assert link_state() == state_before  # no link, no counted resend, no generation
    assert view(client, token).status_code == 200
    assert not audit_events("result.slip")


def _post_slip(client, actor, rid: str, accept: str | None):
    path = f"/v1/results/{rid}/slip"
    headers = signed(actor, "POST", path, b"{}", content_type="application/json")  # a new nonce each time
    return client.http.post(path, body=b"{}", headers={**headers, "Accept": accept} if accept is not None else headers)


@pytest.mark.parametrize(
    "accept",
    [
        None,  # no Accept: anything, in HTTP (what a plain client sends)
        "*/*",  # curl's, requests' default
        "application/*",
        "text/html,application/pdf",
        "application/json, */*;q=0.1",
        "application/pdf; q=0.5",
    ],
)
def test_a_request_accepting_a_pdf_in_any_way_gets_the_slip(patient_env, accept):
    """The deployed gateway treats every type as binary (``infra/template.py``), so the PDF needs no ``Accept`` in
    first place; Chalice's own after-view check (which knows neither an absent ``Accept`` nor ``application/*``)
    does not replace it by its 400."""
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))

    response = _post_slip(client, actor, rid, accept)

    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.body.startswith(b"%PDF-")
    assert audit_events("result.slip")


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/problem+json, text/html",
        "application/pdf;q=0",
        "*/*, application/pdf;q=0",  # the most specific range decides
        "application/json, */*;q=0",
        "application/*;q=0, */*",
    ],
)
def test_a_request_ruling_a_pdf_out_is_a_406_and_changes_nothing(patient_env, accept):
    """Refused before the body, the signature or any write: no link, nothing counted toward the daily limit."""
    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid, token = notified_token(actor)
    before, state_before, events_before = result_item(rid), link_state(), audit_events()

    answers = [_post_slip(client, actor, rid, accept) for _ in range(4)]  # more than the daily limit

    for r in answers:
        assert r.status_code == 406, r.body
        assert "Accept: application/pdf" in problem(r)["detail"]
    assert result_item(rid) == before  # status, channels, link expiry
    assert link_state() == state_before  # no link, no counted resend, no generation
    assert audit_events() == events_before  # no audit event at all: refused before the signature was read
    assert view(client, token).status_code == 200
    assert slip(client, actor, rid, accept="application/pdf; q=1, */*").status_code == 200  # not counted


def test_bodies_handed_over_base64_encoded_as_the_deployed_gateway_does_are_read_as_sent(patient_env, monkeypatch):
    """With every media type binary the gateway hands each body to Lambda base64-encoded: a submission and a slip
    made that way are read, verified and answered as when the body arrives as text (``infra/local/api.py`` makes
    the local stack do the same)."""
    from chalice import local as chalice_local

    from infra.local.api import bodies_as_the_gateway_hands_them
    from tests.integration.helpers import get_result, post_result

    encoded = []
    make_event = chalice_local.LambdaEventConverter.create_lambda_event

    def recording(self, *args, **kwargs):
        event = make_event(self, *args, **kwargs)
        encoded.append(event.get("isBase64Encoded", False))
        return event

    monkeypatch.setattr(chalice_local.LambdaEventConverter, "create_lambda_event", recording)
    monkeypatch.setattr(chalice_local.LambdaEventConverter, "_is_binary", chalice_local.LambdaEventConverter._is_binary)
    bodies_as_the_gateway_hands_them()
    client, actor = patient_env["client"], patient_env["pharmacy"]

    body = distinctive_body()
    body["notify"] = ["paper"]
    submitted = post_result(client, actor, body)
    assert submitted.status_code == 201, submitted.body
    rid = json.loads(submitted.body)["id"]
    response = _post_slip(client, actor, rid, None)

    assert encoded == [True, True]  # both bodies reached the app base64-encoded
    assert response.status_code == 200 and response.body.startswith(b"%PDF-")
    assert json.loads(get_result(client, actor, rid).body)["patient"]["channels"] == ["paper"]


def test_a_withdrawn_paper_only_result_is_failed_for_the_pharmacy_to_tell_the_patient(patient_env):
    """The slip's link no longer opens, nothing can be sent on paper and no new slip can be made: the pharmacy,
    following the result, reads ``failed`` (it must tell the patient itself), not ``sent``."""
    from tests.integration.helpers import get_result
    from tests.integration.test_corrections import correct, withdrawal

    client, actor = patient_env["client"], patient_env["pharmacy"]
    rid = new_result(actor, notify=("paper",))
    token = slip_token(slip(client, actor, rid))

    assert correct(client, actor, rid, withdrawal()).status_code == 202

    assert view(client, token).status_code == 404
    patient = json.loads(get_result(client, actor, rid).body)["patient"]
    assert patient["status"] == "failed" and patient["channels"] == ["paper"]
    assert not sent_sms() and not sent_emails()
    assert slip(client, actor, rid).status_code == 409
