"""SQS operations of the workers and operators: retry later, dead-letter, list and redrive.

Messages carry opaque result ids only; reasons are codes (``http-400:invalid``), never free text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chalicelib.domain.queue_messages import (
    MalformedMessageError,
    QueueMessage,
    build_queue_message,
    parse_queue_message,
)
from chalicelib.domain.records import utc_iso
from chalicelib.observability import logger

#: Operators' reads of a dead-letter queue long-poll: a short poll samples only some of SQS's servers and can come
#: back empty while messages exist. (Below every client's read timeout: ``adapters/aws.py``.)
POLL_SECONDS = 1


class WorkQueue:
    def __init__(self, sqs: Any, *, queue_url: str, dlq_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._dlq_name = dlq_url.rsplit("/", 1)[-1]

    def retry_later(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    def dead_letter(self, result_id: str, reason: str, attempts: int, version: int = 1) -> None:
        """Park a result that could not be delivered, with why, after how many attempts, and which version (a
        redrive delivers the result's current version, whichever it is by then)."""
        logger().info(
            "dead letter",
            extra={
                "result_id": result_id,
                "reason": reason[:256],
                "attempts": attempts,
                "version": version,
                "queue": self._dlq_name,
            },
        )
        self._sqs.send_message(
            QueueUrl=self._dlq_url,
            MessageBody=build_queue_message(result_id),
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:256]},
                "attempts": {"DataType": "Number", "StringValue": str(attempts)},
                "version": {"DataType": "Number", "StringValue": str(version)},
                "dead_lettered_at": {
                    "DataType": "String",
                    "StringValue": utc_iso(datetime.now(UTC)),
                },
            },
        )

    def enqueue(self, result_ids: Sequence[str]) -> None:
        for start in range(0, len(result_ids), 10):
            chunk = result_ids[start : start + 10]
            answer = self._sqs.send_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "MessageBody": build_queue_message(rid)} for i, rid in enumerate(chunk)],
            )
            if answer.get("Failed"):
                raise RuntimeError(f"{len(answer['Failed'])} messages not queued")

    def dead_letters(
        self, *, max_messages: int = 1000, hold_seconds: int = 30, is_moot: Any = None
    ) -> list[dict[str, Any]]:
        """Read the dead-letter queue without consuming it: each message is held while listing, then released.

        ``is_moot(result_id)`` names letters that no longer mean anything — a result that another delivery of the
        same message (queues deliver at least once) reported after this one gave up: those are deleted, not listed.
        """
        seen: dict[str, dict[str, Any]] = {}
        held: list[str] = []
        while len(seen) < max_messages:
            answer = self._sqs.receive_message(
                QueueUrl=self._dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=hold_seconds,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                WaitTimeSeconds=POLL_SECONDS,
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                letter = _describe(message)
                if is_moot is not None and letter["result_id"] and is_moot(letter["result_id"]):
                    self._sqs.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=message["ReceiptHandle"])
                    continue
                seen[message["MessageId"]] = letter
                held.append(message["ReceiptHandle"])
        for handle in held:
            self._sqs.change_message_visibility(QueueUrl=self._dlq_url, ReceiptHandle=handle, VisibilityTimeout=0)
        return sorted(seen.values(), key=lambda m: m["dead_lettered_at"] or "")

    def redrive(self, *, result_id: str | None = None, on_redrive: Any = None) -> list[str | None]:
        """Move dead letters (all, or one result's) back to the work queue, each message's body as it was (a
        notification's link generation with it); returns the result ids (``None`` for a malformed body).
        ``on_redrive(result_id, generation)`` runs before each well-formed letter is queued again."""
        moved: list[str | None] = []
        while True:
            answer = self._sqs.receive_message(
                QueueUrl=self._dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=30,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                WaitTimeSeconds=POLL_SECONDS,
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                parsed = _parsed(message)
                rid = parsed.result_id if parsed is not None else None
                if result_id is not None and rid != result_id:
                    continue
                if on_redrive is not None and parsed is not None:  # a malformed body: moved, answered malformed
                    on_redrive(parsed.result_id, parsed.generation)
                self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=message["Body"])
                self._sqs.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved.append(rid)
            if result_id is not None and moved:
                break
        return moved


def _parsed(message: dict[str, Any]) -> QueueMessage | None:
    """The result and link generation a letter names, read as the workers read it (``None``: malformed, which a
    worker acknowledges without doing anything)."""
    try:
        return parse_queue_message(message["Body"])
    except MalformedMessageError:
        return None


def _describe(message: dict[str, Any]) -> dict[str, Any]:
    attrs = message.get("MessageAttributes", {})
    parsed = _parsed(message)
    result_id = parsed.result_id if parsed is not None else None
    sent = int(message.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
    dead_at = attrs.get("dead_lettered_at", {}).get("StringValue")
    return {
        "result_id": result_id,
        # A worker dead-letters with a reason code; a message without one was moved by SQS itself after its
        # maxReceiveCount (the worker crashed or timed out each time): no reason is known, and none is invented.
        "reason": attrs.get("reason", {}).get("StringValue"),
        "moved_by": "relais" if "reason" in attrs else "sqs",
        "attempts": int(
            attrs.get("attempts", {}).get("StringValue")
            or message.get("Attributes", {}).get("ApproximateReceiveCount", "0")
        ),
        "version": int(attrs.get("version", {}).get("StringValue") or 1),
        "dead_lettered_at": dead_at,
        "age_seconds": int(datetime.now(UTC).timestamp() - sent) if sent else None,
    }
