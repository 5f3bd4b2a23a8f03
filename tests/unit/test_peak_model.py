"""The peak-day model's mechanics (``bench/peak.py``) on tiny days: nothing lost, queues grow when they must, the
p95 is the p95, SMS keep to their rate, a batch past its timeout comes back after the visibility timeout."""

from __future__ import annotations

import random

import pytest

from bench.peak import (
    KIND_SMS,
    Aws,
    Consumer,
    Costs,
    Day,
    Message,
    consume,
    notify_service,
    percentile,
    read_template,
    simulate,
    split_sequence,
)

COSTS = Costs(
    own_ms={"intake": 3.0, "relay": 0.5, "national": 4.0, "notify": 3.0},
    sequence={
        "intake": ("dynamodb:TransactWriteItems",),
        "national": ("dynamodb:GetItem", "external:post_bundle", "dynamodb:UpdateItem", "dynamodb:PutItem"),
        "notify": ("dynamodb:GetItem", "external:send_sms", "sns:Publish", "dynamodb:TransactWriteItems"),
    },
    calls={},
    wru={},
    rru={},
    log_bytes={},
    invocations={},
)


def consumer(concurrency: int, batch: int = 10, timeout: float = 60.0, visibility: float = 360.0) -> Consumer:
    return Consumer("test", batch, concurrency, concurrency, timeout, 1769, visibility)


def fixed(seconds: float) -> object:
    def service(start: float, kind: int, rng: random.Random) -> tuple[float, float | None]:
        return start + seconds, start + seconds

    return service


def steady(rate: int, seconds: int) -> list[Message]:
    return [(s + i / rate, s + i / rate, 0) for s in range(seconds) for i in range(rate)]


def test_percentile_is_the_nearest_rank_of_the_sorted_values():
    values = list(range(100, 0, -1))  # 100 … 1, unsorted on purpose
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.5) == 51  # round(0.5 x 99) = 50 (banker's rounding) → the 51st value
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.95) == 0.0


def test_a_tiny_day_reports_every_result_and_texts_every_sms_result():
    template = read_template()
    day = Day(total=4_000, shape=(1.0, 3.0), seconds=7200, burst_start_s=4000, burst_seconds=20, burst_rate=40.0,
              drain_seconds=600)  # fmt: skip
    run = simulate(day, template, Aws(), COSTS, seed=3)
    totals = run.totals
    assert totals["offered"] == totals["accepted"] == sum(h.accepted for h in run.hours)
    assert totals["reported"] == totals["accepted"]  # conservation: every accepted result reported, once
    assert totals["national_timed_out_messages"] == 0
    assert 0.85 * totals["accepted"] < totals["sms"] < 0.95 * totals["accepted"]  # 90 % ask for an SMS
    assert 3_500 < totals["accepted"] < 4_500
    assert run.hours[1].accepted > 2 * run.hours[0].accepted  # the shape: hour 1 weighs 3x hour 0, plus the burst


def test_below_the_arrival_rate_the_backlog_grows_and_so_does_the_wait():
    # 10 messages/s for 100 s; 2 instances x 1 message per 0.5 s = 4/s: 600 left waiting after 100 s.
    aws = Aws(cold_start_s=0.0, invoke_ms=0.0, esm_start=2)
    run = consume(steady(10, 100), consumer(2, batch=1), fixed(0.5), aws, random.Random(1), hours=1)
    assert run.done == 1000
    assert run.backlog_max[0] == pytest.approx(600, abs=10)
    latencies = list(run.latencies[0])
    assert latencies[-1] > 100  # the last accepted waits for the whole backlog
    assert latencies[0] == pytest.approx(0.5)


def test_above_the_arrival_rate_nothing_waits():
    aws = Aws(cold_start_s=0.0, invoke_ms=0.0)
    run = consume(steady(10, 100), consumer(10), fixed(0.1), aws, random.Random(1), hours=1)
    assert run.done == 1000
    assert max(run.latencies[0]) < 1.0
    assert run.backlog_end[0] == 0


def test_the_event_source_adds_at_most_five_instances_a_second():
    aws = Aws(cold_start_s=0.0, invoke_ms=0.0)
    burst = [(0.0, 0.0, 0)] * 5000
    run = consume(burst, consumer(100, batch=10), fixed(1.0), aws, random.Random(1), hours=1)
    assert run.done == 5000
    assert run.max_concurrency_used == 100
    # 5 at first, then +5 a second: 100 instances only after ~19 s, so more than 5000 / 1000 per s = 5 s in all.
    assert run.last_done_s > 15


def test_a_batch_past_the_timeout_comes_back_after_the_visibility_timeout():
    aws = Aws(cold_start_s=0.0, invoke_ms=0.0, esm_start=2)
    messages = [(0.0, 0.0, 0)] * 10
    run = consume(messages, consumer(2, batch=10, timeout=5.0, visibility=30.0), fixed(1.0), aws, random.Random(1), 1)
    assert run.done == 10  # nothing lost
    assert run.timed_out == 5  # 5 handled in 5 s, 5 came back ...
    assert max(run.latencies[0]) == pytest.approx(35.0)  # ... 30 s later, then 5 x 1 s


def test_sms_keep_to_the_account_wide_rate_whatever_the_concurrency():
    template = read_template()
    aws = Aws(op_sigma=0.0)
    service = notify_service(template, aws, COSTS, sms_per_second=10)
    rng = random.Random(1)
    sent = [service(0.0, 0, rng)[1] for _ in range(100)]  # 100 SMS, all ready at once (many instances)
    assert all(t is not None for t in sent)
    assert max(t for t in sent if t is not None) >= 9.9  # 100 at 10/s: the last one after ~10 s
    assert service(0.0, 3, rng)[1] is None  # a result without channels sends nothing
    assert KIND_SMS == (True, True, False, False)


def test_the_calls_around_the_outside_call_are_split_where_it_happens():
    aws = Aws()
    before, after = split_sequence(COSTS.sequence["national"], aws, "post_bundle")
    assert before == aws.op_ms["dynamodb:GetItem"]
    assert after == aws.op_ms["dynamodb:UpdateItem"] + aws.op_ms["dynamodb:PutItem"]


def test_the_template_settings_are_read_from_the_code():
    from infra.iam import FUNCTIONS
    from infra.template import INTAKE_THROTTLE

    template = read_template()
    national = FUNCTIONS["chalicelib.events.national.on_national_message"]
    assert template.national.max_concurrency == national.max_concurrency
    assert template.national.reserved_concurrency == national.reserved_concurrency
    assert template.national.batch_size == 10
    assert (template.intake_rate, template.intake_burst) == INTAKE_THROTTLE
    assert template.notify.visibility_timeout_s == 180
