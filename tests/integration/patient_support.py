"""Helpers for the patient tests (notifier, result API, resend): moto's outbox, links, leak scans.

Fixtures here are imported by the test modules that use them (``from ... import patient_env``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.test import Client

from tests.integration.helpers import (
    BIRTH_DATE,
    PERSONAL_VALUES,
    ROOT,
    PharmacyActor,
    attribute_strings,
    distinctive_body,
    leaks,
    register_pharmacy,
    scan,
    submit_direct,
)

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-3"
PATIENT_PATH = "/v1/patient/result"
TOKEN_IN_LINK = re.compile(r"/r#([A-Za-z0-9_-]{22,64})")
TABLES = ("RELAIS_RESULTS_TABLE", "RELAIS_STATE_TABLE", "RELAIS_AUDIT_TABLE", "RELAIS_REGISTRY_TABLE")


def verify_email_sender() -> None:
    """moto's SES refuses unverified senders, like SES in its sandbox."""
    import boto3

    from chalicelib import bootstrap

    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=bootstrap.settings().email_sender)


def sent_sms() -> list[tuple[str, str]]:
    """``(phone, text)`` of every SMS published through moto's SNS, oldest first."""
    from moto.sns.models import sns_backends

    return list(sns_backends[ACCOUNT][REGION].sms_messages.values())


def sent_emails() -> list[Any]:
    """moto's SES messages (``destinations``, ``subject``, ``body`` = the HTML part)."""
    from moto.ses.models import ses_backends

    return list(ses_backends[ACCOUNT][REGION].sent_messages)


def token_in(text: str) -> str:
    match = TOKEN_IN_LINK.search(text)
    assert match, "no link in the message"
    return match.group(1)


def new_result(actor: PharmacyActor, *, notify: tuple[str, ...] = ("sms", "email"), **patient: str) -> str:
    """Submit a distinctive result through the real ingest service; its id."""
    body = distinctive_body()
    body["notify"] = list(notify)
    body["patient"].update(patient)
    status, answer = submit_direct(actor, body)
    assert status == 201
    result_id: str = answer["id"]
    return result_id


def notify(result_id: str, generation: int = 0, attempt: int = 1) -> str:
    """One notifier attempt, as the notify function makes it (its calls checked against that function's policy)."""
    from chalicelib import bootstrap
    from infra.local import local_iam

    with local_iam.running_as("chalicelib.events.notify.on_notify_message"):
        outcome: str = bootstrap.notify_service().notify(result_id, generation, attempt=attempt)
    return outcome


def notified_token(actor: PharmacyActor, **patient: str) -> tuple[str, str]:
    """A result notified by SMS only: ``(result id, token from the SMS)``."""
    result_id = new_result(actor, notify=("sms",), **patient)
    before = len(sent_sms())
    assert notify(result_id) == "sent"
    messages = sent_sms()
    assert len(messages) == before + 1
    return result_id, token_in(messages[-1][1])


def sqs_event(*bodies: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    """A Lambda SQS event with one record per body."""
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"rh-{i}",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:123456789012:relais-test-notify",
                "awsRegion": REGION,
            }
            for i, body in enumerate(bodies)
        ]
    }


def view(client: Client, token: str, birth_date: str = BIRTH_DATE, **headers: str) -> Any:
    return client.http.post(
        PATIENT_PATH,
        body=json.dumps({"token": token, "birth_date": birth_date}),
        headers={"Content-Type": "application/json", **headers},
    )


def result_item(result_id: str) -> dict[str, Any]:
    items = [i for i in scan("RELAIS_RESULTS_TABLE") if i["id"]["S"] == result_id]
    assert len(items) == 1
    return items[0]


def stored_strings() -> str:
    """Every string of every item of every table, one per line (for leak scans)."""
    return "\n".join(s for table in TABLES for item in scan(table) for s in attribute_strings(item))


def assert_no_leak(text: str, *secrets: str) -> None:
    """None of the personal values of :func:`distinctive_body`, nor ``secrets`` (tokens), in ``text``."""
    for value in (*PERSONAL_VALUES, *secrets):
        assert not leaks(value, text), "a personal value or token leaked"


class Gate:
    """Holds each thread that reaches :meth:`wait` until ``parties`` threads have either reached it or called
    :meth:`passed` (threads that never get that far), then lets them all go: a barrier for racers of which some
    may not reach it. The timeout only turns a deadlock into a failure; it never decides an outcome."""

    def __init__(self, parties: int, *, timeout: float = 60.0) -> None:
        self._parties = parties
        self._count = 0
        self._timeout = timeout
        self._condition = threading.Condition()

    def passed(self) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def wait(self) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()
            assert self._condition.wait_for(lambda: self._count >= self._parties, self._timeout), "gate deadlocked"


def run_threads(targets: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run each target in its own thread named after its key; what each returned or raised, by name."""
    outcomes: dict[str, object] = {}

    def run(name: str, target: Callable[[], object]) -> None:
        try:
            outcomes[name] = target()
        except Exception as exc:  # the outcome under test
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in targets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.fixture
def patient_env(aws: dict[str, str]) -> Iterator[dict[str, Any]]:
    """moto provisioned, SES sender verified, a pharmacy, and the Chalice test client on the real app."""
    from app import app

    verify_email_sender()
    actor = register_pharmacy()
    with Client(app, stage_name="test", project_dir=str(ROOT)) as client:
        yield {"client": client, "pharmacy": actor, "env": aws}
