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
    assert report == {"ok": True, "events": 7, "expired": 0, "from_seq": 0, "problems": []}


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

    assert report == {"ok": True, "events": 7, "expired": 0, "from_seq": 0, "problems": []}
    assert sizes == [3, 3, 1]
    assert told == [(3, 7), (3, 7), (1, 7)]


# -- retention (issue 11, item 11): expired events are not missing ones ------------------------------------------
RETENTION = timedelta(days=366)


def _chain_at(moment: datetime, actions: list[str], delay: timedelta = timedelta(minutes=1)) -> list[dict]:
    """Audit events written at ``moment`` and chained ``delay`` later (the appender's clock then), as one batch."""
    store = bootstrap.store()
    before = {i["event_id"] for i in _audit_items()}
    for i, action in enumerate(actions):
        store.record_audit(
            AuditEvent(actor="system:national", action=action, outcome="success", at=moment + timedelta(seconds=i))
        )
    batch = [i for i in _audit_items() if i["event_id"] not in before]
    bootstrap.override(clock=lambda: moment + delay)
    chain_audit_events(_stream_event(batch))
    return batch


def _delete(items: list[dict]) -> None:
    """What the audit table's TTL does to events past retention."""
    for item in items:
        boto3.client("dynamodb").delete_item(
            TableName=os.environ["RELAIS_AUDIT_TABLE"],
            Key={"subject": {"S": item["subject"]}, "sk": {"S": item["sk"]}},
        )


@pytest.fixture
def aged(aws) -> dict[str, list[dict]]:
    """Three batches: two written 400 days ago (an hour apart) and expired by the TTL, one written an hour ago."""
    now = datetime.now(UTC)
    batches = {
        "oldest": _chain_at(now - timedelta(days=400), ["result.read"] * 3),
        "old": _chain_at(now - timedelta(days=400) + timedelta(hours=1), ["result.report"] * 2),
        "recent": _chain_at(now - timedelta(hours=1), ["patient.view"] * 2),
    }
    bootstrap.override(clock=lambda: now)
    _delete(batches["oldest"] + batches["old"])
    return batches


def test_events_removed_by_retention_are_expired_not_missing(aged):
    report = _verify()
    assert report == {"ok": True, "events": 2, "expired": 0, "from_seq": 5, "problems": []}


def test_verification_proves_the_chain_from_the_newest_checkpoint_past_retention(aged):
    # The entries before the checkpoint are no longer needed: the sealed link of seq 5 proves what follows.
    for seq in range(1, 5):
        boto3.client("dynamodb").delete_item(
            TableName=os.environ["RELAIS_AUDIT_CHAIN_TABLE"], Key={"pk": {"S": "chain"}, "seq": {"N": str(seq)}}
        )
    assert _verify()["ok"] is True


def test_events_of_a_batch_past_retention_may_be_gone_before_its_checkpoint_is(aws):
    # The batch was chained an hour late (a stream behind): its seal is not past retention, its events are.
    now = datetime.now(UTC)
    _chain_at(now - timedelta(days=400), ["result.read"])
    late = _chain_at(now - RETENTION - timedelta(minutes=1), ["result.read"] * 2, delay=timedelta(hours=1))
    bootstrap.override(clock=lambda: now)
    _delete(late)
    assert _verify() == {"ok": True, "events": 2, "expired": 2, "from_seq": 1, "problems": []}


def test_a_recent_event_removed_is_still_missing(aged):
    _delete(aged["recent"][:1])
    problems = _verify()["problems"]
    assert [(p["kind"], p["event_id"]) for p in problems] == [("missing-event", aged["recent"][0]["event_id"])]


def test_an_event_altered_after_the_checkpoint_is_detected(aged):
    target = aged["recent"][1]
    boto3.client("dynamodb").update_item(
        TableName=os.environ["RELAIS_AUDIT_TABLE"],
        Key={"subject": {"S": target["subject"]}, "sk": {"S": target["sk"]}},
        UpdateExpression="SET outcome = :o",
        ExpressionAttributeValues={":o": {"S": "denied"}},
    )
    assert [p["kind"] for p in _verify()["problems"]] == ["altered-event"]


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("link", {"S": "f" * 64}), ("seal", {"B": b"not a seal"}), ("seq", None)],
    ids=["its-link-changed", "its-seal-replaced", "its-seal-copied-to-another-entry"],
)
def test_a_tampered_checkpoint_fails_verification(aged, attribute, value):
    ddb = boto3.client("dynamodb")
    table = os.environ["RELAIS_AUDIT_CHAIN_TABLE"]
    key = {"pk": {"S": "chain"}, "seq": {"N": "5"}}
    if attribute == "seq":  # the checkpoint moved to later in the chain: its seal names seq 5
        item = ddb.get_item(TableName=table, Key={"pk": {"S": "chain"}, "seq": {"N": "6"}})["Item"]
        checkpoint = ddb.get_item(TableName=table, Key=key)["Item"]
        ddb.put_item(TableName=table, Item={**item, "seal": checkpoint["seal"]})
    else:
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #a = :v",
            ExpressionAttributeNames={"#a": attribute},
            ExpressionAttributeValues={":v": value},
        )
    report = _verify()
    assert report["ok"] is False
    assert "bad-seal" in {p["kind"] for p in report["problems"]}
    if attribute != "seq":
        assert report["from_seq"] == 3  # the tampered checkpoint proves nothing: the one before it is the start


def test_every_checkpoint_tampered_sends_verification_back_to_genesis(aged):
    ddb = boto3.client("dynamodb")
    for seq in (3, 5):
        ddb.update_item(
            TableName=os.environ["RELAIS_AUDIT_CHAIN_TABLE"],
            Key={"pk": {"S": "chain"}, "seq": {"N": str(seq)}},
            UpdateExpression="REMOVE seal",
        )
    report = _verify()
    assert report["from_seq"] == 0
    assert sorted(p["seq"] for p in report["problems"] if p["kind"] == "missing-event") == [1, 2, 3, 4, 5]
