"""Patient journey over the local stack: submit → SMS and e-mail in ``relais local outbox`` → link → result;
then a resend revokes the first link. Nothing personal in the stack's console output."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import REPO_ROOT, LocalStack, resend_on_503
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e

SECURITY_HEADERS = ("Cache-Control", "Referrer-Policy", "X-Content-Type-Options", "Content-Security-Policy")


def outbox(stack: LocalStack) -> list[dict[str, Any]]:
    """``relais local outbox --json``, run as a developer would, against this stack."""
    relais = Path(sys.executable).with_name("relais")
    command = [str(relais)] if relais.exists() else [sys.executable, "-m", "relais_cli.main"]
    env = {**os.environ, "RELAIS_STATE_DIR": str(stack.state_file.parent)}
    done = subprocess.run(
        [*command, "local", "outbox", "--json"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60, check=True
    )
    messages: list[dict[str, Any]] = json.loads(done.stdout)
    return messages


def wait_for_messages(
    stack: LocalStack, recipients: set[str], count: int, timeout: float = 45.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in outbox(stack) if m["to"] in recipients]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{count} messages not in the outbox within {timeout:.0f} s (found {len(found)})")
        time.sleep(0.5)


def token_of(message: dict[str, Any]) -> str:
    import re

    match = re.search(r"/r#([A-Za-z0-9_-]{22,64})", message["body"])
    assert match, "no link in the message"
    return match.group(1)


def view(stack: LocalStack, token: str, birth_date: str) -> requests.Response:
    """The patient's POST, sent again after a 503 as the page tells the patient to (the local AWS throttles at
    random, as AWS does: a 503 + Retry-After is a correct answer, not the one under test)."""
    return resend_on_503(
        lambda: requests.post(
            f"{stack.api_url}/v1/patient/result", json={"token": token, "birth_date": birth_date}, timeout=30
        ),
        attempts=3,
    )


def signed_post(stack: LocalStack, key_id: str, private_key: Any, path: str, body: bytes) -> requests.Response:
    url = f"{stack.api_url}{path}"
    headers = sign("POST", url, key_id=key_id, private_key=private_key, body=body)
    return requests.post(url, data=body, headers=headers, timeout=30)


def test_a_submitted_result_reaches_the_patient_by_link_and_only_them(local_stack: LocalStack) -> None:
    _pharmacy_id, key_id, private_key = local_stack.register_pharmacy("Pharmacie du Parcours")
    phone = f"+336123{secrets.randbelow(10**5):05d}"
    email = f"patient.{secrets.token_hex(4)}@example.org"
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"E2E-{secrets.token_hex(6)}"
    body["patient"].update(phone=phone, email=email, family_name="Vandermeulen", given_name="Ottilie")
    raw = json.dumps(body).encode()
    submitted = resend_on_503(lambda: signed_post(local_stack, key_id, private_key, "/v1/results", raw))
    assert submitted.status_code == 201, submitted.text
    result_id = submitted.json()["id"]

    sms, mail = sorted(wait_for_messages(local_stack, {phone, email}, 2), key=lambda m: m["channel"])[::-1]
    assert sms["channel"] == "sms" and mail["channel"] == "email"
    token, mail_token = token_of(sms), token_of(mail)
    # One link for both channels, unless a channel's first try failed: its retry then sends a new link of the same
    # generation (e.g. the e-mail throttled after the SMS went out), and both links open the result.
    tokens = [token] if mail_token == token else [token, mail_token]
    assert "Pharmacie du Parcours" in sms["body"]
    for value in ("Vandermeulen", "Ottilie", "1984-12-03", "négatif", "negative"):
        assert value not in sms["body"] and value not in mail["body"]

    page = requests.get(f"{local_stack.api_url}/r", timeout=10)
    assert page.status_code == 200 and all(h in page.headers for h in SECURITY_HEADERS)
    wrong = view(local_stack, token, "1984-12-04")
    assert wrong.status_code == 404 and all(h in wrong.headers for h in SECURITY_HEADERS)
    for opened in tokens:
        right = view(local_stack, opened, "1984-12-03")
        assert right.status_code == 200, right.text
        assert right.json()["patient"] == {"given_name": "Ottilie", "family_name": "Vandermeulen"}
        assert right.json()["test"]["result"] == "negative"

    path = f"/v1/results/{result_id}"
    # "sent" is recorded just after the last message went out (which the outbox shows at once): a few moments.
    deadline, status = time.monotonic() + 15, None
    while status != "sent" and time.monotonic() < deadline:
        followed = resend_on_503(
            lambda: requests.get(
                f"{local_stack.api_url}{path}",
                headers=sign("GET", f"{local_stack.api_url}{path}", key_id=key_id, private_key=private_key),
                timeout=30,
            )
        )
        status = followed.json()["patient"]["status"]
        if status != "sent":
            time.sleep(0.2)
    assert status == "sent"

    resent = resend_on_503(lambda: signed_post(local_stack, key_id, private_key, f"{path}/resend", b"{}"))
    assert resent.status_code == 202, resent.text
    messages = wait_for_messages(local_stack, {phone}, 2)
    new_token = token_of(messages[-1])
    assert new_token not in tokens
    for revoked in tokens:
        assert view(local_stack, revoked, "1984-12-03").status_code == 404
    assert view(local_stack, new_token, "1984-12-03").status_code == 200

    log = local_stack.log_text()
    for value in (*tokens, new_token, phone, email, "Vandermeulen", "Ottilie", "1984-12-03"):
        assert value not in log, "a token or personal value reached the stack's console output"


def test_wrong_birth_dates_sent_together_lock_the_link_after_five_comparisons(local_stack: LocalStack) -> None:
    """Over HTTP: eight wrong dates at once are all refused, the link is counted at five and locked for good.
    (That no sixth comparison is ever made, whatever the interleaving: tests/integration/test_patient_api.py.)"""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    _pharmacy_id, key_id, private_key = local_stack.register_pharmacy("Pharmacie du Verrou")
    phone = f"+336124{secrets.randbelow(10**5):05d}"
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"E2E-LOCK-{secrets.token_hex(6)}"
    body["patient"]["phone"] = phone
    body["notify"] = ["sms"]
    raw = json.dumps(body).encode()
    assert resend_on_503(lambda: signed_post(local_stack, key_id, private_key, "/v1/results", raw)).status_code == 201
    (sms,) = wait_for_messages(local_stack, {phone}, 1)
    token = token_of(sms)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: view(local_stack, token, "1984-12-04").status_code, range(8)))

    assert answers == [404] * 8
    assert view(local_stack, token, "1984-12-03").status_code == 404  # locked: even the right date
    link = local_stack.client("dynamodb").get_item(
        TableName=local_stack.env["RELAIS_STATE_TABLE"],
        Key={"pk": {"S": "link#" + hashlib.sha256(token.encode()).hexdigest()}},
        ConsistentRead=True,
    )["Item"]
    assert link["attempts"] == {"N": "5"}


def test_failures_sent_together_from_one_address_get_the_limit_in_404s_and_the_rest_429(tmp_path: Path) -> None:
    """A stack of its own, with a per-address limit of 4 (chalice local sees every caller as 127.0.0.1):
    8 unknown tokens sent at once are exactly 4 failures answered and 4 refusals, however they interleave."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.e2e.conftest import start_stack

    # Random local AWS faults off: a throttled request answered 503 keeps the failure it reserved (by design: an error
    # never buys a free try), and view()'s retry would count a ninth; the exact split is what is under test here.
    stack = start_stack(tmp_path, {"RELAIS_PATIENT_IP_FAILURES": "4", "RELAIS_LOCAL_FAULTS": "off"})
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: view(stack, f"{i}" * 43, "1984-12-03"), range(8)))
        assert sorted(a.status_code for a in answers) == [404] * 4 + [429] * 4
        assert all(1 <= int(a.headers["Retry-After"]) <= 600 for a in answers if a.status_code == 429)
        assert stack.stop() == 0
        assert stack.refused_calls() == []
    finally:
        stack.kill_everything()
