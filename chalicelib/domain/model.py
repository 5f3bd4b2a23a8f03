"""The result submitted by a pharmacy, as validated domain objects.

These objects hold personal data: they are never logged, never put in a queue message,
and only leave the process encrypted (``adapters/crypto.py``) or to the national system.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Literal

Sex = Literal["female", "male", "other", "unknown"]
TestKind = Literal["antigen", "rt-pcr"]
TestResult = Literal["positive", "negative", "invalid"]
Channel = Literal["sms", "email"]
#: What ``notify`` may hold: a message channel, or ``paper`` (a slip the pharmacy prints: nothing is sent).
NotifyValue = Literal["sms", "email", "paper"]


@dataclass(frozen=True)
class Address:
    line: str | None
    postal_code: str | None
    city: str | None
    country: str  # ISO 3166-1 alpha-2, default "FR"


@dataclass(frozen=True)
class Patient:
    family_name: str
    given_name: str
    birth_date: date
    sex: Sex
    nir: str | None = None  # normalised: 15 characters, no spaces, upper case
    phone: str | None = None  # normalised E.164
    email: str | None = None
    address: Address | None = None


@dataclass(frozen=True)
class TestInfo:
    kind: TestKind
    sampled_at: datetime  # timezone-aware
    result: TestResult
    device_id: str | None = None  # EU rapid-test device id, antigen only


@dataclass(frozen=True)
class Submission:
    """One validated ``POST /v1/results`` body."""

    pharmacy_reference: str
    performer_rpps: str
    patient: Patient
    test: TestInfo
    notify: tuple[NotifyValue, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-able form, the plaintext that gets encrypted at rest."""
        data = asdict(self)
        data["patient"]["birth_date"] = self.patient.birth_date.isoformat()
        data["test"]["sampled_at"] = self.test.sampled_at.isoformat()
        data["notify"] = list(self.notify)
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Submission:
        """Inverse of :meth:`to_record` (input is trusted: it was validated before encryption).

        Fields are passed on by name: a new field with a default also reads the records written before it.
        """
        p = dict(data["patient"])
        addr = p.pop("address", None)
        patient = Patient(
            **{**p, "birth_date": date.fromisoformat(p["birth_date"])},
            address=Address(**addr) if addr else None,
        )
        t = dict(data["test"])
        test = TestInfo(**{**t, "sampled_at": datetime.fromisoformat(t["sampled_at"])})
        return cls(**{**data, "patient": patient, "test": test, "notify": tuple(data.get("notify", ()))})
