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


def _count(pk: str) -> int:
    from chalicelib.adapters.tables import StateItem

    try:
        return int(StateItem.get(pk, consistent_read=True).n or 0)
    except StateItem.DoesNotExist:
        return 0


def test_slots_and_budget_are_reserved_in_blocks_one_write_each_per_five_sends(state, monkeypatch):
    from chalicelib.adapters import pacing

    writes: list[str] = []
    update_if = pacing.update_if
    monkeypatch.setattr(pacing, "update_if", lambda item, *a: writes.append(item.pk) or update_if(item, *a))
    clock = FakeTime(1_796_000_000.0)
    pacer = AccountPacer("sms", rate=20, monthly_budget=0, now=lambda: clock.now, sleep=clock.sleep)

    slots = [pacer.acquire() for _ in range(6)]

    assert [slot.month_count for slot in slots] == [1, 2, 3, 4, 5, 6]
    assert writes == ["pace#sms#1796000000", "budget#sms#2026-11"] * 2, "one write of each per five sends"
    assert _count("pace#sms#1796000000") == 10 and _count("budget#sms#2026-11") == 10
    clock.now += 1.0
    pacer.acquire()
    assert writes[4:] == ["pace#sms#1796000001"], "slots of a second that ended are not used; counts of the month are"
    assert _count("pace#sms#1796000001") == 5 and _count("budget#sms#2026-11") == 10


def test_blocks_never_let_instances_together_pass_the_rate_or_the_budget(state):
    clock = FakeTime(1_796_000_000.0)
    pacers = [
        AccountPacer("sms", rate=7, monthly_budget=12, now=lambda: clock.now, sleep=clock.sleep, max_wait_seconds=0)
        for _ in range(2)
    ]
    first, second = pacers
    granted = [first.acquire().month_count]  # reserves 5 slots and 5 counts
    for _ in range(2):  # a block of 5 no longer fits in the second's 7: one slot at a time
        granted.append(second.acquire().month_count)
    with pytest.raises(PacingBusyError):
        second.acquire()  # 5 + 2 slots taken: none left this second for the second instance
    granted += [first.acquire().month_count for _ in range(4)]  # the first's reserved slots are still its own
    with pytest.raises(PacingBusyError):
        first.acquire()
    assert _count("pace#sms#1796000000") == 7
    clock.now += 1.0
    granted += [second.acquire().month_count for _ in range(5)]
    with pytest.raises(BudgetExhaustedError):
        second.acquire()
    assert sorted(granted) == list(range(1, 13)), "each count of the budget given once, none past it"


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
