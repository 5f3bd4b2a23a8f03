"""Event wiring is declared once: the Chalice decorators. The local poller drives exactly what ``app.event_sources``
lists, at the deployed batch sizes and rates; every handler takes ``(event, context)``; both queue consumers share one
batch helper and one message format; the outbox relay queues what its docstring says."""

from __future__ import annotations

import inspect
import json
from typing import Any

import boto3
import pytest
from chalice.app import Chalice, Cron, Rate

from chalicelib.domain.queue_messages import (
    MalformedMessageError,
    QueueMessage,
    build_queue_message,
    parse_queue_message,
)
from infra.local.poller import (
    LambdaContext,
    Poller,
    app_wiring,
    handler_spec,
    resolve,
    schedule_period,
    scheduled_event,
)

RID = "r" * 24


def _declared() -> list[str]:
    """The handlers of ``app.event_sources``, as ``module:function``, read independently of the poller's code."""
    from app import app

    return sorted("{}:{}".format(*source.handler_string.rsplit(".", 1)) for source in app.event_sources)


# --- the poller's wiring is the app's -------------------------------------------------------------------------


def test_the_poller_wiring_is_exactly_what_app_event_sources_declares():
    from app import app

    wiring = app_wiring()

    assert sorted(wiring.specs()) == _declared()
    assert len(wiring.specs()) == len(app.event_sources)  # nothing skipped, nothing twice
    by_spec = {s.spec: s for s in [*wiring.queues.values(), *wiring.streams.values()]}
    for source in app.event_sources:
        if hasattr(source, "batch_size"):
            assert by_spec[handler_spec(source.handler_string)].batch_size == source.batch_size, source.name


def test_queue_and_stream_placeholders_map_to_the_stacks_settings():
    wiring = app_wiring()

    assert {name: s.spec for name, s in wiring.queues.items()} == {
        "national_queue_url": "chalicelib.events.national:on_national_message",
        "notify_queue_url": "chalicelib.events.notify:on_notify_message",
    }
    assert {name: (s.spec, s.batch_size) for name, s in wiring.streams.items()} == {
        "RELAIS_RESULTS_STREAM_ARN": ("chalicelib.events.dispatch:on_results_stream", 100),
        "RELAIS_AUDIT_STREAM_ARN": ("chalicelib.events.audit:on_audit_stream", 98),
    }


def test_a_poller_built_with_defaults_drives_every_event_source_of_the_app(aws):
    from chalicelib.config import get_settings

    poller = Poller(get_settings(), stream_arns=aws, wait_seconds=0)

    driven = [spec for spec, _ in poller.queue_handlers.values()]
    driven += [stream.spec for stream in poller.streams.values()]
    driven += [poller.wiring.schedules[name].spec for name in poller.schedule_names]
    assert sorted(driven) == _declared()
    assert poller.unread_streams == []


def _app_with(register: Any) -> Chalice:
    extra = Chalice(app_name="extra")
    register(extra)
    return extra


def test_a_handler_the_poller_cannot_drive_fails_it_at_start():
    def s3(app: Chalice) -> None:
        @app.on_s3_event(bucket="relais-uploads")
        def on_upload(event: Any) -> None: ...

    def cron(app: Chalice) -> None:
        @app.schedule(Cron(0, 12, "*", "*", "?", "*"))
        def at_noon(event: Any) -> None: ...

    def twice(app: Chalice) -> None:
        @app.on_sqs_message(queue="relais-notify")
        def one(event: Any) -> None: ...

        @app.on_sqs_message(queue="relais-notify")
        def other(event: Any) -> None: ...

    def foreign(app: Chalice) -> None:
        @app.on_sqs_message(queue="someone-elses-queue")
        def theirs(event: Any) -> None: ...

    with pytest.raises(ValueError, match="S3EventConfig is not driven by the local poller"):
        app_wiring(_app_with(s3))
    with pytest.raises(ValueError, match="rate"):
        app_wiring(_app_with(cron))
    with pytest.raises(ValueError, match="notify_queue_url is already driven"):
        app_wiring(_app_with(twice))
    with pytest.raises(ValueError, match="does not name a Relais resource"):
        app_wiring(_app_with(foreign))


