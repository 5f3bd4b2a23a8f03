"""The local stand-in for Lambda's event source mappings and schedules.

``python -m infra.local.poller`` (started by the local stack) drives the app's event handlers with the events Lambda
would build. What it drives is read from ``app.event_sources``, the list the Chalice decorators fill and ``chalice
package`` deploys (:func:`app_wiring`): nothing is declared twice. Each handler is called as Lambda calls it, by its
handler string (the decorated function) with ``(event, context)``.

* each DynamoDB stream (``on_dynamodb_record``) → its handler: the stream's placeholder ARN names a table
  ``relais-<x>``, whose stream ARN is in the environment as ``RELAIS_<X>_STREAM_ARN`` (the stack outputs); every
  shard is read from ``TRIM_HORIZON`` (nothing is missed), up to the source's batch size; when the handler raises,
  the same batch is retried after a short delay and the shard does not advance (Lambda's behaviour with no retry
  limit);
* each queue (``on_sqs_message``) → its consumer: the queue placeholder ``relais-<x>`` is the queue whose URL is the
  setting ``<x>_queue_url``; up to the source's batch size (at most 10, SQS's limit per receive; long poll, 1 s),
  then Lambda's ``ReportBatchItemFailures`` semantics: the messages not listed in ``batchItemFailures`` are
  deleted, the listed ones stay and come back after the queue's visibility timeout (then, past ``maxReceiveCount``,
  the dead-letter queue); a handler that raises, or reports an identifier that is not in the batch, fails the whole
  batch;
* each schedule (``schedule``, a ``rate(...)`` expression) → its handler, at the deployed rate, with an EventBridge
  "Scheduled Event"; the first run comes one period after start.

Each handler's context counts down from its function's timeout in the template (``infra.iam.FUNCTIONS``: the notifier
30 s, national delivery 60 s…), so code that watches the time left (retries, SMS pacing) stops when it would on AWS.

Any other kind of event source fails the poller at start (it would otherwise run in AWS and never locally).
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
import logging
import os
import re
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
from typing import Any, TypeVar

from chalicelib.config import Settings

log = logging.getLogger("local.poller")  # outside "relais": Powertools owns that one

#: A handler as Lambda calls it: ``handler(event, context)``.
Handler = Callable[[dict[str, Any], Any], Any]

#: Messages per ``ReceiveMessage`` at most (SQS's limit; Lambda batches more only with a batching window).
MAX_RECEIVE = 10
QUEUE_WAIT_SECONDS = 1
#: Consumers per queue: Lambda scales a queue's function out to several concurrent batches; one consumer would make
#: the local stack a single-file line behind a slow receiver. ``RELAIS_LOCAL_QUEUE_CONCURRENCY`` overrides it.
QUEUE_CONCURRENCY = 4
MAX_QUEUE_CONCURRENCY = 16


# --- what to drive: the app's event sources ---------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A stream or queue handler: ``"module:function"``, and the most records one event holds."""

    spec: str
    batch_size: int


@dataclass(frozen=True)
class Schedule:
    """A scheduled handler: ``"module:function"`` and its expression as deployed (``rate(5 minutes)``)."""

    spec: str
    expression: str

    @property
    def period(self) -> float:
        """Seconds between two runs."""
        return schedule_period(self.expression)


@dataclass(frozen=True)
class Wiring:
    """What the poller drives: every event source of the app, keyed by where the local stack finds it."""

    #: Settings attribute naming the queue URL (``national_queue_url``) → the queue's consumer.
    queues: Mapping[str, Source] = field(default_factory=dict)
    #: Environment variable naming the stream ARN (``RELAIS_RESULTS_STREAM_ARN``) → the stream's handler.
    streams: Mapping[str, Source] = field(default_factory=dict)
    #: Schedule name (Chalice's: the handler's name) → the schedule.
    schedules: Mapping[str, Schedule] = field(default_factory=dict)

    def specs(self) -> list[str]:
        """Every handler wired, in no particular order."""
        sources: list[Source | Schedule] = [*self.queues.values(), *self.streams.values(), *self.schedules.values()]
        return [source.spec for source in sources]


