"""The local stand-in for Lambda's event source mappings and schedules.

``python -m infra.local.poller`` (started by the local stack) drives the app's event handlers with the events Lambda
would build, from the tables in :mod:`chalicelib.events`:

* the results table's DynamoDB stream → ``STREAM_HANDLER``: every shard is read from ``TRIM_HORIZON`` (nothing is
  missed), up to 100 records per batch; when the handler raises, the same batch is retried after a short delay and
  the shard does not advance (Lambda's behaviour with no retry limit);
* each queue of ``QUEUE_HANDLERS`` → its handler: up to 10 messages per batch (long poll, 1 s), then Lambda's
  ``ReportBatchItemFailures`` semantics: the messages not listed in ``batchItemFailures`` are deleted, the listed
  ones stay and come back after the queue's visibility timeout (then, past ``maxReceiveCount``, the dead-letter
  queue); a handler that raises, or reports an identifier that is not in the batch, fails the whole batch;
* each ``SCHEDULES`` entry → its handler, every period, with an EventBridge "Scheduled Event".

Each source runs in its own thread, each queue in ``QUEUE_CONCURRENCY`` threads (batches in parallel, as Lambda
scales out; ``RELAIS_LOCAL_QUEUE_CONCURRENCY`` from 1 to 16). The log says what ran and how it ended (counts,
handler names, exception types), never an event, a message body or an exception message.
:class:`Poller` exposes one-shot methods for tests: :meth:`Poller.poll_stream_once`,
:meth:`Poller.poll_queue_once`, :meth:`Poller.run_schedules_once`.
"""

from __future__ import annotations

import base64
import functools
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from chalicelib.config import Settings

log = logging.getLogger("local.poller")  # outside "relais": Powertools owns that one

Handler = Callable[..., Any]

STREAM_BATCH_SIZE = 100
QUEUE_BATCH_SIZE = 10
QUEUE_WAIT_SECONDS = 1
#: Consumers per queue: Lambda scales a queue's function out to several concurrent batches; one consumer would make
#: the local stack a single-file line behind a slow receiver. ``RELAIS_LOCAL_QUEUE_CONCURRENCY`` overrides it.
QUEUE_CONCURRENCY = 4
MAX_QUEUE_CONCURRENCY = 16


