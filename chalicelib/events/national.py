"""National-delivery queue consumer and the reconciliation schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Rate

from chalicelib import bootstrap
from chalicelib.domain.queue_messages import QueueMessage
from chalicelib.events.batch import consume_batch
from chalicelib.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

national_events = Blueprint(__name__)

#: Replaced by the stage's queue name when packaging (``infra/``).
NATIONAL_QUEUE = "relais-national"


def handle_national_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Deliver each message's result to the national system; only the messages to retry come back.

    The service counts its own metrics (reported, retried, dead-lettered); a message it keeps raises ``RetryLater``.
    """
    from chalicelib.services.national import Delivery  # the worker's only: not imported by the API's cold start

    service = bootstrap.national_delivery()

    def deliver(message: QueueMessage, record: SQSRecord) -> str:
        attempt = int(record.attributes.approximate_receive_count)
        return str(service.deliver(Delivery(message.result_id, record.receipt_handle, attempt)))

    return consume_batch(event, context, deliver, name="national")


def reconcile_pending(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Queue again the results still pending past the threshold (the scheduled event itself is not read)."""
    from chalicelib.services.national import reconcile

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
