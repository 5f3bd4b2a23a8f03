"""Single writes to an item a transaction in flight holds: DynamoDB refuses them (TransactionConflictException),
the SDK does not retry that, so ``adapters/dynamodb.py`` does, with jitter, then answers 503."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.adapters.dynamodb import ATTEMPTS, update_if
from chalicelib.adapters.tables import StateItem
from chalicelib.errors import DependencyUnavailableError

EXPIRES = 4_000_000_000


@pytest.fixture
def state(aws: dict[str, str]) -> None:
    bootstrap.store()  # binds the models to the stack's tables
    StateItem(pk="counter", n=1, expires_at=EXPIRES).save()


def _update_calls(monkeypatch: pytest.MonkeyPatch, refusals: list[str]) -> list[str]:
    """Record each UpdateItem; the first ``refusals`` are answered with those error codes instead of being sent."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call
    calls: list[str] = []
    pending = list(refusals)

    def recording(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "UpdateItem":
            calls.append(params["Key"]["pk"]["S"])
            if pending:
                raise ClientError({"Error": {"Code": pending.pop(0), "Message": "simulated"}}, operation_name)
        return real_call(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return calls


def _add_one() -> bool:
    return update_if(StateItem(pk="counter"), [StateItem.n.add(1)], StateItem.n < 100)


def _count() -> int:
    return int(StateItem.get("counter", consistent_read=True).n or 0)


def test_a_write_that_meets_a_transaction_in_flight_waits_for_it_and_is_written_once(state, monkeypatch):
    """On moto as patched: a real transaction holds the item, paused mid-way, and ends 50 ms later."""
    from infra.local import faults, moto_patches

    paused, go_on, outcome = threading.Event(), threading.Event(), []
    remember = moto_patches._UndoLog.remember

    def pause_at_the_first_write(log: Any, *args: Any) -> None:
        if not paused.is_set():
            paused.set()
            go_on.wait(10)
        remember(log, *args)

    monkeypatch.setattr(moto_patches._UndoLog, "remember", pause_at_the_first_write)
    client = bootstrap.client("dynamodb")
    table = StateItem.Meta.table_name
    update = {"TableName": table, "Key": {"pk": {"S": "counter"}}, "UpdateExpression": "ADD n :ten"}
    update["ExpressionAttributeValues"] = {":ten": {"N": "10"}}

    def transaction() -> None:
        client.transact_write_items(TransactItems=[{"Update": update}])
        outcome.append("ok")

    with faults.injected(transaction_conflicts=True):
        calls = _update_calls(monkeypatch, [])
        holder = threading.Thread(target=transaction)
        holder.start()
        assert paused.wait(10)
        threading.Timer(0.05, go_on.set).start()
        assert _add_one() is True
        holder.join(10)

    assert outcome == ["ok"]
    assert len(calls) >= 2  # refused at least once while the transaction held the item, then written
    assert _count() == 12  # 1 + 10 + 1: the write counted once, the transaction's too


def test_a_conflict_that_persists_is_a_503_after_every_attempt(state, monkeypatch):
    calls = _update_calls(monkeypatch, ["TransactionConflictException"] * ATTEMPTS)

    with pytest.raises(DependencyUnavailableError):
        _add_one()

    assert len(calls) == ATTEMPTS
    assert _count() == 1


def test_a_failed_condition_or_another_error_is_not_tried_again(state, monkeypatch):
    calls = _update_calls(monkeypatch, ["ValidationException"])
    with pytest.raises(DependencyUnavailableError):
        _add_one()
    assert len(calls) == 1

    StateItem(pk="counter", n=100, expires_at=EXPIRES).save()
    calls = _update_calls(monkeypatch, [])
    assert _add_one() is False  # its condition did not hold: an answer, asked once
    assert len(calls) == 1
