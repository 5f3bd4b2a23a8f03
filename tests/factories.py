"""Shared test data: a valid ``POST /v1/results`` body and the identifiers it needs.

Check digits are computed here independently of the code under test (python-stdnum), so the tests
cross-check it. Note: the contract's example NIR ``284127512345678`` has a wrong control key (the right
one is 87); ``VALID_NIR`` is that same number with its correct key.

Usage::

    body = valid_body()                      # sampled 45 minutes before FIXED_NOW
    set_field(body, "patient.nir", None)     # dotted paths, as in FieldError.field
    submission = parse_submission(body, now=FIXED_NOW)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

PARIS_WINTER = timezone(timedelta(hours=1))

#: A fixed, timezone-aware "now" (10:00 in Paris) to pass to code under test.
FIXED_NOW = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)


def nir_key(first_13: str) -> str:
    """The two-digit NIR control key: 97 - (n mod 97), with Corsica 2A → 19 and 2B → 18."""
    department = first_13[5:7].upper()
    digits = first_13[:5] + {"2A": "19", "2B": "18"}.get(department, department) + first_13[7:]
    return f"{97 - int(digits) % 97:02d}"


def with_nir_key(first_13: str) -> str:
    """``first_13`` followed by its correct control key: a NIR that passes the key check."""
    return first_13 + nir_key(first_13)


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit to append to ``digits``."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: these become the odd positions once the check digit is appended
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


def with_luhn_digit(digits: str) -> str:
    """``digits`` followed by its Luhn check digit."""
    return digits + luhn_check_digit(digits)


#: Woman born in December 1984 in Paris (75), as in the contract example, with a valid key.
VALID_NIR = with_nir_key("2841275123456")
#: The contract's example RPPS; its Luhn key is valid.
VALID_RPPS = with_luhn_digit("1000387962")
#: Abbott Panbio COVID-19 Ag Rapid Test, present in the bundled EU device snapshot.
VALID_DEVICE_ID = "1232"
VALID_MOBILE = "+33612345678"
VALID_EMAIL = "claire@example.org"

assert VALID_NIR == "284127512345687"
assert VALID_RPPS == "10003879623"


def valid_body(now: datetime = FIXED_NOW) -> dict[str, Any]:
    """A fresh, fully valid body (every optional field filled) for a test sampled 45 minutes before ``now``."""
    sampled_at = (now - timedelta(minutes=45)).astimezone(PARIS_WINTER)
    return {
        "pharmacy_reference": "A-2026-000123",
        "performer_rpps": VALID_RPPS,
        "patient": {
            "family_name": "Martin",
            "given_name": "Claire",
            "birth_date": "1984-12-03",
            "sex": "female",
            "nir": VALID_NIR,
            "phone": VALID_MOBILE,
            "email": VALID_EMAIL,
            "address": {"line": "3 rue X", "postal_code": "75011", "city": "Paris", "country": "FR"},
        },
        "test": {
            "kind": "antigen",
            "device_id": VALID_DEVICE_ID,
            "sampled_at": sampled_at.isoformat(timespec="seconds"),
            "result": "negative",
        },
        "notify": ["sms", "email"],
    }


def minimal_body(now: datetime = FIXED_NOW) -> dict[str, Any]:
    """A fresh valid body with only the required fields (no NIR, phone, e-mail, address; notify empty)."""
    body = valid_body(now)
    for name in ("nir", "phone", "email", "address"):
        del body["patient"][name]
    body["notify"] = []
    return body


def _parent(body: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    *parents, last = dotted.split(".")
    node = body
    for name in parents:
        node = node[name]
    return node, last


def set_field(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``patient.address.city``-style path in ``body`` (in place) and return ``body``."""
    node, last = _parent(body, dotted)
    node[last] = value
    return body


def delete_field(body: dict[str, Any], dotted: str) -> dict[str, Any]:
    """Remove a dotted path from ``body`` (in place) and return ``body``."""
    node, last = _parent(body, dotted)
    del node[last]
    return body
