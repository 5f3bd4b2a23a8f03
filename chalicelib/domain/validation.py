"""Validation of a ``POST /v1/results`` body into a :class:`~chalicelib.domain.model.Submission`.

:func:`parse_submission` takes the JSON-decoded body and either returns validated, normalised domain
objects or raises :class:`~chalicelib.errors.ValidationError` listing the problems found (the first 20, with a
flag when there were more), each as a :class:`~chalicelib.errors.FieldError` with a dotted path
(``patient.nir``, ``notify[1]``, ``patient.address.postal_code``). Messages name the field and the rule,
never the submitted value (contract section 5: no personal data in an error body). A body that is not a JSON
object is reported on the field ``body``.

Rules are those of ``contract.md`` section 2. Where the contract is silent, the choices are:

* Cost is bounded: at most 20 errors are kept (``ValidationError.truncated`` says more were found), each
  recorded in O(1), and ``notify`` longer than the number of channels is refused as a whole before its entries
  are looked at. The worst 16 KiB body validates in about a millisecond (``bench/validation.py``).
* ``null`` means "absent" for every field; a missing or ``null`` required field is "required".
  Wrong JSON types (a number where a string is expected...) are field errors, never exceptions.
* Unknown fields anywhere are rejected as ``<path>.<name>: unknown field``. A field name is only
  echoed when it looks like an identifier (``[A-Za-z_][A-Za-z0-9_]{0,63}``); any other name could be
  personal data pasted into the wrong place, so the error is then reported on the enclosing object
  (``patient: contains an unknown field``). The rule is :func:`~chalicelib.domain.json_body.unknown_field_error`,
  shared with the patient endpoint.
* Free text (names, address line and city) has surrounding whitespace stripped and is NFC-normalised.
  It may not contain control characters: Unicode categories Cc, Cf (except the zero-width
  (non-)joiners U+200C/U+200D that some scripts need in names), Cs, Co, and the line/paragraph
  separators Zl/Zp. An optional text field that is present must not be empty.
* ``birth_date``: "not in the future" is judged against the latest calendar date anywhere on earth
  (UTC+14) so that a baby born today in an overseas territory is never refused; "130 years ago" is
  judged on the UTC date of ``now`` (29 February maps to 28 February).
* ``nir``: ASCII spaces are removed and letters upper-cased (``2a`` → ``2A``). The first digit must be
  1 or 2, or 3, 4, 7, 8 (special and temporary registrations). It is *not* checked against ``sex``:
  ``other``/``unknown`` and changes of civil status make that comparison wrong for real people.
  Digits 2-3 must equal the last two digits of the birth year. Digits 4-5 must equal the birth month
  when they are 01-12; 20-42 (unknown month / incomplete civil status) and 50-99 (provisional
  numbers) mean "month not encoded" and are not compared; 00, 13-19 and 43-49 are refused as invalid
  month codes. The control key (97 - n mod 97, with 2A → 19 and 2B → 18) is checked with python-stdnum.
* ``phone``: E.164, i.e. ``+`` and the country code; spaces, dots, hyphens and parentheses are accepted
  as separators and removed. Validity comes from ``phonenumbers``; the number is returned in E.164.
  When ``notify`` contains ``sms`` it must be a mobile number (MOBILE or FIXED_LINE_OR_MOBILE) of France:
  metropolitan France and its overseas departments and collectivities (:data:`FRENCH_SMS_REGIONS`), plus the
  regions a stage adds (``RELAIS_SMS_EXTRA_REGIONS``). An SMS abroad costs up to ten times one in France, and
  premium or unassigned foreign ranges are how SMS "pumping" bills an account: no caller may choose them.
* ``email``: one ASCII address ``local@domain.tld`` of at most 254 characters (local part at most 64),
  no whitespace, CR/LF, comma, semicolon, angle brackets or quotes (so no header injection and no
  second recipient). It is returned unchanged.
* ``address.country`` defaults to ``FR`` and must be two upper-case letters; ``postal_code`` is 5 digits
  for ``FR`` and otherwise 1-16 letters, digits, inner spaces and hyphens (no surrounding whitespace is
  stripped from postal codes).
* ``test.device_id`` is a string of 1-16 digits, required for ``antigen`` and refused for ``rt-pcr``
  (accepting and ignoring it would hide a client bug). It is only checked against a device list when
  the caller passes ``known_device_ids``: the bundled EU list is a 2021 example snapshot, not an
  exhaustive allowlist, so callers pass ``None`` by default.
* ``test.sampled_at``: RFC 3339 date-time with ``Z`` or ``±hh:mm`` (``-00:00`` is read as UTC); a value
  without offset is refused. Fractions beyond microseconds are truncated. It may be at most 5 minutes
  after ``now`` and at most 7 days before it (both bounds inclusive). The offset given is kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final, TypeVar, get_args

import phonenumbers
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

from chalicelib.domain.channels import NOTIFY_VALUES, parse_channel, parse_notify_value, required_addresses
from chalicelib.domain.corrections import CORRECTION_WINDOW, WITHDRAWAL, CorrectionRequest, Reason
from chalicelib.domain.json_body import unknown_field_error
from chalicelib.domain.model import (
    Address,
    Channel,
    NotifyValue,
    Patient,
    Sex,
    Submission,
    TestInfo,
    TestKind,
    TestResult,
)
from chalicelib.errors import MAX_REPORTED_ERRORS, FieldError, ValidationError

__all__ = ["is_valid_nir", "is_valid_rpps", "normalise_nir", "parse_correction", "parse_submission"]

T = TypeVar("T")

# --- field sets (unknown fields are rejected) and enumerations: read from the domain types ---------------


def _wire_fields(cls: type[Any]) -> frozenset[str]:
    """The JSON names of a body object: the fields of its dataclass (each JSON name is its field name)."""
    return frozenset(f.name for f in fields(cls))


def _choices(literal: object) -> Mapping[str, Any]:
    """A ``Literal`` type's values, in their declared order (error messages list them so)."""
    return {value: value for value in get_args(literal)}


