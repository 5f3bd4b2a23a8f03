"""National-delivery queue consumer and the reconciliation schedule."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Rate

from chalicelib import bootstrap
from chalicelib.errors import NotFoundError
from chalicelib.observability import logger
from chalicelib.services.national import Delivery, RetryLater, parse_message, reconcile

national_events = Blueprint(__name__)

#: Replaced by the stage's queue name when packaging (``infra/``).
NATIONAL_QUEUE = "relais-national"


def handle_national_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda SQS handler with partial batch responses: only the failed messages come back."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    service = bootstrap.national_delivery()
    outcomes: dict[str, int] = {}

    def handle(record: SQSRecord) -> str:
        try:
            result_id = parse_message(record.body)
        except NotFoundError:
            outcomes["malformed"] = outcomes.get("malformed", 0) + 1
            return "malformed"  # no result id in it: nothing to deliver, nothing to retry
        try:
            outcome = service.deliver(
                Delivery(result_id, record.receipt_handle, int(record.attributes.approximate_receive_count))
            )
        except RetryLater:
            outcomes["retry"] = outcomes.get("retry", 0) + 1
            raise
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return str(outcome)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        response = process_partial_response(event=event, record_handler=handle, processor=processor, context=context)
        return dict(response)
    finally:
        bootstrap.metrics().flush()
        logger().info("national batch", extra={"outcomes": outcomes})


def reconcile_pending(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Queue again the results still pending past the threshold (the scheduled event itself is not read)."""
    from datetime import timedelta

    settings = bootstrap.settings()
    now = bootstrap.clock()
    statuses = bootstrap.national_statuses()
    count = reconcile(
        statuses.pending_before,
        statuses.claim_requeue,
        bootstrap.national_queue().enqueue,
        now=now,
        cutoff=now - timedelta(seconds=settings.reconcile_after_seconds),
    )
    if count:
        logger().info("pending results queued again", extra={"count": count})
    return {"requeued": count}


@national_events.on_sqs_message(queue=NATIONAL_QUEUE, batch_size=10)
def on_national_message(event: Any) -> dict[str, Any]:
    return handle_national_batch(event.to_dict(), event.context)


@national_events.schedule(Rate(5, unit=Rate.MINUTES))
def on_reconcile_schedule(event: Any) -> dict[str, int]:
    return reconcile_pending(event.to_dict(), event.context)
