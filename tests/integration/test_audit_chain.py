"""The audit chain: append from the audit table's stream, verify, detect removal and alteration."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from chalicelib import bootstrap
from chalicelib.domain.records import AuditEvent
from chalicelib.events.audit import chain_audit_events


def _stream_event(items: list[dict]) -> dict:
    serializer = TypeSerializer()
    return {
        "Records": [
            {"eventName": "INSERT", "dynamodb": {"NewImage": {k: serializer.serialize(v) for k, v in item.items()}}}
            for item in items
        ]
    }


def _audit_items() -> list[dict]:
    table = boto3.resource("dynamodb").Table(os.environ["RELAIS_AUDIT_TABLE"])
    return sorted(table.scan()["Items"], key=lambda i: i["sk"])


@pytest.fixture
def chained(aws) -> list[dict]:
    store = bootstrap.store()
    now = datetime.now(UTC) - timedelta(hours=1)
    for i in range(7):
        store.record_audit(
            AuditEvent(
                actor="key:k0000000000000001",
                action="result.read",
                outcome="success",
                record=f"result{i:020d}",
                at=now + timedelta(seconds=i),
            )
        )
    items = _audit_items()
    chain_audit_events(_stream_event(items[:3]))
    chain_audit_events(_stream_event(items[3:]))
    return items


def _verify() -> dict:
    return bootstrap.audit_chain().verify(now=datetime.now(UTC))


def test_an_untouched_chain_verifies(chained):
    report = _verify()
    assert report == {"ok": True, "events": 7, "problems": []}


def test_an_edited_audit_event_is_detected(chained):
    target = chained[4]
    boto3.client("dynamodb").update_item(
        TableName=os.environ["RELAIS_AUDIT_TABLE"],
        Key={"subject": {"S": target["subject"]}, "sk": {"S": target["sk"]}},
        UpdateExpression="SET outcome = :o",
        ExpressionAttributeValues={":o": {"S": "denied"}},
    )
    kinds = {(p["kind"], p["event_id"]) for p in _verify()["problems"]}
    assert kinds == {("altered-event", target["event_id"])}


def test_a_removed_audit_event_is_detected(chained):
    target = chained[1]
    boto3.client("dynamodb").delete_item(
        TableName=os.environ["RELAIS_AUDIT_TABLE"], Key={"subject": {"S": target["subject"]}, "sk": {"S": target["sk"]}}
    )
    assert {(p["kind"], p["event_id"]) for p in _verify()["problems"]} == {("missing-event", target["event_id"])}


def test_a_removed_chain_entry_is_detected(chained):
    boto3.client("dynamodb").delete_item(
        TableName=os.environ["RELAIS_AUDIT_CHAIN_TABLE"], Key={"pk": {"S": "chain"}, "seq": {"N": "5"}}
    )
    kinds = {p["kind"] for p in _verify()["problems"]}
    assert "gap" in kinds
    assert "unchained-event" in kinds


def test_a_rewritten_chain_without_the_key_fails_its_seals(chained):
    table = os.environ["RELAIS_AUDIT_CHAIN_TABLE"]
    ddb = boto3.client("dynamodb")
    # An attacker recomputes links after editing an event, but cannot make a seal.
    from chalicelib.domain.audit_chain import digest, link

    target = chained[2]
    altered = {**target, "outcome": "denied"}
    boto3.client("dynamodb").update_item(
        TableName=os.environ["RELAIS_AUDIT_TABLE"],
        Key={"subject": {"S": target["subject"]}, "sk": {"S": target["sk"]}},
        UpdateExpression="SET outcome = :o",
        ExpressionAttributeValues={":o": {"S": "denied"}},
    )
    entries = list(bootstrap.audit_chain().entries())
    previous = entries[1].link
    for entry in entries[2:]:
        d = digest(altered) if entry.event_id == target["event_id"] else entry.digest
        previous = link(previous, d)
        ddb.update_item(
            TableName=table,
            Key={"pk": {"S": "chain"}, "seq": {"N": str(entry.seq)}},
            UpdateExpression="SET digest = :d, link = :l",
            ExpressionAttributeValues={":d": {"S": d}, ":l": {"S": previous}},
        )
    kinds = {p["kind"] for p in _verify()["problems"]}
    assert "bad-seal" in kinds
    assert "broken-link" not in kinds


def test_submitting_and_reading_results_feed_the_chain(aws):
    # Every audit event written by the API ends up chained once the stream is relayed.
    store = bootstrap.store()
    store.record_audit(
        AuditEvent(
            actor="anonymous",
            action="auth.failure",
            outcome="denied",
            reason="x",
            at=datetime.now(UTC) - timedelta(hours=1),
        )
    )
    chain_audit_events(_stream_event(_audit_items()))
    assert _verify()["ok"] is True


def test_verify_reads_the_chained_events_back_in_batches_and_reports_progress(chained, monkeypatch):
    from chalicelib.adapters import audit_chain
    from chalicelib.adapters.tables import AuditItem

    monkeypatch.setattr(audit_chain, "READ_BATCH", 3)
    sizes: list[int] = []
    batch_get = AuditItem.batch_get

    def counted(keys, **kwargs):
        sizes.append(len(keys))
        return batch_get(keys, **kwargs)

    def no_single_reads(*args, **kwargs):
        raise AssertionError("verify reads events in batches, not one by one")

    monkeypatch.setattr(AuditItem, "batch_get", counted)
    monkeypatch.setattr(AuditItem, "get", no_single_reads)
    told: list[tuple[int, int]] = []

    report = bootstrap.audit_chain().verify(
        now=datetime.now(UTC), progress=lambda done, total: told.append((done, total))
    )

    assert report == {"ok": True, "events": 7, "problems": []}
    assert sizes == [3, 3, 1]
    assert told == [(3, 7), (3, 7), (1, 7)]
