"""The one message format of the national-delivery and notification queues: ``{"result_id": id, "generation"?: n}``.

A message names a result by its opaque id, nothing else: no personal data ever rides a queue. A notification message
may also name the link generation to send (the resend path queues generation ``n``); without one it is generation 0,
the first link. A national-delivery message carries no generation.

Built by the outbox relay (``chalicelib/events/dispatch.py``) and the resend path; parsed by both queue consumers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chalicelib.errors import RelaisError

#: Lengths a result id may have (``chalicelib.domain.records.new_id`` makes 24 characters from 18 bytes).
RESULT_ID_MIN_LENGTH = 16
RESULT_ID_MAX_LENGTH = 64


class MalformedMessageError(RelaisError):
    """A queue message without a valid result id or generation: nothing to do, and nothing a retry would mend."""


@dataclass(frozen=True)
class QueueMessage:
    """What a queue message says: which result, and (notification only) which link generation."""

    result_id: str
    generation: int = 0


def parse_queue_message(body: str) -> QueueMessage:
    """The result id and generation (0 when absent) of a message body; anything else is MalformedMessageError.

    The error's text is fixed: never a part of the body.
    """
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise MalformedMessageError("malformed queue message") from None
    if not isinstance(data, dict):
        raise MalformedMessageError("malformed queue message")
    result_id = data.get("result_id")
    generation = data.get("generation", 0)
    if (
        not isinstance(result_id, str)
        or not RESULT_ID_MIN_LENGTH <= len(result_id) <= RESULT_ID_MAX_LENGTH
        or not isinstance(generation, int)
        or isinstance(generation, bool)  # JSON's true is not generation 1
    ):
        raise MalformedMessageError("malformed queue message")
    return QueueMessage(result_id, generation)


def build_queue_message(result_id: str, generation: int | None = None) -> str:
    """The body of a message for ``result_id``: ``{"result_id": id}``, plus ``"generation"`` when one is given."""
    data: dict[str, str | int] = {"result_id": result_id}
    if generation is not None:
        data["generation"] = generation
    return json.dumps(data)