_Wired = TypeVar("_Wired", Source, Schedule)

_RATE = re.compile(r"rate\((?P<value>[1-9][0-9]*) (?P<unit>minute|hour|day)s?\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_period(expression: str) -> float:
    """Seconds between two runs of an EventBridge ``rate(N minutes|hours|days)`` expression; ValueError otherwise.

    A ``cron(...)`` expression is refused: the poller would have to run it at wall-clock times; none is used.
    """
    match = _RATE.fullmatch(expression.strip())
    if match is None:
        raise ValueError(f"schedule {expression!r}: the local poller runs rate(N minutes|hours|days) only")
    return float(int(match["value"]) * _UNIT_SECONDS[match["unit"]])


def handler_spec(handler_string: str) -> str:
    """Chalice's handler string ``"package.module.function"`` → ``"package.module:function"``."""
    module_name, _, attribute = handler_string.rpartition(".")
    return f"{module_name}:{attribute}"


def _resource_suffix(placeholder: str, handler_string: str) -> str:
    """``relais-national`` → ``national``, as packaging reads the placeholder (:mod:`infra.template`)."""
    from infra.template import PackagingError, placeholder_suffix

    try:
        return placeholder_suffix(placeholder).replace("-", "_")
    except PackagingError as error:
        raise ValueError(f"{handler_string}: {error}") from None


def _add(table: dict[str, _Wired], key: str, entry: _Wired) -> None:
    if key in table:
        raise ValueError(f"{entry.spec}: {key} is already driven by {table[key].spec}")
    table[key] = entry


def app_wiring(app: Any = None) -> Wiring:
    """Every event source registered on ``app`` (Relais's ``app.py`` by default), as the local stack finds it.

    The names in the code are placeholders that packaging replaces (:mod:`infra.template`): queue ``relais-<x>`` is
    the queue of setting ``<x>_queue_url``; the stream of table ``relais-<x>`` is the ARN in the environment variable
    ``RELAIS_<X>_STREAM_ARN`` (the stack outputs, :data:`infra.provision.OUTPUT_ENV`). ``ValueError`` for a source
    the poller cannot drive (another kind, a cron schedule, two handlers on one queue or stream): a handler that
    runs in AWS must run locally too.
    """
    from chalice.app import DynamoDBEventConfig, ScheduledEventConfig, SQSEventConfig

    if app is None:
        from app import app as relais_app

        app = relais_app
    queues: dict[str, Source] = {}
    streams: dict[str, Source] = {}
    schedules: dict[str, Schedule] = {}
    for source in app.event_sources:
        spec = handler_spec(source.handler_string)
        if isinstance(source, SQSEventConfig):
            queue = source.queue or (source.queue_arn or "").rpartition(":")[2]
            key = _resource_suffix(queue, source.handler_string) + "_queue_url"
            _add(queues, key, Source(spec, source.batch_size))
        elif isinstance(source, DynamoDBEventConfig):
            table_name = source.stream_arn.split(":table/", 1)[-1].split("/", 1)[0]
            key = f"RELAIS_{_resource_suffix(table_name, source.handler_string).upper()}_STREAM_ARN"
            _add(streams, key, Source(spec, source.batch_size))
        elif isinstance(source, ScheduledEventConfig):
            expression = source.schedule_expression
            text = expression if isinstance(expression, str) else expression.to_string()
            schedule_period(text)  # a cron expression fails here, at start
            _add(schedules, source.name, Schedule(spec, text))
        else:
            raise ValueError(f"{source.handler_string}: a {type(source).__name__} is not driven by the local poller")
    return Wiring(queues=queues, streams=streams, schedules=schedules)


# --- invocation ---------------------------------------------------------------------------------------------------


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
class _Stream:
    variable: str
    arn: str
    spec: str
    handler: Handler
    batch_size: int
    shards: dict[str, _Shard] = field(default_factory=dict)
    refreshed_at: float | None = None


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
    """Calls the app's event handlers with Lambda-shaped events read from the streams, the queues and the clock.

    What it drives is :func:`app_wiring` of the app unless ``wiring`` is given (tests); the stream ARNs are read from
    ``stream_arns`` (the environment by default). Every handler is resolved when the poller is built, so a wrong
    ``"module:function"`` fails at start rather than at the first event; a stream whose ARN is not known is listed
    in :attr:`unread_streams` and not read.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        wiring: Wiring | None = None,
        stream_arns: Mapping[str, str] | None = None,
        session: Any = None,
        stream_retry_delay: float = 1.0,
        stream_retry_max_delay: float = 10.0,
        wait_seconds: int = QUEUE_WAIT_SECONDS,
        function_timeout_seconds: float = 60.0,
        function_timeouts: Mapping[str, float] | None = None,
        shard_refresh_seconds: float = 5.0,
        queue_concurrency: int = QUEUE_CONCURRENCY,
    ) -> None:
        if wiring is None:
            wiring = app_wiring()
        if stream_arns is None:
            stream_arns = os.environ
        if session is None:
            import boto3

            session = boto3.session.Session(region_name=settings.region)
        self.settings = settings
        self.region = settings.region
        self.wiring = wiring
        self.stream_retry_delay = stream_retry_delay
        self.stream_retry_max_delay = stream_retry_max_delay
        self.wait_seconds = wait_seconds
        self.function_timeout_seconds = function_timeout_seconds  # a handler the template does not deploy (tests)
        self.function_timeouts = dict(template_timeouts() if function_timeouts is None else function_timeouts)
        if not 1 <= queue_concurrency <= MAX_QUEUE_CONCURRENCY:
            raise ValueError(f"queue concurrency must be between 1 and {MAX_QUEUE_CONCURRENCY}: {queue_concurrency}")
        self.queue_concurrency = queue_concurrency
        self._sqs = session.client("sqs")
        self._streams = session.client("dynamodbstreams")

        self.queue_handlers: dict[str, tuple[str, Handler]] = {}
        self._queue_urls: dict[str, str] = {}
        self._queue_batch_sizes: dict[str, int] = {}
        for setting_name, source in wiring.queues.items():
            url = getattr(settings, setting_name, None)
            if not isinstance(url, str) or not url:
                raise ValueError(f"queue handler {source.spec!r}: setting {setting_name!r} names no queue URL")
            self.queue_handlers[setting_name] = (source.spec, resolve(source.spec))
            self._queue_urls[setting_name] = url
            self._queue_batch_sizes[setting_name] = min(source.batch_size, MAX_RECEIVE)
        self._queue_arns: dict[str, str] = {}

        self.streams: dict[str, _Stream] = {}
        self.unread_streams: list[str] = []
        for variable, source in wiring.streams.items():
            handler = resolve(source.spec)
            arn = stream_arns.get(variable)
            if arn:
                self.streams[variable] = _Stream(variable, arn, source.spec, handler, source.batch_size)
            else:
                self.unread_streams.append(variable)
        self.shard_refresh_seconds = shard_refresh_seconds

        now = time.monotonic()
        self._schedules = []
        for name, schedule in wiring.schedules.items():
            period = schedule.period
            handler = resolve(schedule.spec)
            self._schedules.append(_Schedule(name, period, schedule.spec, handler, next_run=now + period))

    @property
    def schedule_names(self) -> list[str]:
        """The names of the schedules this poller runs."""
        return [schedule.name for schedule in self._schedules]

    @property
    def schedule_periods(self) -> dict[str, float]:
        """Each schedule's period in seconds, by name."""
        return {schedule.name: schedule.period for schedule in self._schedules}

    # --- invocation --------------------------------------------------------------------------------------------

    def _invoke(self, spec: str, handler: Handler, event: dict[str, Any]) -> Any:
        """Call ``handler`` as Lambda does: ``(event, context)``."""
        timeout = self.function_timeouts.get(spec.replace(":", "."), self.function_timeout_seconds)
        context = LambdaContext(spec.rpartition(":")[2], self.region, timeout)
        return handler(event, context)

    # --- DynamoDB streams --------------------------------------------------------------------------------------

    def _refresh_shards(self, stream: _Stream) -> None:
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": stream.arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self._streams.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                if shard_id not in stream.shards:
                    stream.shards[shard_id] = _Shard(shard_id, shard.get("ParentShardId"))
            start = description.get("LastEvaluatedShardId")
            if not start:
                return

    @staticmethod
    def _ready(stream: _Stream, shard: _Shard, now: float) -> bool:
        if shard.finished or shard.retry_at > now:
            return False
        parent = stream.shards.get(shard.parent_id) if shard.parent_id else None
        return parent is None or parent.finished  # a child shard waits for its parent: order is kept per key

    def poll_stream_once(self, variable: str | None = None) -> int:
        """Read one batch from every ready shard of every stream (or of the one whose ARN ``variable`` names) and
        hand it to the stream's handler; the records handled.

        A batch whose handler raises is not acknowledged: the shard is re-read from the last handled record after
        a backoff (``stream_retry_delay``, doubling up to ``stream_retry_max_delay``).
        """
        streams = list(self.streams.values()) if variable is None else [self.streams[variable]]
        return sum(self._poll_stream(stream) for stream in streams)

    def _poll_stream(self, stream: _Stream) -> int:
        spec, handler = stream.spec, stream.handler
        now = time.monotonic()
        if stream.refreshed_at is None or now - stream.refreshed_at >= self.shard_refresh_seconds:
            self._refresh_shards(stream)
            stream.refreshed_at = now
        handled = 0
        for shard in list(stream.shards.values()):
            if not self._ready(stream, shard, now):
                continue
            if shard.iterator is None:
                shard.iterator = self._shard_iterator(stream, shard)
            try:
                answer = self._streams.get_records(ShardIterator=shard.iterator, Limit=stream.batch_size)
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
                event = {"Records": [stream_record(r, stream.arn, self.region) for r in records]}
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
                stream.refreshed_at = None
        return handled

    def _shard_iterator(self, stream: _Stream, shard: _Shard) -> str:
        kwargs: dict[str, Any] = {"StreamArn": stream.arn, "ShardId": shard.shard_id}
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
            MaxNumberOfMessages=self._queue_batch_sizes[setting_name],
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
        for variable, stream in self.streams.items():
            loops.append((stream.spec.rpartition(":")[2], functools.partial(self.poll_stream_once, variable), 0.25))
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


def template_timeouts() -> dict[str, float]:
    """Each deployed handler's timeout in seconds, by dotted name (``chalicelib.events.notify.on_notify_message``)."""
    from infra.iam import FUNCTIONS

    return {handler: float(spec.timeout) for handler, spec in FUNCTIONS.items()}


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
    from chalicelib.config import SettingsError, get_settings
    from infra.local import local_iam

    try:
        local_iam.install_from_environment()  # each handler's calls checked against its function's IAM policy
        poller = Poller(get_settings(), queue_concurrency=queue_concurrency(os.environ))
    except (SettingsError, ValueError) as error:
        print(f"poller: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sources = [stream.spec for stream in poller.streams.values()] + list(poller.queue_handlers)
    log.info(
        "poller: driving %s (%d consumers per queue); %d schedule(s)",
        ", ".join(sources) if sources else "nothing",
        poller.queue_concurrency,
        len(poller.schedule_names),
    )
    for variable in poller.unread_streams:
        log.warning("poller: %s is not set; %s is not driven", variable, poller.wiring.streams[variable].spec)
    poller.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
