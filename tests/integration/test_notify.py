"""The notifier on moto: one link, sent once per channel, never with personal data in it or around it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.integration.helpers import BIRTH_DATE, EMAIL, FAMILY_NAME, GIVEN_NAME, NIR, PHONE, audit_events, scan
from tests.integration.patient_support import (
    assert_no_leak,
    new_result,
    notify,
    patient_env,
    result_item,
    sent_emails,
    sent_sms,
    sqs_event,
    stored_strings,
    token_in,
)

__all__ = ["patient_env"]


def handle(event: dict[str, Any]) -> dict[str, Any]:
    from chalicelib.events.notify import handle_notify_batch

    return handle_notify_batch(event, None)


class FlakySender:
    """Delegates to the real SNS/SES adapter, failing the channels named in ``fail``."""

    def __init__(self, real: Any, fail: set[str]) -> None:
        self.real = real
        self.fail = fail

    def send_sms(self, phone: str, text: str) -> str:
        if "sms" in self.fail:
            from chalicelib.adapters.messaging import DeliveryError

            raise DeliveryError("sms", "Throttling")
        return str(self.real.send_sms(phone, text))

    def send_email(self, address: str, content: Any) -> str:
        if "email" in self.fail:
            from chalicelib.adapters.messaging import DeliveryError

            raise DeliveryError("email", "Throttling")
        return str(self.real.send_email(address, content))


def use_sender(fail: set[str]) -> FlakySender:
    from chalicelib import bootstrap
    from chalicelib.adapters.messaging import Messaging

    s = bootstrap.settings()
    real = Messaging(
        sns=bootstrap.one_attempt_client("sns"),
        ses=bootstrap.one_attempt_client("ses"),
        sms_sender_id=s.sms_sender_id,
        email_sender=s.email_sender,
    )
    sender = FlakySender(real, fail)
    bootstrap.override(messaging=sender)  # notify_service is rebuilt around it
    return sender


def test_a_pending_result_gets_one_sms_and_one_email_with_the_link_and_nothing_personal(patient_env, capfd):
    rid = new_result(patient_env["pharmacy"])
    assert notify(rid) == "sent"

    ((phone, sms),) = sent_sms()
    (mail,) = sent_emails()
    assert phone == PHONE
    assert mail.destinations["ToAddresses"] == [EMAIL]
    token = token_in(sms)
    assert token_in(mail.body) == token
    assert "Pharmacie des Tests" in sms and "valable jusqu'au " in sms and "/r#" in sms
    for text in (sms, mail.subject, mail.body):
        for value in (FAMILY_NAME, GIVEN_NAME, BIRTH_DATE, NIR, "03/12/1984", "négatif", "negative"):
            assert value not in text

    item = result_item(rid)
    assert item["patient_status"]["S"] == "sent"
    assert "patient_sent_at" in item and "link_expires_at" in item
    links = [i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("link#")]
    assert len(links) == 1
    import hashlib

    assert links[0]["pk"]["S"] == "link#" + hashlib.sha256(token.encode()).hexdigest()
    assert "expires_at" in links[0]  # TTL
    assert_no_leak(stored_strings(), token)
    sends = audit_events("patient.notify", "success")
    assert sorted(e["reason"].split(":")[0] for e in sends) == ["email", "sms"]
    assert all(e["actor"] == "system:notifier" for e in sends)
    captured = capfd.readouterr()
    assert_no_leak(captured.out + captured.err, token)


def test_a_redelivered_message_sends_nothing_more(patient_env):
    rid = new_result(patient_env["pharmacy"])
    assert handle(sqs_event({"result_id": rid})) == {"batchItemFailures": []}
    assert handle(sqs_event({"result_id": rid}, receive_count=2)) == {"batchItemFailures": []}
    assert notify(rid) == "not_pending"
    assert len(sent_sms()) == 1
    assert len(sent_emails()) == 1


def test_concurrent_deliveries_of_one_message_send_one_sms(patient_env):
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    from chalicelib import bootstrap

    service = bootstrap.notify_service()
    outcomes: list[str] = []

    def deliver() -> None:
        try:
            outcomes.append(service.notify(rid))
        except Exception as exc:  # the claim is busy: the queue would retry
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent_sms()) == 1
    assert outcomes.count("sent") == 1


def test_a_result_without_requested_channels_is_acknowledged_without_sending(patient_env):
    rid = new_result(patient_env["pharmacy"], notify=())
    assert handle(sqs_event({"result_id": rid})) == {"batchItemFailures": []}
    assert sent_sms() == [] and sent_emails() == []
    assert result_item(rid)["patient_status"]["S"] == "not_requested"


def test_malformed_or_unknown_messages_are_acknowledged(patient_env):
    event = sqs_event({"nothing": 1}, {"result_id": "x" * 22}, {"result_id": 3})
    assert handle(event) == {"batchItemFailures": []}
    assert sent_sms() == []


def test_a_failed_send_is_retried_then_fails_the_patient_status_on_the_last_attempt(patient_env):
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    use_sender({"sms"})
    other = new_result(patient_env["pharmacy"], notify=())
    answer = handle(sqs_event({"result_id": rid}, {"result_id": other}))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}  # only the failed message comes back
    assert result_item(rid)["patient_status"]["S"] == "pending"
    assert audit_events("patient.notify", "retry")

    answer = handle(sqs_event({"result_id": rid}, receive_count=5))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}  # → the dead-letter queue
    assert result_item(rid)["patient_status"]["S"] == "failed"
    assert audit_events("patient.notify", "failed")
    assert sent_sms() == []


def _notify_queue_bodies(expected: int) -> list[dict[str, Any]]:
    """The distinct bodies waiting in the notify queue (received until ``expected`` are seen, or 10 s)."""
    import json
    import time

    from chalicelib import bootstrap

    sqs, url = bootstrap.client("sqs"), bootstrap.settings().notify_queue_url
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(bodies) < expected and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(message["Body"])
            if body not in bodies:
                bodies.append(body)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_a_dead_lettered_notification_sent_back_by_the_cli_is_sent(patient_env, capsys, monkeypatch, tmp_path):
    """After the last attempt the status is ``failed``, and the notifier acknowledges a result that is not pending
    without sending: ``relais dlq redrive --queue notify`` sets it back to ``pending`` for the letter's own link
    generation and queues the letter's body as it was, so the retry sends; a letter of another generation than the
    result's current one reopens nothing."""
    import json

    from chalicelib import bootstrap
    from relais_cli.main import main

    monkeypatch.setenv("RELAIS_CLI_USE_ENV", "1")
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path / "state"))
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    other = new_result(patient_env["pharmacy"], notify=("sms",))
    sender = use_sender({"sms"})
    answer = handle(sqs_event({"result_id": rid}, {"result_id": other}, receive_count=5))
    assert len(answer["batchItemFailures"]) == 2  # → the dead-letter queue
    assert {result_item(r)["patient_status"]["S"] for r in (rid, other)} == {"failed"}
    # SQS moves a message past its maxReceiveCount to the dead-letter queue with its body as sent.
    sqs, dlq = bootstrap.client("sqs"), bootstrap.settings().notify_dlq_url
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"result_id": rid}))
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"result_id": other, "generation": 1}))
    sender.fail.clear()  # the cause fixed

    capsys.readouterr()
    assert main(["--json", "dlq", "redrive", "--queue", "notify", "--yes"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["redriven"]) == sorted([rid, other])

    assert result_item(rid)["patient_status"]["S"] == "pending"
    assert result_item(other)["patient_status"]["S"] == "failed"  # its letter names generation 1; it is at 0
    bodies = _notify_queue_bodies(2)
    assert sorted(bodies, key=json.dumps) == sorted(
        [{"result_id": rid}, {"result_id": other, "generation": 1}], key=json.dumps
    )
    assert handle(sqs_event(*bodies)) == {"batchItemFailures": []}
    assert len(sent_sms()) == 1  # the reopened result's, once
    assert result_item(rid)["patient_status"]["S"] == "sent"
    assert result_item(other)["patient_status"]["S"] == "failed"

    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"result_id": rid}))  # redriving again is safe
    assert main(["--json", "dlq", "redrive", "--queue", "notify", "--id", rid]) == 0
    assert result_item(rid)["patient_status"]["S"] == "sent"  # not reopened: it is not failed
    assert handle(sqs_event(*_notify_queue_bodies(1))) == {"batchItemFailures": []}
    assert len(sent_sms()) == 1


