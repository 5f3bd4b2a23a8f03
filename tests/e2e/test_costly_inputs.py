"""Costly inputs over the local stack (issue 11, items 3 and 4): a body full of errors gets a bounded answer, and a
deeply nested body is a 400 on the pharmacy and the patient endpoints, never a 500."""

from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.conftest import LocalStack, resend_on_503
from tests.e2e.test_patient_flow import signed_post
from tests.factories import valid_body

pytestmark = pytest.mark.e2e


def test_a_body_full_of_errors_gets_at_most_twenty_and_says_there_were_more(local_stack: LocalStack) -> None:
    _, key_id, private_key = local_stack.register_pharmacy("Pharmacie des Erreurs")
    body = valid_body()
    body.update({f"unknown_{i:04d}": i for i in range(400)})
    raw = json.dumps(body).encode()
    assert len(raw) < 16_384
    answer = resend_on_503(lambda: signed_post(local_stack, key_id, private_key, "/v1/results", raw))
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert len(problem["errors"]) == 20 and problem["errors_truncated"] is True
    assert len(answer.content) < 4_000


def test_deeply_nested_json_is_a_400_on_the_pharmacy_and_patient_endpoints(local_stack: LocalStack) -> None:
    _, key_id, private_key = local_stack.register_pharmacy("Pharmacie des Profondeurs")
    nested = ("[" * 5_000 + "]" * 5_000).encode()  # past the parser's recursion limit, under 16 KiB
    pharmacy = resend_on_503(lambda: signed_post(local_stack, key_id, private_key, "/v1/results", nested))
    patient = resend_on_503(  # the patient body's 1 KiB cap comes first: as deep as it allows
        lambda: requests.post(
            f"{local_stack.api_url}/v1/patient/result",
            data=("[" * 512 + "]" * 512).encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    )
    assert (pharmacy.status_code, patient.status_code) == (400, 400), (pharmacy.text, patient.text)