def resolve(spec: str) -> Handler:
    """The function named by ``"package.module:function"``; ``ValueError`` if it cannot be found."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"handler {spec!r}: expected 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"handler {spec!r}: cannot import {module_name} ({type(error).__name__})") from error
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"handler {spec!r}: {module_name} has no {attribute}")
    if not callable(target):
        raise ValueError(f"handler {spec!r}: not callable")
    handler: Handler = target
    return handler


def _takes_context(handler: Handler) -> bool:
    """Whether ``handler`` accepts ``(event, context)`` (Lambda's signature) rather than ``(event)`` alone."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def describe_failure(error: BaseException) -> str:
    """Where and what kind of exception, without its message (messages may carry data)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__name__
    last = frames[-1]
    try:
        where = str(Path(last.filename).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        where = Path(last.filename).name
    return f"{type(error).__name__} at {where}:{last.lineno}"


class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    def __init__(self, function_name: str, region: str, timeout_seconds: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this invocation's timeout (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class QueueBatch:
    """How one ``poll_queue_once`` ended."""

    received: int = 0
    deleted: int = 0
    failed: int = 0
    raised: bool = False


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    last_sequence: str | None = None
    finished: bool = False
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class _Schedule:
    name: str
    period: float
    spec: str
    handler: Handler
    next_run: float = field(default=0.0)


def _to_lambda_json(value: Any) -> Any:
    """A GetRecords value as Lambda serialises it: bytes → base64 text, datetimes → epoch seconds."""
    if isinstance(value, dict):
        return {key: _to_lambda_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_lambda_json(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def stream_record(record: Mapping[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """One Lambda DynamoDB stream record from one ``GetRecords`` record."""
    event: dict[str, Any] = _to_lambda_json(dict(record))
    event["awsRegion"] = region  # moto reports us-east-1 whatever the table's region
    event["eventSourceARN"] = stream_arn
    return event


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One Lambda SQS record from one ``ReceiveMessage`` message."""
    attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        item: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value.get("DataType")}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        attributes[name] = item
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def scheduled_event(name: str, region: str, account: str = "000000000000") -> dict[str, Any]:
    """An EventBridge scheduled event, as a rule named after the schedule would send it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/relais-{name}"],
        "detail": {},
    }


class Poller:
    """Calls the app's event handlers with Lambda-shaped events read from the stream, the queues and the clock.

    The handler tables default to those of :mod:`chalicelib.events`, read when the poller is built; every handler
    is resolved then, so a wrong ``"module:function"`` fails at start rather than at the first event.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        stream_arn: str | None,
        session: Any = None,
        queue_handlers: Mapping[str, str] | None = None,
        schedules: Mapping[str, tuple[int, str]] | None = None,
        stream_handler: str | None = None,
        stream_retry_delay: float = 1.0,
        stream_retry_max_delay: float = 10.0,
        wait_seconds: int = QUEUE_WAIT_SECONDS,
        function_timeout_seconds: float = 60.0,
        shard_refresh_seconds: float = 5.0,
        queue_concurrency: int = QUEUE_CONCURRENCY,
    ) -> None:
        from chalicelib import events

        if session is None:
            import boto3

            session = boto3.session.Session(region_name=settings.region)
        self.settings = settings
        self.region = settings.region
        self.stream_arn = stream_arn or None
        self.stream_retry_delay = stream_retry_delay
        self.stream_retry_max_delay = stream_retry_max_delay
        self.wait_seconds = wait_seconds
        self.function_timeout_seconds = function_timeout_seconds
        if not 1 <= queue_concurrency <= MAX_QUEUE_CONCURRENCY:
            raise ValueError(f"queue concurrency must be between 1 and {MAX_QUEUE_CONCURRENCY}: {queue_concurrency}")
        self.queue_concurrency = queue_concurrency
        self._sqs = session.client("sqs")
        self._streams = session.client("dynamodbstreams")

        table = dict(events.QUEUE_HANDLERS if queue_handlers is None else queue_handlers)
        self.queue_handlers: dict[str, tuple[str, Handler]] = {}
        self._queue_urls: dict[str, str] = {}
        for setting_name, spec in table.items():
            url = getattr(settings, setting_name, None)
            if not isinstance(url, str) or not url:
                raise ValueError(f"queue handler {spec!r}: setting {setting_name!r} names no queue URL")
            self.queue_handlers[setting_name] = (spec, resolve(spec))
            self._queue_urls[setting_name] = url
        self._queue_arns: dict[str, str] = {}

        spec = events.STREAM_HANDLER if stream_handler is None else stream_handler
        self.stream_handler: tuple[str, Handler] | None = (spec, resolve(spec)) if spec else None
        self._shards: dict[str, _Shard] = {}
        self.shard_refresh_seconds = shard_refresh_seconds
        self._shards_refreshed_at: float | None = None

        now = time.monotonic()
        self._schedules = [
            _Schedule(name, float(period), spec, resolve(spec), next_run=now + float(period))
            for name, (period, spec) in (events.SCHEDULES if schedules is None else schedules).items()
        ]

    @property
    def schedule_names(self) -> list[str]:
        """The names of the schedules this poller runs."""
        return [schedule.name for schedule in self._schedules]

    # --- invocation --------------------------------------------------------------------------------------------

    def _invoke(self, spec: str, handler: Handler, event: dict[str, Any]) -> Any:
        context = LambdaContext(spec.rpartition(":")[2], self.region, self.function_timeout_seconds)
        if _takes_context(handler):
            return handler(event, context)
        return handler(event)

    # --- DynamoDB stream ---------------------------------------------------------------------------------------

    def _refresh_shards(self) -> None:
        assert self.stream_arn is not None
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self._streams.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                if shard_id not in self._shards:
                    self._shards[shard_id] = _Shard(shard_id, shard.get("ParentShardId"))
            start = description.get("LastEvaluatedShardId")
            if not start:
                return

    def _ready(self, shard: _Shard, now: float) -> bool:
        if shard.finished or shard.retry_at > now:
            return False
        parent = self._shards.get(shard.parent_id) if shard.parent_id else None
        return parent is None or parent.finished  # a child shard waits for its parent: order is kept per key

    def poll_stream_once(self) -> int:
        """Read one batch from every ready shard and hand it to the stream handler; the records handled.

        A batch whose handler raises is not acknowledged: the shard is re-read from the last handled record after
        a backoff (``stream_retry_delay``, doubling up to ``stream_retry_max_delay``).
        """
        if self.stream_arn is None or self.stream_handler is None:
            return 0
        spec, handler = self.stream_handler
        now = time.monotonic()
        if self._shards_refreshed_at is None or now - self._shards_refreshed_at >= self.shard_refresh_seconds:
            self._refresh_shards()
            self._shards_refreshed_at = now
        handled = 0
        for shard in list(self._shards.values()):
            if not self._ready(shard, now):
                continue
            if shard.iterator is None:
                shard.iterator = self._shard_iterator(shard)
            try:
                answer = self._streams.get_records(ShardIterator=shard.iterator, Limit=STREAM_BATCH_SIZE)
            except self._streams.exceptions.ExpiredIteratorException:
                shard.iterator = None
                continue
            except self._streams.exceptions.TrimmedDataAccessException:
                log.warning(
                    "stream: shard %s trimmed past the last handled record; reading from the oldest", shard.shard_id
                )
                shard.iterator, shard.last_sequence = None, None
                continue
            records = answer.get("Records", [])
            if records:
                event = {"Records": [stream_record(r, self.stream_arn, self.region) for r in records]}
                try:
                    self._invoke(spec, handler, event)
                except Exception as error:
                    shard.failures += 1
                    delay = min(self.stream_retry_delay * 2 ** (shard.failures - 1), self.stream_retry_max_delay)
                    shard.retry_at = time.monotonic() + delay
                    shard.iterator = None  # re-read the same batch
                    log.warning(
                        "stream: %s failed on %d record(s) (%s, attempt %d); retrying in %.1f s",
                        spec,
                        len(records),
                        describe_failure(error),
                        shard.failures,
                        delay,
                    )
                    continue
                if shard.failures:
                    log.info("stream: %s succeeded after %d failed attempt(s)", spec, shard.failures)
                shard.failures, shard.retry_at = 0, 0.0
                shard.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
                handled += len(records)
                log.info("stream: %d record(s) -> %s", len(records), spec)
            shard.iterator = answer.get("NextShardIterator")
            if shard.iterator is None:
                shard.finished = True  # closed shard, read to its end: its children may start
                self._shards_refreshed_at = None
        return handled

    def _shard_iterator(self, shard: _Shard) -> str:
        assert self.stream_arn is not None
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
        if shard.last_sequence is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["SequenceNumber"] = shard.last_sequence
        iterator: str = self._streams.get_shard_iterator(**kwargs)["ShardIterator"]
        return iterator

    # --- SQS -----------------------------------------------------------------------------------------------------

    def _queue_arn(self, setting_name: str) -> str:
        if setting_name not in self._queue_arns:
            answer = self._sqs.get_queue_attributes(
                QueueUrl=self._queue_urls[setting_name], AttributeNames=["QueueArn"]
            )
            self._queue_arns[setting_name] = answer["Attributes"]["QueueArn"]
        return self._queue_arns[setting_name]

    def poll_queue_once(self, setting_name: str) -> QueueBatch:
        """Receive one batch from the queue named by ``setting_name``, run its handler, delete what succeeded."""
        if setting_name not in self.queue_handlers:
            raise KeyError(f"no queue handler for setting {setting_name!r}")
        spec, handler = self.queue_handlers[setting_name]
        url = self._queue_urls[setting_name]
        queue_arn = self._queue_arn(setting_name)
        answer = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=QUEUE_BATCH_SIZE,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        batch = QueueBatch(received=len(messages))
        if not messages:
            return batch
        event = {"Records": [sqs_record(m, queue_arn, self.region) for m in messages]}
        try:
            result = self._invoke(spec, handler, event)
        except Exception as error:
            batch.raised, batch.failed = True, len(messages)
            log.warning(
                "%s: %s raised on %d message(s) (%s); none deleted",
                setting_name,
                spec,
                len(messages),
                describe_failure(error),
            )
            return batch
        failed_ids = self._failed_ids(result, {m["MessageId"] for m in messages})
        if failed_ids is None:
            batch.failed = len(messages)
            log.warning("%s: %s returned an invalid batchItemFailures; whole batch failed", setting_name, spec)
            return batch
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            answer = self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            batch.deleted += len(answer.get("Successful", []))
        batch.failed = len(messages) - len(done)
        log.info(
            "%s: %d message(s) -> %s: %d done, %d failed", setting_name, len(messages), spec, len(done), batch.failed
        )
        return batch

    @staticmethod
    def _failed_ids(result: Any, batch_ids: set[str]) -> set[str] | None:
        """The ids reported in ``batchItemFailures``; ``None`` when the answer is invalid (Lambda: batch failed)."""
        if result is None:
            return set()
        if not isinstance(result, Mapping):
            return None  # Lambda cannot read it as a batch response: the batch failed
        failures = result.get("batchItemFailures")
        if failures is None:
            return set()
        if not isinstance(failures, list):
            return None
        ids: set[str] = set()
        for failure in failures:
            item = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
            if not isinstance(item, str) or item not in batch_ids:
                return None
            ids.add(item)
        return ids

    # --- schedules -------------------------------------------------------------------------------------------

    def run_schedules_once(self, *, due_only: bool = False) -> list[str]:
        """Run every schedule (or, with ``due_only``, those whose period has elapsed); the names that ran."""
        return [schedule.name for schedule in self._schedules if self._run_schedule(schedule, due_only=due_only)]

    def _run_schedule(self, schedule: _Schedule, *, due_only: bool) -> bool:
        now = time.monotonic()
        if due_only and schedule.next_run > now:
            return False
        schedule.next_run = now + schedule.period
        try:
            self._invoke(schedule.spec, schedule.handler, scheduled_event(schedule.name, self.region))
        except Exception as error:
            log.warning("schedule %s: %s failed (%s)", schedule.name, schedule.spec, describe_failure(error))
        return True

    # --- threads ---------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll every source, each in its own thread, until ``stop`` is set."""
        loops: list[tuple[str, Callable[[], object], float]] = []
        if self.stream_arn is not None and self.stream_handler is not None:
            loops.append(("stream", self.poll_stream_once, 0.25))
        for setting_name in self.queue_handlers:
            step = functools.partial(self.poll_queue_once, setting_name)
            for consumer in range(self.queue_concurrency):
                loops.append((f"{setting_name}-{consumer + 1}", step, 0.0))
        for schedule in self._schedules:
            loops.append((schedule.name, functools.partial(self._run_schedule, schedule, due_only=True), 0.5))
        threads = [
            threading.Thread(target=self._loop, args=(name, step, pause, stop), name=f"poller-{name}", daemon=True)
            for name, step, pause in loops
        ]
        for thread in threads:
            thread.start()
        stop.wait()
        for thread in threads:
            thread.join(timeout=self.wait_seconds + 5)

    @staticmethod
    def _loop(name: str, step: Callable[[], object], pause: float, stop: threading.Event) -> None:
        """Call ``step`` until ``stop``; pause ``pause`` s after an idle step (one that handled nothing)."""
        errors = 0
        while not stop.is_set():
            try:
                busy = step()
                errors = 0
            except Exception as error:
                if stop.is_set():
                    break  # shutting down: the AWS stand-in may already be gone
                errors += 1
                if errors == 1 or errors % 30 == 0:
                    log.warning("%s: polling failed (%s); retrying", name, describe_failure(error))
                stop.wait(min(2.0 * errors, 10.0))
                continue
            if pause and not busy:
                stop.wait(pause)