_TOP_LEVEL_FIELDS: Final = _wire_fields(Submission)
_PATIENT_FIELDS: Final = _wire_fields(Patient)
_ADDRESS_FIELDS: Final = _wire_fields(Address)
_TEST_FIELDS: Final = _wire_fields(TestInfo)

_SEXES: Final[Mapping[str, Sex]] = _choices(Sex)
_TEST_KINDS: Final[Mapping[str, TestKind]] = _choices(TestKind)
_TEST_RESULTS: Final[Mapping[str, TestResult]] = _choices(TestResult)
_REASONS: Final[Mapping[str, Reason]] = _choices(Reason)
_CORRECTION_FIELDS: Final = frozenset({"correction_reference", "reason", "result", "patient", "test"})

# --- patterns (all ASCII: \d would also match Arabic-Indic and other Unicode digits) --------------------

_PHARMACY_REFERENCE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_RPPS_SHAPE: Final = re.compile(r"[0-9]{11}")
_NIR_SHAPE: Final = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}")
_NIR_FIRST_DIGITS: Final = frozenset("123478")
_ISO_DATE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_RFC3339_DATE_TIME: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))?"
)
_PHONE_SEPARATORS: Final = re.compile(r"[ .()-]")
_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
_EMAIL_FORBIDDEN: Final = frozenset('\r\n,;<>"\\')
_EMAIL_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL: Final = re.compile(
    rf"(?P<local>{_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*)@(?:{_EMAIL_LABEL}\.)+[A-Za-z][A-Za-z0-9-]{{0,61}}[A-Za-z0-9]"
)
_COUNTRY: Final = re.compile(r"[A-Z]{2}")
_FR_POSTAL_CODE: Final = re.compile(r"[0-9]{5}")
_OTHER_POSTAL_CODE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 -]{0,14}[A-Za-z0-9])?")
_DEVICE_ID: Final = re.compile(r"[0-9]{1,16}")