def test_a_handler_added_to_the_app_is_polled_or_refused(aws):
    """A new queue or stream handler is wired from its decorator alone, and refused when the stack lacks its queue."""
    from chalicelib.config import get_settings

    def more(app: Chalice) -> None:
        @app.on_sqs_message(queue="relais-national", batch_size=5)
        def national(event: Any) -> None: ...

        @app.on_dynamodb_record(stream_arn="arn:aws:dynamodb:eu-west-3:0:table/relais-state/stream/packaged")
        def state(event: Any) -> None: ...

        @app.schedule(Rate(1, unit=Rate.HOURS))
        def hourly(event: Any) -> None: ...

    wiring = app_wiring(_app_with(more))
    assert {name: s.batch_size for name, s in wiring.queues.items()} == {"national_queue_url": 5}
    assert list(wiring.streams) == ["RELAIS_STATE_STREAM_ARN"]
    assert {name: s.period for name, s in wiring.schedules.items()} == {"hourly": 3600}

    def outbox(app: Chalice) -> None:
        @app.on_sqs_message(queue="relais-outbox")
        def on_outbox(event: Any) -> None: ...

    with pytest.raises(ValueError, match="'outbox_queue_url' names no queue URL"):
        Poller(get_settings(), wiring=app_wiring(_app_with(outbox)), stream_arns=aws)


# --- schedules run at the deployed rate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200), ("rate(1 day)", 86400)],
)
def test_a_rate_expression_is_a_period(expression, seconds):
    assert schedule_period(expression) == seconds


@pytest.mark.parametrize(
    "expression", ["cron(0 12 * * ? *)", "rate(0 minutes)", "rate(5 fortnights)", "rate(5minutes)", "5 minutes"]
)
def test_anything_but_a_rate_is_refused(expression):
    with pytest.raises(ValueError, match="rate"):
        schedule_period(expression)


def test_the_poller_runs_each_schedule_at_the_rate_the_template_deploys(aws, packaged_template):
    from chalicelib.config import get_settings

    deployed = {
        function["Properties"]["Handler"]: event["Properties"]["Schedule"]
        for function in packaged_template["Resources"].values()
        if function["Type"] == "AWS::Serverless::Function"
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "Schedule"
    }
    assert deployed == {"chalicelib.events.national.on_reconcile_schedule": "rate(5 minutes)"}

    poller = Poller(get_settings(), stream_arns=aws, wait_seconds=0)

    assert poller.schedule_periods == {"on_reconcile_schedule": 300}  # reconciliation: every 5 minutes, as deployed
    assert {poller.wiring.schedules[name].spec: poller.schedule_periods[name] for name in poller.schedule_names} == {
        handler_spec(handler): schedule_period(expression) for handler, expression in deployed.items()
    }


def test_the_poller_reads_the_batch_sizes_the_template_deploys(packaged_template):
    deployed = {
        function["Properties"]["Handler"]: event["Properties"]["BatchSize"]
        for function in packaged_template["Resources"].values()
        if function["Type"] == "AWS::Serverless::Function"
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] in ("SQS", "DynamoDB")
    }
    wiring = app_wiring()

    assert {s.spec: s.batch_size for s in [*wiring.queues.values(), *wiring.streams.values()]} == {
        handler_spec(handler): size for handler, size in deployed.items()
    }


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


