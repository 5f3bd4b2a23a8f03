"""``GET /v1/results/{id}``: statuses for the submitting pharmacy, the same 404 for everyone else."""

from __future__ import annotations

import json
import re

from tests.integration.helpers import (
    PERSONAL_VALUES,
    audit_events,
    distinctive_body,
    get_result,
    post_result,
    problem,
)

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _submit(client, actor, body=None) -> str:
    response = post_result(client, actor, body or distinctive_body())
    assert response.status_code == 201, response.body
    result_id: str = json.loads(response.body)["id"]
    return result_id


def test_the_submitting_pharmacy_gets_200_with_exactly_the_contract_keys(client, pharmacy):
    body = distinctive_body("FOLLOW-1")
    result_id = _submit(client, pharmacy, body)

    response = get_result(client, pharmacy, result_id)

    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    view = json.loads(response.body)
    assert set(view) == {
        "id", "pharmacy_reference", "received_at", "national", "patient", "version", "withdrawn", "corrections"
    }  # fmt: skip
    assert (view["version"], view["withdrawn"], view["corrections"]) == (1, False, [])
    assert set(view["national"]) == {"status", "reported_at"}
    assert set(view["patient"]) == {"status", "channels", "sent_at", "link_expires_at"}
    assert view["id"] == result_id
    assert view["pharmacy_reference"] == "FOLLOW-1"
    assert ISO_UTC.match(view["received_at"])
    assert view["national"] == {"status": "pending", "reported_at": None}
    assert view["patient"]["status"] in ("not_requested", "pending", "sent", "failed")
    assert sorted(view["patient"]["channels"]) == ["email", "sms"]


def test_the_follow_answer_holds_no_identity_and_no_test_result(client, pharmacy):
    result_id = _submit(client, pharmacy)

    text = get_result(client, pharmacy, result_id).body.decode()

    for value in PERSONAL_VALUES:
        assert value not in text
    for word in ("negative", "positive", "antigen", 'result"'):
        assert word not in text


def test_another_pharmacy_s_result_gets_a_404_identical_to_an_unknown_id(client, pharmacy, other_pharmacy):
    result_id = _submit(client, pharmacy)

    foreign = get_result(client, other_pharmacy, result_id)
    unknown = get_result(client, other_pharmacy, "Zm9vYmFyYmF6cXV4cXV1eA")
    garbage = get_result(client, other_pharmacy, "not-an-id")

    assert foreign.status_code == unknown.status_code == garbage.status_code == 404
    problem(foreign)
    assert foreign.body == unknown.body == garbage.body
    assert foreign.headers["Content-Type"] == unknown.headers["Content-Type"]
    assert result_id not in foreign.body.decode()


def test_each_get_writes_one_result_read_audit_event(client, pharmacy, other_pharmacy):
    result_id = _submit(client, pharmacy)

    get_result(client, pharmacy, result_id)
    get_result(client, pharmacy, result_id)
    get_result(client, other_pharmacy, result_id)

    events = audit_events("result.read")
    assert len(events) == 3
    mine = [e for e in events if e["actor"] == f"key:{pharmacy.key_id}"]
    assert [(e["outcome"], e["record"]) for e in mine] == [("success", result_id)] * 2
    theirs = [e for e in events if e["actor"] == f"key:{other_pharmacy.key_id}"]
    assert [e["outcome"] for e in theirs] == ["not_found"]


def test_a_follow_signed_with_a_reused_nonce_is_refused(client, pharmacy):
    result_id = _submit(client, pharmacy)
    nonce = "follow-nonce-0123456789"

    first = get_result(client, pharmacy, result_id, nonce=nonce)
    second = get_result(client, pharmacy, result_id, nonce=nonce)

    assert (first.status_code, second.status_code) == (200, 401)
    assert len(audit_events("result.read")) == 1
