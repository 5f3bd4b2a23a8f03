"""National delivery through the local stack, over real HTTP with real signatures."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.e2e.conftest import resend_on_503
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e


def _submit(stack, key_id, private_key, reference: str) -> str:
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = reference
    body["notify"] = []
    raw = json.dumps(body).encode()
    url = f"{stack.api_url}/v1/results"
    answer = resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _national_status(stack, key_id, private_key, result_id: str) -> dict:
    url = f"{stack.api_url}/v1/results/{result_id}"
    answer = resend_on_503(
        lambda: requests.get(url, headers=sign("GET", url, key_id=key_id, private_key=private_key), timeout=30)
    )
    assert answer.status_code == 200
    return dict(answer.json()["national"])


def _wait_reported(stack, key_id, private_key, result_id: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if _national_status(stack, key_id, private_key, result_id)["status"] == "reported":
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not reported within {within} s")


def test_a_submitted_result_reaches_the_national_system_and_is_reported(local_stack):
    _, key_id, private_key = local_stack.register_pharmacy()
    rid = _submit(local_stack, key_id, private_key, "NAT-E2E-1")
    _wait_reported(local_stack, key_id, private_key, rid, 30)
    received = local_stack.relais("local", "national")
    bundles = [r["bundle"] for r in received if r["bundle"]["identifier"]["value"] == rid]
    assert len(bundles) == 1
    assert bundles[0]["resourceType"] == "Bundle"
    assert _national_status(local_stack, key_id, private_key, rid)["reported_at"] is not None


def test_a_result_accepted_while_the_national_system_is_down_is_reported_within_60s_of_it_coming_back(local_stack):
    _, key_id, private_key = local_stack.register_pharmacy()
    assert local_stack.relais("local", "national", "--down") == {"up": False}
    try:
        rid = _submit(local_stack, key_id, private_key, "NAT-E2E-DOWN")
        time.sleep(8)  # several delivery attempts fail meanwhile
        assert _national_status(local_stack, key_id, private_key, rid)["status"] == "pending"
    finally:
        assert local_stack.relais("local", "national", "--up") == {"up": True}
    _wait_reported(local_stack, key_id, private_key, rid, 60)
