"""A valid, entirely fictitious ``POST /v1/results`` body for the demo (``docs/api.md``).

Identifiers carry correct check digits computed here (RPPS: Luhn; NIR: 97 - n mod 97), the NIR agrees with the
birth date (woman born in December 1984), and the contact details are the documentation numbers and domains
(``+33612345678``, ``example.org``). Nothing of it is ever printed by the CLI.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from relais_cli.identifiers import with_nir_key, with_rpps_key

#: Fictitious pharmacist (RPPS of the API documentation's example).
SAMPLE_RPPS = with_rpps_key("1000387962")
#: Fictitious woman born in December 1984 in Paris (75), registration 123 456.
SAMPLE_NIR = with_nir_key("2841275123456")
SAMPLE_BIRTH_DATE = "1984-12-03"
SAMPLE_PHONE = "+33612345678"
SAMPLE_EMAIL = "demo@example.org"
#: Abbott Panbio COVID-19 Ag Rapid Test (in the EU rapid-test device list).
SAMPLE_DEVICE_ID = "1232"


def _paris() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Europe/Paris")
    except Exception:  # no time zone database: UTC is as valid for RFC 3339
        return UTC


def new_reference(now: datetime) -> str:
    """A fresh ``pharmacy_reference`` (1-64 of ``A-Za-z0-9._-``), different at every run."""
    return f"DEMO-{now.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def sample_body(now: datetime, reference: str | None = None) -> dict[str, Any]:
    """The demo submission: antigen test sampled 10 minutes before ``now``, notify by SMS and e-mail."""
    sampled_at = (now - timedelta(minutes=10)).astimezone(_paris())
    return {
        "pharmacy_reference": reference or new_reference(now),
        "performer_rpps": SAMPLE_RPPS,
        "patient": {
            "family_name": "Exemple",
            "given_name": "Camille",
            "birth_date": SAMPLE_BIRTH_DATE,
            "sex": "female",
            "nir": SAMPLE_NIR,
            "phone": SAMPLE_PHONE,
            "email": SAMPLE_EMAIL,
            "address": {"line": "1 rue de la Démonstration", "postal_code": "75011", "city": "Paris", "country": "FR"},
        },
        "test": {
            "kind": "antigen",
            "device_id": SAMPLE_DEVICE_ID,
            "sampled_at": sampled_at.isoformat(timespec="seconds"),
            "result": "negative",
        },
        "notify": ["sms", "email"],
    }
