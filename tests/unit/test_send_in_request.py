"""A new link generation's message (resend, correction) is sent in the request, with a delayed copy queued first."""

from __future__ import annotations

import pytest

from chalicelib.errors import DependencyUnavailableError
from chalicelib.services.notify import BACKSTOP_MARGIN_SECONDS, send_in_request


class Calls:
    def __init__(self, *, queue_fails: int = 0, send_fails: bool = False) -> None:
        self.log: list[tuple[str, ...]] = []
        self.queue_fails = queue_fails
        self.send_fails = send_fails

    def enqueue(self, result_id: str, generation: int, delay_seconds: int = 0) -> None:
        self.log.append(("queue", result_id, str(generation), str(delay_seconds)))
        if self.queue_fails:
            self.queue_fails -= 1
            raise DependencyUnavailableError("sqs")

    def notify(self, result_id: str, generation: int) -> str:
        self.log.append(("send", result_id, str(generation)))
        if self.send_fails:
            raise RuntimeError("SNS down")
        return "sent"


def _run(calls: Calls) -> None:
    send_in_request(calls.notify, calls.enqueue, "r1", 2, request_seconds=10)


def test_the_copy_is_queued_first_to_arrive_after_the_request_can_have_ended_then_the_message_is_sent():
    calls = Calls()
    _run(calls)
    assert BACKSTOP_MARGIN_SECONDS > 0
    assert calls.log == [("queue", "r1", "2", str(10 + BACKSTOP_MARGIN_SECONDS)), ("send", "r1", "2")]


def test_a_failed_send_is_left_to_the_copy_already_queued():
    calls = Calls(send_fails=True)
    _run(calls)  # nothing raised: the request's change stands and the copy sends the message
    assert [c[0] for c in calls.log] == ["queue", "send"]


def test_without_the_copy_the_message_is_still_sent_in_the_request():
    calls = Calls(queue_fails=1)
    _run(calls)
    assert [c[0] for c in calls.log] == ["queue", "send"]


def test_without_the_copy_a_failed_send_is_queued_at_once_and_503_only_when_that_fails_too():
    calls = Calls(queue_fails=1, send_fails=True)
    _run(calls)
    assert calls.log[-1] == ("queue", "r1", "2", "0")

    calls = Calls(queue_fails=2, send_fails=True)
    with pytest.raises(DependencyUnavailableError):
        _run(calls)
