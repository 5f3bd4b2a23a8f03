"""The audit table: one item per audit event (written alone or in a request's transaction), and the operators'
queries of it. The append-only chain built from its stream is ``adapters/audit_chain.py``."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.adapters.dynamodb import dynamodb_errors, retrying_conflicts
from chalicelib.adapters.tables import AuditItem, day_key, epoch_seconds, shard_keys, sharded_key, sortable_time
from chalicelib.domain.records import AuditEvent

#: What an operator's query shows of each event.
AUDIT_FIELDS = (
    "at", "actor", "action", "outcome", "record", "pharmacy_id", "reason", "request_id", "event_id", "client_ip",
    "failures",
)  # fmt: skip


def _audit_subject(event: AuditEvent) -> str:
    """The audit partition: the result, else the actor; ``anonymous`` (unknown keys and links, often an attack's
    traffic) is sharded like the indexes so that a flood of failures has no single partition to throttle."""
    if event.record:
        return f"result#{event.record}"
    if event.actor == "anonymous":
        return sharded_key("actor#anonymous", event.event_id)
    return f"actor#{event.actor}"


def audit_item(event: AuditEvent, retention_days: int) -> AuditItem:
    """The item of one audit event, deleted by TTL ``retention_days`` after it."""
    at = event.at.astimezone(UTC)
    iso = sortable_time(at)
    return AuditItem(
        subject=_audit_subject(event),
        sk=f"{iso}#{event.event_id}",
        day=day_key(at.strftime("%Y-%m-%d"), event.event_id),
        event_id=event.event_id,
        at=iso,
        actor=event.actor,
        action=event.action,
        outcome=event.outcome,
        record=event.record,
        pharmacy_id=event.pharmacy_id,
        reason=event.reason,
        request_id=event.request_id,
        client_ip=event.client_ip,
        failures=event.failures,
        expires_at=epoch_seconds(at + timedelta(days=retention_days)),
    )


def count_failure(event: AuditEvent, retention_days: int) -> None:
    """Add one to the aggregate ``event`` (its ``event_id`` names the aggregate): created at the first failure, then
    counted. Its chained fields never change after the first write, so the chain still verifies it."""
    item = audit_item(event, retention_days)
    values = {k: v for k, v in item.attribute_values.items() if k not in ("subject", "sk", "failures")}
    actions = [AuditItem.failures.add(1), *(getattr(AuditItem, k).set(v) for k, v in values.items())]
    with dynamodb_errors():
        retrying_conflicts(lambda: AuditItem(subject=item.subject, sk=item.sk).update(actions=actions))


def _view(item: AuditItem) -> dict[str, Any]:
    return {k: getattr(item, k) for k in AUDIT_FIELDS}


def events_of(result_id: str) -> list[dict[str, Any]]:
    """Audit events of one result, oldest first."""
    with dynamodb_errors():
        return [_view(item) for item in AuditItem.query(f"result#{result_id}")]


def events_since(since: datetime, now: datetime, *, pharmacy_id: str | None = None) -> list[dict[str, Any]]:
    """Audit events from ``since`` to ``now`` (optionally of one pharmacy), oldest first, day by day."""
    since = since.astimezone(UTC)
    start = sortable_time(since)
    day, last = since.date(), now.astimezone(UTC).date()
    events: list[dict[str, Any]] = []
    with dynamodb_errors():
        while day <= last:
            shards = [AuditItem.by_day.query(key, AuditItem.sk >= start) for key in shard_keys(day.isoformat())]
            items = heapq.merge(*shards, key=lambda item: item.sk)  # each shard is in time order already
            events.extend(_view(i) for i in items if pharmacy_id is None or i.pharmacy_id == pharmacy_id)
            day += timedelta(days=1)
    return events
