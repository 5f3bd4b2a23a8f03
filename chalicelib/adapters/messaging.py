"""Sending to patients: SMS through SNS, e-mail through SES.

SMS are ``Transactional`` (delivery priority over cost) with a configurable alphanumeric sender id.
E-mails carry a text and an HTML part and go through the configured SES configuration set (bounce,
complaint and delivery events) when one is named. SDK errors become :class:`DeliveryError`, whose
text names the channel and error code only: a provider's message may quote the phone number or the
address, so it is never kept (``from None``).
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.domain.messages import EmailContent
from chalicelib.errors import DependencyUnavailableError

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
SENDER_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9]{1,11}$")
#: Provider answers that no retry can fix (the number or the address is refused).
PERMANENT_CODES = frozenset(
    {"InvalidParameter", "InvalidParameterValue", "MessageRejected", "OptedOut", "MailFromDomainNotVerifiedException"}
)
#: The AWS service that carries each channel (``domain/channels.py``; a test checks both name the same channels).
PROVIDERS = {"sms": "sns", "email": "ses"}


class DeliveryError(DependencyUnavailableError):
    """A message could not be handed to SNS or SES. ``permanent`` when retrying cannot help; ``unconfirmed`` when
    the request reached the provider and its answer was lost (a read timeout): the provider may have taken the
    message, and sending it again could give the patient two."""

    def __init__(self, channel: str, code: str, *, permanent: bool = False, unconfirmed: bool = False) -> None:
        super().__init__(PROVIDERS[channel])
        self.channel = channel
        self.code = code
        self.permanent = permanent
        self.unconfirmed = unconfirmed

    def __str__(self) -> str:
        return f"{self.channel} delivery failed ({self.code})"


def _refused(channel: str, exc: Exception) -> DeliveryError:
    """The :class:`DeliveryError` of a failed send (codes only: a provider's message may quote the address)."""
    from botocore.exceptions import ReadTimeoutError

    code = _code(exc)
    # Only a read timeout proves the request was written out: a closed connection (botocore's ConnectionClosedError)
    # is most often a kept-alive connection the provider had dropped, or a reset while writing: nothing was taken.
    lost_answer = isinstance(exc, ReadTimeoutError)
    return DeliveryError(channel, code, permanent=code in PERMANENT_CODES, unconfirmed=lost_answer)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "Unknown"))[:64]
    return type(exc).__name__


class Messaging:
    """SNS and SES clients, behind two domain calls."""

    def __init__(
        self, *, sns: Any, ses: Any, sms_sender_id: str, email_sender: str, configuration_set: str = ""
    ) -> None:
        self._sns = sns
        self._ses = ses
        self._sender_id = sms_sender_id if SENDER_ID.match(sms_sender_id or "") else ""
        self._email_sender = email_sender
        self._configuration_set = configuration_set

    def send_sms(self, phone: str, text: str) -> str:
        """Publish one transactional SMS; the provider's message id."""
        if not E164.match(phone):  # validated at intake already; SNS itself (and moto) accepts anything
            raise DeliveryError("sms", "InvalidPhoneNumber", permanent=True)
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if self._sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self._sender_id}
        try:
            answer = self._sns.publish(PhoneNumber=phone, Message=text, MessageAttributes=attributes)
        except Exception as exc:
            raise _refused("sms", exc) from None
        return str(answer.get("MessageId", ""))

    def send_email(self, address: str, content: EmailContent) -> str:
        """Send one e-mail (text + HTML); the provider's message id."""
        if not address or any(c in address for c in "\r\n,;<>") or "@" not in address:
            raise DeliveryError("email", "InvalidAddress", permanent=True)
        kwargs: dict[str, Any] = {
            "Source": self._email_sender,
            "Destination": {"ToAddresses": [address]},
            "Message": {
                "Subject": {"Data": content.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": content.text, "Charset": "UTF-8"},
                    "Html": {"Data": content.html, "Charset": "UTF-8"},
                },
            },
        }
        if self._configuration_set:
            kwargs["ConfigurationSetName"] = self._configuration_set
        try:
            answer = self._ses.send_email(**kwargs)
        except Exception as exc:
            raise _refused("email", exc) from None
        return str(answer.get("MessageId", ""))
