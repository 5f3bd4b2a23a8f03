"""Issue 10, build point 5: the peak day, on paper and by simulation.

A discrete-event simulation of 10 January 2022 as Relais would live it: 2.28 million results over the day's hourly
shape of French pharmacies, with a 10-minute burst at 500 results/s inside the busiest hour, through

1. **intake** — API Gateway's token bucket on ``POST /v1/results`` (``infra/template.py`` ``INTAKE_THROTTLE``; a
   request over it gets ``429 Retry-After: 1`` and the pharmacy sends it again a second later), then the API
   function (its concurrency checked by Little's law against its reserved concurrency);
2. **the outbox relay** — the results table's stream, one Lambda invocation at a time per shard, batches of up to
   the decorator's ``batch_size``, each batch sent to the national then the notify queue by ``SendMessageBatch`` of 10,
   one after the other (``chalicelib/events/dispatch.py``);
3. **the two queue consumers**, message by message — the national reporter and the notifier: Lambda's SQS event
   source starts 5 concurrent batches and adds up to 300 per minute while messages wait (AWS documentation), up to
   the template's ``max_concurrency`` (``infra/iam.py``); a batch of up to ``batch_size`` messages is handled one
   message after the other (``consume_batch``), each message taking the AWS calls measured for it
   (``bench/peak_costs.py``) at the latencies of :class:`Aws`, its own code's time measured on this machine scaled
   to the function's CPU share, and the outside call: the national receiver (200 ms median, log-normal, a slow tail)
   or the SMS / e-mail hand-over — SMS paced account-wide at ``sms_per_second`` (``chalicelib/config.py``), waiting
   in the function as ``RateLimiter`` does. A batch that outlives the function's timeout loses its unfinished
   messages to the queue's visibility timeout.

Per hour it reports the arrivals, the backlog of each queue (at the hour's end and its maximum), the p95 of
acceptance → ``reported`` and of acceptance → SMS for the results accepted in that hour; then the day's totals, the
AWS cost per result (``bench/peak_costs.py`` x :data:`PRICES`) and ``docs/capacity-peak-day.png``.

``python -m bench.peak`` (also from ``make bench``): seeded; ``--seed``, ``--national N``, ``--notify N``,
``--sms-per-second N`` try other settings than the template's; ``--no-chart``; ``--no-measure`` uses the per-result
figures recorded in ``bench/results/peak.json`` instead of measuring again. See ``docs/capacity.md``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "docs" / "capacity-peak-day.png"
RESULTS = Path(__file__).with_name("results")

DAY_SECONDS = 24 * 3600
INF = float("inf")

#: Notification kinds of a result (index into :data:`KIND_CHANNELS`), drawn with :data:`bench.peak_costs.CHANNEL_MIX`.
KIND_CHANNELS: tuple[tuple[str, ...], ...] = (("sms",), ("sms", "email"), ("email",), ())
KIND_SMS = (True, True, False, False)


# -- the day ----------------------------------------------------------------------------------------------------------
#: Relative results per hour of a pharmacy day at the peak of January 2022 (hour 0 = 00:00-01:00, Paris time):
#: closed at night (a trickle of late submissions), opening at 8-9, a morning peak, a lunch dip, a late-afternoon peak,
#: closing at 19-20. The weights are a shape, not data (no hourly figures of that day at hand): the shape's own busiest
#: hour is 2.6x its mean; with the burst inside it (:class:`Day`) that hour carries ~470,000 results, ~5x the mean.
HOURLY_SHAPE: tuple[float, ...] = (
    0.15, 0.05, 0.03, 0.03, 0.03, 0.05, 0.3, 1.5,   # 00-08
    5.0, 10.0, 11.5, 12.6, 8.0, 5.5, 8.5, 10.0,     # 08-16
    11.0, 12.0, 10.5, 6.0, 2.2, 0.8, 0.4, 0.2,      # 16-24
)  # fmt: skip


@dataclass(frozen=True)
class Day:
    total: int = 2_280_000
    shape: tuple[float, ...] = HOURLY_SHAPE
    burst_start_s: int = 11 * 3600 + 20 * 60  # 11:20, inside the busiest hour of the shape (11:00-12:00)
    burst_seconds: int = 600
    burst_rate: float = 500.0  # results per second offered during the burst (all pharmacies together)
    seconds: int = DAY_SECONDS
    drain_seconds: int = 3 * 3600  # simulated past the day's end, to empty the queues

    def rates(self) -> list[float]:
        """Results offered per second, second by second: the hourly shape (linear between hour centres, scaled so
        that the day's total is :attr:`total`), the burst replacing it for :attr:`burst_seconds`."""
        hours = len(self.shape)
        span = self.seconds / hours
        base = []
        for s in range(self.seconds):
            x = (s + 0.5) / span - 0.5
            lo = math.floor(x)
            w = x - lo
            a, b = self.shape[max(lo, 0)], self.shape[min(lo + 1, hours - 1)]
            base.append(a + (b - a) * w)
        burst = range(self.burst_start_s, min(self.burst_start_s + self.burst_seconds, self.seconds))
        outside = sum(base) - sum(base[s] for s in burst)
        scale = (self.total - self.burst_rate * len(burst)) / outside
        rates = [r * scale for r in base]
        for s in burst:
            rates[s] = self.burst_rate
        return rates


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's product for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 60:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# -- what the template sets -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Consumer:
    """An SQS-triggered function as deployed."""

    name: str
    batch_size: int
    max_concurrency: int  # the event source's MaximumConcurrency
    reserved_concurrency: int
    timeout_s: float
    memory_mb: int
    visibility_timeout_s: float

    @property
    def concurrency(self) -> int:
        """Concurrent batches the function can really run: a reserved concurrency below the event source's maximum
        throttles the invocations beyond it (their messages come back after the visibility timeout)."""
        return min(self.max_concurrency, self.reserved_concurrency)


@dataclass(frozen=True)
class Template:
    intake_rate: float
    intake_burst: int
    api_reserved: int
    api_memory_mb: int
    relay_batch: int
    relay_reserved: int
    relay_memory_mb: int
    national: Consumer
    notify: Consumer
    sms_per_second: float
    national_timeout_s: float
    reserved_total: int


def read_template() -> Template:
    """The settings as the code and the template declare them (``infra/iam.py``, the decorators, the settings'
    defaults, ``infra/template.py``, ``infra/resources.json``)."""
    from dataclasses import fields

    from chalice.app import DynamoDBEventConfig, SQSEventConfig

    from app import app
    from chalicelib.config import Settings
    from infra.iam import FUNCTIONS
    from infra.template import INTAKE_THROTTLE

    defaults: dict[str, Any] = {f.name: f.default for f in fields(Settings)}
    sources = {s.handler_string: s for s in app.event_sources}

    def batch_size(handler: str) -> int:
        source = sources[handler]
        assert isinstance(source, SQSEventConfig | DynamoDBEventConfig), f"{handler} reads no queue or stream"
        return int(source.batch_size)

    resources = json.loads((ROOT / "infra" / "resources.json").read_text())["Resources"]

    def consumer(handler: str, queue: str) -> Consumer:
        spec = FUNCTIONS[handler]
        return Consumer(
            name=spec.name,
            batch_size=batch_size(handler),
            max_concurrency=int(spec.max_concurrency or 1000),
            reserved_concurrency=spec.reserved_concurrency,
            timeout_s=float(spec.timeout),
            memory_mb=spec.memory,
            visibility_timeout_s=float(resources[queue]["Properties"]["VisibilityTimeout"]),
        )

    relay = "chalicelib.events.dispatch.on_results_stream"
    return Template(
        intake_rate=float(INTAKE_THROTTLE[0]),
        intake_burst=int(INTAKE_THROTTLE[1]),
        api_reserved=FUNCTIONS["app.app"].reserved_concurrency,
        api_memory_mb=FUNCTIONS["app.app"].memory,
        relay_batch=batch_size(relay),
        relay_reserved=FUNCTIONS[relay].reserved_concurrency,
        relay_memory_mb=FUNCTIONS[relay].memory,
        national=consumer("chalicelib.events.national.on_national_message", "NationalQueue"),
        notify=consumer("chalicelib.events.notify.on_notify_message", "NotifyQueue"),
        sms_per_second=float(defaults["sms_per_second"]),
        national_timeout_s=float(defaults["national_timeout_seconds"]),
        reserved_total=sum(f.reserved_concurrency for f in FUNCTIONS.values()),
    )


# -- what AWS does (assumptions, not measured here) -------------------------------------------------------------------
@dataclass(frozen=True)
class Aws:
    """AWS-side figures at eu-west-3 that this machine cannot measure: medians of an in-region call from Lambda
    (DynamoDB "single-digit milliseconds"; SQS, KMS, SNS, SES tens of ms), quotas and behaviours as documented."""

    op_ms: dict[str, float] = field(
        default_factory=lambda: {
            "dynamodb:GetItem": 4.0,
            "dynamodb:Query": 8.0,
            "dynamodb:PutItem": 6.0,
            "dynamodb:UpdateItem": 6.0,
            "dynamodb:DeleteItem": 6.0,
            "dynamodb:TransactWriteItems": 15.0,
            "sqs:SendMessageBatch": 10.0,
            "sqs:SendMessage": 8.0,
            "sqs:ChangeMessageVisibility": 8.0,
            "kms:Decrypt": 10.0,
            "kms:GenerateDataKey": 10.0,
            "ssm:GetParameter": 15.0,
            "sns:Publish": 40.0,  # SMS hand-over to SNS (not the handset's delivery)
            "ses:SendEmail": 40.0,
        }
    )
    op_sigma: float = 0.35  # log-normal spread of a message's AWS time around its median
    national_p50_ms: float = 200.0  # the national receiver's answer time (issue 10), log-normal ...
    national_sigma: float = 0.5  # ... p95 ≈ 2.3x the median
    national_slow_share: float = 0.002  # answers in the slow tail, 1 s to the client's timeout
    lambda_full_cpu_mb: int = 1769  # a function gets one vCPU at 1,769 MB, a share of it below (Lambda docs)
    invoke_ms: float = 25.0  # event source → handler, per batch (poll hand-over, invoke)
    cold_start_s: float = 1.5  # init of a new instance of a 512 MB function (app import on a CPU share)
    stream_lag_s: float = 0.1  # a committed write → its stream record readable
    stream_poll_s: float = 0.25  # Lambda polls each shard four times a second when idle
    stream_shards: int = 4  # a new on-demand table: 4 partitions (4,000 WCU), one shard each
    esm_start: int = 5  # SQS event source: 5 concurrent batches at first (Lambda docs) ...
    esm_ramp_per_s: float = 5.0  # ... then up to 300 more per minute while messages wait
    api_overhead_ms: float = 15.0  # API Gateway + Lambda invoke around the API function's own work
    account_concurrency: int = 1000  # Lambda concurrent executions per region (default quota)
    unreserved_minimum: int = 100  # Lambda keeps this much unreserved: reserved totals at most 900
    sms_quota_default: int = 20  # SNS transactional SMS per second, default account quota (raisable)


# -- per-result costs (measured by bench/peak_costs.py) ---------------------------------------------------------------
@dataclass(frozen=True)
class Costs:
    """What the simulation takes from the measurement: per stage, own code ms and the typical message's calls."""

    own_ms: dict[str, float]  # stage → ms per result on this machine
    sequence: dict[str, tuple[str, ...]]  # stage → typical message's calls in order, with "external:…" markers
    calls: dict[str, dict[str, float]]  # stage → operation → calls per result
    wru: dict[str, float]
    rru: dict[str, float]
    log_bytes: dict[str, float]
    invocations: dict[str, float]

    @classmethod
    def from_measured(cls, stages: dict[str, dict[str, Any]]) -> Costs:
        return cls(
            own_ms={k: v["own_code_ms_per_result"] for k, v in stages.items()},
            sequence={k: tuple(v["typical_message_calls"]) for k, v in stages.items()},
            calls={k: dict(v["calls_per_result"]) for k, v in stages.items()},
            wru={k: v["dynamodb_wru_per_result"] for k, v in stages.items()},
            rru={k: v["dynamodb_rru_per_result"] for k, v in stages.items()},
            log_bytes={k: v["log_bytes_per_result"] for k, v in stages.items()},
            invocations={k: v["invocations_per_result"] for k, v in stages.items()},
        )


def split_sequence(sequence: Sequence[str], aws: Aws, external: str) -> tuple[float, float]:
    """Median ms of the AWS calls before and after the message's outside call ``external`` (the whole if absent)."""
    before = after = 0.0
    seen = False
    for call in sequence:
        if call.startswith("external:"):
            seen = seen or call == f"external:{external}"
            continue
        ms = aws.op_ms.get(call, 8.0)
        if seen:
            after += ms
        else:
            before += ms
    return before, after


# -- results of a run -------------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank on ``round(q·(n-1))`` of the sorted values, as ``bench/delivery.py`` computes it; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])


@dataclass
class HourFigures:
    hour: int
    arrivals: int = 0  # results offered (first try) in the hour
    accepted: int = 0
    throttled: int = 0  # 429 answers in the hour (each retried a second later)
    national_backlog_end: int = 0
    national_backlog_max: int = 0
    notify_backlog_end: int = 0
    notify_backlog_max: int = 0
    reported_p95_s: float = 0.0
    reported_max_s: float = 0.0
    sms_p95_s: float = 0.0
    sms_max_s: float = 0.0


@dataclass
class StageRun:
    """What one queue consumer did over the day."""

    latencies: list[array[float]]  # per acceptance hour: seconds from acceptance to the stage's mark (reported / SMS)
    backlog_end: list[int]  # per hour: messages waiting (visible) at the hour's end
    backlog_max: list[int]
    done: int = 0  # messages handled to the end
    timed_out: int = 0  # messages of batches that outlived the function's timeout (handled again later)
    batches: int = 0
    busy_s: float = 0.0  # sum of batch durations (billed Lambda time)
    max_concurrency_used: int = 0
    last_done_s: float = 0.0


# -- stages -----------------------------------------------------------------------------------------------------------
Message = tuple[float, float, int]  # (visible at, accepted at, kind)


def intake(
    day: Day, template: Template, rng: random.Random, kinds: Sequence[float], hours: int
) -> tuple[list[tuple[float, int]], list[int], list[int], list[int]]:
    """API Gateway's token bucket, second by second: the accepted results ``(accepted at, kind)`` in time order,
    and per hour the results offered, accepted and the 429 answers."""
    rates = day.rates()
    offered, accepted_h, throttled = [0] * hours, [0] * hours, [0] * hours
    tokens = float(template.intake_burst)
    again = 0  # requests answered 429 the second before, sent again this second
    accepted: list[tuple[float, int]] = []
    for s in range(day.seconds + day.drain_seconds):
        h = min(s // 3600, hours - 1)
        n = poisson(rng, rates[s]) if s < day.seconds else 0
        offered[h] += n
        tokens = min(float(template.intake_burst), tokens + template.intake_rate)
        pending = again + n
        if not pending:
            continue
        take = min(pending, int(tokens))
        tokens -= take
        again = pending - take
        throttled[h] += again
        accepted_h[h] += take
        for t in sorted(s + rng.random() for _ in range(take)):
            accepted.append((t, _kind(rng, kinds)))
    return accepted, offered, accepted_h, throttled


def _kind(rng: random.Random, cumulative: Sequence[float]) -> int:
    x = rng.random()
    for i, edge in enumerate(cumulative):
        if x < edge:
            return i
    return len(cumulative) - 1


def relay(
    accepted: Sequence[tuple[float, int]],
    template: Template,
    aws: Aws,
    costs: Costs,
    rng: random.Random,
) -> tuple[list[Message], list[Message], float, int]:
    """The outbox relay per shard: messages on the national and the notify queues (time order), its busy seconds
    and its invocations."""
    shards = min(aws.stream_shards, template.relay_reserved)
    cpu = costs.own_ms.get("relay", 0.5) * aws.lambda_full_cpu_mb / template.relay_memory_mb / 1000
    send = aws.op_ms["sqs:SendMessageBatch"] / 1000
    per_shard: list[deque[tuple[float, float, int]]] = [deque() for _ in range(shards)]
    for t, kind in accepted:
        per_shard[rng.randrange(shards)].append((t + aws.stream_lag_s, t, kind))
    national: list[Message] = []
    notify: list[Message] = []
    busy, invocations = 0.0, 0
    for records in per_shard:
        free = 0.0
        while records:
            head = records[0][0]
            if head > free:  # idle: the next poll after the record is readable
                free = math.ceil(head / aws.stream_poll_s) * aws.stream_poll_s
            batch: list[tuple[float, float, int]] = []
            while records and records[0][0] <= free and len(batch) < template.relay_batch:
                batch.append(records.popleft())
            start = free + aws.invoke_ms / 1000
            chunks = math.ceil(len(batch) / 10)
            for i, (_, accepted_at, kind) in enumerate(batch):
                chunk = i // 10
                national.append((start + cpu * (i + 1) + send * (chunk + 1), accepted_at, kind))
                notify.append((start + cpu * len(batch) + send * (chunks + chunk + 1), accepted_at, kind))
            free = start + cpu * len(batch) + send * 2 * chunks
            busy += free - start + aws.invoke_ms / 1000
            invocations += 1
    national.sort()
    notify.sort()
    return national, notify, busy, invocations


ServiceFn = Callable[[float, int, random.Random], tuple[float, float | None]]


def consume(
    messages: Sequence[Message],
    consumer: Consumer,
    service: ServiceFn,
    aws: Aws,
    rng: random.Random,
    hours: int,
) -> StageRun:
    """Lambda's SQS event source and one consumer, message by message.

    ``service(start, kind, rng)`` handles one message starting at ``start``: ``(finished at, marked at)``, the mark
    being the moment measured (reported, SMS handed over; ``None``: nothing to measure for this message).
    """
    run = StageRun(
        latencies=[array("f") for _ in range(hours)],
        backlog_end=[0] * hours,
        backlog_max=[0] * hours,
    )
    limit = consumer.concurrency
    queue: deque[Message] = deque()
    returning: list[Message] = []  # messages of timed-out batches, visible again later
    busy: list[float] = []  # finish times of the running batches
    started_slots = 0  # instances started so far (each one's first batch pays a cold start)
    allowed, allowed_at = float(min(aws.esm_start, limit)), 0.0
    i, n = 0, len(messages)
    next_hour = 3600.0
    hour = 0

    def close_hours(until: float) -> None:
        nonlocal next_hour, hour
        while until >= next_hour and hour < hours:
            run.backlog_end[hour] = len(queue)
            hour += 1
            next_hour += 3600.0
            if hour < hours:
                run.backlog_max[hour] = len(queue)

    def dispatch(now: float) -> None:
        nonlocal started_slots
        batch: list[Message] = [queue.popleft() for _ in range(min(consumer.batch_size, len(queue)))]
        start = now + aws.invoke_ms / 1000
        if len(busy) >= started_slots:
            started_slots += 1
            start += aws.cold_start_s
        deadline = now + consumer.timeout_s
        t = start
        for k, message in enumerate(batch):
            done, mark = service(t, message[2], rng)
            if done > deadline:  # the function times out: the rest of the batch comes back after the timeout
                for late in batch[k:]:
                    heapq.heappush(returning, (now + consumer.visibility_timeout_s, late[1], late[2]))
                run.timed_out += len(batch) - k
                t = deadline
                break
            t = done
            run.done += 1
            if mark is not None:
                h = min(int(message[1] // 3600), hours - 1)
                run.latencies[h].append(mark - message[1])
        heapq.heappush(busy, t)
        run.batches += 1
        run.busy_s += t - now
        run.last_done_s = max(run.last_done_s, t)
        run.max_concurrency_used = max(run.max_concurrency_used, len(busy))

    while i < n or returning or queue or busy:
        next_arrival = messages[i][0] if i < n else INF
        next_return = returning[0][0] if returning else INF
        next_free = busy[0] if busy else INF
        now = min(next_arrival, next_return, next_free)
        close_hours(now)
        if now == next_free:
            heapq.heappop(busy)
        elif now == next_arrival:
            while i < n and messages[i][0] <= now:  # what arrived together is received together
                queue.append(messages[i])
                i += 1
        else:
            while returning and returning[0][0] <= now:
                queue.append(heapq.heappop(returning))
        # The event source's pollers: up to 300 more per minute while messages wait, back to 5 when none do.
        if queue:
            allowed = min(float(limit), allowed + aws.esm_ramp_per_s * (now - allowed_at))
        else:
            allowed = max(float(min(aws.esm_start, limit)), float(len(busy)))
        allowed_at = now
        while queue and len(busy) < int(allowed):
            dispatch(now)
        if hour < hours and len(queue) > run.backlog_max[hour]:
            run.backlog_max[hour] = len(queue)
    close_hours(INF)
    return run


def national_service(template: Template, aws: Aws, costs: Costs) -> ServiceFn:
    """One national message: the calls before the POST, the receiver's answer, the calls after (status, audit)."""
    before, after = split_sequence(costs.sequence.get("national", ()), aws, "post_bundle")
    cpu = costs.own_ms.get("national", 4.0) * aws.lambda_full_cpu_mb / template.national.memory_mb / 1000
    mu, sigma = math.log(aws.national_p50_ms / 1000), aws.national_sigma
    timeout = template.national_timeout_s

    def service(start: float, kind: int, rng: random.Random) -> tuple[float, float | None]:
        jitter = rng.lognormvariate(0.0, aws.op_sigma)
        if rng.random() < aws.national_slow_share:
            answer = rng.uniform(1.0, timeout)
        else:
            answer = min(rng.lognormvariate(mu, sigma), timeout)
        reported = start + cpu + (before + after) * jitter / 1000 + answer
        return reported, reported

    return service


def notify_service(template: Template, aws: Aws, costs: Costs, sms_per_second: float) -> ServiceFn:
    """One notify message: reads and claim, then per channel the hand-over (SMS paced account-wide) and its record."""
    sequence = costs.sequence.get("notify", ())
    before, after = split_sequence(sequence, aws, "send_sms")
    cpu = costs.own_ms.get("notify", 3.0) * aws.lambda_full_cpu_mb / template.notify.memory_mb / 1000
    sms_ms, email_ms = aws.op_ms["sns:Publish"], aws.op_ms["ses:SendEmail"]
    read_only = aws.op_ms["dynamodb:GetItem"]  # a result without channels: read, "not_pending"
    spacing = 1.0 / sms_per_second if sms_per_second > 0 else 0.0
    # The account-wide limiter as slots of 1/rate s, each taken once: a batch's messages are computed when the batch
    # starts, so reservations come out of time order; each takes the first free slot at or after its time.
    taken: set[int] = set()
    keep = int(900 / spacing) if spacing else 0

    def slot(t: float) -> float:
        nonlocal taken
        if not spacing:
            return t
        k = math.ceil(t / spacing)
        while k in taken:
            k += 1
        taken.add(k)
        if len(taken) > 500_000:  # forget slots long past (batches run at most 15 min)
            taken = {x for x in taken if x > k - keep}
        return k * spacing

    def service(start: float, kind: int, rng: random.Random) -> tuple[float, float | None]:
        channels = KIND_CHANNELS[kind]
        jitter = rng.lognormvariate(0.0, aws.op_sigma)
        if not channels:
            return start + cpu + read_only * jitter / 1000, None
        t = start + cpu + before * jitter / 1000
        sms_at: float | None = None
        for channel in channels:
            if channel == "sms":
                t = slot(t) + sms_ms * jitter / 1000
                sms_at = t
            else:
                t += email_ms * jitter / 1000
            t += after * jitter / 1000
        return t, sms_at

    return service


# -- one simulated day ------------------------------------------------------------------------------------------------
@dataclass
class DayRun:
    hours: list[HourFigures]
    totals: dict[str, Any]
    national: StageRun
    notify: StageRun


def simulate(
    day: Day,
    template: Template,
    aws: Aws,
    costs: Costs,
    *,
    seed: int = 1,
    mix: Sequence[float] = (0.8, 0.1, 0.05, 0.05),
) -> DayRun:
    rng = random.Random(seed)
    hours = math.ceil((day.seconds + day.drain_seconds) / 3600)
    cumulative, acc = [], 0.0
    for share in mix:
        acc += share
        cumulative.append(acc / sum(mix))
    accepted, offered, accepted_h, throttled = intake(day, template, rng, cumulative, hours)
    to_national, to_notify, relay_busy, relay_invocations = relay(accepted, template, aws, costs, rng)
    national = consume(to_national, template.national, national_service(template, aws, costs), aws, rng, hours)
    notify = consume(
        to_notify, template.notify, notify_service(template, aws, costs, template.sms_per_second), aws, rng, hours
    )
    figures = []
    for h in range(hours):
        reported, sms = national.latencies[h], notify.latencies[h]
        figures.append(
            HourFigures(
                hour=h,
                arrivals=offered[h],
                accepted=accepted_h[h],
                throttled=throttled[h],
                national_backlog_end=national.backlog_end[h],
                national_backlog_max=national.backlog_max[h],
                notify_backlog_end=notify.backlog_end[h],
                notify_backlog_max=notify.backlog_max[h],
                reported_p95_s=round(percentile(reported, 0.95), 1),
                reported_max_s=round(max(reported, default=0.0), 1),
                sms_p95_s=round(percentile(sms, 0.95), 1),
                sms_max_s=round(max(sms, default=0.0), 1),
            )
        )
    api_service_s = (costs.own_ms.get("intake", 3.0) * aws.lambda_full_cpu_mb / template.api_memory_mb) / 1000 + (
        sum(aws.op_ms.get(c, 8.0) for c in costs.sequence.get("intake", ())) + aws.api_overhead_ms
    ) / 1000
    peak_accept = max(accepted_h) / 3600
    all_reported = [x for hour in national.latencies for x in hour]
    all_sms = [x for hour in notify.latencies for x in hour]
    totals = {
        "offered": sum(offered),
        "accepted": len(accepted),
        "reported": len(all_reported),
        "sms": len(all_sms),
        "emails": sum(1 for _, kind in accepted if "email" in KIND_CHANNELS[kind]),
        "throttled_429": sum(throttled),
        "national_timed_out_messages": national.timed_out,
        "notify_timed_out_messages": notify.timed_out,
        "reported_p95_s": round(percentile(all_reported, 0.95), 1),
        "sms_p95_s": round(percentile(all_sms, 0.95), 1),
        "national_batches": national.batches,
        "notify_batches": notify.batches,
        "national_busy_s": round(national.busy_s),
        "notify_busy_s": round(notify.busy_s),
        "relay_busy_s": round(relay_busy),
        "relay_invocations": relay_invocations,
        "national_max_concurrency_used": national.max_concurrency_used,
        "notify_max_concurrency_used": notify.max_concurrency_used,
        "national_last_reported_at_s": round(national.last_done_s),
        "notify_last_done_at_s": round(notify.last_done_s),
        "api_service_ms": round(api_service_s * 1000, 1),
        # Little's law at the intake's ceiling and at the busiest hour's mean: instances of the API function busy.
        "api_concurrency_at_throttle_rate": round(template.intake_rate * api_service_s, 1),
        "api_concurrency_busiest_hour_mean": round(peak_accept * api_service_s, 1),
    }
    return DayRun(figures, totals, national, notify)


# -- cost per result --------------------------------------------------------------------------------------------------
#: List prices at eu-west-3 (Paris), USD, as published on the AWS pricing pages (on-demand DynamoDB as cut on
#: 1 Nov 2024). Not fetched by this benchmark (no network): re-check them on the pricing pages before budgeting.
PRICES: dict[str, Any] = {
    "source": "AWS public pricing pages, eu-west-3 (Paris), list prices as of 2025; not fetched at run time",
    "usd_to_eur": 0.92,  # assumed rate (a high one: costs in € are not under-stated)
    "dynamodb_wru": 0.7068e-6,  # per write request unit, on-demand, Standard table class
    "dynamodb_rru": 0.1413e-6,  # per read request unit
    "lambda_request": 0.20e-6,
    "lambda_gb_s": 0.0000166667,  # x86
    "api_gateway_rest_request": 3.50e-6,  # first 333 million a month
    "sqs_request": 0.40e-6,  # standard queue, per 64 KB chunk
    "kms_request": 0.03 / 10_000,
    "cloudwatch_logs_ingest_gb": 0.53,
    "sns_sms_france": 0.0745,  # per transactional SMS to a French mobile (carrier fees vary): priced apart
    "ses_email": 0.10 / 1000,  # priced apart
}

#: Log bytes the measurement cannot see: Lambda's START/END/REPORT lines per invocation; API Gateway's access log
#: line and the API function's one request line per request (``chalicelib/routes/middleware.py``).
LAMBDA_PLATFORM_LOG_BYTES = 330
API_LOG_BYTES_PER_REQUEST = 700


def cost_per_result(run: DayRun, template: Template, aws: Aws, costs: Costs) -> dict[str, Any]:
    """USD and € per accepted result by item, from the measured calls x :data:`PRICES` (SMS and e-mail apart)."""
    p = PRICES
    n = max(run.totals["accepted"], 1)
    calls: dict[str, float] = {}
    for stage in costs.calls.values():
        for op, k in stage.items():
            calls[op] = calls.get(op, 0.0) + k
    sqs = sum(k for op, k in calls.items() if op.startswith("sqs:"))
    # The event source's own SQS calls: a receive and a delete per batch, as simulated (the measurement's poller
    # counted its own); empty long polls are a few per second for the whole day, spread over the results.
    sqs_own = sum(k for op, k in calls.items() if op.startswith("sqs:") and ("Receive" in op or "Delete" in op))
    sqs_esm = 2 * (run.totals["national_batches"] + run.totals["notify_batches"]) / n
    sqs_total = sqs - sqs_own + sqs_esm
    kms = sum(k for op, k in calls.items() if op.startswith("kms:"))
    invocations = (
        1  # the API
        + (run.totals["relay_invocations"] + run.totals["national_batches"] + run.totals["notify_batches"]) / n
        + costs.invocations.get("audit-chain", 0.0)
    )
    audit_s = (
        costs.invocations.get("audit-chain", 0.0) * aws.invoke_ms / 1000
        + (
            costs.own_ms.get("audit-chain", 1.5) * aws.lambda_full_cpu_mb / 256
            + sum(
                aws.op_ms.get(op, 8.0) * k
                for op, k in costs.calls.get("audit-chain", {}).items()
                if "streams" not in op
            )
        )
        / 1000
    )
    gb_s = (
        run.totals["api_service_ms"] / 1000 * template.api_memory_mb
        + run.totals["relay_busy_s"] / n * template.relay_memory_mb
        + run.totals["national_busy_s"] / n * template.national.memory_mb
        + run.totals["notify_busy_s"] / n * template.notify.memory_mb
        + audit_s * 256
    ) / 1024
    log_bytes = sum(costs.log_bytes.values()) + API_LOG_BYTES_PER_REQUEST + invocations * LAMBDA_PLATFORM_LOG_BYTES
    wru, rru = sum(costs.wru.values()), sum(costs.rru.values())
    items_usd = {
        "dynamodb_writes": wru * p["dynamodb_wru"],
        "dynamodb_reads": rru * p["dynamodb_rru"],
        "api_gateway": p["api_gateway_rest_request"],
        "lambda_requests": invocations * p["lambda_request"],
        "lambda_duration": gb_s * p["lambda_gb_s"],
        "sqs": sqs_total * p["sqs_request"],
        "kms": kms * p["kms_request"],
        "cloudwatch_logs": log_bytes / 1e9 * p["cloudwatch_logs_ingest_gb"],
    }
    total_usd = sum(items_usd.values())
    sms_share, email_share = run.totals["sms"] / n, run.totals["emails"] / n
    rate = p["usd_to_eur"]
    return {
        "usage_per_result": {
            "dynamodb_wru": round(wru, 2),
            "dynamodb_rru": round(rru, 2),
            "lambda_invocations": round(invocations, 3),
            "lambda_gb_s": round(gb_s, 4),
            "sqs_requests": round(sqs_total, 3),
            "kms_requests": round(kms, 4),
            "log_bytes": round(log_bytes),
        },
        "eur_per_result_by_item": {k: f"{v * rate:.8f}" for k, v in items_usd.items()},
        "eur_per_result": f"{total_usd * rate:.7f}",
        "eur_per_million_results": round(total_usd * rate * 1e6, 2),
        "apart_sms_eur_per_result": round(sms_share * p["sns_sms_france"] * rate, 4),
        "apart_email_eur_per_result": f"{email_share * p['ses_email'] * rate:.6f}",
        "prices": p,
    }


# -- output -----------------------------------------------------------------------------------------------------------
def busiest_hour(run: DayRun) -> int:
    return max(range(len(run.hours)), key=lambda h: run.hours[h].accepted)


def verdict(run: DayRun) -> dict[str, Any]:
    """Issue 10's targets: p95 < 5 min in the busiest hour, < 30 s in every other hour with results."""
    peak = busiest_hour(run)
    others = [h for h in run.hours if h.hour != peak and h.accepted]
    worst_other = max(others, key=lambda h: max(h.reported_p95_s, h.sms_p95_s))
    return {
        "busiest_hour": f"{peak:02d}:00",
        "busiest_hour_accepted": run.hours[peak].accepted,
        "busiest_hour_to_day_mean": round(run.hours[peak].accepted / (run.totals["accepted"] / 24), 2),
        "busiest_hour_reported_p95_s": run.hours[peak].reported_p95_s,
        "busiest_hour_sms_p95_s": run.hours[peak].sms_p95_s,
        "worst_other_hour": f"{worst_other.hour:02d}:00",
        "worst_other_hour_reported_p95_s": worst_other.reported_p95_s,
        "worst_other_hour_sms_p95_s": worst_other.sms_p95_s,
        "busiest_hour_under_300_s": max(run.hours[peak].reported_p95_s, run.hours[peak].sms_p95_s) < 300,
        "other_hours_under_30_s": max(worst_other.reported_p95_s, worst_other.sms_p95_s) < 30,
    }


def table(run: DayRun) -> str:
    lines = [
        "hour   offered  accepted    429  nat.backlog end/max  notify backlog end/max  reported p95  SMS p95",
    ]
    for h in run.hours:
        if not (h.arrivals or h.national_backlog_max or h.notify_backlog_max):
            continue
        lines.append(
            f"{h.hour:02d}:00 {h.arrivals:9,d} {h.accepted:9,d} {h.throttled:6,d} "
            f"{h.national_backlog_end:9,d}/{h.national_backlog_max:<9,d} "
            f"{h.notify_backlog_end:11,d}/{h.notify_backlog_max:<10,d} "
            f"{h.reported_p95_s:11.1f}s {h.sms_p95_s:7.1f}s"
        )
    return "\n".join(lines)


def chart(run: DayRun, path: Path, title: str) -> int:
    """Backlog and p95 per hour, as a small PNG (matplotlib, Agg); its size in bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [h for h in run.hours if h.hour < 24]
    x = [h.hour for h in hours]
    steps = [*x, 24]  # a step per hour, the last one drawn to 24:00

    def step(values: list[float]) -> list[float]:
        return [*values, values[-1]]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.6), dpi=80, sharex=True)
    top.bar(x, [h.accepted / 1000 for h in hours], color="#c9d6e3", label="accepted (thousands)", align="edge")
    top.step(
        steps,
        step([h.national_backlog_max / 1000 for h in hours]),
        where="post",
        color="#1f5f99",
        label="national queue, max",
    )
    top.step(
        steps,
        step([h.notify_backlog_max / 1000 for h in hours]),
        where="post",
        color="#c0392b",
        label="notify queue, max",
    )
    top.set_ylabel("thousands of results")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    top.set_title(title, fontsize=10)
    bottom.step(
        steps, step([h.reported_p95_s for h in hours]), where="post", color="#1f5f99", label="accepted → reported, p95"
    )
    bottom.step(steps, step([h.sms_p95_s for h in hours]), where="post", color="#c0392b", label="accepted → SMS, p95")
    bottom.axhline(300, color="#888888", linestyle="--", linewidth=0.8)
    bottom.axhline(30, color="#888888", linestyle=":", linewidth=0.8)
    bottom.text(23.9, 300, "5 min (busiest hour)", ha="right", va="bottom", fontsize=7, color="#555555")
    bottom.text(23.9, 30, "30 s (other hours)", ha="right", va="bottom", fontsize=7, color="#555555")
    bottom.set_yscale("log")
    bottom.set_ylim(0.5, max(400.0, max(max(h.reported_p95_s, h.sms_p95_s) for h in hours) * 1.5))
    bottom.set_ylabel("seconds (log)")
    bottom.set_xlabel("hour of the day (results accepted in that hour)")
    bottom.set_xticks(range(0, 25, 2))
    bottom.set_xlim(0, 24)
    bottom.legend(loc="upper left", fontsize=8, frameon=False)
    for axis in (top, bottom):
        axis.grid(axis="y", linewidth=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path.stat().st_size


def measured_costs(use_recorded: bool) -> tuple[Costs, dict[str, Any], str]:
    """Per-result figures: measured now (in a child process, so that moto leaves nothing behind) or, with
    ``use_recorded``, those recorded by the last run in ``bench/results/peak.json``."""
    recorded = RESULTS / "peak.json"
    if use_recorded and recorded.exists():
        stages = json.loads(recorded.read_text())["measured_per_result"]
        return Costs.from_measured(stages), stages, f"recorded ({recorded.relative_to(ROOT)})"
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "bench.peak_costs"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    stages = json.loads(done.stdout[done.stdout.rfind("\n{\n") + 1 :] if "\n{\n" in done.stdout else done.stdout)
    return Costs.from_measured(stages), stages, "measured on this machine now (bench/peak_costs.py, moto in-process)"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=int(os.environ.get("BENCH_PEAK_SEED", "1")))
    parser.add_argument("--national", type=int, help="national max concurrency (reserved follows) instead of iam.py")
    parser.add_argument("--notify", type=int, help="notify max concurrency (reserved follows) instead of iam.py")
    parser.add_argument("--sms-per-second", type=float, help="account-wide SMS rate instead of config.py's")
    parser.add_argument("--no-chart", action="store_true", help="do not write docs/capacity-peak-day.png")
    parser.add_argument("--no-measure", action="store_true", help="use bench/results/peak.json's per-result figures")
    args = parser.parse_args(list(argv) if argv is not None else None)

    template = read_template()
    overridden = {}
    if args.national:
        national = replace(template.national, max_concurrency=args.national, reserved_concurrency=args.national)
        template, overridden["national"] = replace(template, national=national), args.national
    if args.notify:
        notify = replace(template.notify, max_concurrency=args.notify, reserved_concurrency=args.notify)
        template, overridden["notify"] = replace(template, notify=notify), args.notify
    if args.sms_per_second:
        template, overridden["sms_per_second"] = (
            replace(template, sms_per_second=args.sms_per_second),
            args.sms_per_second,
        )
    aws, day = Aws(), Day()
    costs, stages, origin = measured_costs(args.no_measure)
    started = time.perf_counter()
    run = simulate(day, template, aws, costs, seed=args.seed)
    simulated_s = time.perf_counter() - started
    print(table(run), file=sys.stderr)
    figures: dict[str, Any] = {
        "seed": args.seed,
        "settings": {
            **asdict(template),
            "overridden_from_the_command_line": overridden,
        },
        "verdict": verdict(run),
        "totals": run.totals,
        "cost": cost_per_result(run, template, aws, costs),
        "hours": [asdict(h) for h in run.hours],
        "per_result_figures": origin,
        "measured_per_result": stages,
        "assumptions": asdict(aws),
        "day": {k: v for k, v in asdict(day).items() if k != "shape"} | {"shape": list(day.shape)},
        "simulation_seconds": round(simulated_s, 1),
    }
    if not args.no_chart and not overridden:
        peak = verdict(run)
        title = (
            f"Peak day, {run.totals['accepted']:,} results (seed {args.seed}): busiest hour {peak['busiest_hour']}, "
            f"p95 reported {peak['busiest_hour_reported_p95_s']:.0f} s, SMS {peak['busiest_hour_sms_p95_s']:.0f} s"
        )
        figures["chart"] = {"path": str(CHART.relative_to(ROOT)), "bytes": chart(run, CHART, title)}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
