"""The paper slip over the local stack (contract v2 §7): a result submitted with ``notify: ["paper"]`` and no
phone or e-mail, its slip fetched signed over HTTP, read back as a person would (its text, and its QR code decoded
from the rendered page), the link opened in Chromium with the birth date, the result shown; a second slip revokes it.
Nothing is sent, and nothing personal or a token reaches the stack's console output."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.e2e.conftest import LocalStack, resend_on_503, show_result_in_page
from tests.e2e.test_patient_flow import outbox, view
from tests.factories import valid_body
from tests.pdf_reading import read_slip
from tests.signing import sign

pytestmark = pytest.mark.e2e


def _slip(stack: LocalStack, key_id: str, private_key: Any, rid: str) -> requests.Response:
    """The slip, asked again after a 503 (each slip revokes the links before it: the last one asked is the one)."""
    url = f"{stack.api_url}/v1/results/{rid}/slip"

    def send() -> requests.Response:
        signed = sign("POST", url, key_id=key_id, private_key=private_key, body=b"{}")
        return requests.post(url, data=b"{}", headers={**signed, "Accept": "application/pdf"}, timeout=30)

    return resend_on_503(send)


def test_a_paper_patient_gets_a_slip_whose_qr_code_opens_the_result_in_chromium(
    local_stack: LocalStack, browser: Any
) -> None:
    _pharmacy_id, key_id, private_key = local_stack.register_pharmacy("Pharmacie du Papier")
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"E2E-PAPER-{secrets.token_hex(6)}"
    body["notify"] = ["paper"]
    del body["patient"]["phone"], body["patient"]["email"]
    body["patient"].update(family_name="Papetier", given_name="Honorine")
    url = f"{local_stack.api_url}/v1/results"
    raw = json.dumps(body).encode()
    submitted = resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    )
    assert submitted.status_code == 201, submitted.text
    rid = submitted.json()["id"]

    answer = _slip(local_stack, key_id, private_key, rid)

    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/pdf"
    assert answer.headers["Cache-Control"] == "no-store"
    assert len(answer.content) < 50 * 1024
    slip = read_slip(answer.content)
    assert slip.pages == 1
    (link,) = slip.qr_codes
    assert link.startswith(f"{local_stack.api_url}/r#")
    assert link in slip.flat_text
    assert "Pharmacie du Papier" in slip.prose and "English:" in slip.prose
    for value in ("Papetier", "Honorine", "1984-12-03", "03/12/1984", "négatif", "negative"):
        assert value not in slip.text
    token = link.split("#", 1)[1]

    page = browser.new_page()
    try:
        page.goto(link)
        page.wait_for_selector("#birth-date", state="visible")
        show_result_in_page(page, "03/12/1984")
        assert page.text_content("#pharmacy-name") == "Pharmacie du Papier"
        assert page.text_content("#patient-name") == "Honorine Papetier"
    finally:
        page.close()

    second = _slip(local_stack, key_id, private_key, rid)
    assert second.status_code == 200
    (new_link,) = read_slip(second.content).qr_codes
    assert new_link != link
    assert view(local_stack, token, "1984-12-03").status_code == 404  # revoked by the newer slip
    assert view(local_stack, new_link.split("#", 1)[1], "1984-12-03").status_code == 200

    path = f"/v1/results/{rid}"
    followed = resend_on_503(
        lambda: requests.get(
            f"{local_stack.api_url}{path}",
            headers=sign("GET", f"{local_stack.api_url}{path}", key_id=key_id, private_key=private_key),
            timeout=30,
        )
    ).json()
    assert followed["patient"]["status"] == "sent" and followed["patient"]["channels"] == ["paper"]
    assert not [m for m in outbox(local_stack) if "Pharmacie du Papier" in m["body"]]  # nothing was sent

    log = local_stack.log_text()
    for value in (token, new_link.split("#", 1)[1], "Papetier", "Honorine", "1984-12-03"):
        assert value not in log, "a token or personal value reached the stack's console output"
