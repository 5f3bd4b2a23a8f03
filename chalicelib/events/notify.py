"""Notification queue consumer: one message ``{"result_id", "generation"?}`` → the link sent to the patient.

Partial batch responses (Powertools ``BatchProcessor``): only the messages that failed come back to
the queue, to be retried and, after the queue's ``maxReceiveCount``, dead-lettered. Nothing of a
message or an exception's text is logged: outcomes are counted by code.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib import bootstrap
from chalicelib.errors import NotFoundError
from chalicelib.observability import logger

notify_events = Blueprint(__name__)

#: Replaced by the stage's queue name when packaging (``infra/``).
NOTIFY_QUEUE = "relais-notify"


class NotifyRetryError(Exception):
    """A message to retry; its text is an outcome code only."""


def handle_notify_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda SQS handler: ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.services.notify import parse_notify_message

    service = bootstrap.notify_service()
    outcomes: dict[str, int] = {}

    def count(outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def handle(record: SQSRecord) -> str:
        try:
            result_id, generation = parse_notify_message(record.body)
        except NotFoundError:
            count("malformed")
            return "malformed"  # no result id in it: nothing to send, nothing to retry
        attempt = int(record.attributes.approximate_receive_count or 1)
        try:
            outcome = service.notify(result_id, generation, attempt=attempt)
        except Exception as exc:
            count("retry")
            raise NotifyRetryError(type(exc).__name__) from None
        count(outcome)
        return str(outcome)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        response: dict[str, Any] = dict(
            process_partial_response(event=event, record_handler=handle, processor=processor, context=context)
        )
        return response
    finally:
        metrics = bootstrap.metrics()
        for outcome, n in outcomes.items():
            metrics.count(NOTIFY_METRICS.get(outcome, "PatientNotifySkipped"), n)
        metrics.flush()
        logger().info("notify batch", extra={"outcomes": outcomes})


#: Notification outcomes as CloudWatch metrics (the dead-lettered ones are counted by the DLQ alarm).
NOTIFY_METRICS = {"sent": "PatientNotified", "retry": "PatientNotifyRetried", "malformed": "PatientNotifyMalformed"}


@notify_events.on_sqs_message(queue=NOTIFY_QUEUE, batch_size=10)
def on_notify_message(event: Any) -> dict[str, Any]:
    return handle_notify_batch(event.to_dict(), event.context)
