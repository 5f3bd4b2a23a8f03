"""The local poller drives event handlers as Lambda does (infra/local/poller.py), against moto in-process."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import boto3
import pytest

from infra.local import poller as poller_module
from infra.local.poller import Poller, Schedule, Source, Wiring, describe_failure, resolve

#: What the fake handlers below saw, and what they should answer; reset by the ``calls`` fixture.
CALLS: list[tuple[dict[str, Any], Any]] = []
BEHAVIOUR: dict[str, Any] = {}


def record_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A queue handler: records the event, fails the messages whose body is listed in BEHAVIOUR["fail"]."""
    CALLS.append((event, context))
    if BEHAVIOUR.get("raise"):
        raise RuntimeError("handler broke")
    if "answer" in BEHAVIOUR:
        answer: dict[str, Any] = BEHAVIOUR["answer"]
        return answer
    failing = BEHAVIOUR.get("fail", set())
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] in failing]}


def record_stream(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A stream handler; raises while BEHAVIOUR["raise"] > 0."""
    CALLS.append((event, context))
    if BEHAVIOUR.get("raise", 0) > 0:
        BEHAVIOUR["raise"] -= 1
        raise RuntimeError("stream handler broke")
    return {}


def record_schedule(event: dict[str, Any], context: Any) -> None:
    CALLS.append((event, context))


HERE = __name__


@pytest.fixture
def calls():
    CALLS.clear()
    BEHAVIOUR.clear()
    yield CALLS
    CALLS.clear()
    BEHAVIOUR.clear()


@pytest.fixture
def settings(aws):
    from chalicelib.config import get_settings

    return get_settings()


def make_poller(
    settings,
    aws,
    *,
    queue_handlers: dict[str, str] | None = None,
    schedules: dict[str, Schedule] | None = None,
    stream_handler: str = "",
    **kwargs,
) -> Poller:
    """A poller of the results stream (when ``stream_handler`` is given), these queues and these schedules."""
    wiring = Wiring(
        queues={name: Source(spec, 10) for name, spec in (queue_handlers or {}).items()},
        streams={"RELAIS_RESULTS_STREAM_ARN": Source(stream_handler, 100)} if stream_handler else {},
        schedules=schedules or {},
    )
    kwargs.setdefault("stream_retry_delay", 0.0)
    return Poller(settings, wiring=wiring, stream_arns=aws, wait_seconds=0, **kwargs)


def send(queue_url: str, *bodies: str) -> None:
    sqs = boto3.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def queue_counts(queue_url: str) -> tuple[int, int]:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def bodies_after_making_visible(queue_url: str, event: dict[str, Any]) -> list[str]:
    """Make every message of a past batch visible again, then receive what is still in the queue."""
    sqs = boto3.client("sqs")
    for record in event["Records"]:
        with contextlib.suppress(sqs.exceptions.ClientError):  # deleted: its receipt handle is gone
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
    answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return sorted(m["Body"] for m in answer.get("Messages", []))


# --- queues ---------------------------------------------------------------------------------------------------


def test_one_reported_failure_among_three_leaves_only_that_message_in_the_queue(aws, settings, calls):
    poller = make_poller(settings, aws, queue_handlers={"national_queue_url": f"{HERE}:record_batch"})
    url = settings.national_queue_url
    send(url, "a", "b", "c")
    BEHAVIOUR["fail"] = {"b"}

    batch = poller.poll_queue_once("national_queue_url")

    assert (batch.received, batch.deleted, batch.failed, batch.raised) == (3, 2, 1, False)
    assert queue_counts(url) == (0, 1)
    event, _ = calls[0]
    assert bodies_after_making_visible(url, event) == ["b"]


def test_a_handler_that_raises_deletes_nothing(aws, settings, calls):
    poller = make_poller(settings, aws, queue_handlers={"national_queue_url": f"{HERE}:record_batch"})
    url = settings.national_queue_url
    send(url, "a", "b", "c")
    BEHAVIOUR["raise"] = True

    batch = poller.poll_queue_once("national_queue_url")

    assert (batch.received, batch.deleted, batch.raised) == (3, 0, True)
    assert queue_counts(url) == (0, 3)
    assert bodies_after_making_visible(url, calls[0][0]) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "answer",
    [
        {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"wrongKey": "x"}]},
        {"batchItemFailures": "nope"},
        ["not", "an", "object"],
    ],
)
def test_an_invalid_batch_response_fails_the_whole_batch_like_lambda(aws, settings, calls, answer):
    poller = make_poller(settings, aws, queue_handlers={"national_queue_url": f"{HERE}:record_batch"})
    send(settings.national_queue_url, "a", "b")
    BEHAVIOUR["answer"] = answer

    batch = poller.poll_queue_once("national_queue_url")

    assert (batch.received, batch.deleted, batch.failed) == (2, 0, 2)
    assert queue_counts(settings.national_queue_url) == (0, 2)


@pytest.mark.parametrize("answer", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}])
def test_an_empty_batch_response_means_every_message_succeeded(aws, settings, calls, answer):
    poller = make_poller(settings, aws, queue_handlers={"notify_queue_url": f"{HERE}:record_batch"})
    send(settings.notify_queue_url, "a", "b")
    BEHAVIOUR["answer"] = answer

    batch = poller.poll_queue_once("notify_queue_url")

    assert (batch.received, batch.deleted, batch.failed) == (2, 2, 0)
    assert queue_counts(settings.notify_queue_url) == (0, 0)


def test_the_sqs_event_has_the_shape_lambda_gives_it(aws, settings, calls):
    poller = make_poller(settings, aws, queue_handlers={"national_queue_url": f"{HERE}:record_batch"})
    body = json.dumps({"result_id": "r-1"})
    boto3.client("sqs").send_message(
        QueueUrl=settings.national_queue_url,
        MessageBody=body,
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "x"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )

    poller.poll_queue_once("national_queue_url")

    event, context = calls[0]
    (record,) = event["Records"]
    queue_arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=settings.national_queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert record["body"] == body
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()  # SQS's own checksum
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue_arn
    assert record["awsRegion"] == "eu-west-3"
    assert record["messageId"] and record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "x",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
    assert context.function_name == "record_batch"
    assert context.aws_request_id
    assert 0 < context.get_remaining_time_in_millis() <= 60_000


def test_a_batch_response_from_powertools_is_understood(aws, settings, calls, monkeypatch):
    """The consumers use Powertools' BatchProcessor: its partial response must drive the deletes."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    def handler(event, context):
        def one(record):
            if record.body == "bad":
                raise ValueError("no")
            return "ok"

        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return process_partial_response(event=event, record_handler=one, processor=processor, context=context)

    monkeypatch.setattr(poller_module, "resolve", lambda spec: handler)
    poller = make_poller(settings, aws, queue_handlers={"national_queue_url": "any:thing"})
    send(settings.national_queue_url, "good", "bad", "good")

    batch = poller.poll_queue_once("national_queue_url")

    assert (batch.received, batch.deleted, batch.failed) == (3, 2, 1)


def test_by_default_the_poller_drives_the_event_sources_of_the_app(aws, settings):
    from app import app

    poller = Poller(settings, stream_arns=aws, wait_seconds=0)

    assert set(poller.queue_handlers) == {"national_queue_url", "notify_queue_url"}
    assert set(poller.streams) == {"RELAIS_RESULTS_STREAM_ARN", "RELAIS_AUDIT_STREAM_ARN"}
    assert poller.schedule_names == ["on_reconcile_schedule"]
    driven = [spec for spec, _ in poller.queue_handlers.values()] + [s.spec for s in poller.streams.values()]
    driven += [poller.wiring.schedules[name].spec for name in poller.schedule_names]
    assert sorted(driven) == sorted("{}:{}".format(*s.handler_string.rsplit(".", 1)) for s in app.event_sources)
    with pytest.raises(KeyError):
        poller.poll_queue_once("no_such_queue_url")


def test_each_handler_s_context_counts_down_from_its_function_s_timeout(aws, settings, calls):
    """As on AWS: the notifier's 30 s, not one figure for every handler (retries and SMS pacing watch the time)."""
    from infra.iam import FUNCTIONS

    app_poller = Poller(settings, stream_arns=aws, wait_seconds=0)
    driven = [spec for spec, _ in app_poller.queue_handlers.values()] + [s.spec for s in app_poller.streams.values()]
    driven += [app_poller.wiring.schedules[name].spec for name in app_poller.schedule_names]
    for spec in driven:  # every deployed handler is timed by the template, none by the fallback
        assert app_poller.function_timeouts[spec.replace(":", ".")] == FUNCTIONS[spec.replace(":", ".")].timeout
    assert app_poller.function_timeouts["chalicelib.events.notify.on_notify_message"] == 30

    poller = make_poller(
        settings,
        aws,
        queue_handlers={"national_queue_url": f"{HERE}:record_batch"},
        function_timeouts={f"{HERE}.record_batch": 7.0},
    )
    send(settings.national_queue_url, json.dumps({"result_id": "r-1"}))
    poller.poll_queue_once("national_queue_url")
    _, context = calls[0]
    assert 6_000 < context.get_remaining_time_in_millis() <= 7_000


def test_a_stream_whose_arn_is_not_known_is_not_read(aws, settings):
    poller = Poller(settings, stream_arns={"RELAIS_RESULTS_STREAM_ARN": aws["RELAIS_RESULTS_STREAM_ARN"]})

    assert list(poller.streams) == ["RELAIS_RESULTS_STREAM_ARN"]
    assert poller.unread_streams == ["RELAIS_AUDIT_STREAM_ARN"]


def test_a_batch_holds_at_most_the_sources_batch_size(aws, settings, calls):
    wiring = Wiring(
        queues={"notify_queue_url": Source(f"{HERE}:record_batch", 2)},
        streams={"RELAIS_RESULTS_STREAM_ARN": Source(f"{HERE}:record_stream", 1)},
    )
    poller = Poller(settings, wiring=wiring, stream_arns=aws, wait_seconds=0)
    send(settings.notify_queue_url, "a", "b", "c")
    put_result(settings, "result-1")
    put_result(settings, "result-2")

    assert poller.poll_queue_once("notify_queue_url").received == 2
    assert poller.poll_stream_once() == 1
    assert poller.poll_stream_once() == 1


def test_a_wrong_handler_name_fails_at_start(aws, settings):
    with pytest.raises(ValueError, match="no_such_function"):
        make_poller(settings, aws, queue_handlers={"national_queue_url": f"{HERE}:no_such_function"})
    with pytest.raises(ValueError, match="cannot import"):
        resolve("no_such_package.module:function")
    with pytest.raises(ValueError, match="names no queue URL"):
        make_poller(settings, aws, queue_handlers={"region_of_nowhere": f"{HERE}:record_batch"})


# --- stream ---------------------------------------------------------------------------------------------------


def put_result(settings, result_id: str) -> None:
    boto3.client("dynamodb").put_item(TableName=settings.results_table, Item={"id": {"S": result_id}})


def test_an_inserted_result_reaches_the_stream_handler_as_a_lambda_record(aws, settings, calls):
    poller = make_poller(settings, aws, stream_handler=f"{HERE}:record_stream")
    put_result(settings, "result-1")

    assert poller.poll_stream_once() == 1

    event, _ = calls[0]
    (record,) = event["Records"]
    assert record["eventName"] == "INSERT"
    assert record["dynamodb"]["Keys"] == {"id": {"S": "result-1"}}
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"] == aws["RELAIS_RESULTS_STREAM_ARN"]
    assert record["awsRegion"] == "eu-west-3"
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    json.dumps(event)  # JSON-able, as Lambda's event is

    assert poller.poll_stream_once() == 0
    assert len(calls) == 1  # no second call, and none with an empty batch


def test_each_stream_goes_to_its_own_handler(aws, settings, calls):
    wiring = Wiring(
        streams={
            "RELAIS_RESULTS_STREAM_ARN": Source(f"{HERE}:record_stream", 100),
            "RELAIS_AUDIT_STREAM_ARN": Source(f"{HERE}:record_batch", 98),
        }
    )
    poller = Poller(settings, wiring=wiring, stream_arns=aws, wait_seconds=0)
    put_result(settings, "result-1")

    assert poller.poll_stream_once("RELAIS_AUDIT_STREAM_ARN") == 0
    assert poller.poll_stream_once() == 1

    ((event, context),) = calls
    assert event["Records"][0]["eventSourceARN"] == aws["RELAIS_RESULTS_STREAM_ARN"]
    assert context.function_name == "record_stream"


def test_a_failing_stream_batch_is_retried_without_advancing(aws, settings, calls):
    poller = make_poller(settings, aws, stream_handler=f"{HERE}:record_stream")
    put_result(settings, "result-1")
    put_result(settings, "result-2")
    BEHAVIOUR["raise"] = 2

    assert poller.poll_stream_once() == 0
    assert poller.poll_stream_once() == 0
    assert poller.poll_stream_once() == 2

    keys = [[r["dynamodb"]["Keys"]["id"]["S"] for r in event["Records"]] for event, _ in calls]
    assert keys == [["result-1", "result-2"]] * 3

    put_result(settings, "result-3")
    assert poller.poll_stream_once() == 1
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in calls[-1][0]["Records"]] == ["result-3"]