def _log_to_stdout() -> None:
    """Our own lines on stdout, plainly; libraries log only from WARNING (Python's last-resort handler)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def queue_concurrency(environ: Mapping[str, str]) -> int:
    """``RELAIS_LOCAL_QUEUE_CONCURRENCY`` (consumers per queue), or the default; ``ValueError`` if it is not 1 to 16."""
    text = environ.get("RELAIS_LOCAL_QUEUE_CONCURRENCY", "").strip()
    if not text:
        return QUEUE_CONCURRENCY
    if not text.isdigit() or not 1 <= int(text) <= MAX_QUEUE_CONCURRENCY:
        raise ValueError(f"RELAIS_LOCAL_QUEUE_CONCURRENCY must be a whole number from 1 to {MAX_QUEUE_CONCURRENCY}")
    return int(text)


def main() -> int:
    """Run the poller with the settings of the environment until SIGINT or SIGTERM."""
    _log_to_stdout()
    from chalicelib import events
    from chalicelib.config import SettingsError, get_settings

    try:
        settings = get_settings()
        poller = Poller(
            settings,
            stream_arn=os.environ.get("RELAIS_RESULTS_STREAM_ARN"),
            queue_concurrency=queue_concurrency(os.environ),
        )
        # Every other stream (the audit chain's…) gets a stream-only poller of its own.
        others = [
            Poller(settings, stream_arn=os.environ.get(env_name), stream_handler=spec, queue_handlers={}, schedules={})
            for env_name, spec in events.STREAM_HANDLERS.items()
            if env_name != "RELAIS_RESULTS_STREAM_ARN" and os.environ.get(env_name)
        ]
    except (SettingsError, ValueError) as error:
        print(f"poller: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sources = (["stream"] if poller.stream_arn and poller.stream_handler else []) + list(poller.queue_handlers)
    log.info(
        "poller: driving %s (%d consumers per queue); %d schedule(s)",
        ", ".join(sources) if sources else "nothing",
        poller.queue_concurrency,
        len(poller.schedule_names),
    )
    if not poller.stream_arn:
        log.warning("poller: RELAIS_RESULTS_STREAM_ARN is not set; the results stream is not read")
    threads = [threading.Thread(target=other.run, args=(stop,), daemon=True) for other in others]
    for thread in threads:
        thread.start()
    poller.run(stop)
    for thread in threads:
        thread.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