#: Where an SMS may go: metropolitan France and the overseas departments and collectivities, by region of
#: their numbering (+33 FR; +590 GP, BL, MF; +594 GF; +596 MQ; +262 RE, YT; +508 PM; +681 WF; +687 NC; +689 PF).
FRENCH_SMS_REGIONS: Final = frozenset({"FR", "GP", "BL", "MF", "GF", "MQ", "RE", "YT", "PM", "WF", "NC", "PF"})

# --- limits ------------------------------------------------------------------------------------------

_NAME_MAX: Final = 100
_ADDRESS_LINE_MAX: Final = 200
_CITY_MAX: Final = 100
_EMAIL_MAX: Final = 254
_EMAIL_LOCAL_MAX: Final = 64
_PHONE_RAW_MAX: Final = 32
_DATE_TIME_RAW_MAX: Final = 40
_MAX_AGE_YEARS: Final = 130
_LATEST_TIMEZONE: Final = timezone(timedelta(hours=14))
_SAMPLED_MAX_AHEAD: Final = timedelta(minutes=5)
_SAMPLED_MAX_AGE: Final = timedelta(days=7)
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_ALLOWED_FORMAT_CHARACTERS: Final = frozenset({"\u200c", "\u200d"})  # zero-width non-joiner / joiner
_NIR_MONTH_NOT_ENCODED: Final = frozenset(range(20, 43)) | frozenset(range(50, 100))


class _Errors:
    """Collects field errors in the order they are found, without duplicates, keeping the first
    :data:`~chalicelib.errors.MAX_REPORTED_ERRORS` (``truncated`` once more were found). Each ``add`` costs
    O(1), so a body breaking thousands of rules costs no more than walking it once."""

    def __init__(self) -> None:
        self.items: list[FieldError] = []
        self.truncated = False
        self._seen: set[FieldError] = set()

    def add(self, field: str, message: str) -> None:
        error = FieldError(field, message)
        if error in self._seen:
            return
        if len(self.items) >= MAX_REPORTED_ERRORS:
            self.truncated = True
            return
        self._seen.add(error)
        self.items.append(error)

    def has(self, field: str) -> bool:
        return any(error.field == field for error in self.items)

    def error(self) -> ValidationError:
        return ValidationError(errors=self.items, truncated=self.truncated)


# --- public helpers ----------------------------------------------------------------------------------


def normalise_nir(value: str) -> str:
    """Return ``value`` without spaces and in upper case (``2a`` → ``2A``); no validation."""
    return value.replace(" ", "").upper()


def is_valid_nir(value: str) -> bool:
    """Whether ``value`` (spaces ignored) is a structurally valid NIR with a correct control key.

    Checks the length, the characters (digits, ``2A``/``2B`` for Corsica), the first digit and the
    key; not the consistency with a birth date (see :func:`parse_submission`).
    """
    return _nir_structure_problem(normalise_nir(value)) is None


def is_valid_pharmacy_reference(value: str) -> bool:
    """1 to 64 characters among A-Z, a-z, 0-9, '.', '_' and '-' (the pharmacy's own identifier of the test)."""
    return bool(_PHARMACY_REFERENCE.fullmatch(value))


def is_valid_rpps(value: str) -> bool:
    """Whether ``value`` is an RPPS number: exactly 11 ASCII digits with a valid Luhn check digit."""
    return _RPPS_SHAPE.fullmatch(value) is not None and luhn.is_valid(value)


# --- entry point -------------------------------------------------------------------------------------


