"""Authentication of ``POST /v1/results`` over HTTP (contract.md §2): every failure is the same 401, nothing stored."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import bootstrap
from tests.integration.helpers import (
    RESULTS_PATH,
    audit_events,
    count_results,
    distinctive_body,
    encode,
    post_result,
    problem,
    register_pharmacy,
    signed_headers,
    state_items,
)
from tests.signing import new_keypair


def _assert_refused(response: Any, *, audits_before: int) -> dict[str, Any]:
    """401, generic problem+json, nothing stored, exactly one more auth.failure audit event."""
    assert response.status_code == 401, response.body
    document = problem(response)
    assert set(document) == {"type", "title", "status"}, "a 401 says nothing about why"
    assert count_results() == 0
    assert state_items("ref") == []
    assert len(audit_events("auth.failure", "denied")) == audits_before + 1
    return document


def test_a_request_without_signature_headers_is_refused_and_nothing_is_stored(client, pharmacy):
    raw = encode(distinctive_body())
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, raw)
    for name in ("Signature", "Signature-Input"):
        del headers[name]

    response = client.http.post(RESULTS_PATH, body=raw, headers=headers)

    _assert_refused(response, audits_before=0)
    assert audit_events("auth.failure")[0]["reason"] == "result.create:missing_signature"


def test_a_malformed_signature_input_is_refused_and_nothing_is_stored(client, pharmacy):
    raw = encode(distinctive_body())
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, raw)
    headers["Signature-Input"] = 'sig1=("@method" "@path";keyid=' + pharmacy.key_id

    response = client.http.post(RESULTS_PATH, body=raw, headers=headers)

    _assert_refused(response, audits_before=0)


def test_a_signature_made_with_another_key_is_refused_and_nothing_is_stored(client, pharmacy):
    raw = encode(distinctive_body())
    other_private, _ = new_keypair()
    pharmacy.private_key, real_key = other_private, pharmacy.private_key
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, raw)
    pharmacy.private_key = real_key

    response = client.http.post(RESULTS_PATH, body=raw, headers=headers)

    _assert_refused(response, audits_before=0)
    assert audit_events("auth.failure")[0]["reason"] == "result.create:bad_signature"
    assert audit_events("auth.failure")[0]["actor"] == f"key:{pharmacy.key_id}"


def test_an_unknown_key_id_is_refused_and_nothing_is_stored(client, pharmacy):
    pharmacy.key_id = "key_never_registered_anywhere"

    response = post_result(client, pharmacy, distinctive_body())

    _assert_refused(response, audits_before=0)


def test_a_body_tampered_after_signing_is_refused_and_nothing_is_stored(client, pharmacy):
    body = distinctive_body()
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, encode(body))
    body["test"]["result"] = "positive"

    response = client.http.post(RESULTS_PATH, body=encode(body), headers=headers)

    _assert_refused(response, audits_before=0)
    assert audit_events("auth.failure")[0]["reason"] == "result.create:digest_mismatch"


def _freeze_server_clock() -> int:
    """Pin the server's clock to a whole second, so that ±301 s cannot turn into ±300 s while a request runs."""
    frozen = datetime.now(UTC).replace(microsecond=0)
    bootstrap.override(clock=lambda: frozen)
    return int(frozen.timestamp())


@pytest.mark.parametrize(("offset", "reason"), [(-301, "stale"), (301, "future")], ids=["stale", "future"])
def test_a_signature_created_more_than_300_seconds_away_from_server_time_is_refused(client, pharmacy, offset, reason):
    server_now = _freeze_server_clock()

    response = post_result(client, pharmacy, distinctive_body(), created=server_now + offset)

    _assert_refused(response, audits_before=0)
    assert audit_events("auth.failure")[0]["reason"] == f"result.create:{reason}"


def test_a_signature_created_up_to_300_seconds_away_from_server_time_is_accepted(client, pharmacy):
    server_now = _freeze_server_clock()

    late = post_result(client, pharmacy, distinctive_body(), created=server_now - 300)
    early = post_result(client, pharmacy, distinctive_body(), created=server_now + 300)

    assert (late.status_code, early.status_code) == (201, 201), (late.body, early.body)


def test_a_reused_nonce_is_refused_the_second_time_and_stores_nothing_more(client, pharmacy):
    raw = encode(distinctive_body())
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, raw)

    first = client.http.post(RESULTS_PATH, body=raw, headers=headers)
    second = client.http.post(RESULTS_PATH, body=raw, headers=headers)

    assert first.status_code == 201, first.body
    assert second.status_code == 401
    assert set(problem(second)) == {"type", "title", "status"}
    assert count_results() == 1
    assert [e["reason"] for e in audit_events("auth.failure")] == ["result.create:replayed_nonce"]


def test_a_revoked_key_is_refused_at_once_even_though_the_key_cache_is_warm(client, pharmacy):
    warm = post_result(client, pharmacy, distinctive_body())
    assert warm.status_code == 201, warm.body

    bootstrap.registry().revoke_key(pharmacy.key_id)
    response = post_result(client, pharmacy, distinctive_body())

    assert response.status_code == 401
    assert set(problem(response)) == {"type", "title", "status"}
    assert count_results() == 1
    assert [e["reason"] for e in audit_events("auth.failure")] == ["result.create:revoked_key"]


