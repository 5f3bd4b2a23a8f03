"""``POST /v1/patient/result`` and the result page's routes, on moto through the Chalice test client."""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.helpers import BIRTH_DATE, FAMILY_NAME, GIVEN_NAME, audit_events, problem, scan
from tests.integration.patient_support import (
    PATIENT_PATH,
    Gate,
    assert_no_leak,
    notified_token,
    patient_env,
    run_threads,
    stored_strings,
    view,
)

__all__ = ["patient_env"]

WRONG_DATE = "1984-12-04"
UNKNOWN_TOKEN = "A" * 43
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'none'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)


def assert_patient_headers(response, *, html: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    if html:
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


def link_items() -> list[dict[str, Any]]:
    return [i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("link#")]


# -- success ----------------------------------------------------------------------------------------------------
def test_the_right_birth_date_shows_the_result_with_the_security_headers(patient_env):
    client = patient_env["client"]
    rid, token = notified_token(patient_env["pharmacy"])
    response = view(client, token)
    assert response.status_code == 200
    assert_patient_headers(response, html=True)
    body = json.loads(response.body)
    assert body["patient"] == {"given_name": GIVEN_NAME, "family_name": FAMILY_NAME}
    assert body["pharmacy"] == {"name": "Pharmacie des Tests"}
    assert body["test"]["kind"] == "antigen" and body["test"]["result"] == "negative"
    assert datetime.fromisoformat(body["test"]["sampled_at"]).tzinfo is not None
    assert body["link_expires_at"].endswith("Z")
    (event,) = audit_events("patient.view", "success")
    assert event["record"] == rid and event["actor"].startswith("link:")
    assert token not in event["actor"]


def test_a_link_opens_as_often_as_needed_while_valid(patient_env):
    _, token = notified_token(patient_env["pharmacy"])
    for _ in range(3):
        assert view(patient_env["client"], token).status_code == 200


# -- one indistinguishable 404 ----------------------------------------------------------------------------------
def test_unknown_expired_locked_and_wrong_date_all_answer_the_same_404(patient_env):
    from chalicelib import bootstrap

    client = patient_env["client"]
    _, token = notified_token(patient_env["pharmacy"])
    _, expired = notified_token(patient_env["pharmacy"])
    _, locked = notified_token(patient_env["pharmacy"])
    for _ in range(5):
        view(client, locked, WRONG_DATE)

    answers = [view(client, UNKNOWN_TOKEN), view(client, token, WRONG_DATE), view(client, locked)]
    bootstrap.override(clock=lambda: datetime.now(UTC) + timedelta(hours=72, seconds=1))
    answers.append(view(client, expired))
    bodies = {r.body for r in answers}
    assert len(bodies) == 1
    assert {r.status_code for r in answers} == {404}
    for r in answers:
        problem(r)
        assert_patient_headers(r, html=True)
    header_names = {frozenset(k for k in r.headers if k.lower() != "x-request-id") for r in answers}
    assert len(header_names) == 1
    reasons = sorted(e["reason"] for e in audit_events("patient.view") if e["outcome"] in ("denied", "locked"))
    assert "unknown" in reasons and "expired" in reasons and "wrong_birth_date" in reasons and "locked" in reasons


#: Strings that no link token can be (contract §4: still the one 404 of an unknown token, never a 400).
MALFORMED_TOKENS = (
    "unknown-token",
    "short",
    "",
    "A" * 21,
    "A" * 65,
    UNKNOWN_TOKEN + "!",
    "A" * 30 + "+/=",
    "A" * 42 + "\n",
    "é" * 30,
    "Claire Martin 1984-12-03",
)
AUDITED = ("actor", "action", "outcome", "reason", "record", "pharmacy_id")


def test_a_string_that_cannot_be_a_token_answers_the_unknown_token_404_and_counts_as_a_failure(
    patient_env, monkeypatch, capfd
):
    from dataclasses import replace

    from chalicelib import bootstrap
    from chalicelib.services.patient import DUMMY_TOKEN_HASH

    limit = len(MALFORMED_TOKENS) + 1
    bootstrap.override(settings=replace(bootstrap.settings(), patient_ip_failures=limit))
    service = bootstrap.patient_service()
    client = patient_env["client"]
    looked_up: list[str] = []
    find_link = service.links.find_link

    def spied_find_link(digest):
        looked_up.append(digest)
        return find_link(digest)

    monkeypatch.setattr(service.links, "find_link", spied_find_link)
    unknown = view(client, UNKNOWN_TOKEN)
    assert unknown.status_code == 404
    (unknown_event,) = audit_events("patient.view")
    for token in MALFORMED_TOKENS:
        response = view(client, token)
        assert response.status_code == 404, token
        assert response.body == unknown.body, token  # the same problem document, byte for byte
        assert set(response.headers) == set(unknown.headers), token
        assert_patient_headers(response, html=True)
    assert looked_up == [hashlib.sha256(UNKNOWN_TOKEN.encode()).hexdigest()] + [DUMMY_TOKEN_HASH] * len(
        MALFORMED_TOKENS
    )  # the same lookup as an unknown token, made without hashing the string

    events = audit_events("patient.view")
    assert len(events) == 1 + len(MALFORMED_TOKENS)  # one event each, like an unknown token's
    assert all({k: e.get(k) for k in AUDITED} == {k: unknown_event.get(k) for k in AUDITED} for e in events)
    (counter,) = [i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("ipfail#")]
    assert int(counter["n"]["N"]) == limit  # each one a failure of this address
    assert view(client, "still-not-a-token").status_code == 429  # the limit reached by malformed tokens alone

    out = capfd.readouterr()
    logged, stored = out.out + out.err, stored_strings()
    for token in (t for t in MALFORMED_TOKENS if len(t) >= 5):
        assert token not in logged and token not in stored
    for token in MALFORMED_TOKENS:
        hashed = hashlib.sha256(token.encode()).hexdigest()
        assert hashed not in logged and hashed not in stored


def test_five_wrong_birth_dates_lock_the_link_for_good(patient_env):
    client = patient_env["client"]
    _, token = notified_token(patient_env["pharmacy"])
    for _ in range(4):
        assert view(client, token, WRONG_DATE).status_code == 404
    assert view(client, token).status_code == 200  # four wrong: still open
    assert view(client, token, WRONG_DATE).status_code == 404  # the fifth locks it
    assert view(client, token).status_code == 404  # the sixth attempt, right date: refused
    assert audit_events("patient.view", "locked")
    (item,) = link_items()
    assert int(item["attempts"]["N"]) == 5


def test_a_right_date_sent_with_wrong_ones_is_not_compared_past_the_lock(patient_env, monkeypatch):
    """24 wrong dates and the right one, all reading the link before any is compared: five comparisons, ever."""
    from chalicelib import bootstrap
    from chalicelib.errors import NotFoundError

    _, token = notified_token(patient_env["pharmacy"])
    service = bootstrap.patient_service()
    wrong = [f"wrong-{i}" for i in range(24)]
    everyone_read_the_link = Gate(len(wrong) + 1)
    wrong_ones_done = threading.Event()
    find_link, decrypt = service.links.find_link, service.decrypt
    decrypted: list[str] = []

    def find_then_pause(digest):
        found = find_link(digest)  # every request sees the link with no attempt counted
        everyone_read_the_link.wait()
        if threading.current_thread().name == "right":
            assert wrong_ones_done.wait(60)  # the right date comes last: no comparison is left for it
        return found

    def counted_decrypt(record):
        decrypted.append(threading.current_thread().name)
        return decrypt(record)

    monkeypatch.setattr(service.links, "find_link", find_then_pause)
    monkeypatch.setattr(service, "decrypt", counted_decrypt)

    remaining = len(wrong)
    counting = threading.Lock()

    def wrong_attempt(address: str) -> Callable[[], object]:
        def go() -> object:
            nonlocal remaining
            try:
                return service.view(token, WRONG_DATE, client_ip=address)
            finally:
                with counting:
                    remaining -= 1
                    if remaining == 0:
                        wrong_ones_done.set()

        return go

    racers = {name: wrong_attempt(f"10.0.0.{i}") for i, name in enumerate(wrong)}
    racers["right"] = lambda: service.view(token, BIRTH_DATE, client_ip="10.0.1.1")
    outcomes = run_threads(racers)

    assert all(isinstance(outcomes[name], NotFoundError) for name in wrong)
    assert isinstance(outcomes["right"], NotFoundError)
    assert len(decrypted) == 5 and "right" not in decrypted
    (item,) = link_items()
    assert int(item["attempts"]["N"]) == 5
    reasons = [e["reason"] for e in audit_events("patient.view") if e["outcome"] in ("denied", "locked")]
    assert reasons.count("wrong_birth_date") == 4 and reasons.count("locked") == 21


def test_the_right_date_gives_its_reservation_back(patient_env):
    client = patient_env["client"]
    _, token = notified_token(patient_env["pharmacy"])
    for _ in range(10):
        assert view(client, token).status_code == 200
    (item,) = link_items()
    assert int(item["attempts"]["N"]) == 0


def test_expiry_is_checked_in_code_even_while_the_item_still_exists(patient_env):
    from chalicelib import bootstrap

    _, token = notified_token(patient_env["pharmacy"])
    bootstrap.override(clock=lambda: datetime.now(UTC) + timedelta(hours=71, minutes=59))
    assert view(patient_env["client"], token).status_code == 200
    bootstrap.override(clock=lambda: datetime.now(UTC) + timedelta(hours=72, minutes=1))
    assert view(patient_env["client"], token).status_code == 404
    assert len(link_items()) == 1


# -- per-client limit -------------------------------------------------------------------------------------------
def test_too_many_failures_from_one_address_answer_429_with_retry_after(patient_env):
    from dataclasses import replace

    from chalicelib import bootstrap

    bootstrap.override(settings=replace(bootstrap.settings(), patient_ip_failures=3))
    client = patient_env["client"]
    _, token = notified_token(patient_env["pharmacy"])
    for _ in range(4):
        assert view(client, token).status_code == 200  # successes are not failures
    for _ in range(3):
        assert view(client, UNKNOWN_TOKEN).status_code == 404
    refused = view(client, token)  # even a right answer waits
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 600
    problem(refused)
    assert_patient_headers(refused)
    # another address is not affected
    assert bootstrap.patient_service().view(token, BIRTH_DATE, client_ip="192.0.2.7")["test"]["result"]
    keys = [i["pk"]["S"] for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("ipfail#")]
    assert keys and all("127.0.0.1" not in k for k in keys)


def test_failures_in_flight_together_never_pass_the_per_address_limit(patient_env, monkeypatch):
    """24 unknown tokens from one address, none answered before all passed the limit check: 20 are 404, 4 are 429."""
    from chalicelib import bootstrap
    from chalicelib.errors import NotFoundError, RateLimitedError

    service = bootstrap.patient_service()
    names = [f"guess-{i}" for i in range(24)]
    gate = Gate(len(names))
    reached: set[str] = set()
    find_link = service.links.find_link

    def find_then_pause(digest):
        found = find_link(digest)
        reached.add(threading.current_thread().name)
        gate.wait()  # no request is answered before every request has been let in or refused
        return found

    monkeypatch.setattr(service.links, "find_link", find_then_pause)

    def guess() -> object:
        try:
            return service.view(UNKNOWN_TOKEN, BIRTH_DATE, client_ip="203.0.113.9")
        finally:
            if threading.current_thread().name not in reached:
                gate.passed()

    outcomes = run_threads(dict.fromkeys(names, guess))
    kinds = [type(outcome) for outcome in outcomes.values()]
    assert kinds.count(NotFoundError) == 20 and kinds.count(RateLimitedError) == 4
    assert len(audit_events("patient.view", "rate_limited")) == 4
    (counter,) = [i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("ipfail#")]
    assert int(counter["n"]["N"]) == 20


# -- malformed requests -----------------------------------------------------------------------------------------
MALFORMED: list[tuple[Any, set[str]]] = [
    ({"birth_date": BIRTH_DATE}, {"token"}),
    ({"token": None, "birth_date": BIRTH_DATE}, {"token"}),
    ({"token": ["short"], "birth_date": BIRTH_DATE}, {"token"}),
    ({"token": UNKNOWN_TOKEN, "birth_date": "03/12/1984"}, {"birth_date"}),
    ({"token": UNKNOWN_TOKEN, "birth_date": "1984-02-30"}, {"birth_date"}),
    ({"token": "short", "birth_date": "1984-02-30"}, {"birth_date"}),  # a string token is no error of its own
    ({"token": UNKNOWN_TOKEN, "birth_date": BIRTH_DATE, "nir": "284127512345687"}, {"nir"}),
    ({"token": 12345678901234567890123, "birth_date": 19841203}, {"token", "birth_date"}),
    ({}, {"token", "birth_date"}),
    ([], {"body"}),
]


def test_malformed_bodies_answer_400_naming_fields_never_values(patient_env):
    for body, fields in MALFORMED:  # one moto stack for all cases: provisioning is the slow part
        raw = json.dumps(body)
        response = patient_env["client"].http.post(PATIENT_PATH, body=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
        document = problem(response)
        assert {e["field"] for e in document["errors"]} == fields
        for value in ("short", "03/12/1984", "1984-02-30", "284127512345687", UNKNOWN_TOKEN, "19841203"):
            assert value not in response.body.decode()
        assert_patient_headers(response)
    assert audit_events("patient.view") == []  # malformed requests reach no link


def test_an_unknown_key_that_could_be_personal_data_is_not_echoed(patient_env):
    """Contract §2, §5: an error body never echoes a submitted value, not even one sent as a key."""
    key = f"{GIVEN_NAME} {FAMILY_NAME} {BIRTH_DATE}"
    for token in (UNKNOWN_TOKEN, "not-a-token"):
        body = {"token": token, "birth_date": BIRTH_DATE, key: True, "birthdate": True}
        response = view_raw(patient_env["client"], body)
        assert response.status_code == 400
        document = problem(response)
        assert [(e["field"], e["message"]) for e in document["errors"]] == [
            ("body", "contains an unknown field"),  # the enclosing object, never the key
            ("birthdate", "unknown field"),  # a key that looks like an identifier is named
        ]
        text = response.body.decode()
        for value in (key, GIVEN_NAME, FAMILY_NAME, BIRTH_DATE, "not-a-token"):
            assert value not in text
    assert audit_events("patient.view") == []


def view_raw(client, body: Any) -> Any:
    return client.http.post(PATIENT_PATH, body=json.dumps(body), headers={"Content-Type": "application/json"})


def test_wrong_media_type_size_and_method(patient_env):
    client = patient_env["client"]
    r = client.http.post(PATIENT_PATH, body=b"token=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert_patient_headers(r, html=True)
    r = client.http.post(PATIENT_PATH, body=b"{" + b" " * 2000 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert_patient_headers(r)
    r = client.http.post(PATIENT_PATH, body=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    deep = b"[" * 1020  # nested past the parser's recursion limit (a RecursionError), within the size limit
    r = client.http.post(PATIENT_PATH, body=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.http.get(PATIENT_PATH)
    assert r.status_code == 405
    assert_patient_headers(r, html=True)


# -- audit ------------------------------------------------------------------------------------------------------
def test_no_result_is_shown_when_its_audit_event_cannot_be_written(patient_env, monkeypatch):
    from chalicelib import bootstrap
    from chalicelib.errors import DependencyUnavailableError

    _, token = notified_token(patient_env["pharmacy"])

    def broken(event):
        raise DependencyUnavailableError("dynamodb")

    monkeypatch.setattr(bootstrap.store(), "record_audit", broken)
    response = view(patient_env["client"], token)
    assert response.status_code == 503
    assert GIVEN_NAME not in response.body.decode()
    assert "Retry-After" in response.headers


# -- the page ---------------------------------------------------------------------------------------------------
def test_the_page_and_its_assets_are_served_with_the_security_headers(patient_env):
    for path, media_type in (("/r", "text/html"), ("/r/result.css", "text/css"), ("/r/result.js", "text/javascript")):
        response = patient_env["client"].http.get(path)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith(media_type)
        assert_patient_headers(response, html=True)
        assert len(response.body) > 100


def test_the_pharmacy_api_does_not_get_the_patient_page_headers(patient_env):
    response = patient_env["client"].http.get("/v1/health")
    assert "Content-Security-Policy" not in response.headers


# -- leaks and timing -------------------------------------------------------------------------------------------
def test_no_token_or_personal_value_in_logs_keys_or_audit(patient_env, capfd):
    client = patient_env["client"]
    _, token = notified_token(patient_env["pharmacy"])
    view(client, token, WRONG_DATE)
    view(client, token)
    view(client, UNKNOWN_TOKEN)
    out = capfd.readouterr()
    assert_no_leak(out.out + out.err, token, UNKNOWN_TOKEN)
    stored = stored_strings()
    assert_no_leak(stored, token, UNKNOWN_TOKEN)
    assert hashlib.sha256(token.encode()).hexdigest() in stored  # only its hash


def test_unknown_and_known_tokens_take_similar_time(patient_env):
    from chalicelib import bootstrap
    from chalicelib.errors import NotFoundError

    _, token = notified_token(patient_env["pharmacy"])
    service = bootstrap.patient_service()

    def timed(tk: str, i: int) -> float:
        started = time.perf_counter()
        with pytest.raises(NotFoundError):
            service.view(tk, WRONG_DATE if tk == token else BIRTH_DATE, client_ip=f"198.51.100.{i}")
        return time.perf_counter() - started

    service.lock_attempts = 1000  # measure wrong dates without locking the link
    samples: dict[str, list[float]] = {"unknown": [], "wrong": []}
    for i in range(21):  # interleaved, so that a slow moment hits both alike
        samples["unknown"].append(timed(UNKNOWN_TOKEN, i))
        samples["wrong"].append(timed(token, 100 + i))
    unknown, wrong = statistics.median(samples["unknown"]), statistics.median(samples["wrong"])
    print(f"median unknown {unknown * 1000:.1f} ms, wrong birth date {wrong * 1000:.1f} ms")
    assert 0.5 < unknown / wrong < 2, (unknown, wrong)