def parse_submission(
    raw: object,
    *,
    now: datetime,
    known_device_ids: frozenset[str] | None = None,
    sms_extra_regions: frozenset[str] = frozenset(),
) -> Submission:
    """Validate a decoded ``POST /v1/results`` body and return it as a :class:`Submission`.

    ``now`` (timezone-aware) is the reference for every date rule. ``known_device_ids``, when given,
    is the allowlist for ``test.device_id``; ``None`` (the default) accepts any well-formed id.
    ``sms_extra_regions`` (ISO 3166-1 alpha-2) widens where an SMS may go beyond :data:`FRENCH_SMS_REGIONS`.
    Raises :class:`ValidationError` carrying the field errors found (see :class:`_Errors`); raises ``ValueError``
    only for a naive ``now``, which is a programming error, not a client one.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    errors = _Errors()
    body = _as_object(raw, "", _TOP_LEVEL_FIELDS, errors)
    if body is None:
        raise errors.error()

    pharmacy_reference = _parse_pharmacy_reference(body.get("pharmacy_reference"), errors)
    performer_rpps = _parse_rpps(body.get("performer_rpps"), errors)
    notify = _parse_notify(body.get("notify"), errors)
    patient = _parse_patient(
        body.get("patient"), now=now, notify=notify, sms_regions=FRENCH_SMS_REGIONS | sms_extra_regions, errors=errors
    )
    test = _parse_test(body.get("test"), now=now, known_device_ids=known_device_ids, errors=errors)

    if errors.items:
        raise errors.error()
    # Every parser returns None only after recording an error, so these hold here.
    assert pharmacy_reference is not None
    assert performer_rpps is not None
    assert patient is not None
    assert test is not None
    return Submission(
        pharmacy_reference=pharmacy_reference,
        performer_rpps=performer_rpps,
        patient=patient,
        test=test,
        notify=notify,
    )


# --- structure ---------------------------------------------------------------------------------------


def _as_object(value: object, path: str, allowed: frozenset[str], errors: _Errors) -> Mapping[str, object] | None:
    """``value`` as a JSON object whose keys are all in ``allowed``, or None after recording errors.

    Unknown keys are recorded but do not make the object unusable, so its other fields are still checked.
    """
    if not isinstance(value, dict):
        errors.add(path or "body", "must be a JSON object")
        return None
    for key in value:
        if key in allowed:
            continue
        error = unknown_field_error(path, key)
        errors.add(error.field, error.message)
    return {key: item for key, item in value.items() if key in allowed}


def _required_object(value: object, path: str, allowed: frozenset[str], errors: _Errors) -> Mapping[str, object] | None:
    if value is None:
        errors.add(path, "is required")
        return None
    return _as_object(value, path, allowed, errors)


def _required_string(value: object, path: str, errors: _Errors) -> str | None:
    if value is None:
        errors.add(path, "is required")
        return None
    return _optional_string(value, path, errors)


def _optional_string(value: object, path: str, errors: _Errors) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(path, "must be a string")
        return None
    return value


def _parse_choice(value: object, path: str, choices: Mapping[str, T], errors: _Errors) -> T | None:
    text = _required_string(value, path, errors)
    if text is None:
        return None
    choice = choices.get(text)
    if choice is None:
        errors.add(path, "must be one of: " + ", ".join(choices))
    return choice


def _has_control_character(text: str) -> bool:
    return any(
        unicodedata.category(char) in _FORBIDDEN_CATEGORIES and char not in _ALLOWED_FORMAT_CHARACTERS for char in text
    )


def _parse_text(value: object, path: str, errors: _Errors, *, max_length: int, required: bool) -> str | None:
    """Free text: stripped, NFC-normalised, 1..max_length characters, no control characters."""
    text = _required_string(value, path, errors) if required else _optional_string(value, path, errors)
    if text is None:
        return None
    text = unicodedata.normalize("NFC", text.strip())
    if not text:
        errors.add(path, "must not be empty")
        return None
    if len(text) > max_length:
        errors.add(path, f"must be at most {max_length} characters")
        return None
    if _has_control_character(text):
        errors.add(path, "must not contain control characters")
        return None
    return text


# --- top-level fields --------------------------------------------------------------------------------


def _parse_pharmacy_reference(value: object, errors: _Errors) -> str | None:
    path = "pharmacy_reference"
    text = _required_string(value, path, errors)
    if text is not None and not is_valid_pharmacy_reference(text):
        errors.add(path, "must be 1 to 64 characters among A-Z, a-z, 0-9, '.', '_' and '-'")
        return None
    return text


def _parse_rpps(value: object, errors: _Errors) -> str | None:
    path = "performer_rpps"
    text = _required_string(value, path, errors)
    if text is None:
        return None
    if not _RPPS_SHAPE.fullmatch(text):
        errors.add(path, "must be exactly 11 digits")
        return None
    if not luhn.is_valid(text):
        errors.add(path, "must have a valid Luhn check digit")
        return None
    return text


def _parse_notify(value: object, errors: _Errors) -> tuple[NotifyValue, ...]:
    """The distinct valid channels (and ``paper``); invalid or repeated entries are recorded as ``notify[i]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.add("notify", "must be a list")
        return ()
    if len(value) > len(NOTIFY_VALUES):  # refused before walking it: each entry would be an error of its own
        errors.add("notify", f"must list at most {len(NOTIFY_VALUES)} channels, each once")
        return ()
    channels: list[NotifyValue] = []
    for index, item in enumerate(value):
        path = f"notify[{index}]"
        channel = parse_notify_value(item)
        if channel is None:
            errors.add(path, "must be one of: " + ", ".join(NOTIFY_VALUES))
        elif channel in channels:
            errors.add(path, "is a duplicate")
        else:
            channels.append(channel)
    return tuple(channels)


