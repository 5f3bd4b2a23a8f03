"""How both queue consumers handle an SQS batch: one message parser, partial batch responses, outcomes counted.

Powertools' ``BatchProcessor`` answers ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``: only the
messages that failed come back to the queue, to be retried and, after the queue's ``maxReceiveCount``,
dead-lettered. Each message is parsed once (:func:`chalicelib.domain.queue_messages.parse_queue_message`); a
malformed one is acknowledged (counted ``malformed``: a retry would not mend it). Nothing of a message or of an
exception's text is logged: each message's outcome is counted by code, the counts go to the metrics named for them
and into one log line per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chalicelib import bootstrap
from chalicelib.deadline import deadline_in, deadline_of
from chalicelib.domain.queue_messages import MalformedMessageError, QueueMessage, parse_queue_message
from chalicelib.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

#: Handles one parsed message of a batch; returns its outcome (a code), or raises to have the message retried.
MessageHandler = Callable[[QueueMessage, "SQSRecord"], str]


class RetryMessageError(Exception):
    """A message to retry; its text is the type of the exception that failed it, nothing else."""


#: Time given to a batch invoked without Lambda's context (a test, a script): the consumers' shortest timeout.
NO_CONTEXT_SECONDS = 30.0


def consume_batch(
    event: dict[str, Any],
    context: Any,
    handle: MessageHandler,
    *,
    name: str,
    metrics: Mapping[str, str] | None = None,
    other_metric: str | None = None,
) -> dict[str, Any]:
    """Run ``handle`` on every message of a Lambda SQS event; the partial batch response.

    Outcomes: ``malformed`` (acknowledged, not handled), ``retry`` (``handle`` raised: the message comes back), or
    what ``handle`` returned. Each outcome is counted into the metric ``metrics`` names for it, else into
    ``other_metric`` when given; then the metrics are flushed and one line logged: ``"<name> batch"`` with the counts.
    """
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    outcomes: dict[str, int] = {}

    def count(outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def one(record: SQSRecord) -> str:
        try:
            message = parse_queue_message(record.body)
        except MalformedMessageError:
            count("malformed")
            return "malformed"  # no result id in it: nothing to do, nothing to retry
        try:
            outcome = str(handle(message, record))
        except Exception as exc:
            count("retry")
            logger().info(f"{name} message", extra={"result_id": message.result_id, "outcome": "retry"})
            raise RetryMessageError(type(exc).__name__) from None
        count(outcome)
        logger().info(f"{name} message", extra={"result_id": message.result_id, "outcome": outcome})
        return outcome

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    seconds = deadline_of(context, default_seconds=NO_CONTEXT_SECONDS)
    try:
        with deadline_in(seconds):  # a retry inside never outlives the invocation
            return dict(process_partial_response(event=event, record_handler=one, processor=processor, context=context))
    finally:
        recorder = bootstrap.metrics()
        for outcome, n in outcomes.items():
            metric = (metrics or {}).get(outcome, other_metric)
            if metric:
                recorder.count(metric, n)
        recorder.flush()
        logger().info(f"{name} batch", extra={"outcomes": outcomes})