def test_a_suspended_pharmacy_is_refused_at_once_and_works_again_once_resumed(client, pharmacy):
    warm = post_result(client, pharmacy, distinctive_body())
    assert warm.status_code == 201, warm.body

    bootstrap.registry().set_status(pharmacy.pharmacy_id, "suspended")
    refused = post_result(client, pharmacy, distinctive_body())
    assert refused.status_code == 401
    assert count_results() == 1
    assert [e["reason"] for e in audit_events("auth.failure")] == ["result.create:suspended_pharmacy"]

    bootstrap.registry().set_status(pharmacy.pharmacy_id, "active")
    resumed = post_result(client, pharmacy, distinctive_body())
    assert resumed.status_code == 201, resumed.body
    assert count_results() == 2


def test_a_pharmacy_registered_as_suspended_cannot_submit(client):
    suspended = register_pharmacy(status="suspended")

    response = post_result(client, suspended, distinctive_body())

    _assert_refused(response, audits_before=0)


def test_every_401_has_the_same_generic_body_that_echoes_nothing_sent(client, pharmacy):
    body = distinctive_body()
    raw = encode(body)
    nonce = "n" * 20 + "UNIQUE-NONCE-VALUE"
    cases = {
        "missing": {},
        "stale": signed_headers(pharmacy, "POST", RESULTS_PATH, raw, created=int(time.time()) - 1000, nonce=nonce),
        "tampered": signed_headers(pharmacy, "POST", RESULTS_PATH, raw + b" ", nonce=nonce + "2"),
        "short nonce": signed_headers(pharmacy, "POST", RESULTS_PATH, raw, nonce="short"),
    }
    bodies = set()
    for name, headers in cases.items():
        response = client.http.post(RESULTS_PATH, body=raw, headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 401, name
        assert response.headers.get("WWW-Authenticate", "").startswith("Signature")
        text = response.body.decode()
        for sent in (pharmacy.key_id, nonce, body["pharmacy_reference"], body["patient"]["nir"]):
            assert sent not in text, (name, sent)
        if "Signature" in headers:
            assert headers["Signature"].split(":")[1] not in text
        bodies.add(response.body)
    assert len(bodies) == 1, "the 401 body must not depend on the reason"
    assert json.loads(bodies.pop())["status"] == 401
    assert count_results() == 0
    assert len(audit_events("auth.failure", "denied")) == len(cases)


def test_a_get_without_signature_is_refused_like_a_post(client, pharmacy):
    response = client.http.get(f"{RESULTS_PATH}/aaaaaaaaaaaaaaaaaaaaaaaa")

    assert response.status_code == 401
    assert set(problem(response)) == {"type", "title", "status"}
    assert [e["reason"] for e in audit_events("auth.failure")] == ["result.read:missing_signature"]


def test_a_successful_submission_writes_one_result_create_audit_event(client, pharmacy):
    response = post_result(client, pharmacy, distinctive_body())

    assert response.status_code == 201, response.body
    result_id = json.loads(response.body)["id"]
    events = audit_events("result.create")
    assert len(events) == 1
    assert events[0]["outcome"] == "success"
    assert events[0]["record"] == result_id
    assert events[0]["actor"] == f"key:{pharmacy.key_id}"
    assert events[0]["pharmacy_id"] == pharmacy.pharmacy_id
    assert audit_events("auth.failure") == []


def test_a_request_signed_for_another_host_is_refused_when_hosts_are_pinned(client, pharmacy, monkeypatch):
    monkeypatch.setenv("RELAIS_ALLOWED_AUTHORITIES", "api.relais.example")
    from chalicelib import bootstrap

    bootstrap.reset()
    response = post_result(client, pharmacy, distinctive_body())
    assert response.status_code == 401
    assert count_results() == 0
    assert [e["reason"] for e in audit_events("auth.failure")] == ["result.create:wrong_authority"]


def test_a_request_signed_for_the_pinned_host_is_accepted(client, pharmacy, monkeypatch):
    from urllib.parse import urlsplit

    from tests.integration.helpers import BASE_URL

    monkeypatch.setenv("RELAIS_ALLOWED_AUTHORITIES", f"api.relais.example, {urlsplit(BASE_URL).netloc}")
    from chalicelib import bootstrap

    bootstrap.reset()
    assert post_result(client, pharmacy, distinctive_body()).status_code == 201


def test_production_without_allowed_authorities_serves_no_pharmacy_request(client, pharmacy, monkeypatch):
    monkeypatch.setenv("RELAIS_STAGE", "prod")
    monkeypatch.delenv("RELAIS_ALLOWED_AUTHORITIES", raising=False)
    bootstrap.reset()
    response = post_result(client, pharmacy, distinctive_body())
    assert response.status_code == 500
    assert count_results() == 0
    assert audit_events("result.create") == []