# --- patient -----------------------------------------------------------------------------------------


def _parse_patient(
    value: object, *, now: datetime, notify: tuple[NotifyValue, ...], sms_regions: frozenset[str], errors: _Errors
) -> Patient | None:
    patient = _required_object(value, "patient", _PATIENT_FIELDS, errors)
    if patient is None:
        return None
    family_name = _parse_text(
        patient.get("family_name"), "patient.family_name", errors, max_length=_NAME_MAX, required=True
    )
    given_name = _parse_text(
        patient.get("given_name"), "patient.given_name", errors, max_length=_NAME_MAX, required=True
    )
    birth_date = _parse_birth_date(patient.get("birth_date"), now, errors)
    sex = _parse_choice(patient.get("sex"), "patient.sex", _SEXES, errors)
    nir = _parse_nir(patient.get("nir"), birth_date, errors)
    required_by = required_addresses(notify)
    phone = _parse_phone(
        patient.get("phone"), required_by=required_by.get("phone"), sms_regions=sms_regions, errors=errors
    )
    email = _parse_email(patient.get("email"), required_by=required_by.get("email"), errors=errors)
    address = _parse_address(patient.get("address"), errors)
    if family_name is None or given_name is None or birth_date is None or sex is None:
        return None
    return Patient(
        family_name=family_name,
        given_name=given_name,
        birth_date=birth_date,
        sex=sex,
        nir=nir,
        phone=phone,
        email=email,
        address=address,
    )


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year that has none
        return day.replace(year=day.year - years, day=28)


def _parse_birth_date(value: object, now: datetime, errors: _Errors) -> date | None:
    path = "patient.birth_date"
    text = _required_string(value, path, errors)
    if text is None:
        return None
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        errors.add(path, "must be a date in YYYY-MM-DD format")
        return None
    try:
        birth_date = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        errors.add(path, "must be a valid calendar date")
        return None
    if birth_date > now.astimezone(_LATEST_TIMEZONE).date():
        errors.add(path, "must not be in the future")
        return None
    if birth_date < _years_before(now.astimezone(UTC).date(), _MAX_AGE_YEARS):
        errors.add(path, f"must not be more than {_MAX_AGE_YEARS} years ago")
        return None
    return birth_date


