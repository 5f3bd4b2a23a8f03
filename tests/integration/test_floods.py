"""Floods hit the flooder (issue 11, item 5), over the Chalice test client on moto.

A key past its rate gets 429 + ``Retry-After`` (committed: nonce consumed, one ``rate_limited`` event) while another
pharmacy's key is served in the same second; anonymous failures are counted in one aggregate audit event per minute,
address and reason, which carries the client address and still verifies in the audit chain.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import bootstrap
from tests.integration.helpers import (
    RESULTS_PATH,
    audit_events,
    distinctive_body,
    encode,
    get_result,
    post_result,
    problem,
    register_pharmacy,
    signed_headers,
    state_items,
)
from tests.integration.test_audit_chain import _audit_items, _stream_event

#: What ``chalice.test.Client`` (chalice local's LocalGateway) gives as ``identity.sourceIp``.
TEST_CLIENT_IP = "127.0.0.1"


@pytest.fixture
def one_second(monkeypatch):
    """Every request in the same second (and minute), at most 2 requests per key and second."""
    monkeypatch.setenv("RELAIS_KEY_REQUESTS_PER_SECOND", "2")
    bootstrap.reset()
    moment = datetime.now(UTC).replace(second=30, microsecond=0)
    bootstrap.override(clock=lambda: moment)
    return moment


def _created(moment: datetime) -> dict[str, int]:
    return {"created": int(moment.timestamp())}


def test_a_key_past_its_rate_gets_429_while_another_key_is_served(client, pharmacy, one_second):
    rid = json.loads(post_result(client, pharmacy, distinctive_body(), **_created(one_second)).body)["id"]
    other = register_pharmacy()
    assert get_result(client, pharmacy, rid, **_created(one_second)).status_code == 200  # the 2nd of this second

    refused = get_result(client, pharmacy, rid, **_created(one_second))

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert problem(refused)["status"] == 429
    assert get_result(client, other, rid, **_created(one_second)).status_code == 404  # served: not its result
    (event,) = audit_events("result.read", "rate_limited")
    assert (event["actor"], event["reason"], event["pharmacy_id"], event["client_ip"]) == (
        f"key:{pharmacy.key_id}",
        "key_rate",
        pharmacy.pharmacy_id,
        TEST_CLIENT_IP,
    )
    assert len([n for n in state_items("nonce") if pharmacy.key_id in n["pk"]["S"]]) == 3  # the 429's consumed too


def test_the_next_second_serves_the_key_again(client, pharmacy, one_second):
    rid = json.loads(post_result(client, pharmacy, distinctive_body(), **_created(one_second)).body)["id"]
    assert get_result(client, pharmacy, rid, **_created(one_second)).status_code == 200
    assert get_result(client, pharmacy, rid, **_created(one_second)).status_code == 429
    later = one_second + timedelta(seconds=1)
    bootstrap.override(clock=lambda: later)
    assert get_result(client, pharmacy, rid, **_created(later)).status_code == 200


def _unsigned_post(client, pharmacy):
    raw = encode(distinctive_body())
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, raw)
    del headers["Signature"], headers["Signature-Input"]
    return client.http.post(RESULTS_PATH, body=raw, headers=headers)


def test_anonymous_failures_are_one_aggregate_per_minute_with_the_client_address(client, pharmacy, one_second):
    for _ in range(5):
        assert _unsigned_post(client, pharmacy).status_code == 401
    (aggregate,) = audit_events("auth.failure")
    assert (aggregate["actor"], aggregate["reason"], aggregate["client_ip"], aggregate["failures"]) == (
        "anonymous",
        "result.create:missing_signature",
        TEST_CLIENT_IP,
        "5",
    )
    assert aggregate["at"].startswith(one_second.strftime("%Y-%m-%dT%H:%M:00.000000"))
    next_minute = one_second + timedelta(minutes=1)
    bootstrap.override(clock=lambda: next_minute)
    assert _unsigned_post(client, pharmacy).status_code == 401
    assert sorted(int(e["failures"]) for e in audit_events("auth.failure")) == [1, 5]


def test_an_aggregate_counted_after_it_was_chained_still_verifies(client, pharmacy, one_second):
    from chalicelib.events.audit import chain_audit_events

    assert _unsigned_post(client, pharmacy).status_code == 401
    chain_audit_events(_stream_event(_audit_items()))  # the stream's INSERT: the aggregate with one failure
    assert _unsigned_post(client, pharmacy).status_code == 401
    report = bootstrap.audit_chain().verify(now=one_second + timedelta(hours=1))
    assert report["ok"] is True, report["problems"]
    assert [int(e["failures"]) for e in audit_events("auth.failure")] == [2]
