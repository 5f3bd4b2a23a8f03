"""The audit table's stream feeds the tamper-evident audit chain, in stream order."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib import bootstrap

audit_events = Blueprint(__name__)

#: Replaced by the audit table's stream ARN when packaging (``infra/``).
AUDIT_STREAM_ARN = "arn:aws:dynamodb:eu-west-3:000000000000:table/relais-audit/stream/packaged"


def chain_audit_events(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Append the inserted audit events of a stream batch to the chain (a failure retries the batch)."""
    from chalicelib.adapters.audit_chain import from_stream_image  # the chain's function only: not the API's start

    events = [
        from_stream_image(record["dynamodb"]["NewImage"])
        for record in event.get("Records", [])
        if record.get("eventName") == "INSERT" and "NewImage" in record.get("dynamodb", {})
    ]
    if events:
        bootstrap.audit_chain().append(events)
    return {"chained": len(events)}


@audit_events.on_dynamodb_record(stream_arn=AUDIT_STREAM_ARN, batch_size=98)
def on_audit_stream(event: Any) -> dict[str, int]:
    return chain_audit_events(event.to_dict(), event.context)
