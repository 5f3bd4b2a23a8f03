"""National delivery against moto (SQS, DynamoDB, KMS) and the real stand-in receiver over HTTP."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib import bootstrap
from chalicelib.domain.records import Pharmacy, PharmacyKey, ResultRecord, new_id
from chalicelib.errors import DependencyUnavailableError
from infra.local import local_iam
from infra.local.national import serve
from tests.factories import valid_body
from tests.signing import new_keypair, sign, to_signed_request

TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def national(aws) -> Iterator[object]:
    server, _thread = serve(0, TOKEN)
    port = server.server_address[1]
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/relais/test/national-token", Value=TOKEN, Type="SecureString")
    os.environ.update(
        RELAIS_NATIONAL_URL=f"http://127.0.0.1:{port}/fhir",
        RELAIS_NATIONAL_TOKEN_PARAMETER="/relais/test/national-token",
        RELAIS_NATIONAL_TIMEOUT_SECONDS="1",
        RELAIS_NATIONAL_BACKOFF_BASE_SECONDS="1",
        RELAIS_NATIONAL_BACKOFF_CAP_SECONDS="1",
    )
    bootstrap.reset()
    try:
        yield server
    finally:
        server.shutdown()
        for name in (
            "RELAIS_NATIONAL_URL",
            "RELAIS_NATIONAL_TOKEN_PARAMETER",
            "RELAIS_NATIONAL_TIMEOUT_SECONDS",
            "RELAIS_NATIONAL_BACKOFF_BASE_SECONDS",
            "RELAIS_NATIONAL_BACKOFF_CAP_SECONDS",
            "RELAIS_NATIONAL_MAX_ATTEMPTS",
        ):
            os.environ.pop(name, None)


def _pharmacy() -> tuple[str, str, object]:
    private_key, pem = new_keypair()
    pharmacy_id, key_id = new_id(16), new_id(16)
    bootstrap.registry().add_pharmacy(
        Pharmacy(pharmacy_id, "750000001", "Pharmacie du Test", "active", daily_quota=5000),
        PharmacyKey(key_id, pharmacy_id, pem, datetime.now(UTC)),
    )
    return pharmacy_id, key_id, private_key


def _submit(key_id: str, private_key: object, reference: str) -> str:
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = reference
    raw = json.dumps(body).encode()
    url = "https://api.relais.example/v1/results"
    headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
    with local_iam.running_as("app.app"):  # the route's doing: checked against the API's policy
        accepted = bootstrap.results_service().submit(to_signed_request("POST", url, headers, raw))
    assert accepted.created
    return accepted.result_id


def _seed_results(count: int) -> list[str]:
    """Many stored results, encrypted exactly as ingest stores them (without ingest's per-request cost)."""
    from chalicelib.adapters.tables import ResultItem, pending_key
    from chalicelib.domain.validation import parse_submission

    pharmacy_id, _key_id, _ = _pharmacy()
    envelope = bootstrap.envelope()
    now = datetime.now(UTC)
    submission = parse_submission(valid_body(now), now=now)
    ids = []
    for i in range(count):
        rid = new_id()
        payload = json.dumps({"submission": submission.to_record(), "body_sha256": "x"}).encode()
        ResultItem(
            id=rid,
            pharmacy_id=pharmacy_id,
            reference_digest=f"S-{i}",
            key_id="k" * 16,
            received_at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            expires_at=int(now.timestamp()) + 3600,
            payload=envelope.encrypt(payload, {"purpose": "result", "result_id": rid, "pharmacy_id": pharmacy_id}),
            pending_national=pending_key(rid),
        ).save()
        ids.append(rid)
    return ids


def _stored(result_id: str) -> ResultRecord:
    record = bootstrap.store().get_result(result_id)
    assert record is not None, "the result is stored"
    return record


def _lambda_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The SQS event Lambda hands the national handler for these received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:123456789012:q",
                "awsRegion": "eu-west-3",
            }
            for m in messages
        ]
    }


