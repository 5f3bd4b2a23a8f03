"""The outbox relay: every result written to the results table is queued for delivery and for notification.

The results table's stream is the transactional outbox: DynamoDB records a stream entry for every committed insert,
atomically with it, so an accepted result cannot be left un-queued. This handler turns each insert into one message
(the result id, nothing else: :func:`chalicelib.domain.queue_messages.build_queue_message`) on the national-delivery
queue and one on the notification queue.

Every inserted result is queued for notification, whether or not the patient asked for a message: the stream's view
is ``KEYS_ONLY`` (``infra/resources.json``), so the relay sees the result's id, not its channels, and could only tell
by reading each result back. The notifier reads the result anyway: a result without channels (patient status
``not_requested``) is acknowledged as ``not_pending``, nothing sent (metric ``PatientNotifySkipped``).

A failed send raises: Lambda (or the local poller) retries the stream batch; the queue consumers are idempotent, so
a message sent twice is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from chalice.app import Blueprint

from chalicelib import bootstrap
from chalicelib.domain.queue_messages import build_queue_message
from chalicelib.observability import logger

dispatch_events = Blueprint(__name__)

#: Replaced by the results table's stream ARN when packaging (``infra/``); the local poller reads the stream named
#: by the stack outputs (``RELAIS_RESULTS_STREAM_ARN``) and calls :func:`on_results_stream` as Lambda would.
RESULTS_STREAM_ARN = "arn:aws:dynamodb:eu-west-3:000000000000:table/relais-results/stream/packaged"


def inserted_result_ids(records: Iterable[dict[str, Any]]) -> list[str]:
    """Result ids of the INSERT records of a DynamoDB stream batch (keys-only view)."""
    ids = []
    for record in records:
        if record.get("eventName") == "INSERT":
            ids.append(record["dynamodb"]["Keys"]["id"]["S"])
    return ids


def _send(queue_url: str, result_ids: Sequence[str]) -> None:
    sqs = bootstrap.client("sqs")
    for start in range(0, len(result_ids), 10):
        chunk = result_ids[start : start + 10]
        answer = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": build_queue_message(rid)} for i, rid in enumerate(chunk)],
        )
        if answer.get("Failed"):
            raise RuntimeError(f"{len(answer['Failed'])} messages not queued")


def dispatch_results(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Queue every inserted result for national delivery and for notification (see the module's docstring)."""
    ids = inserted_result_ids(event.get("Records", []))
    if ids:
        settings = bootstrap.settings()
        _send(settings.national_queue_url, ids)
        _send(settings.notify_queue_url, ids)
        logger().info("results queued", extra={"count": len(ids)})
    return {"queued": len(ids)}


@dispatch_events.on_dynamodb_record(stream_arn=RESULTS_STREAM_ARN, batch_size=100)
def on_results_stream(event: Any) -> dict[str, Any]:
    return dispatch_results(event.to_dict(), event.context)