def _nir_structure_problem(nir: str) -> str | None:
    """What is wrong with a normalised NIR's form or key, as an error message; None if nothing."""
    if len(nir) != 15:
        return "must be 15 characters (spaces ignored)"
    if not _NIR_SHAPE.fullmatch(nir):
        return "must contain only digits, except 2A or 2B for a birth in Corsica"
    if nir[0] not in _NIR_FIRST_DIGITS:
        return "must start with 1, 2, 3, 4, 7 or 8"
    if not stdnum_nir.is_valid(nir):
        return "must have a valid NIR control key"
    return None


def _nir_birth_date_problem(nir: str, birth_date: date) -> str | None:
    """Whether a valid NIR's year and month codes agree with ``birth_date`` (see the module docstring)."""
    if nir[1:3] != f"{birth_date.year % 100:02d}":
        return "birth year does not match patient.birth_date"
    month = int(nir[3:5])
    if month in _NIR_MONTH_NOT_ENCODED:
        return None
    if not 1 <= month <= 12:
        return "does not encode a valid birth month"
    if month != birth_date.month:
        return "birth month does not match patient.birth_date"
    return None


def _parse_nir(value: object, birth_date: date | None, errors: _Errors) -> str | None:
    path = "patient.nir"
    text = _optional_string(value, path, errors)
    if text is None:
        return None
    nir = normalise_nir(text)
    problem = _nir_structure_problem(nir)
    if problem is None and birth_date is not None:
        problem = _nir_birth_date_problem(nir, birth_date)
    if problem is not None:
        errors.add(path, problem)
        return None
    return nir


def _parse_phone(
    value: object, *, required_by: Channel | None, sms_regions: frozenset[str], errors: _Errors
) -> str | None:
    """A phone number, in E.164; a mobile one of ``sms_regions`` when a channel (``required_by``, i.e. SMS)
    sends to it."""
    path = "patient.phone"
    text = _optional_string(value, path, errors)
    if text is None:
        if required_by is not None and not errors.has(path):
            errors.add(path, f"is required when notify contains {required_by}")
        return None
    compact = _PHONE_SEPARATORS.sub("", text) if len(text) <= _PHONE_RAW_MAX else ""
    if not _E164.fullmatch(compact):
        errors.add(path, "must be an E.164 number: '+', country code and number")
        return None
    try:
        number = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        errors.add(path, "must be a valid phone number")
        return None
    mobile_types = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    if required_by is not None and phonenumbers.number_type(number) not in mobile_types:
        errors.add(path, f"must be a mobile number when notify contains {required_by}")
        return None
    if required_by is not None and phonenumbers.region_code_for_number(number) not in sms_regions:
        errors.add(path, _sms_region_rule(required_by, sms_regions))
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _sms_region_rule(channel: Channel, regions: frozenset[str]) -> str:
    """The rule a foreign number breaks, naming the regions a stage added (never the number's own)."""
    where = ["France (metropolitan or overseas)", *sorted(regions - FRENCH_SMS_REGIONS)]
    listed = ", ".join(where[:-1]) + " or " + where[-1] if len(where) > 1 else where[0]
    return f"must be a mobile number of {listed} when notify contains {channel}"


def _parse_email(value: object, *, required_by: Channel | None, errors: _Errors) -> str | None:
    path = "patient.email"
    text = _optional_string(value, path, errors)
    if text is None:
        if required_by is not None and not errors.has(path):
            errors.add(path, f"is required when notify contains {required_by}")
        return None
    if len(text) > _EMAIL_MAX:
        errors.add(path, f"must be at most {_EMAIL_MAX} characters")
        return None
    if any(char in _EMAIL_FORBIDDEN or char.isspace() for char in text):
        errors.add(
            path, "must be one address without spaces, line breaks, quotes, commas, semicolons or angle brackets"
        )
        return None
    match = _EMAIL.fullmatch(text)
    if match is None or len(match["local"]) > _EMAIL_LOCAL_MAX:
        errors.add(path, "must be an address like name@example.org")
        return None
    return text


