"""Floods hit the flooder (issue 11, item 5), over the local stack's real HTTP.

A stack of its own with one request per key and second: a key that sends faster gets 429 + ``Retry-After`` (audited)
while another key is served; requests without a signature are counted in aggregate audit events (per minute and
address) that carry the client address, not written one by one. ``chalice local`` reports every caller as
127.0.0.1, so several addresses cannot be tried here (the integration tests and the WAF rules' test do).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.e2e.conftest import LocalStack, resend_on_503, start_stack
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e

#: Enough requests that two of them fall in the same second, whatever the machine's speed.
MAX_REQUESTS = 50


@pytest.fixture(scope="module")
def strict_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("floods"), {"RELAIS_KEY_REQUESTS_PER_SECOND": "1"})
    try:
        yield stack
    finally:
        stack.stop()
        stack.kill_everything()
    assert stack.refused_calls() == []


def _submit(stack: LocalStack, key_id: str, private_key: Any, reference: str) -> requests.Response:
    """The signed submission, sent again after a 503 of the throttled local AWS: a 503 accepted, refused and
    audited nothing (no ``rate_limited`` event either), so what is counted is 201s and the 429 under test, which is
    never sent again."""
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = reference
    body["notify"] = []
    raw = json.dumps(body).encode()
    url = f"{stack.api_url}/v1/results"
    return resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    )


def _audit_since(stack: LocalStack, since: datetime) -> list[dict[str, Any]]:
    return list(stack.relais("audit", "--since", since.isoformat()))


def test_a_key_faster_than_its_rate_gets_429_with_retry_after_and_others_are_served(strict_stack):
    since = datetime.now(UTC) - timedelta(seconds=1)
    _pharmacy, key_id, private_key = strict_stack.register_pharmacy("Pharmacie pressée")
    _other, other_key, other_private = strict_stack.register_pharmacy("Pharmacie patiente")
    answers = []
    for i in range(MAX_REQUESTS):
        answers.append(_submit(strict_stack, key_id, private_key, f"FLOOD-{i}"))
        if answers[-1].status_code == 429:
            break
    refused = answers[-1]
    assert refused.status_code == 429, [a.status_code for a in answers]
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert {a.status_code for a in answers[:-1]} == {201}
    assert _submit(strict_stack, other_key, other_private, "CALM-1").status_code == 201
    limited = [e for e in _audit_since(strict_stack, since) if e["outcome"] == "rate_limited"]
    assert [(e["actor"], e["action"], e["reason"]) for e in limited] == [(f"key:{key_id}", "result.create", "key_rate")]


def test_unsigned_requests_are_counted_per_minute_and_address_not_one_item_each(strict_stack):
    since = datetime.now(UTC).replace(second=0, microsecond=0)  # an aggregate is dated at its minute's start
    url = f"{strict_stack.api_url}/v1/results"
    for _ in range(6):
        # A 503 (the aggregate's write throttled) counted nothing: sent again, each 401 is one failure counted.
        answer = resend_on_503(
            lambda: requests.post(url, data=b"{}", headers={"Content-Type": "application/json"}, timeout=30)
        )
        assert answer.status_code == 401
    failures = [e for e in _audit_since(strict_stack, since) if e["action"] == "auth.failure"]
    assert 1 <= len(failures) <= 2  # one aggregate, two if the minute turned meanwhile
    assert sum(int(e["failures"]) for e in failures) == 6
    assert {(e["actor"], e["reason"], e["client_ip"]) for e in failures} == {
        ("anonymous", "result.create:missing_signature", "127.0.0.1")
    }
