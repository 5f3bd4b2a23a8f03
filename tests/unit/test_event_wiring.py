"""Event handlers: every handler takes ``(event, context)``, and both queues carry one message format."""

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