def _parse_address(value: object, errors: _Errors) -> Address | None:
    path = "patient.address"
    if value is None:
        return None
    address = _as_object(value, path, _ADDRESS_FIELDS, errors)
    if address is None:
        return None
    line = _parse_text(address.get("line"), f"{path}.line", errors, max_length=_ADDRESS_LINE_MAX, required=False)
    city = _parse_text(address.get("city"), f"{path}.city", errors, max_length=_CITY_MAX, required=False)
    country = _parse_country(address.get("country"), f"{path}.country", errors)
    postal_code = _parse_postal_code(address.get("postal_code"), f"{path}.postal_code", country, errors)
    if country is None:
        return None
    return Address(line=line, postal_code=postal_code, city=city, country=country)


def _parse_country(value: object, path: str, errors: _Errors) -> str | None:
    if value is None:
        return "FR"
    text = _optional_string(value, path, errors)
    if text is not None and not _COUNTRY.fullmatch(text):
        errors.add(path, "must be two upper-case letters (ISO 3166-1 alpha-2)")
        return None
    return text


def _parse_postal_code(value: object, path: str, country: str | None, errors: _Errors) -> str | None:
    text = _optional_string(value, path, errors)
    if text is None:
        return None
    if country == "FR":
        if not _FR_POSTAL_CODE.fullmatch(text):
            errors.add(path, "must be 5 digits when country is FR")
            return None
        return text
    if not _OTHER_POSTAL_CODE.fullmatch(text):
        errors.add(path, "must be 1 to 16 letters, digits, inner spaces or hyphens")
        return None
    return text


# --- test --------------------------------------------------------------------------------------------


def _parse_test(
    value: object,
    *,
    now: datetime,
    known_device_ids: frozenset[str] | None,
    errors: _Errors,
    max_age: timedelta = _SAMPLED_MAX_AGE,
) -> TestInfo | None:
    test = _required_object(value, "test", _TEST_FIELDS, errors)
    if test is None:
        return None
    kind = _parse_choice(test.get("kind"), "test.kind", _TEST_KINDS, errors)
    device_id = _parse_device_id(test.get("device_id"), kind, known_device_ids, errors)
    sampled_at = _parse_sampled_at(test.get("sampled_at"), now, errors, max_age)
    result = _parse_choice(test.get("result"), "test.result", _TEST_RESULTS, errors)
    if kind is None or sampled_at is None or result is None:
        return None
    return TestInfo(kind=kind, sampled_at=sampled_at, result=result, device_id=device_id)


def _parse_device_id(
    value: object, kind: TestKind | None, known_device_ids: frozenset[str] | None, errors: _Errors
) -> str | None:
    path = "test.device_id"
    if value is None:
        if kind == "antigen":
            errors.add(path, "is required for antigen tests")
        return None
    if kind == "rt-pcr":
        errors.add(path, "must be absent for rt-pcr tests")
        return None
    text = _optional_string(value, path, errors)
    if text is None:
        return None
    if not _DEVICE_ID.fullmatch(text):
        errors.add(path, "must be a string of 1 to 16 digits (EU rapid antigen test device identifier)")
        return None
    if known_device_ids is not None and text not in known_device_ids:
        errors.add(path, "is not a known rapid antigen test device")
        return None
    return text


