"""Corrections and withdrawals over the local stack (contract v2 §8): submit, wait for ``reported``, correct → the
stand-in national system holds version 2 ``corrected``, the first link answers 404, the new message's link shows the
corrected result in Chromium; withdraw → ``entered-in-error`` received, a message without a link, ``withdrawn``."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.e2e.conftest import LocalStack, resend_on_503, show_result_in_page
from tests.e2e.test_national_flow import _wait_reported
from tests.e2e.test_patient_flow import signed_post, token_of, view, wait_for_messages
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e


def _follow(stack: LocalStack, key_id: str, private_key: Any, rid: str) -> dict[str, Any]:
    url = f"{stack.api_url}/v1/results/{rid}"
    answer = resend_on_503(
        lambda: requests.get(url, headers=sign("GET", url, key_id=key_id, private_key=private_key), timeout=30)
    )
    assert answer.status_code == 200
    return dict(answer.json())


def _submit(stack: LocalStack, key_id: str, private_key: Any, phone: str) -> str:
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"COR-{secrets.token_hex(6)}"
    body["notify"] = ["sms"]
    body["patient"].update(phone=phone)
    del body["patient"]["email"]
    raw = json.dumps(body).encode()
    answer = resend_on_503(lambda: signed_post(stack, key_id, private_key, "/v1/results", raw))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _correct(
    stack: LocalStack, key_id: str, private_key: Any, rid: str, body: dict[str, Any]
) -> tuple[requests.Response, tuple[int, ...]]:
    """The correction's answer (sent again after a 503), and the statuses that say it was made: 202; also 200 once a
    503 was answered, since a 503 may follow the commit (the patient's message neither sent nor queued) and the same
    correction again then answers 200, with the first answer."""
    raw = json.dumps(body).encode()
    answers: list[requests.Response] = []

    def send() -> requests.Response:
        answers.append(signed_post(stack, key_id, private_key, f"/v1/results/{rid}/correction", raw))
        return answers[-1]

    answer = resend_on_503(send)
    return answer, (202, 200) if len(answers) > 1 else (202,)


def _versions_held(stack: LocalStack, rid: str, version: int, within: float = 30.0) -> list[dict[str, Any]]:
    """What ``relais local national`` shows of ``rid`` once the stand-in holds ``version``."""
    deadline = time.monotonic() + within
    while True:
        kept = [r for r in stack.relais("local", "national") if r["bundle"]["identifier"]["value"] == rid]
        if any(r["version"] == version for r in kept):
            return kept
        assert time.monotonic() < deadline, f"version {version} not held within {within} s"
        time.sleep(0.5)


def _observation_status(bundle: dict[str, Any]) -> str:
    [observation] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    return str(observation["status"])


def _show_in_chromium(browser: Any, stack: LocalStack, token: str) -> dict[str, Any]:
    """Open the link in headless Chromium, give the birth date, and read what the page shows."""
    page = browser.new_page()
    try:
        page.goto(f"{stack.api_url}/r#{token}")
        page.wait_for_selector("#birth-date", state="visible")
        show_result_in_page(page, "03/12/1984")
        return {
            "result": page.text_content("#result-value"),
            "corrected": page.is_visible("#corrected-line"),
            "corrected_at": page.text_content("#corrected-at"),
        }
    finally:
        page.close()


def test_a_correction_reaches_the_national_system_and_the_patient(local_stack: LocalStack, browser: Any) -> None:
    _, key_id, private_key = local_stack.register_pharmacy("Pharmacie des Corrections")
    phone = f"+336124{secrets.randbelow(10**5):05d}"
    rid = _submit(local_stack, key_id, private_key, phone)
    _wait_reported(local_stack, key_id, private_key, rid, 30)
    [first] = wait_for_messages(local_stack, {phone}, 1)
    old_token = token_of(first)

    answer, made = _correct(
        local_stack,
        key_id,
        private_key,
        rid,
        {"correction_reference": "C-1", "reason": "wrong_result", "result": "positive"},
    )
    assert answer.status_code in made and answer.json() == {"id": rid, "version": 2}, answer.text

    kept = _versions_held(local_stack, rid, 2)
    latest = next(r for r in kept if r["version"] == 2)
    assert latest["bundle"]["meta"]["versionId"] == "2" and _observation_status(latest["bundle"]) == "corrected"
    assert view(local_stack, old_token, "1984-12-03").status_code == 404
    messages = wait_for_messages(local_stack, {phone}, 2)
    assert "corrigé" in messages[-1]["body"]
    shown = _show_in_chromium(browser, local_stack, token_of(messages[-1]))
    assert shown["result"] == "positif" and shown["corrected"] and shown["corrected_at"]
    followed = _follow(local_stack, key_id, private_key, rid)
    assert (followed["version"], followed["withdrawn"]) == (2, False)


def test_a_withdrawal_reaches_the_national_system_and_tells_the_patient_without_a_link(local_stack: LocalStack) -> None:
    _, key_id, private_key = local_stack.register_pharmacy("Pharmacie des Retraits")
    phone = f"+336125{secrets.randbelow(10**5):05d}"
    rid = _submit(local_stack, key_id, private_key, phone)
    _wait_reported(local_stack, key_id, private_key, rid, 30)
    [first] = wait_for_messages(local_stack, {phone}, 1)

    answer, made = _correct(
        local_stack, key_id, private_key, rid, {"correction_reference": "W-1", "reason": "entered_in_error"}
    )
    assert answer.status_code in made and answer.json()["version"] == 2, answer.text

    kept = _versions_held(local_stack, rid, 2)
    assert _observation_status(next(r for r in kept if r["version"] == 2)["bundle"]) == "entered-in-error"
    messages = wait_for_messages(local_stack, {phone}, 2)
    assert "/r#" not in messages[-1]["body"] and "retiré" in messages[-1]["body"]
    assert view(local_stack, token_of(first), "1984-12-03").status_code == 404
    followed = _follow(local_stack, key_id, private_key, rid)
    assert followed["withdrawn"] is True
    assert followed["corrections"][0]["reason"] == "entered_in_error"
