"""The channels a patient can be notified on, in one table.

Each channel names the :class:`~chalicelib.domain.model.Patient` attribute that holds its address, the template that
writes its message (``messages.py``) and the method of the notifier's ``Sender`` port that carries it
(``services/notify.py``, implemented in ``adapters/messaging.py``). Validation (the ``notify`` values and which
address they require), the notifier and the FHIR mapping read this table; tests check that the ``Channel`` type, the
``Sender`` port, the SNS/SES adapter and ``docs/openapi.yaml`` agree with it.

Adding a channel: its row here, its template, its ``Sender`` method and transport, and its name in ``Channel``.

``notify`` may also hold :data:`PAPER` (contract v2 §7): the pharmacy prints a slip with the link
(``POST /v1/results/{id}/slip``). It is no message channel: it needs no address and nothing is ever sent on it, so
the notifier, resends and address checks skip it (:func:`message_channels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, Protocol

from chalicelib.domain.messages import Language, MessageKind, email_content, sms_text
from chalicelib.domain.model import Channel, NotifyValue, Patient

#: The patient attributes that hold an address a message can go to.
AddressField = Literal["phone", "email"]


class Template(Protocol):
    """Writes one channel's message; it is given nothing personal (see ``messages.py``)."""

    def __call__(
        self, *, pharmacy_name: str, url: str, expires_at: datetime, ttl_hours: int, lang: Language, kind: MessageKind
    ) -> object: ...


class UnknownChannelError(RuntimeError):
    """A channel name that is not in :data:`CHANNELS` (a stored record from a newer or broken version)."""


@dataclass(frozen=True)
class ChannelSpec:
    name: Channel
    address_field: AddressField  # the Patient attribute the message is sent to; required when notify names it
    template: Template  # the message
    transport: str  # the Sender port's method: transport(address, message) -> provider message id

    def address(self, patient: Patient) -> str | None:
        """The patient's address on this channel, if they gave one."""
        value = getattr(patient, self.address_field)
        return value if isinstance(value, str) and value else None


#: Every channel, in the order error messages list them.
CHANNELS: Final[Mapping[Channel, ChannelSpec]] = {
    "sms": ChannelSpec("sms", "phone", sms_text, "send_sms"),
    "email": ChannelSpec("email", "email", email_content, "send_email"),
}


#: ``notify``'s value for a paper slip: no address, no message (``services/slip.py`` makes the slip).
PAPER: Final = "paper"
#: What ``notify`` may hold, in the order error messages list them: the message channels, then ``paper``.
NOTIFY_VALUES: Final[tuple[NotifyValue, ...]] = (*CHANNELS, PAPER)


def parse_notify_value(value: object) -> NotifyValue | None:
    """``value`` as a ``notify`` entry (a channel or ``paper``), or None when it is not one."""
    for name in NOTIFY_VALUES:
        if value == name:
            return name
    return None


def message_channels(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without ``paper``: the channels a message is sent on (an unknown name is kept: it fails its send)."""
    return tuple(name for name in names if name != PAPER)


def parse_channel(value: object) -> Channel | None:
    """``value`` as a channel name, or None when it is not one."""
    for name in CHANNELS:
        if value == name:
            return name
    return None


def channel_spec(name: str) -> ChannelSpec:
    """The table row of ``name``; :class:`UnknownChannelError` for a name that has none (never a default)."""
    channel = parse_channel(name)
    if channel is None:
        raise UnknownChannelError("unknown channel")  # the name itself is not echoed: it comes from storage
    return CHANNELS[channel]


def required_addresses(channels: Iterable[str]) -> dict[AddressField, Channel]:
    """Which address fields ``channels`` require, each with the first channel that requires it (``paper`` none)."""
    required: dict[AddressField, Channel] = {}
    for name in message_channels(channels):
        spec = channel_spec(name)
        required.setdefault(spec.address_field, spec.name)
    return required