def _drain(deadline_s: float) -> None:
    """Drive the national queue like Lambda: receive, call the handler, delete what succeeded."""
    from chalicelib.events.national import handle_national_batch

    sqs = boto3.client("sqs")
    url = os.environ["RELAIS_NATIONAL_QUEUE_URL"]
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            if attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
                return
            time.sleep(0.2)
            continue
        failed = {f["itemIdentifier"] for f in handle_national_batch(_lambda_event(messages))["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    raise AssertionError("the national queue did not drain in time")


def test_a_submitted_result_reaches_the_receiver_as_fhir_and_becomes_reported(national):
    from chalicelib.events.dispatch import dispatch_results

    _, key_id, private_key = _pharmacy()
    rid = _submit(key_id, private_key, "E2E-1")
    dispatch_results({"Records": [{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": rid}}}}]})
    _drain(20)
    received = national.state.records
    assert [r["bundle"]["identifier"]["value"] for r in received] == [rid]
    record = _stored(rid)
    assert record.national_status == "reported" and record.national_reported_at is not None
    events = [(e["action"], e["outcome"]) for e in bootstrap.store().audit_events(rid)]
    assert ("result.report", "success") in events


def test_a_permanent_refusal_dead_letters_one_result_without_holding_back_the_others(national, monkeypatch):
    ids = _seed_results(5)
    bad = ids[2]
    original = bootstrap.national_client().post_bundle

    def refuse_one(bundle):
        if bundle["identifier"]["value"] == bad:
            bundle = {**bundle, "type": "not-a-bundle-type"}  # the receiver answers 4xx + OperationOutcome
        return original(bundle)

    monkeypatch.setattr(bootstrap.national_client(), "post_bundle", refuse_one)
    bootstrap.national_queue().enqueue(ids)
    _drain(20)
    statuses = {rid: _stored(rid).national_status for rid in ids}
    assert statuses.pop(bad) == "failed"
    assert set(statuses.values()) == {"reported"}
    letters = bootstrap.national_queue().dead_letters()
    assert [(d["result_id"], d["reason"].split(":")[0]) for d in letters] == [(bad, "http-422")]


def test_a_dead_letter_sqs_refused_is_written_when_the_message_comes_back(national, monkeypatch):
    """The status is set failed first; when SQS then refuses the letter, the attempt fails and its message comes
    back: it finds the result failed with no letter written, and writes it (without posting again)."""
    from chalicelib.adapters.queues import WorkQueue
    from chalicelib.events.national import handle_national_batch

    [rid] = _seed_results(1)
    original = bootstrap.national_client().post_bundle
    monkeypatch.setattr(
        bootstrap.national_client(), "post_bundle", lambda bundle: original({**bundle, "type": "not-a-bundle-type"})
    )
    refusals = iter([DependencyUnavailableError("sqs")])
    dead_letter = WorkQueue.dead_letter

    def refused_once(self: Any, *args: Any, **kwargs: Any) -> None:
        error = next(refusals, None)
        if error is not None:
            raise error
        dead_letter(self, *args, **kwargs)

    monkeypatch.setattr(WorkQueue, "dead_letter", refused_once)
    bootstrap.national_queue().enqueue([rid])
    sqs = boto3.client("sqs")
    [message] = sqs.receive_message(
        QueueUrl=os.environ["RELAIS_NATIONAL_QUEUE_URL"], AttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]

    first = handle_national_batch(_lambda_event([message]))
    assert first["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
    record = _stored(rid)
    assert (record.national_status, record.national_dead_lettered) == ("failed", False)
    assert bootstrap.national_queue().dead_letters() == []
    posts = len(national.state.deliveries)

    again = handle_national_batch(_lambda_event([message]))  # the same message, back after its lease

    assert again["batchItemFailures"] == []
    [letter] = bootstrap.national_queue().dead_letters()
    assert (letter["result_id"], letter["reason"].split(":")[0], letter["attempts"]) == (rid, "http-422", 1)
    assert _stored(rid).national_dead_lettered
    assert len(national.state.deliveries) == posts, "nothing posted again"
    statuses = bootstrap.national_statuses()
    assert statuses.mark_pending(rid)  # a redrive: a later failure writes its own letter
    assert not _stored(rid).national_dead_lettered
    statuses.mark_reported(rid, datetime.now(UTC))
    assert not statuses.mark_pending(rid), "a second letter's redrive leaves a reported result alone"
    assert _stored(rid).national_status == "reported"


def test_reconciliation_queues_again_results_left_pending_once_per_threshold(national):
    from chalicelib.events.national import reconcile_pending

    ids = _seed_results(3)
    os.environ["RELAIS_RECONCILE_AFTER_SECONDS"] = "60"
    try:
        bootstrap.reset()
        assert reconcile_pending({}) == {"requeued": 0}  # received just now: not stranded yet
        later = datetime.now(UTC) + timedelta(seconds=120)
        bootstrap.override(clock=lambda: later)
        assert reconcile_pending({}) == {"requeued": 3}
        assert reconcile_pending({}) == {"requeued": 0}  # already queued again since the cutoff: no snowball
        _drain(20)
        even_later = later + timedelta(seconds=600)
        bootstrap.override(clock=lambda: even_later)
        assert reconcile_pending({}) == {"requeued": 0}  # reported: nothing pending
    finally:
        os.environ.pop("RELAIS_RECONCILE_AFTER_SECONDS")
    assert {r["bundle"]["identifier"]["value"] for r in national.state.records} == set(ids)


def test_dead_letters_can_be_redriven_and_then_delivered(national):
    ids = _seed_results(2)
    national.state.up = False
    os.environ["RELAIS_NATIONAL_MAX_ATTEMPTS"] = "1"
    bootstrap.reset()
    bootstrap.national_queue().enqueue(ids)
    _drain(20)
    assert {d["result_id"] for d in bootstrap.national_queue().dead_letters()} == set(ids)
    national.state.up = True
    statuses = bootstrap.national_statuses()
    moved = bootstrap.national_queue().redrive(on_redrive=lambda rid, _generation: statuses.mark_pending(rid))
    assert set(moved) == set(ids)
    _drain(20)
    assert {_stored(rid).national_status for rid in ids} == {"reported"}
    assert bootstrap.national_queue().dead_letters() == []


def test_nothing_is_lost_when_the_receiver_fails_randomly(national):
    """1,000 results, receiver failing at random (500s, stalls past the client timeout).

    accepted = reported + dead-lettered; no duplicate at the receiver; every dead letter has a reason.
    """
    count = int(os.environ.get("RELAIS_NOTHING_LOST_COUNT", "1000"))
    os.environ["RELAIS_NATIONAL_MAX_ATTEMPTS"] = "3"
    bootstrap.reset()
    ids = _seed_results(count)
    from infra.local.national import parse_faults

    national.state.set_faults(
        parse_faults({"error_rate": 0.3, "timeout_rate": 0.02, "timeout_seconds": 1.5, "seed": 20221010})
    )
    bootstrap.national_queue().enqueue(ids)
    _drain(600)
    statuses = {rid: _stored(rid).national_status for rid in ids}
    reported = {rid for rid, s in statuses.items() if s == "reported"}
    letters = bootstrap.national_queue().dead_letters(max_messages=count)
    dead = {d["result_id"] for d in letters}
    assert reported | dead == set(ids) and not reported & dead
    assert all(d["reason"] for d in letters)
    identifiers = [r["bundle"]["identifier"]["value"] for r in national.state.records]
    assert len(identifiers) == len(set(identifiers))  # the receiver kept each bundle once
    assert reported <= set(identifiers)
    assert national.state.injected_errors > 0


def test_one_copy_of_a_results_message_delivers_at_a_time_and_attempts_are_the_results(national):
    """The delivery lease and the attempt budget live on the result item (DynamoDB conditions, not the copy)."""
    (rid,) = _seed_results(1)
    statuses, now = bootstrap.national_statuses(), datetime.now(UTC)
    soon = now + timedelta(seconds=30)
    assert statuses.claim_delivery(rid, now, soon) == 0
    assert statuses.claim_delivery(rid, now, soon) is None, "a second copy must not post while the first may"
    assert statuses.claim_delivery(rid, soon + timedelta(seconds=1), soon) == 0, "an expired lease is free"
    statuses.count_failure(rid)  # gives the lease back
    assert statuses.claim_delivery(rid, now, soon) == 1
    statuses.mark_failed(rid, "retries-exhausted:http-500")
    assert statuses.claim_delivery(rid, soon + timedelta(hours=1), soon) is None, "dead-lettered: nothing to post"
    statuses.mark_pending(rid)  # an operator's redrive: a new budget
    assert statuses.claim_delivery(rid, now, soon) == 0
    statuses.mark_reported(rid, now)
    assert statuses.claim_delivery(rid, soon + timedelta(hours=1), soon) is None, "reported: nothing to post"
    assert statuses.claim_delivery(new_id(), now, soon) is None, "an erased result is not created by a claim"