def test_after_a_partial_failure_the_retry_sends_only_the_missing_channel(patient_env):
    rid = new_result(patient_env["pharmacy"])
    sender = use_sender({"email"})
    from chalicelib.services.notify import NotifyFailedError

    with pytest.raises(NotifyFailedError):
        notify(rid)
    assert len(sent_sms()) == 1 and sent_emails() == []
    sender.fail.clear()
    assert notify(rid, attempt=2) == "sent"
    assert len(sent_sms()) == 1
    assert len(sent_emails()) == 1
    assert result_item(rid)["patient_status"]["S"] == "sent"


def test_a_message_of_a_superseded_generation_is_dropped(patient_env):
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    assert notify(rid, generation=1) == "superseded"
    assert sent_sms() == []


def _transactions_during(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The item count of every TransactWriteItems sent from now on."""
    from pynamodb.connection.base import Connection

    sizes: list[int] = []
    real = Connection._make_api_call

    def recording(self: Any, operation_name: str, operation_kwargs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if operation_name == "TransactWriteItems":
            sizes.append(len(operation_kwargs["TransactItems"]))
        return real(self, operation_name, operation_kwargs, *args, **kwargs)

    monkeypatch.setattr(Connection, "_make_api_call", recording)
    return sizes


def test_the_last_send_is_recorded_with_the_attempt_end_in_one_transaction(patient_env, monkeypatch):
    sms_only = new_result(patient_env["pharmacy"], notify=("sms",))
    both = new_result(patient_env["pharmacy"], notify=("sms", "email"))
    sizes = _transactions_during(monkeypatch)

    assert notify(sms_only) == "sent"
    assert sizes == [4], "one write after the send: generation check, result, claim and the send's audit event"
    assert notify(both) == "sent"
    assert sizes[1:] == [3, 4], "the first channel recorded on its own (claim, audit, sent_at), the last with the end"

    for rid, channels in ((sms_only, {"sms"}), (both, {"sms", "email"})):
        claim = next(i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"] == f"notify#{rid}#0")
        assert {c for c in ("sms", "email") if f"{c}_sent_at" in claim} == channels and "done_at" in claim
        events = [e for e in audit_events("patient.notify", "success") if e["record"] == rid]
        assert sorted(e["reason"].split(":")[0] for e in events) == sorted(channels), "one event per send"


def test_a_send_whose_generation_moved_on_meanwhile_is_still_recorded_once(patient_env, monkeypatch):
    """A resend between the send and the attempt's end: the end is refused (superseded) and the send is recorded on
    its own, its audit event written once, so that a redelivery does not send it again."""
    from chalicelib.adapters.links import LinkStore
    from chalicelib.adapters.tables import StateItem

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    finish = LinkStore.finish

    def resend_first(self: Any, result_id: str, generation: int, **kwargs: Any) -> None:
        StateItem(pk=f"linkcur#{result_id}").update(actions=[StateItem.n.set(generation + 1)])  # a resend's move
        finish(self, result_id, generation, **kwargs)

    monkeypatch.setattr(LinkStore, "finish", resend_first)

    assert notify(rid) == "superseded"
    assert len(sent_sms()) == 1
    claim = next(i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"] == f"notify#{rid}#0")
    assert "sms_sent_at" in claim and "done_at" not in claim
    events = [e for e in audit_events("patient.notify", "success") if e["record"] == rid]
    assert len(events) == 1 and events[0]["reason"].startswith("sms:")
    assert result_item(rid)["patient_status"]["S"] == "pending", "the end of generation 0 was not written"


def test_a_failed_end_still_records_the_send_and_the_retry_sends_nothing_again(patient_env, monkeypatch):
    from chalicelib.adapters import links
    from chalicelib.errors import DependencyUnavailableError

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    real_set_status = links.LinkStore._set_status
    failures = iter([DependencyUnavailableError("dynamodb")])

    def failing_once(self: Any, *args: Any, **kwargs: Any) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_set_status(self, *args, **kwargs)

    monkeypatch.setattr(links.LinkStore, "_set_status", failing_once)
    from chalicelib.services.notify import NotifyFailedError

    with pytest.raises(NotifyFailedError):
        notify(rid)
    claim = next(i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"] == f"notify#{rid}#0")
    assert "sms_sent_at" in claim, "recorded on its own when the end failed"
    assert notify(rid, attempt=2) == "sent"
    assert len(sent_sms()) == 1, "the retry did not send it again"
    events = [e for e in audit_events("patient.notify", "success") if e["record"] == rid]
    assert len(events) == 1


def test_no_personal_value_in_the_batch_log_lines(patient_env, capfd):
    rid = new_result(patient_env["pharmacy"])
    use_sender({"sms"})
    handle(sqs_event({"result_id": rid}, receive_count=5))
    out = capfd.readouterr()
    assert_no_leak(out.out + out.err)
    assert rid


# -- the per-pharmacy daily SMS cap ------------------------------------------------------------------------------
def cap_sms_at(limit: int) -> None:
    from dataclasses import replace

    from chalicelib import bootstrap

    bootstrap.override(settings=replace(bootstrap.settings(), sms_per_pharmacy_per_day=limit))


def budget_count() -> int:
    """SMS counted against the month's budget: the state item's count less what this process reserved and has not
    used yet (the pacer reserves five at a time, adapters/pacing.py)."""
    from chalicelib import bootstrap

    items = [i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("budget#sms#")]
    return sum(int(i["n"]["N"]) for i in items) - len(bootstrap.pacers()["sms"]._counts[1])


def test_past_its_daily_sms_cap_a_pharmacy_s_result_gets_no_sms_and_fails_its_patient_status(patient_env):
    from tests.integration.helpers import register_pharmacy

    cap_sms_at(2)
    actor = patient_env["pharmacy"]
    first, second, third = (new_result(actor, notify=("sms", "email")) for _ in range(3))
    assert [notify(first), notify(second)] == ["sent", "sent"]

    assert notify(third) == "capped"

    assert len(sent_sms()) == 2 and len(sent_emails()) == 3  # its e-mail still went
    assert budget_count() == 2  # the refused SMS spent nothing of the account's budget
    assert result_item(third)["patient_status"]["S"] == "failed"
    third_sends = [e for e in audit_events("patient.notify", "success") if e["record"] == third]
    assert [e["reason"].split(":")[0] for e in third_sends] == ["email"], "its e-mail's send recorded, once"
    (capped,) = audit_events("patient.notify", "failed")
    assert (capped["record"], capped["reason"]) == (third, "sms:daily_cap")
    assert notify(third) == "not_pending"  # a redelivery sends nothing more
    assert _claim_item(third)["lease_until"]["N"] == "0", "released: a held lease reads as a message on its way"
    other = new_result(register_pharmacy(), notify=("sms",))
    assert notify(other) == "sent"  # another pharmacy's cap is its own


def test_the_sms_cap_is_counted_per_day(patient_env):
    from datetime import UTC, datetime, timedelta

    from chalicelib import bootstrap

    cap_sms_at(1)
    actor = patient_env["pharmacy"]
    today, tomorrow = new_result(actor, notify=("sms",)), new_result(actor, notify=("sms",))
    assert notify(today) == "sent"
    bootstrap.override(clock=lambda: datetime.now(UTC) + timedelta(days=1))
    assert notify(tomorrow) == "sent"


def test_an_sms_that_could_not_be_sent_does_not_count_against_the_cap(patient_env):
    from chalicelib.services.notify import NotifyFailedError

    cap_sms_at(1)
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    sender = use_sender({"sms"})
    with pytest.raises(NotifyFailedError):
        notify(rid)
    sender.fail.clear()

    assert notify(rid, attempt=2) == "sent"
    assert len(sent_sms()) == 1


def test_a_count_given_back_after_midnight_goes_back_to_the_day_it_was_counted(patient_env):
    """An SMS counted at 23:59:59 whose send fails after midnight: the day it was counted gets its count back, and
    the new day's count is not lowered below what it really sent."""
    from datetime import UTC, datetime, time, timedelta

    from chalicelib import bootstrap
    from chalicelib.adapters.messaging import DeliveryError
    from chalicelib.services.notify import NotifyFailedError

    cap_sms_at(1)
    actor = patient_env["pharmacy"]
    rid = new_result(actor, notify=("sms",))
    day = datetime.now(UTC).date()
    moment = [datetime.combine(day, time(23, 59, 59), tzinfo=UTC)]
    bootstrap.override(clock=lambda: moment[0])
    sender = use_sender(set())

    def fails_after_midnight(phone: str, text: str) -> str:
        moment[0] += timedelta(seconds=2)
        raise DeliveryError("sms", "Throttling")

    sender.send_sms = fails_after_midnight  # type: ignore[method-assign]
    with pytest.raises(NotifyFailedError):
        notify(rid)

    counts = {i["pk"]["S"]: int(i["n"]["N"]) for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"].startswith("cap#sms#")}
    assert counts == {f"cap#sms#{actor.pharmacy_id}#{day.isoformat()}": 0}


def _received_from_notify_queue(result_id: str) -> tuple[dict[str, Any], Any]:
    """The result's message sent to and received from the real notify queue: (its Lambda event, moto's message)."""
    import json

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    from chalicelib import bootstrap

    sqs, url = bootstrap.client("sqs"), bootstrap.settings().notify_queue_url
    sqs.purge_queue(QueueUrl=url)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"result_id": result_id}))
    [received] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    event = sqs_event({"result_id": result_id})
    event["Records"][0].update(messageId=received["MessageId"], receiptHandle=received["ReceiptHandle"])
    queue = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-3"].queues[url.rsplit("/", 1)[-1]]
    [message] = [m for m in queue._messages if m.id == received["MessageId"]]
    return event, message


