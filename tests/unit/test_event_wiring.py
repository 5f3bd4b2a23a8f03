"""Both queues carry one message format, built and parsed in one place (chalicelib/domain/queue_messages.py)."""

from __future__ import annotations

import json

import pytest

from chalicelib.domain.queue_messages import (
    MalformedMessageError,
    QueueMessage,
    build_queue_message,
    parse_queue_message,
)

RID = "r" * 24


# --- one message format ---------------------------------------------------------------------------------------


def test_a_message_is_built_as_the_producers_always_built_it():
    assert build_queue_message(RID) == json.dumps({"result_id": RID})
    assert build_queue_message(RID, 3) == json.dumps({"result_id": RID, "generation": 3})


@pytest.mark.parametrize("generation", [None, 0, 4])
def test_what_is_built_parses_back(generation):
    expected = QueueMessage(RID, generation or 0)
    assert parse_queue_message(build_queue_message(RID, generation)) == expected


def test_a_national_message_is_generation_zero():
    assert parse_queue_message('{"result_id": "%s"}' % RID) == QueueMessage(RID, 0)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '"x"',
        "{}",
        '{"nothing": 1}',
        '{"result_id": 3}',
        '{"result_id": "short"}',
        json.dumps({"result_id": "x" * 65}),
        json.dumps({"result_id": RID, "generation": "1"}),
        json.dumps({"result_id": RID, "generation": 1.5}),
    ],
)
def test_a_malformed_message_is_refused_without_echoing_it(body):
    with pytest.raises(MalformedMessageError) as caught:
        parse_queue_message(body)
    assert str(caught.value) == "malformed queue message"
