"""Event handlers (queue consumers, stream relay, schedules) and the table the local poller reads.

In AWS, Chalice wires each handler to its event source. In the local stack, ``infra/local/poller.py``
drives the same functions with Lambda-shaped events, from these tables.
"""

from __future__ import annotations

#: Settings attribute naming a queue URL → "module:function" taking a Lambda SQS event and a
#: context, returning ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``.
QUEUE_HANDLERS: dict[str, str] = {
    "national_queue_url": "chalicelib.events.national:handle_national_batch",
    "notify_queue_url": "chalicelib.events.notify:handle_notify_batch",
}

#: Name → (period in seconds, "module:function" taking a scheduled event and a context).
SCHEDULES: dict[str, tuple[int, str]] = {
    "reconcile": (60, "chalicelib.events.national:reconcile_pending"),
}

#: The results-table stream relay: "module:function" taking a Lambda DynamoDB stream event.
STREAM_HANDLER = "chalicelib.events.dispatch:dispatch_results"

#: Every DynamoDB stream the local poller reads: environment variable naming the stream ARN → handler.
STREAM_HANDLERS: dict[str, str] = {
    "RELAIS_RESULTS_STREAM_ARN": STREAM_HANDLER,
    "RELAIS_AUDIT_STREAM_ARN": "chalicelib.events.audit:chain_audit_events",
}
