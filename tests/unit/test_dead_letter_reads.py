"""Operators' reads of a dead-letter queue long-poll: a short poll may answer "empty" while dead letters exist."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.queues import POLL_SECONDS, WorkQueue


class FakeSqs:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.receives: list[dict[str, Any]] = []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives.append(kwargs)
        batch, self.messages = self.messages[:10], self.messages[10:]
        return {"Messages": batch}

    def change_message_visibility(self, **kwargs: Any) -> None:
        pass

    def delete_message(self, **kwargs: Any) -> None:
        pass

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {}


def _letters(n: int) -> list[dict[str, Any]]:
    return [
        {"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": json.dumps({"result_id": f"r{i:023d}"})}
        for i in range(n)
    ]


def test_listing_and_redriving_long_poll_until_an_empty_answer():
    assert POLL_SECONDS >= 1
    for read in ("list", "redrive"):
        sqs = FakeSqs(_letters(12))
        queue = WorkQueue(sqs, queue_url="q", dlq_url="https://sqs/000/relais-test-national-dlq")
        found = queue.dead_letters() if read == "list" else queue.redrive()
        assert len(found) == 12
        assert len(sqs.receives) == 3, "two pages, then the empty answer that ends the read"
        assert all(r["WaitTimeSeconds"] == POLL_SECONDS for r in sqs.receives), read