def _seconds_hidden(message: Any) -> float:
    import time

    return float(message.visible_at / 1000 - time.time())


def test_a_failed_send_comes_back_after_a_short_jittered_pause_not_the_queue_s_three_minutes(patient_env):
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    use_sender({"sms"})
    event, message = _received_from_notify_queue(rid)
    assert _seconds_hidden(message) > 170  # received: hidden for the queue's visibility timeout (180 s)
    assert handle(event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert 5 < _seconds_hidden(message) <= 15  # first retry: 7.5 to 15 s


def test_a_copy_that_meets_a_leased_claim_comes_back_when_the_lease_ends(patient_env):
    from chalicelib import bootstrap
    from chalicelib.services.notify import LEASE_SECONDS

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    bootstrap.link_store().acquire_claim(rid, 0, lease_seconds=40, keep_until=2**31)  # another worker sending it
    event, message = _received_from_notify_queue(rid)
    assert handle(event)["batchItemFailures"]
    assert 35 < _seconds_hidden(message) <= 42 < LEASE_SECONDS
    assert sent_sms() == []


def _claim_item(result_id: str, generation: int = 0) -> dict[str, Any]:
    [item] = [i for i in scan("RELAIS_STATE_TABLE") if i["pk"]["S"] == f"notify#{result_id}#{generation}"]
    return item


def test_a_last_delivery_that_meets_a_leased_claim_fails_the_status_and_leaves_the_lease(patient_env):
    """Nothing was sent by this copy, but it is the last: the patient status is ``failed`` (with its ``failed``
    event), as after any last attempt, and the lease another worker holds is not released under it."""
    from chalicelib import bootstrap
    from chalicelib.domain.links import ClaimBusyError
    from chalicelib.services.notify import NOTIFY_MAX_ATTEMPTS

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    bootstrap.link_store().acquire_claim(rid, 0, lease_seconds=60, keep_until=2**31)  # another worker sending it
    lease = _claim_item(rid)["lease_until"]

    with pytest.raises(ClaimBusyError):
        notify(rid, attempt=NOTIFY_MAX_ATTEMPTS - 1)
    assert result_item(rid)["patient_status"]["S"] == "pending"  # not the last: retried, nothing written
    assert not audit_events("patient.notify")

    with pytest.raises(ClaimBusyError):
        notify(rid, attempt=NOTIFY_MAX_ATTEMPTS)
    assert result_item(rid)["patient_status"]["S"] == "failed"
    assert [e["reason"] for e in audit_events("patient.notify", "failed")] == ["ClaimBusyError"]
    assert _claim_item(rid)["lease_until"] == lease
    assert sent_sms() == []


def test_a_last_attempt_never_fails_a_message_a_copy_has_sent(patient_env):
    from chalicelib import bootstrap

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    assert notify(rid) == "sent"
    bootstrap.link_store().mark_failed(rid, 0)  # a late last attempt of another copy
    assert result_item(rid)["patient_status"]["S"] == "sent"


def test_when_sqs_refuses_the_shorter_pause_the_message_keeps_the_queue_s_timeout(patient_env, caplog):
    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    use_sender({"sms"})
    event = sqs_event({"result_id": rid})  # a receipt handle SQS does not know
    assert handle(event) == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    [warning] = [r for r in caplog.records if r.getMessage() == "notify retry delay not set"]
    assert warning.error == "ReceiptHandleIsInvalid"  # type: ignore[attr-defined]


@pytest.mark.parametrize("refusal", ["PacingBusyError", "BudgetExhaustedError"])
def test_a_message_without_a_send_slot_waits_the_queue_s_whole_timeout(patient_env, refusal):
    from chalicelib import bootstrap
    from chalicelib.adapters import pacing

    class NoSlot:
        def acquire(self) -> object:
            raise getattr(pacing, refusal)("sms-rate")

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    bootstrap.override(pacers={"sms": NoSlot()})
    event, message = _received_from_notify_queue(rid)
    assert handle(event)["batchItemFailures"]
    assert _seconds_hidden(message) > 170  # the backlog drains at the account's rate: no attempt spent sooner
    assert sent_sms() == []


@pytest.mark.parametrize(
    ("channel", "transport_error", "unconfirmed"),
    [
        ("sms", "ReadTimeoutError", True),  # the request reached SNS: it may have sent the SMS
        ("email", "ReadTimeoutError", True),
        ("sms", "ConnectionClosedError", False),  # a dropped kept-alive connection, a reset while writing
        ("sms", "ConnectTimeoutError", False),  # never reached it: nothing was sent
    ],
)
def test_botocore_never_repeats_a_send_and_says_when_the_provider_may_have_taken_it(
    patient_env, channel, transport_error, unconfirmed
):
    """One attempt per send, the failure goes up (never a second copy inside the same call), marked ``unconfirmed``
    when the answer was lost after the request reached SNS or SES."""
    from botocore import exceptions

    from chalicelib import bootstrap
    from chalicelib.adapters.messaging import DeliveryError
    from chalicelib.domain.messages import EmailContent

    messaging = bootstrap.messaging()
    sdk = messaging._sns if channel == "sms" else messaging._ses
    attempts: list[str] = []

    def failing(request: Any, **_: Any) -> None:
        attempts.append(request.url)
        raise getattr(exceptions, transport_error)(endpoint_url=request.url)

    event = "before-send.sns.Publish" if channel == "sms" else "before-send.ses.SendEmail"
    email = EmailContent(subject="s", text="t", html="<p>h</p>")
    send = (
        (lambda: messaging.send_sms(PHONE, "text"))
        if channel == "sms"
        else (lambda: messaging.send_email(EMAIL, email))
    )
    sdk.meta.events.register(event, failing)
    try:
        with pytest.raises(DeliveryError) as raised:
            send()
    finally:
        sdk.meta.events.unregister(event, failing)
    assert len(attempts) == 1
    assert raised.value.code == transport_error and not raised.value.permanent
    assert raised.value.unconfirmed is unconfirmed


class AnswerLost(FlakySender):
    """SNS takes the SMS, and its answer is lost on the way back."""

    def send_sms(self, phone: str, text: str) -> str:
        from chalicelib.adapters.messaging import DeliveryError

        self.real.send_sms(phone, text)
        raise DeliveryError("sms", "ReadTimeoutError", unconfirmed=True)


def test_an_sms_whose_answer_was_lost_is_recorded_as_sent_and_never_sent_again(patient_env):
    """At most one SMS per result and link generation: an SMS SNS may have taken is not retried (the e-mail still
    goes); its event says it is unconfirmed, and the outcome is counted apart."""
    from chalicelib import bootstrap

    rid = new_result(patient_env["pharmacy"])
    sender = use_sender(set())
    lost = AnswerLost(sender.real, set())
    bootstrap.override(messaging=lost)

    assert notify(rid) == "unconfirmed"
    assert notify(rid, attempt=2) == "not_pending"  # a redelivered copy
    assert len(sent_sms()) == 1 and len(sent_emails()) == 1
    assert result_item(rid)["patient_status"]["S"] == "sent"
    reasons = sorted(e["reason"] for e in audit_events("patient.notify", "success"))
    assert [r.split(":")[0] for r in reasons] == ["email", "sms"]
    assert reasons[1].endswith(":unconfirmed:DeliveryError:ReadTimeoutError")
    assert not audit_events("patient.notify", "retry")


@pytest.mark.parametrize(("failure", "lease_kept"), [("not-recorded", True), ("end-only", False)])
def test_a_send_whose_record_failed_keeps_its_lease_until_it_runs_out(patient_env, monkeypatch, failure, lease_kept):
    """The SMS went out and nothing of it could be written (SendNotRecordedError): the lease stays, so that a
    withdrawal meanwhile counts the message as on its way. When only the attempt's end failed (the send itself
    recorded), the lease is released as after any failure, for the retry."""
    from chalicelib.adapters.links import LinkStore
    from chalicelib.errors import DependencyUnavailableError, SendNotRecordedError
    from chalicelib.services.notify import NotifyFailedError

    rid = new_result(patient_env["pharmacy"], notify=("sms",))
    error = SendNotRecordedError("dynamodb") if lease_kept else DependencyUnavailableError("dynamodb")

    def failing(self: Any, *args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(LinkStore, "finish", failing)
    with pytest.raises(NotifyFailedError):
        notify(rid)
    assert len(sent_sms()) == 1
    assert (int(_claim_item(rid)["lease_until"]["N"]) > 0) is lease_kept


# -- what the notify function calls is what its IAM policy allows (moto authorizes everything) ----------------------
# Every integration test runs under the local IAM check (tests/conftest.py `aws`); this one shows it catching the
# call the notifier once made without its policy allowing it.


def test_a_corrected_result_s_message_makes_only_calls_the_notifier_s_policy_allows(patient_env):
    """After the correction's own send failed, the notifier asks the earlier generations' claims (a BatchGetItem,
    which its policy once lacked): the message goes out, and the fixture finds no call refused."""
    from tests.integration.test_corrections import correct, positive

    client, actor = patient_env["client"], patient_env["pharmacy"]
    corrected = new_result(actor, notify=("sms",))
    sender = use_sender({"sms"})
    assert correct(client, actor, corrected, positive()).status_code == 202  # its send failed: the copy is queued
    sender.fail.clear()

    assert notify(corrected, generation=1) == "sent"
    assert len(sent_sms()) == 1  # nothing went out before: the first message's text, for the corrected result


def test_a_call_the_notifier_s_policy_lacks_is_refused_as_aws_refuses_it(patient_env, monkeypatch):
    """A message for a corrected result after the correction's own send failed: the notifier asks the earlier
    generations' claims (a BatchGetItem). Without that action in its policy, the call fails before reaching moto."""
    from chalicelib.services.notify import NotifyFailedError
    from infra.local import local_iam
    from tests.integration.helpers import without_action
    from tests.integration.test_corrections import correct, positive

    client, actor = patient_env["client"], patient_env["pharmacy"]
    corrected = new_result(actor, notify=("sms",))
    sender = use_sender({"sms"})
    assert correct(client, actor, corrected, positive()).status_code == 202  # its send failed: the copy is queued
    sender.fail.clear()
    without_action(monkeypatch, "chalicelib.events.notify.on_notify_message", "StateTable", "dynamodb:BatchGetItem")

    with pytest.raises(NotifyFailedError, match="DependencyUnavailable"):  # AWS's AccessDeniedException, retried
        notify(corrected, generation=1)
    refused = local_iam.refused()
    assert sorted({str(d) for d in refused}) == ["notify function: dynamodb:BatchGetItem on StateTable"]
    assert sent_sms() == []
    refused.clear()  # shown: the fixture would otherwise fail the test for it