@pytest.mark.parametrize("queue", ["national_queue_url", "notify_queue_url"])
def test_the_real_consumers_acknowledge_a_malformed_message_through_the_poller(aws, queue):
    from chalicelib import bootstrap
    from chalicelib.config import get_settings

    bootstrap.override(national_client=object())  # never called: the message names no result
    settings = get_settings()
    boto3.client("sqs").send_message(QueueUrl=getattr(settings, queue), MessageBody="not a message")
    poller = Poller(settings, stream_arns=aws, wait_seconds=0)

    batch = poller.poll_queue_once(queue)

    assert (batch.received, batch.deleted, batch.failed, batch.raised) == (1, 1, 0, False)


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
        json.dumps({"result_id": RID, "generation": True}),
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
    # One line per message with its opaque result id and outcome (a result's journey in Logs Insights), then the
    # batch's counts; never the failure's text, never the malformed body.
    assert recorder.lines == [
        ("notify message", {"result_id": RID, "outcome": "sent"}),
        ("notify message", {"result_id": RID, "outcome": "retry"}),
        ("notify message", {"result_id": RID, "outcome": "duplicate"}),
        ("notify batch", {"outcomes": {"sent": 1, "retry": 1, "malformed": 1, "duplicate": 1}}),
    ]
    assert "Claire" not in repr(recorder.lines) and "garbage" not in repr(recorder.lines)


def test_without_metric_names_the_helper_counts_nothing_but_still_flushes_and_logs(recorder):
    from chalicelib.events.batch import consume_batch

    answer = consume_batch(sqs_event(build_queue_message(RID)), None, lambda m, r: "reported", name="national")

    assert answer == {"batchItemFailures": []}
    assert recorder.counts == {}
    assert recorder.flushed == 1
    assert recorder.lines == [
        ("national message", {"result_id": RID, "outcome": "reported"}),
        ("national batch", {"outcomes": {"reported": 1}}),
    ]


def test_both_queue_consumers_use_the_one_batch_helper():
    from chalicelib.events import national, notify
    from chalicelib.events.batch import consume_batch

    for module in (national, notify):
        assert module.consume_batch is consume_batch
        assert "BatchProcessor" not in inspect.getsource(module)
        assert "json.loads" not in inspect.getsource(module)


# --- the outbox relay does what its docstring says ------------------------------------------------------------


def test_the_relay_queues_every_inserted_result_on_both_queues(aws):
    from chalicelib.config import get_settings
    from chalicelib.events import dispatch

    settings = get_settings()
    ids = [f"{i:02d}" + "r" * 22 for i in range(12)]  # more than one SendMessageBatch
    records = [{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": rid}}}} for rid in ids]
    records.append({"eventName": "MODIFY", "dynamodb": {"Keys": {"id": {"S": "m" * 24}}}})

    assert dispatch.dispatch_results({"Records": records}, None) == {"queued": 12}

    sqs = boto3.client("sqs")
    for url in (settings.national_queue_url, settings.notify_queue_url):
        bodies: list[str] = []
        while answer := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            bodies += [m["Body"] for m in answer]
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(answer)],
            )
        assert sorted(bodies) == sorted(build_queue_message(rid) for rid in ids), url


def test_the_relay_cannot_see_whether_a_result_asked_for_a_message():
    """Why every result goes to the notification queue (dispatch.py's docstring): the stream carries keys only."""
    from infra.provision import load_template

    stream = load_template()["Resources"]["ResultsTable"]["Properties"]["StreamSpecification"]
    assert stream == {"StreamViewType": "KEYS_ONLY"}


def test_importing_the_app_loads_no_module_only_the_workers_use():
    """Every function imports app.py (Chalice's model), the API's cold start included: the workers' services are
    imported by their handlers when they first run, not by the API function's start."""
    import subprocess
    import sys
    from pathlib import Path

    workers_only = [
        "chalicelib.services.national",
        "chalicelib.services.notify",
        "chalicelib.adapters.audit_chain",
        "chalicelib.domain.fhir",
        "chalicelib.domain.delivery",
    ]
    code = f"import sys, app; print(sorted(m for m in {workers_only!r} if m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
