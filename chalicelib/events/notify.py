"""Notification queue consumer: one message ``{"result_id", "generation"?}`` → the link sent to the patient.

Partial batch responses (:func:`chalicelib.events.batch.consume_batch`): only the messages that failed come back to
the queue, to be retried after :func:`~chalicelib.services.notify.retry_delay` (their visibility timeout is shortened
to it) and, after the queue's ``maxReceiveCount``, dead-lettered. Nothing of a message or an
exception's text is logged: outcomes are counted by code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint

from chalicelib import bootstrap
from chalicelib.domain.queue_messages import QueueMessage
from chalicelib.events.batch import consume_batch
from chalicelib.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

notify_events = Blueprint(__name__)

#: Replaced by the stage's queue name when packaging (``infra/``).
NOTIFY_QUEUE = "relais-notify"

#: Notification outcomes as CloudWatch metrics (the dead-lettered ones are counted by the DLQ alarm); every other
#: outcome ("unknown", "not_pending", "superseded", "duplicate") is a skip.
NOTIFY_METRICS = {
    "sent": "PatientNotified",
    "unconfirmed": "PatientNotifyUnconfirmed",  # recorded as sent, the provider's answer lost (services/notify.py)
    "capped": "PatientNotifyCapped",  # a channel refused by its pharmacy's daily cap (docs/operations.md)
    "retry": "PatientNotifyRetried",
    "malformed": "PatientNotifyMalformed",
}
NOTIFY_SKIPPED_METRIC = "PatientNotifySkipped"


def handle_notify_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Send each message's link; ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``."""
    from chalicelib.services.notify import retry_delay  # the worker's only: not imported by the API's cold start

    service = bootstrap.notify_service()

    def send(message: QueueMessage, record: SQSRecord) -> str:
        attempt = int(record.attributes.approximate_receive_count or 1)
        try:
            return str(service.notify(message.result_id, message.generation, attempt=attempt))
        except Exception as exc:
            delay = retry_delay(exc, attempt)
            if delay is not None:
                _come_back_in(record.receipt_handle, delay)
            raise

    return consume_batch(
        event, context, send, name="notify", metrics=NOTIFY_METRICS, other_metric=NOTIFY_SKIPPED_METRIC
    )


def _come_back_in(receipt_handle: str, seconds: int) -> None:
    """Shorten a failed message's visibility timeout to ``seconds``; if SQS refuses, it comes back after the queue's
    own timeout (later, never lost)."""
    try:
        bootstrap.notify_queue().retry_later(receipt_handle, seconds)
    except Exception as exc:
        logger().warning("notify retry delay not set", extra={"error": type(exc).__name__})


@notify_events.on_sqs_message(queue=NOTIFY_QUEUE, batch_size=10)
def on_notify_message(event: Any) -> dict[str, Any]:
    return handle_notify_batch(event.to_dict(), event.context)
