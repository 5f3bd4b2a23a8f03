"""Body checks of ``POST /v1/results`` over HTTP: one test per rule family (every rule: tests/unit/test_validation.py).

Each request is correctly signed, so what is refused is the body itself; nothing may be stored.
"""

from __future__ import annotations

import json

from tests.integration.helpers import (
    NIR,
    RESULTS_PATH,
    audit_events,
    count_results,
    distinctive_body,
    post_result,
    problem,
    signed_headers,
    state_items,
)

WRONG_KEY_NIR = NIR[:-2] + "78"  # the contract's example number: right shape, wrong control key


def _assert_nothing_stored() -> None:
    assert count_results() == 0
    assert state_items("ref") == []
    assert state_items("quota") == []


def test_a_bad_nir_gets_400_with_a_field_error_that_does_not_echo_the_nir(client, pharmacy):
    body = distinctive_body()
    body["patient"]["nir"] = WRONG_KEY_NIR

    response = post_result(client, pharmacy, body)

    assert response.status_code == 400
    document = problem(response)
    assert {"field": "patient.nir", "message": document["errors"][0]["message"]} in document["errors"]
    assert all(set(error) == {"field", "message"} for error in document["errors"])
    assert WRONG_KEY_NIR not in response.body.decode()
    assert WRONG_KEY_NIR[:13] not in response.body.decode()
    _assert_nothing_stored()


def test_a_400_lists_every_invalid_field_at_once(client, pharmacy):
    body = distinctive_body()
    body["patient"]["nir"] = WRONG_KEY_NIR
    body["performer_rpps"] = "10003879624"  # Luhn key wrong
    body["test"]["result"] = "maybe"

    response = post_result(client, pharmacy, body)

    assert response.status_code == 400
    fields = {error["field"] for error in problem(response)["errors"]}
    assert {"patient.nir", "performer_rpps", "test.result"} <= fields
    for value in ("10003879624", "maybe", WRONG_KEY_NIR):
        assert value not in response.body.decode()
    _assert_nothing_stored()


def test_an_unknown_field_is_refused_with_400(client, pharmacy):
    body = distinctive_body()
    body["patient"]["blood_group"] = "O+"

    response = post_result(client, pharmacy, body)

    assert response.status_code == 400
    assert {"field": "patient.blood_group", "message": "unknown field"} in problem(response)["errors"]
    assert "O+" not in response.body.decode()
    _assert_nothing_stored()


def test_a_field_naming_another_pharmacy_is_refused_as_unknown(client, pharmacy, other_pharmacy):
    body = distinctive_body()
    body["pharmacy_id"] = other_pharmacy.pharmacy_id

    response = post_result(client, pharmacy, body)

    assert response.status_code == 400
    assert other_pharmacy.pharmacy_id not in response.body.decode()
    _assert_nothing_stored()


def test_a_body_that_is_not_json_gets_400(client, pharmacy):
    response = post_result(client, pharmacy, b'{"pharmacy_reference": "A-1", "patient": {"nir": "2841275')

    assert response.status_code == 400
    document = problem(response)
    assert [error["field"] for error in document["errors"]] == ["body"]
    assert "2841275" not in response.body.decode()
    _assert_nothing_stored()


def test_a_body_nested_past_the_parser_s_limit_gets_400_not_500(client, pharmacy):
    response = post_result(client, pharmacy, b"[" * 5000 + b"]" * 5000)

    assert response.status_code == 400
    assert [error["field"] for error in problem(response)["errors"]] == ["body"]
    _assert_nothing_stored()


def test_a_json_body_that_is_not_an_object_gets_400(client, pharmacy):
    response = post_result(client, pharmacy, b'["A-2026-000123"]')

    assert response.status_code == 400
    assert problem(response)["errors"][0]["field"] == "body"
    _assert_nothing_stored()


def test_a_signed_body_over_16_kib_gets_413(client, pharmacy):
    body = distinctive_body()
    body["patient"]["family_name"] = "X" * (16 * 1024)

    response = post_result(client, pharmacy, body)

    assert response.status_code == 413
    assert "XXXX" not in response.body.decode()
    problem(response)
    _assert_nothing_stored()


def test_a_body_of_exactly_16_kib_is_not_refused_for_its_size(client, pharmacy):
    raw = json.dumps(distinctive_body()).encode()
    raw = raw[:-1] + b" " * (16 * 1024 - len(raw)) + b"}"
    assert len(raw) == 16 * 1024

    response = post_result(client, pharmacy, raw)

    assert response.status_code == 201, response.body


def test_a_16_kib_body_breaking_thousands_of_rules_gets_20_errors_and_the_truncated_flag(client, pharmacy):
    body = distinctive_body()
    size = len(json.dumps(body, separators=(",", ":")))
    body.update({f"x{i}": 0 for i in range((16 * 1024 - size) // 10)})  # ',"x1234":0' is at most 10 bytes
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert 14 * 1024 < len(raw) <= 16 * 1024

    response = post_result(client, pharmacy, raw)

    assert response.status_code == 400
    document = problem(response)
    assert len(document["errors"]) == 20 and document["errors_truncated"] is True
    assert len(response.body) < 2048
    _assert_nothing_stored()


def test_a_400_with_few_errors_has_no_truncated_flag(client, pharmacy):
    body = distinctive_body()
    body["test"]["result"] = "maybe"

    response = post_result(client, pharmacy, body)

    assert "errors_truncated" not in problem(response)


def test_an_sms_abroad_is_refused_unless_the_stage_adds_the_region(client, pharmacy):
    from dataclasses import replace

    from chalicelib import bootstrap

    body = distinctive_body()
    body["patient"]["phone"] = "+447400123456"
    refused = post_result(client, pharmacy, body)
    assert refused.status_code == 400
    assert problem(refused)["errors"] == [
        {
            "field": "patient.phone",
            "message": "must be a mobile number of France (metropolitan or overseas) when notify contains sms",
        }
    ]
    _assert_nothing_stored()

    bootstrap.override(settings=replace(bootstrap.settings(), sms_extra_regions="GB"))
    accepted = post_result(client, pharmacy, body)
    assert accepted.status_code == 201, accepted.body


def test_a_signed_text_plain_body_gets_415(client, pharmacy):
    response = post_result(client, pharmacy, distinctive_body(), content_type="text/plain")

    assert response.status_code == 415
    problem(response)
    _assert_nothing_stored()


def test_a_json_content_type_with_a_charset_is_accepted(client, pharmacy):
    response = post_result(client, pharmacy, distinctive_body(), content_type="application/json; charset=utf-8")

    assert response.status_code == 201, response.body


def test_put_on_results_gets_405_as_problem_json(client, pharmacy):
    raw = json.dumps(distinctive_body()).encode()
    headers = signed_headers(pharmacy, "PUT", RESULTS_PATH, raw)

    response = client.http.put(RESULTS_PATH, body=raw, headers=headers)

    assert response.status_code == 405
    problem(response)
    assert "POST" in response.headers.get("Allow", "")
    _assert_nothing_stored()


def test_a_400_stores_nothing_but_still_spends_the_nonce_and_is_audited(client, pharmacy):
    body = distinctive_body()
    body["test"]["kind"] = "saliva"

    response = post_result(client, pharmacy, body)

    assert response.status_code == 400
    _assert_nothing_stored()
    assert len(state_items("nonce")) == 1
    events = audit_events("result.create")
    assert [(e["outcome"], e.get("record")) for e in events] == [("rejected", None)]