def _parse_rfc3339(text: str) -> datetime | str:
    """A timezone-aware datetime, or an error message, for an RFC 3339 date-time string."""
    match = _RFC3339_DATE_TIME.fullmatch(text) if len(text) <= _DATE_TIME_RAW_MAX else None
    if match is None:
        return "must be an RFC 3339 date-time such as 2026-11-30T09:15:00+01:00"
    if match["offset"] is None:
        return "must include a time zone offset (Z or +hh:mm)"
    off_hour, off_minute = int(match["off_hour"] or 0), int(match["off_minute"] or 0)
    if off_hour > 23 or off_minute > 59:
        return "must be a valid date-time"
    offset = timedelta(hours=off_hour, minutes=off_minute)
    try:
        return datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int((match["fraction"] or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(-offset if match["sign"] == "-" else offset),
        )
    except ValueError:
        return "must be a valid date-time"


def _parse_sampled_at(
    value: object, now: datetime, errors: _Errors, max_age: timedelta = _SAMPLED_MAX_AGE
) -> datetime | None:
    path = "test.sampled_at"
    text = _required_string(value, path, errors)
    if text is None:
        return None
    parsed = _parse_rfc3339(text)
    if isinstance(parsed, str):
        errors.add(path, parsed)
        return None
    if parsed - now > _SAMPLED_MAX_AHEAD:
        errors.add(path, "must not be more than 5 minutes in the future")
        return None
    if now - parsed > max_age:
        errors.add(path, f"must not be older than {max_age.days} days")
        return None
    return parsed


# --- corrections (contract v2 §8) ---------------------------------------------------------------------


def parse_correction(
    raw: object,
    *,
    now: datetime,
    notify: tuple[str, ...],
    known_device_ids: frozenset[str] | None = None,
    sms_extra_regions: frozenset[str] = frozenset(),
) -> CorrectionRequest:
    """Validate a decoded ``POST /v1/results/{id}/correction`` body (``domain/corrections.py``).

    ``patient`` and ``test`` follow the submission's rules (``notify``, the result's channels, decides which
    addresses ``patient`` must carry; ``sms_extra_regions`` as for a submission), except that a corrected
    ``test.sampled_at`` may be as old as the correction window. ``entered_in_error`` carries no other field; any
    other reason at least one of ``result``, ``patient`` or ``test``, and not ``result`` with ``test``. Raises
    ValidationError listing every problem.
    """
    errors = _Errors()
    body = _as_object(raw, "", _CORRECTION_FIELDS, errors)
    if body is None:
        raise ValidationError(errors=errors.items)
    reference = _required_string(body.get("correction_reference"), "correction_reference", errors)
    if reference is not None and not is_valid_pharmacy_reference(reference):
        errors.add("correction_reference", "must be 1 to 64 characters among A-Z, a-z, 0-9, '.', '_' and '-'")
    reason = _parse_choice(body.get("reason"), "reason", _REASONS, errors)
    given = [name for name in ("result", "patient", "test") if body.get(name) is not None]
    if reason == WITHDRAWAL:
        for name in given:
            errors.add(name, "must be absent when reason is entered_in_error")
    elif reason is not None and not given:
        errors.add("body", "must correct at least one of: result, patient, test")
    elif "result" in given and "test" in given:
        errors.add("result", "must be absent when test is given (test carries the result)")
    result = patient = test = None
    if reason != WITHDRAWAL:
        if "result" in given:
            result = _parse_choice(body.get("result"), "result", _TEST_RESULTS, errors)
        if "patient" in given:
            channels = tuple(channel for channel in map(parse_channel, notify) if channel is not None)
            patient = _parse_patient(
                body.get("patient"),
                now=now,
                notify=channels,
                sms_regions=FRENCH_SMS_REGIONS | sms_extra_regions,
                errors=errors,
            )
        if "test" in given:
            test = _parse_test(
                body.get("test"), now=now, known_device_ids=known_device_ids, errors=errors, max_age=CORRECTION_WINDOW
            )
    if errors.items:
        raise ValidationError(errors=errors.items)
    assert reference is not None and reason is not None
    return CorrectionRequest(reference=reference, reason=reason, result=result, patient=patient, test=test)
