"""Event handlers: every handler takes ``(event, context)``; both queue consumers share one batch helper and one
message format."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from chalicelib.domain.queue_messages import (
    MalformedMessageError,
    QueueMessage,
    build_queue_message,
    parse_queue_message,
)
from infra.local.poller import LambdaContext, resolve, scheduled_event

RID = "r" * 24


def _declared() -> list[str]:
    """The handlers of ``app.event_sources``, as ``module:function``, read independently of the poller's code."""
    from app import app

    return sorted("{}:{}".format(*source.handler_string.rsplit(".", 1)) for source in app.event_sources)


# --- every handler: (event, context) --------------------------------------------------------------------------

#: Each decorated function → the plain handler it calls, and an event of its kind.
WRAPPERS = {
    "chalicelib.events.dispatch:on_results_stream": ("dispatch_results", {"Records": []}),
    "chalicelib.events.audit:on_audit_stream": ("chain_audit_events", {"Records": []}),
    "chalicelib.events.national:on_national_message": ("handle_national_batch", {"Records": []}),
    "chalicelib.events.notify:on_notify_message": ("handle_notify_batch", {"Records": []}),
    "chalicelib.events.national:on_reconcile_schedule": ("reconcile_pending", scheduled_event("x", "eu-west-3")),
}


def test_every_event_source_of_the_app_is_listed_here():
    assert sorted(WRAPPERS) == _declared()


@pytest.mark.parametrize("spec", sorted(WRAPPERS))
def test_each_decorated_handler_passes_lambdas_event_and_context_to_a_plain_handler(spec, monkeypatch):
    import importlib

    plain_name, event = WRAPPERS[spec]
    module = importlib.import_module(spec.partition(":")[0])
    plain = getattr(module, plain_name)
    assert list(inspect.signature(plain).parameters) == ["event", "context"]
    seen: list[tuple[Any, Any]] = []
    monkeypatch.setattr(module, plain_name, lambda event, context: seen.append((event, context)) or {"ok": 1})
    context = LambdaContext("f", "eu-west-3", 1.0)

    answer = resolve(spec)(event, context)  # as Lambda (and the poller) call it

    assert answer == {"ok": 1}
    assert seen == [(event, context)]
    assert seen[0][0] is event and seen[0][1] is context


def test_the_scheduled_reconciliation_runs_through_its_decorator(aws):
    answer = resolve("chalicelib.events.national:on_reconcile_schedule")(
        scheduled_event("on_reconcile_schedule", "eu-west-3"), LambdaContext("f", "eu-west-3", 60.0)
    )
    assert answer == {"requeued": 0}


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


# --- one batch helper -------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.flushed = 0
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def count(self, name: str, value: float = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def flush(self) -> None:
        self.flushed += 1

    def info(self, message: str, extra: dict[str, Any]) -> None:
        self.lines.append((message, extra))


@pytest.fixture
def recorder(monkeypatch):
    from chalicelib import bootstrap
    from chalicelib.events import batch

    recorder = Recorder()
    monkeypatch.setattr(bootstrap, "metrics", lambda: recorder)
    monkeypatch.setattr(batch, "logger", lambda: recorder)
    return recorder


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"h-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "2"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:000000000000:relais-test-notify",
                "awsRegion": "eu-west-3",
            }
            for i, body in enumerate(bodies)
        ]
    }


def test_the_batch_helper_answers_the_failed_messages_counts_outcomes_and_logs_one_line(recorder):
    from chalicelib.events.batch import consume_batch

    seen: list[tuple[QueueMessage, int]] = []

    def handle(message: QueueMessage, record: Any) -> str:
        seen.append((message, int(record.attributes.approximate_receive_count)))
        if message.generation == 1:
            raise RuntimeError("Claire Martin 284127512345687")
        return "sent" if message.generation == 0 else "duplicate"

    event = sqs_event(build_queue_message(RID), build_queue_message(RID, 1), "garbage", build_queue_message(RID, 2))
    answer = consume_batch(
        event, None, handle, name="notify", metrics={"sent": "Sent", "retry": "Retried"}, other_metric="Skipped"
    )

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert seen == [(QueueMessage(RID, 0), 2), (QueueMessage(RID, 1), 2), (QueueMessage(RID, 2), 2)]
    assert recorder.counts == {"Sent": 1, "Retried": 1, "Skipped": 2}  # "malformed" and "duplicate": other_metric
    assert recorder.flushed == 1
    assert recorder.lines == [("notify batch", {"outcomes": {"sent": 1, "retry": 1, "malformed": 1, "duplicate": 1}})]
    assert "Claire" not in repr(recorder.lines) and RID not in repr(recorder.lines)


def test_without_metric_names_the_helper_counts_nothing_but_still_flushes_and_logs(recorder):
    from chalicelib.events.batch import consume_batch

    answer = consume_batch(sqs_event(build_queue_message(RID)), None, lambda m, r: "reported", name="national")

    assert answer == {"batchItemFailures": []}
    assert recorder.counts == {}
    assert recorder.flushed == 1
    assert recorder.lines == [("national batch", {"outcomes": {"reported": 1}})]


def test_both_queue_consumers_use_the_one_batch_helper():
    from chalicelib.events import national, notify
    from chalicelib.events.batch import consume_batch

    for module in (national, notify):
        assert module.consume_batch is consume_batch
        assert "BatchProcessor" not in inspect.getsource(module)
        assert "json.loads" not in inspect.getsource(module)
