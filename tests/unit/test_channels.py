"""The channel table is the one list of channels: the type, the ports, the adapter and the notifier follow it."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from chalicelib.domain.channels import CHANNELS, UnknownChannelError, channel_spec, parse_channel, required_addresses
from chalicelib.domain.model import Channel, Patient
from chalicelib.domain.records import Pharmacy, ResultRecord
from chalicelib.domain.validation import parse_submission
from tests.factories import FIXED_NOW, valid_body

EXPIRES = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_channel_type_names_exactly_the_channels_of_the_table_in_its_order():
    assert get_args(Channel) == tuple(CHANNELS)
    assert all(spec.name == name for name, spec in CHANNELS.items())


def test_every_channel_sends_to_a_text_attribute_of_the_patient():
    text_fields = {f.name for f in dataclasses.fields(Patient) if f.type == "str | None"}
    for spec in CHANNELS.values():
        assert spec.address_field in text_fields, spec


def test_every_transport_is_a_method_of_the_sender_port_and_of_the_sns_ses_adapter():
    from chalicelib.adapters.messaging import PROVIDERS, Messaging
    from chalicelib.services.notify import Sender

    for spec in CHANNELS.values():
        port = inspect.signature(getattr(Sender, spec.transport))
        adapter = inspect.signature(getattr(Messaging, spec.transport))
        assert list(port.parameters) == list(adapter.parameters), spec.transport
    assert set(PROVIDERS) == set(CHANNELS), "every channel has its provider (DeliveryError names it)"


def test_every_template_writes_a_message_in_each_language():
    for spec in CHANNELS.values():
        for lang in ("fr", "en"):
            message = spec.template(
                pharmacy_name="Pharmacie", url="https://r.example/r#t", expires_at=EXPIRES, ttl_hours=72, lang=lang
            )
            assert "https://r.example/r#t" in str(message)  # the text itself, or the e-mail's fields


@pytest.mark.parametrize("value", ["SMS", "push", "", None, 1, ["sms"]])
def test_a_name_outside_the_table_is_no_channel_and_has_no_row(value):
    assert parse_channel(value) is None
    with pytest.raises(UnknownChannelError):
        channel_spec(value)


def test_a_channel_requires_its_address_field_and_the_first_channel_asking_is_named():
    assert required_addresses(()) == {}
    assert required_addresses(("email", "sms")) == {"email": "email", "phone": "sms"}


def test_the_address_of_a_channel_is_the_patients_value_when_given():
    patient = parse_submission(valid_body(), now=FIXED_NOW).patient
    assert channel_spec("sms").address(patient) == patient.phone
    assert channel_spec("email").address(patient) == patient.email
    assert channel_spec("email").address(dataclasses.replace(patient, email=None)) is None


# --- the notifier follows the table, and refuses a channel it does not know ---------------------------------------


class Recorder:
    """Fake Links/Results/Sender: records each call; the claim sends nothing yet."""

    def __init__(self, record: ResultRecord) -> None:
        self.record = record
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.keywords: list[tuple[str, dict[str, Any]]] = []

    def get_result(self, result_id):
        return self.record

    def current_generation(self, result_id):
        return 0

    def acquire_claim(self, *args, **kwargs):
        return type("Claim", (), {"sent": frozenset(), "done": False, "link_expires_at": None})()

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args))
            self.keywords.append((name, kwargs))

        return call


def notifier(channels: tuple[str, ...]) -> tuple[Any, Recorder]:
    from chalicelib.services.notify import NotifyService

    submission = parse_submission(valid_body(), now=FIXED_NOW)
    record = ResultRecord(
        id="r" * 22,
        pharmacy_id="ph_1",
        reference_digest="A-1",
        key_id="k",
        received_at=FIXED_NOW,
        expires_at=2_000_000_000,
        ciphertext=b"",
        channels=channels,
        patient_status="pending",
    )
    fake = Recorder(record)
    service = NotifyService(
        results=fake,
        links=fake,
        sender=fake,
        decrypt=lambda _record: submission,
        get_pharmacy=lambda _id: Pharmacy("ph_1", "750012345", "Pharmacie du Canal", "active"),
        clock=lambda: FIXED_NOW,
        public_base_url="https://r.example",
    )
    return service, fake


def test_the_notifier_sends_each_channel_with_its_transport_to_its_address():
    service, fake = notifier(("email", "sms"))

    assert service.notify("r" * 22) == "sent"

    patient = parse_submission(valid_body(), now=FIXED_NOW).patient
    sends = [(name, args[0]) for name, args in fake.calls if name in ("send_sms", "send_email")]
    assert sends == [("send_email", patient.email), ("send_sms", patient.phone)]
    recorded = [args[2].channel for name, args in fake.calls if name == "record_send"]
    ((_, finished),) = [(name, kwargs) for name, kwargs in fake.keywords if name == "finish"]
    assert recorded == ["email"], "each channel but the last recorded on its own, before the next is tried"
    assert finished["last_send"].channel == "sms", "the last one recorded with the attempt's end"
    assert finished["last_send"].audit.reason.startswith("sms:")


def test_an_unknown_channel_fails_the_attempt_before_anything_is_issued_or_sent():
    from chalicelib.services.notify import NotifyFailedError

    service, fake = notifier(("sms", "pigeon"))

    with pytest.raises(NotifyFailedError, match="UnknownChannelError"):
        service.notify("r" * 22)

    names = [name for name, _args in fake.calls]
    assert "put_link" not in names and "send_sms" not in names and "send_email" not in names
    assert "release_claim" in names and "record_audit" in names


def test_the_send_claim_records_each_channel_in_its_own_attribute():
    from chalicelib.adapters.links import SENT_AT

    assert list(SENT_AT) == list(CHANNELS)
    assert len({attribute.attr_name for attribute in SENT_AT.values()}) == len(CHANNELS)
