"""adapters/transaction.py on moto: items are sent in the order they are added, each cancellation reason is read
by the item's name, and conflicts and throttling are tried again (with jitter, up to ATTEMPTS) before a 503."""

from __future__ import annotations

from typing import Any

import pytest
from pynamodb.connection import Connection

from chalicelib import bootstrap
from chalicelib.adapters.tables import StateItem
from chalicelib.adapters.transaction import ATTEMPTS, Transaction
from chalicelib.errors import DependencyUnavailableError
from tests.integration.helpers import REGION

EXPIRES = 4_000_000_000


@pytest.fixture
def state(aws: dict[str, str]) -> None:
    """The state table, bound, holding ``full`` (a counter at its limit 5) and ``taken``."""
    bootstrap.store()  # binds the models to the stack's tables
    StateItem(pk="full", n=5, expires_at=EXPIRES).save()
    StateItem(pk="taken", expires_at=EXPIRES).save()


def _sent(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]] | None = None, tokens: list[str] | None = None
) -> list[list[str]]:
    """Record each TransactWriteItems request (the kinds of its items, in order; its token in ``tokens``); the first
    ``answers`` are errors returned instead of sending it (``{"Code": ..., "CancellationReasons": [...]}``)."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call
    sent: list[list[str]] = []
    pending = list(answers or [])

    def recording(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "TransactWriteItems":
            sent.append([next(iter(item)) for item in params["TransactItems"]])
            if tokens is not None:
                tokens.append(params["ClientRequestToken"])
            if pending:
                answer = pending.pop(0)
                error: dict[str, Any] = {"Error": {"Code": answer["Code"], "Message": "simulated"}}
                if "CancellationReasons" in answer:
                    error["CancellationReasons"] = answer["CancellationReasons"]
                raise ClientError(error, operation_name)
        return real_call(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return sent


def _count(pk: str) -> int | None:
    try:
        item = StateItem.get(pk, consistent_read=True)
    except StateItem.DoesNotExist:
        return None
    return int(item.n or 0)


def _mixed(tx: Transaction) -> None:
    """An update, a put, then a check: the reverse of pynamodb's grouping (checks, puts, updates)."""
    tx.update("quota", StateItem(pk="full"), actions=[StateItem.n.add(1)], condition=StateItem.n < 5)
    tx.put("reference", StateItem(pk="fresh", expires_at=EXPIRES), condition=StateItem.pk.does_not_exist())
    tx.check("nonce", StateItem, "taken", condition=StateItem.pk.exists())


def test_items_are_sent_in_the_order_they_are_added(state, monkeypatch):
    sent = _sent(monkeypatch)
    tx = Transaction(Connection(region=REGION))
    _mixed(tx)

    assert tx.commit() is False  # "full" is at its limit

    assert sent == [["Update", "Put", "ConditionCheck"]]


def test_the_failed_item_is_named_even_when_pynamodb_would_have_sent_it_last(state):
    tx = Transaction(Connection(region=REGION))
    _mixed(tx)

    assert tx.commit() is False

    assert tx.failed("quota")
    assert not tx.failed("reference")
    assert not tx.failed("nonce")
    assert (_count("full"), _count("fresh")) == (5, None)  # nothing written


def test_a_failed_put_added_after_an_update_is_the_one_named(state):
    tx = Transaction(Connection(region=REGION))
    tx.update("counter", StateItem(pk="counter"), actions=[StateItem.n.add(1), StateItem.expires_at.set(EXPIRES)])
    tx.put("reference", StateItem(pk="taken", expires_at=EXPIRES), condition=StateItem.pk.does_not_exist())
    tx.check("key", StateItem, "full", condition=StateItem.pk.exists())

    assert tx.commit() is False

    assert [name for name in ("counter", "reference", "key") if tx.failed(name)] == ["reference"]
    assert _count("counter") is None


def test_a_transaction_whose_conditions_hold_writes_every_item(state):
    tx = Transaction(Connection(region=REGION))
    tx.update("counter", StateItem(pk="counter"), actions=[StateItem.n.add(1), StateItem.expires_at.set(EXPIRES)])
    tx.put("reference", StateItem(pk="fresh", expires_at=EXPIRES), condition=StateItem.pk.does_not_exist())
    tx.check("key", StateItem, "taken", condition=StateItem.pk.exists())

    assert tx.commit() is True

    assert not tx.failed("reference")
    assert (_count("counter"), _count("fresh")) == (1, 0)


