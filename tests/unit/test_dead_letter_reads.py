"""Operators' reads of a dead-letter queue long-poll: a short poll may answer "empty" while dead letters exist."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.queues import POLL_SECONDS, WorkQueue


class FakeSqs:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.receives: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives.append(kwargs)
        batch, self.messages = self.messages[:10], self.messages[10:]
        return {"Messages": batch}

    def change_message_visibility(self, **kwargs: Any) -> None:
        pass

    def delete_message(self, **kwargs: Any) -> None:
        pass

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
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


def test_a_redriven_letter_is_queued_again_with_its_body_as_it_was():
    """A notification's link generation goes back with it (the notifier sends generation 0 for a body without one:
    a resend's letter rebuilt as ``{"result_id"}`` would be dropped as superseded). The hook hears the generation;
    a body the workers would refuse as malformed (not JSON, a boolean generation) is moved as is, without it."""
    r1, r2, r3 = (f"r{i:023d}" for i in (1, 2, 3))
    bodies = [
        json.dumps({"result_id": r1, "generation": 2}),
        json.dumps({"result_id": r2}),
        "not json",
        json.dumps({"result_id": r3, "generation": True}),
    ]
    sqs = FakeSqs([{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": b} for i, b in enumerate(bodies)])
    heard: list[tuple[str, int]] = []

    moved = WorkQueue(sqs, queue_url="q", dlq_url="d").redrive(on_redrive=lambda rid, gen: heard.append((rid, gen)))

    assert [m["MessageBody"] for m in sqs.sent] == bodies
    assert {m["QueueUrl"] for m in sqs.sent} == {"q"}
    assert heard == [(r1, 2), (r2, 0)]
    assert moved == [r1, r2, None, None]


def test_a_listed_letter_names_its_result_as_a_worker_reads_it():
    """A listing shows the result a worker would act on, and no id for a body a worker refuses as malformed."""
    bodies = [json.dumps({"result_id": "r" * 24}), json.dumps({"result_id": "short"}), "[]"]
    sqs = FakeSqs([{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": b} for i, b in enumerate(bodies)])

    letters = WorkQueue(sqs, queue_url="q", dlq_url="d").dead_letters()

    assert sorted(str(d["result_id"]) for d in letters) == sorted(["r" * 24, "None", "None"])