def test_a_failing_stream_batch_waits_before_its_retry(aws, settings, calls):
    poller = make_poller(settings, aws, stream_handler=f"{HERE}:record_stream", stream_retry_delay=30.0)
    put_result(settings, "result-1")
    BEHAVIOUR["raise"] = 1

    assert poller.poll_stream_once() == 0
    assert poller.poll_stream_once() == 0
    assert len(calls) == 1  # still backing off


def test_the_real_relay_queues_an_inserted_result_for_national_delivery(aws, settings):
    poller = make_poller(settings, aws, stream_handler="chalicelib.events.dispatch:on_results_stream")
    put_result(settings, "result-42")

    assert poller.poll_stream_once() == 1

    answer = boto3.client("sqs").receive_message(QueueUrl=settings.national_queue_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"]) for m in answer["Messages"]] == [{"result_id": "result-42"}]


# --- schedules ------------------------------------------------------------------------------------------------


def test_schedules_get_an_eventbridge_scheduled_event(aws, settings, calls):
    poller = make_poller(settings, aws, schedules={"sweep": Schedule(f"{HERE}:record_schedule", "rate(1 minute)")})

    assert poller.run_schedules_once(due_only=True) == []  # the first run comes one period after start
    assert poller.run_schedules_once() == ["sweep"]

    event, context = calls[0]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["region"] == "eu-west-3"
    assert event["resources"][0].startswith("arn:aws:events:eu-west-3:")
    assert context.function_name == "record_schedule"


# --- privacy of the poller's own log ----------------------------------------------------------------------------


def test_a_failure_is_described_without_its_message():
    try:
        raise ValueError("Claire Martin 284127512345687")
    except ValueError as error:
        text = describe_failure(error)
    assert text.startswith("ValueError at ")
    assert "Claire" not in text
    assert "2841275" not in text


# --- the threads ------------------------------------------------------------------------------------------------


def test_run_drives_every_source_in_threads_until_stopped(aws, settings, calls):
    import threading
    import time

    poller = make_poller(
        settings,
        aws,
        stream_handler=f"{HERE}:record_stream",
        queue_handlers={"notify_queue_url": f"{HERE}:record_batch"},
    )
    stop = threading.Event()
    runner = threading.Thread(target=poller.run, args=(stop,))
    runner.start()
    try:
        put_result(settings, "result-7")
        send(settings.notify_queue_url, "hello")
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()
    sources = sorted(event["Records"][0]["eventSource"] for event, _ in calls)
    assert sources == ["aws:dynamodb", "aws:sqs"]
    assert queue_counts(settings.notify_queue_url) == (0, 0)


def record_batch_meeting_another(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A queue handler that returns only once a second batch is being handled at the same time."""
    CALLS.append((event, context))
    if not BEHAVIOUR.get("met"):
        BEHAVIOUR["barrier"].wait()  # broken after 20 s (the batch fails) if no other batch runs meanwhile
        BEHAVIOUR["met"] = True
    return {"batchItemFailures": []}


def test_a_queue_is_consumed_by_several_batches_at_once_like_a_scaled_out_lambda(aws, settings, calls):
    import threading
    import time

    BEHAVIOUR["barrier"] = threading.Barrier(2, timeout=20)
    poller = make_poller(
        settings, aws, queue_handlers={"notify_queue_url": f"{HERE}:record_batch_meeting_another"}, queue_concurrency=2
    )
    send(settings.notify_queue_url, *[f"m{i}" for i in range(20)])  # at most 10 per batch: two batches at least
    stop = threading.Event()
    runner = threading.Thread(target=poller.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while queue_counts(settings.notify_queue_url) != (0, 0) and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        runner.join(timeout=20)
    assert BEHAVIOUR.get("met"), "no two batches were handled at the same time"
    assert queue_counts(settings.notify_queue_url) == (0, 0)
    assert sorted(r["body"] for event, _ in calls for r in event["Records"]) == sorted(f"m{i}" for i in range(20))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", poller_module.QUEUE_CONCURRENCY), ("1", 1), (" 8 ", 8), ("16", 16)],
)
def test_the_queue_concurrency_comes_from_the_environment(value, expected):
    assert poller_module.queue_concurrency({"RELAIS_LOCAL_QUEUE_CONCURRENCY": value}) == expected


@pytest.mark.parametrize("value", ["0", "17", "-1", "two", "1.5"])
def test_a_wrong_queue_concurrency_is_refused_with_its_range(value):
    with pytest.raises(ValueError, match="RELAIS_LOCAL_QUEUE_CONCURRENCY must be a whole number from 1 to 16"):
        poller_module.queue_concurrency({"RELAIS_LOCAL_QUEUE_CONCURRENCY": value})


def test_a_poller_refuses_a_concurrency_out_of_range(aws, settings):
    with pytest.raises(ValueError, match="between 1 and 16"):
        make_poller(settings, aws, queue_concurrency=0)


def test_the_stack_gives_the_poller_the_budget_of_its_shortest_worker_unless_told_otherwise():
    from infra.iam import FUNCTIONS
    from infra.local.stack import poller_environment

    workers = [spec.timeout for handler, spec in FUNCTIONS.items() if handler != "app.app"]
    assert poller_environment({"A": "1"}) == {"A": "1", "RELAIS_FUNCTION_TIMEOUT_SECONDS": str(min(workers))}
    given = {"RELAIS_FUNCTION_TIMEOUT_SECONDS": "12"}
    assert poller_environment(given) == given