def test_names_are_unique_and_known():
    tx = Transaction(Connection(region=REGION))
    tx.check("key", StateItem, "taken", condition=StateItem.pk.exists())

    with pytest.raises(ValueError, match="two items named 'key'"):
        tx.put("key", StateItem(pk="other", expires_at=EXPIRES))
    with pytest.raises(ValueError, match="no item named 'kye'"):
        tx.failed("kye")  # a typo is an error, not "it did not fail"


def _conflict_on(position: int, size: int) -> dict[str, Any]:
    reasons = [{"Code": "None"}] * size
    reasons[position] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
    return {"Code": "TransactionCanceledException", "CancellationReasons": reasons}


@pytest.mark.parametrize(
    "transient",
    [
        _conflict_on(0, 2),
        {"Code": "TransactionConflictException"},
        {"Code": "ThrottlingException"},
        {
            "Code": "TransactionCanceledException",
            "CancellationReasons": [
                {"Code": "ThrottlingError", "Message": "Throughput exceeds the limit"},
                {"Code": "None"},
            ],
        },
    ],
    ids=["conflict-on-an-item", "conflict", "throttling", "throttled-item"],
)
def test_conflicts_and_throttling_are_tried_again(state, monkeypatch, transient):
    sent = _sent(monkeypatch, [transient, transient])
    tx = Transaction(Connection(region=REGION))
    tx.update("counter", StateItem(pk="counter"), actions=[StateItem.n.add(1), StateItem.expires_at.set(EXPIRES)])
    tx.put("reference", StateItem(pk="fresh", expires_at=EXPIRES), condition=StateItem.pk.does_not_exist())

    assert tx.commit() is True

    assert len(sent) == 3
    assert _count("counter") == 1  # once


def test_a_try_still_in_progress_is_asked_again_with_its_token_and_a_new_try_gets_a_new_one(state, monkeypatch):
    """After TransactionInProgressException the same token again (DynamoDB then answers with that try's outcome,
    never running it twice); after a conflict, a new request."""
    tokens: list[str] = []
    _sent(monkeypatch, [{"Code": "TransactionInProgressException"}, _conflict_on(0, 1)], tokens)
    tx = Transaction(Connection(region=REGION), sleep=lambda s: None)
    tx.update("counter", StateItem(pk="counter"), actions=[StateItem.n.add(1), StateItem.expires_at.set(EXPIRES)])

    assert tx.commit() is True

    assert len(tokens) == 3
    assert tokens[0] == tokens[1], "the try in progress is asked again"
    assert tokens[2] != tokens[1], "a try that ended is not repeated under its token"
    assert _count("counter") == 1


def test_a_conflict_that_persists_is_a_503_after_every_attempt(state, monkeypatch):
    sent = _sent(monkeypatch, [_conflict_on(1, 2)] * ATTEMPTS)
    tx = Transaction(Connection(region=REGION), sleep=lambda s: None)
    tx.update("counter", StateItem(pk="counter"), actions=[StateItem.n.add(1), StateItem.expires_at.set(EXPIRES)])
    tx.put("reference", StateItem(pk="fresh", expires_at=EXPIRES), condition=StateItem.pk.does_not_exist())

    with pytest.raises(DependencyUnavailableError):
        tx.commit()

    assert len(sent) == ATTEMPTS
    assert _count("counter") is None


def test_retries_pause_with_growing_full_jitter_and_stop_at_the_invocation_s_deadline(state, monkeypatch):
    from chalicelib.deadline import deadline_in

    pauses: list[float] = []
    clock = [1000.0]
    monkeypatch.setattr("chalicelib.adapters.transaction.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("chalicelib.deadline.time.monotonic", lambda: clock[0])

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    sent = _sent(monkeypatch, [_conflict_on(1, 2)] * ATTEMPTS)
    tx = Transaction(Connection(region=REGION), sleep=sleep, jitter=lambda: 1.0)  # the top of each jitter range
    tx.update("counter", StateItem(pk="counter"), actions=[StateItem.n.add(1), StateItem.expires_at.set(EXPIRES)])
    with deadline_in(1.0 + 0.25), pytest.raises(DependencyUnavailableError):  # 0.25 s left after the margin
        tx.commit()
    assert pauses == [0.02, 0.04, 0.08], "doubling pauses, stopped before the one that would pass the deadline"
    assert len(sent) == 4


def test_other_failures_are_a_503_at_once(state, monkeypatch):
    sent = _sent(monkeypatch, [{"Code": "ValidationException"}])
    tx = Transaction(Connection(region=REGION))
    tx.put("reference", StateItem(pk="fresh", expires_at=EXPIRES), condition=StateItem.pk.does_not_exist())

    with pytest.raises(DependencyUnavailableError):
        tx.commit()

    assert len(sent) == 1
