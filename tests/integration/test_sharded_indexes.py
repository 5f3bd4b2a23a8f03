"""Index partition keys are write-sharded (no hot index partition at the national peak), and readers see one index."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3

from chalicelib import bootstrap
from chalicelib.adapters.tables import INDEX_SHARDS, ResultItem, index_shard, pending_key
from chalicelib.domain.records import AuditEvent, new_id
from tests.integration.helpers import distinctive_body, post_result


def _raw_items(table_setting: str) -> list[dict]:
    import os

    return boto3.client("dynamodb").scan(TableName=os.environ[table_setting])["Items"]


def test_a_shard_is_fixed_by_the_id_and_ids_spread_over_every_shard():
    ids = [new_id() for _ in range(4000)]
    load = Counter(index_shard(i) for i in ids)

    assert all(index_shard(i) == index_shard(i) for i in ids[:50])
    assert set(load) == {f"{s:02d}" for s in range(INDEX_SHARDS)}
    assert max(load.values()) < 2 * len(ids) / INDEX_SHARDS


def test_accepted_results_and_their_audit_events_are_spread_over_index_shards(client, pharmacy):
    for i in range(40):
        assert post_result(client, pharmacy, distinctive_body(f"SH-{i}")).status_code == 201

    pending = [item["pending_national"]["S"] for item in _raw_items("RELAIS_RESULTS_TABLE")]
    days = [item["day"]["S"] for item in _raw_items("RELAIS_AUDIT_TABLE")]
    assert len(pending) == 40
    assert all(key.startswith("pending#") for key in pending)
    assert len(set(pending)) >= 8  # 40 results over 16 shards
    assert all(len(day.split("#")) == 2 for day in days)
    assert len(set(days)) >= 8


def test_reconciliation_reads_the_oldest_pending_results_across_every_shard(aws):
    now = datetime.now(UTC)
    received = {}
    for minute in range(40):
        rid = new_id()
        at = now - timedelta(minutes=minute + 1)
        received[rid] = at
        ResultItem(
            id=rid,
            pharmacy_id="p" * 16,
            reference_digest=f"R-{minute}",
            key_id="k" * 16,
            received_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            expires_at=int(now.timestamp()) + 3600,
            pending_national=pending_key(rid),
        ).save()
    oldest_first = sorted(received, key=received.__getitem__)

    assert bootstrap.national_statuses().pending_before(now, limit=10) == oldest_first[:10]
    assert bootstrap.national_statuses().pending_before(now - timedelta(minutes=30), limit=1000) == oldest_first[:10]
    assert bootstrap.national_statuses().pending_before(now, limit=1000) == oldest_first


def test_audit_since_merges_the_shards_of_each_day_in_time_order(aws):
    store = bootstrap.store()
    start = datetime.now(UTC) - timedelta(days=1, minutes=30)  # crosses a UTC day boundary or two
    events = [
        AuditEvent(
            actor="system:test",
            action="result.read",
            outcome="success",
            at=start + timedelta(minutes=2 * i),
            record=new_id(),
            pharmacy_id="mine" if i % 3 else "other",
        )
        for i in range(60)
    ]
    for event in reversed(events):
        store.record_audit(event)

    seen = store.audit_since(start)
    assert [e["event_id"] for e in seen] == [e.event_id for e in events]
    mine = store.audit_since(start + timedelta(minutes=30), pharmacy_id="mine")
    assert [e["event_id"] for e in mine] == [e.event_id for e in events[15:] if e.pharmacy_id == "mine"]


def test_anonymous_audit_events_do_not_share_one_partition(aws):
    store = bootstrap.store()
    for _ in range(40):
        store.record_audit(AuditEvent(actor="anonymous", action="patient.view", outcome="denied", at=datetime.now(UTC)))

    subjects = Counter(item["subject"]["S"] for item in _raw_items("RELAIS_AUDIT_TABLE"))
    assert all(subject.startswith("actor#anonymous#") for subject in subjects)
    assert len(subjects) >= 8
