"""Account-wide pacing of patient messages (adapters/pacing.py): a rate and a monthly budget that hold whatever
the number of notifier processes, because both are counted in DynamoDB, not in a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from chalicelib import bootstrap
from chalicelib.adapters.pacing import AccountPacer, BudgetExhaustedError, PacingBusyError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(aws):
    bootstrap.store()  # binds the tables of the stack provisioned by the aws fixture
    return aws


class FakeTime:
    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_at_most_rate_sends_are_granted_in_one_second_then_the_next_second_s(state):
    clock = FakeTime(1_796_000_000.25)
    pacer = AccountPacer("sms", rate=3, monthly_budget=0, now=lambda: clock.now, sleep=clock.sleep, jitter=lambda: 0)

    seconds = [pacer.acquire().second for _ in range(7)]

    assert seconds == [1_796_000_000] * 3 + [1_796_000_001] * 3 + [1_796_000_002]
    assert clock.slept == [pytest.approx(0.75), pytest.approx(1.0)]


def test_no_slot_within_the_wait_allowed_is_a_busy_error_and_nothing_is_counted(state):
    clock = FakeTime(1_796_000_000.5)
    first = AccountPacer("sms", rate=1, monthly_budget=0, now=lambda: clock.now, sleep=clock.sleep)
    first.acquire()
    impatient = AccountPacer(
        "sms", rate=1, monthly_budget=0, max_wait_seconds=0.2, now=lambda: clock.now, sleep=clock.sleep
    )

    with pytest.raises(PacingBusyError):
        impatient.acquire()
    assert clock.slept == []


def test_the_monthly_budget_stops_sends_and_reports_each_count(state):
    counts: list[tuple[str, int, int]] = []
    clock = FakeTime(1_796_000_000.0)
    pacer = AccountPacer(
        "sms",
        rate=100,
        monthly_budget=3,
        on_count=lambda *args: counts.append(args),
        now=lambda: clock.now,
        sleep=clock.sleep,
    )
    assert [pacer.acquire().month_count for _ in range(3)] == [1, 2, 3]
    with pytest.raises(BudgetExhaustedError):
        pacer.acquire()
    assert counts == [("sms", 1, 3), ("sms", 2, 3), ("sms", 3, 3)]


def test_several_notifier_processes_together_never_exceed_the_account_rate(tmp_path):
    """Three processes, one moto server: the sends granted in any one second, all processes together, never
    exceed the rate (a per-process limiter would grant three times as many)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-3",
            "PYTHONPATH": str(ROOT),
        }
        import boto3

        boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-3").create_table(
            TableName="pacing-state",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        script = textwrap.dedent(
            """
            import json, sys
            from chalicelib.adapters.tables import StateItem
            from chalicelib.adapters.pacing import AccountPacer
            StateItem.Meta.table_name = "pacing-state"
            StateItem.Meta.region = "eu-west-3"
            StateItem._connection = None
            pacer = AccountPacer("sms", rate=4, monthly_budget=0)
            print(json.dumps([pacer.acquire().second for _ in range(int(sys.argv[1]))]))
            """
        )
        workers = [
            subprocess.Popen([sys.executable, "-c", script, "8"], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        granted = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    finally:
        server.stop()

    per_second = Counter(second for seconds in granted for second in seconds)
    assert sum(per_second.values()) == 24
    assert max(per_second.values()) <= 4, per_second
    assert len(per_second) >= 6  # 24 sends at 4 per second take at least 6 seconds
