"""What the local stack "sent" to patients: SMS published with SNS and e-mails sent with SES, as moto kept them.

moto keeps no HTTP API listing sent messages per service, but its server exposes ``GET /moto-api/data.json``:
every instance of every moto model (``BaseModel`` subclasses are tracked as they are created), with its
JSON-serialisable public attributes. The ones read here (moto 5.x):

* ``sns.SMS``: ``message_id``, ``phone_number``, ``message`` (one per ``Publish`` with ``PhoneNumber``);
* ``ses.Message``: ``id``, ``source``, ``subject``, ``body`` (HTML part if any, else text), ``destinations``
  (``{"ToAddresses": [...], "CcAddresses": [...], "BccAddresses": [...]}``), one per ``SendEmail`` (SES v1 or v2);
* ``ses.RawMessage``: ``id``, ``source``, ``destinations`` (list), ``raw_data`` (the MIME message), one per
  ``SendRawEmail``;
* ``ses.TemplateMessage``: ``id``, ``source``, ``template``, ``template_data``, ``destinations``.

moto records no sending time. ``sent_at`` is therefore the ``Date`` header of a raw e-mail when it has one, and
otherwise the first time ``relais`` saw the message: first-seen times are kept in ``<state dir>/outbox-seen.json``
(message ids and times only, never content), so they stay stable from one call to the next. Calling
:func:`read_outbox` regularly (the local stack's poller can) makes them as close to the sending time as its period.
Instances live as long as the moto server (``/moto-api/reset`` clears them).
"""

from __future__ import annotations

import email
import email.policy
import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

from relais_cli.errors import CliError

SEEN_FILE = "outbox-seen.json"
DATA_PATH = "/moto-api/data.json"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch_moto_data(
    aws_endpoint: str, *, services: tuple[str, ...] = ("sns", "ses"), timeout: float = 30.0
) -> dict[str, Any]:
    """moto server's model dump (``/moto-api/data.json``) of ``services`` only (the local stack's moto takes a
    ``service`` filter: the whole dump, every DynamoDB item included, outlasted the timeout after 10,000 results)."""
    import requests

    url = aws_endpoint.rstrip("/") + DATA_PATH
    try:
        response = requests.get(url, params={"service": list(services)}, timeout=timeout)
    except requests.RequestException:
        raise CliError(f"the moto server does not answer at {aws_endpoint}: is the local stack running?") from None
    if response.status_code != 200:
        raise CliError(f"the moto server answered {response.status_code} to {DATA_PATH}")
    try:
        data = response.json()
    except ValueError:
        raise CliError(f"the moto server's {DATA_PATH} is not JSON") from None
    if not isinstance(data, dict):
        raise CliError(f"the moto server's {DATA_PATH} is not a JSON object")
    return data


def _instances(data: dict[str, Any], service: str, model: str) -> list[dict[str, Any]]:
    found = data.get(service, {}).get(model, [])
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def _addresses(destinations: Any) -> list[str]:
    """Recipients of an SES message, To then Cc then Bcc, without duplicates."""
    if isinstance(destinations, dict):
        values: Iterable[Any] = [
            address
            for field in ("ToAddresses", "CcAddresses", "BccAddresses")
            for address in destinations.get(field) or []
        ]
    elif isinstance(destinations, list):
        values = destinations
    else:
        values = []
    seen: list[str] = []
    for _name, address in getaddresses([str(v) for v in values]):
        if address and address not in seen:
            seen.append(address)
    return seen


def _raw_email(raw_data: str) -> tuple[str | None, str, datetime | None]:
    """Subject, readable body (text part, else HTML) and Date of a raw MIME message."""
    # moto keeps the MIME bytes decoded as UTF-8: encode them back so that 8bit parts decode with their charset.
    message = email.message_from_bytes(raw_data.encode("utf-8", "surrogateescape"), policy=email.policy.default)
    subject = str(message["subject"]) if message["subject"] is not None else None
    date: datetime | None = None
    if message["date"] is not None:
        try:
            date = parsedate_to_datetime(str(message["date"]))
        except (TypeError, ValueError):
            date = None
        if date is not None and date.tzinfo is None:
            date = date.replace(tzinfo=UTC)
    body = ""
    if isinstance(message, EmailMessage):
        part = message.get_body(preferencelist=("plain", "html"))
        if part is not None and isinstance(part, EmailMessage):
            body = str(part.get_content())
    return subject, body.strip(), date


def messages_from_data(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The outbox entries in moto's dump, in sending order per service, with ``sent_at`` left to fill.

    Each entry: ``channel``, ``to``, ``subject`` (e-mail only), ``body``, and private ``_id``/``_date`` keys.
    """
    entries: list[dict[str, Any]] = []
    for sms in _instances(data, "sns", "SMS"):
        entries.append(
            {
                "channel": "sms",
                "to": str(sms.get("phone_number", "")),
                "body": str(sms.get("message", "")),
                "_id": f"sms:{sms.get('message_id')}",
                "_date": None,
            }
        )
    for mail in _instances(data, "ses", "Message"):
        entries.append(
            {
                "channel": "email",
                "to": ", ".join(_addresses(mail.get("destinations"))),
                "subject": mail.get("subject"),
                "body": str(mail.get("body") or ""),
                "_id": f"email:{mail.get('id')}",
                "_date": None,
            }
        )
    for raw in _instances(data, "ses", "RawMessage"):
        subject, body, date = _raw_email(str(raw.get("raw_data") or ""))
        entries.append(
            {
                "channel": "email",
                "to": ", ".join(_addresses(raw.get("destinations"))),
                "subject": subject,
                "body": body,
                "_id": f"email:{raw.get('id')}",
                "_date": date,
            }
        )
    for templated in _instances(data, "ses", "TemplateMessage"):
        entries.append(
            {
                "channel": "email",
                "to": ", ".join(_addresses(templated.get("destinations"))),
                "subject": f"(template {templated.get('template')})",
                "body": str(templated.get("template_data") or ""),
                "_id": f"email:{templated.get('id')}",
                "_date": None,
            }
        )
    return entries


class SeenLedger:
    """First-seen times of outbox messages, by message id, in ``<state dir>/outbox-seen.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def save(self, seen: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(seen), encoding="utf-8")
        os.replace(tmp, self.path)


def stamp(entries: list[dict[str, Any]], ledger: SeenLedger, now: datetime) -> list[dict[str, Any]]:
    """Give every entry its ``sent_at``, remember new ids, forget ids moto no longer has; drop private keys."""
    seen = ledger.load()
    current: dict[str, str] = {}
    stamped: list[dict[str, Any]] = []
    for entry in entries:
        key = entry["_id"]
        first_seen = seen.get(key) or _iso(now)
        current[key] = first_seen
        date = entry["_date"]
        out = {k: v for k, v in entry.items() if not k.startswith("_")}
        out["sent_at"] = _iso(date) if date is not None else first_seen
        stamped.append(out)
    if current != seen:
        ledger.save(current)
    stamped.sort(key=lambda e: e["sent_at"])  # stable: sending order kept within a second
    return stamped


def read_outbox(
    aws_endpoint: str,
    state_dir: Path,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[dict[str, Any]]:
    """``relais local outbox``: ``[{"channel", "to", "subject"?, "body", "sent_at"}]``, oldest first."""
    data = fetch_moto_data(aws_endpoint)
    return stamp(messages_from_data(data), SeenLedger(state_dir / SEEN_FILE), now())
