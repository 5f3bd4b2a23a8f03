"""Every rule of ``POST /v1/results`` (contract section 2), checked field by field on ``parse_submission``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from chalicelib.domain.devices import known_device_ids
from chalicelib.domain.model import Address
from chalicelib.domain.validation import is_valid_nir, is_valid_rpps, normalise_nir, parse_submission
from chalicelib.errors import FieldError, ValidationError
from tests.factories import (
    FIXED_NOW,
    VALID_NIR,
    VALID_RPPS,
    delete_field,
    minimal_body,
    nir_key,
    set_field,
    valid_body,
    with_luhn_digit,
    with_nir_key,
)

PARIS_WINTER = timezone(timedelta(hours=1))


def errors_of(body: Any, *, now: datetime = FIXED_NOW, known: frozenset[str] | None = None) -> dict[str, str]:
    """The field → message map of the ValidationError that ``body`` must raise."""
    with pytest.raises(ValidationError) as info:
        parse_submission(body, now=now, known_device_ids=known)
    errors = info.value.errors
    assert errors, "a ValidationError must carry at least one field error"
    return {error.field: error.message for error in errors}


def assert_rejected(
    body: Any,
    field: str,
    *,
    now: datetime = FIXED_NOW,
    known: frozenset[str] | None = None,
    secret: Any = None,
) -> str:
    """``body`` is refused with exactly one error, on ``field``; ``secret`` (4+ chars) appears nowhere in it."""
    with pytest.raises(ValidationError) as info:
        parse_submission(body, now=now, known_device_ids=known)
    assert [error.field for error in info.value.errors] == [field]
    if isinstance(secret, str) and len(secret.strip()) >= 4:  # shorter values occur in any sentence
        assert secret not in str(info.value)
        assert secret not in repr(info.value.errors)
    return info.value.errors[0].message


def reject_value(field: str, value: Any, *, body: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """Set ``field`` to ``value`` in a valid body and assert that only ``field`` is refused."""
    body = valid_body() if body is None else body
    return assert_rejected(set_field(body, field, value), field, secret=value, **kwargs)


def accept(body: Any, *, now: datetime = FIXED_NOW, known: frozenset[str] | None = None):
    return parse_submission(body, now=now, known_device_ids=known)


# --- the whole body ----------------------------------------------------------------------------------


def test_the_factory_body_is_accepted_and_mapped_to_the_domain_model():
    submission = accept(valid_body())

    assert submission.pharmacy_reference == "A-2026-000123"
    assert submission.performer_rpps == VALID_RPPS
    assert submission.patient.family_name == "Martin"
    assert submission.patient.given_name == "Claire"
    assert submission.patient.birth_date == date(1984, 12, 3)
    assert submission.patient.sex == "female"
    assert submission.patient.nir == VALID_NIR
    assert submission.patient.phone == "+33612345678"
    assert submission.patient.email == "claire@example.org"
    assert submission.patient.address == Address(line="3 rue X", postal_code="75011", city="Paris", country="FR")
    assert submission.test.kind == "antigen"
    assert submission.test.device_id == "1232"
    assert submission.test.sampled_at == datetime(2026, 11, 30, 9, 15, tzinfo=PARIS_WINTER)
    assert submission.test.sampled_at.utcoffset() == timedelta(hours=1)
    assert submission.test.result == "negative"
    assert submission.notify == ("sms", "email")


def test_a_body_with_only_required_fields_is_accepted():
    submission = accept(minimal_body())

    assert submission.patient.nir is None
    assert submission.patient.phone is None
    assert submission.patient.email is None
    assert submission.patient.address is None
    assert submission.notify == ()


def test_a_validated_submission_survives_the_record_round_trip():
    submission = accept(valid_body())

    assert type(submission).from_record(submission.to_record()) == submission


@pytest.mark.parametrize("body", [[], "a string", 42, None, True])
def test_a_body_that_is_not_an_object_is_reported_on_the_field_body(body):
    assert errors_of(body) == {"body": "must be a JSON object"}


def test_all_field_errors_are_collected_at_once():
    body = valid_body()
    set_field(body, "pharmacy_reference", "")
    set_field(body, "performer_rpps", "12345678901")
    set_field(body, "patient.sex", "f")
    set_field(body, "patient.address.postal_code", "7501")
    set_field(body, "test.result", "maybe")
    set_field(body, "notify", ["sms", "sms"])

    assert set(errors_of(body)) == {
        "pharmacy_reference",
        "performer_rpps",
        "patient.sex",
        "patient.address.postal_code",
        "test.result",
        "notify[1]",
    }


def test_at_most_twenty_errors_are_reported_with_a_flag_when_more_were_found():
    body = valid_body()
    body.update({f"extra_{i}": 1 for i in range(2000)})

    with pytest.raises(ValidationError) as caught:
        parse_submission(body, now=FIXED_NOW)
    assert [e.field for e in caught.value.errors] == [f"extra_{i}" for i in range(20)]
    assert caught.value.truncated


def test_any_validation_error_keeps_twenty_errors_and_says_more_were_found():
    error = ValidationError([FieldError(f"field_{i}", "unknown field") for i in range(21)])

    assert [e.field for e in error.errors] == [f"field_{i}" for i in range(20)] and error.truncated


def test_twenty_errors_are_not_flagged_as_truncated():
    body = valid_body()
    body.update({f"extra_{i}": 1 for i in range(20)})

    with pytest.raises(ValidationError) as caught:
        parse_submission(body, now=FIXED_NOW)
    assert len(caught.value.errors) == 20 and not caught.value.truncated


def test_the_same_error_found_many_times_is_reported_once():
    body = valid_body()
    body["patient"].update({f"not a name {i}": 1 for i in range(50)})

    with pytest.raises(ValidationError) as caught:
        parse_submission(body, now=FIXED_NOW)
    assert [(e.field, e.message) for e in caught.value.errors] == [("patient", "contains an unknown field")]
    assert not caught.value.truncated


def test_a_naive_now_is_a_programming_error_not_a_field_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_submission(valid_body(), now=datetime(2026, 11, 30, 9, 0))


# --- unknown fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reported"),
    [
        ("foo", "foo"),
        ("patient.foo", "patient.foo"),
        ("patient.address.floor", "patient.address.floor"),
        ("test.lot_number", "test.lot_number"),
    ],
)
def test_an_unknown_field_is_rejected_with_its_path(path, reported):
    body = set_field(valid_body(), path, "x")

    assert errors_of(body) == {reported: "unknown field"}


def test_an_unknown_field_whose_name_looks_like_data_is_not_echoed():
    body = set_field(valid_body(), "patient", {**valid_body()["patient"], VALID_NIR: "x", "Claire Martin": 1})

    errors = errors_of(body)

    assert errors == {"patient": "contains an unknown field"}
    assert VALID_NIR not in repr(errors)
    assert "Claire Martin" not in repr(errors)


# --- required fields and types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "pharmacy_reference",
        "performer_rpps",
        "patient",
        "patient.family_name",
        "patient.given_name",
        "patient.birth_date",
        "patient.sex",
        "test",
        "test.kind",
        "test.sampled_at",
        "test.result",
    ],
)
def test_a_missing_required_field_is_reported_as_required(path):
    assert assert_rejected(delete_field(valid_body(), path), path) == "is required"


@pytest.mark.parametrize("path", ["pharmacy_reference", "patient.family_name", "test.kind", "test.result"])
def test_a_null_required_field_is_reported_as_required(path):
    assert assert_rejected(set_field(valid_body(), path, None), path) == "is required"


@pytest.mark.parametrize(
    "path",
    [
        "pharmacy_reference",
        "performer_rpps",
        "patient.family_name",
        "patient.given_name",
        "patient.birth_date",
        "patient.sex",
        "patient.nir",
        "patient.phone",
        "patient.email",
        "patient.address.line",
        "patient.address.postal_code",
        "patient.address.city",
        "patient.address.country",
        "test.kind",
        "test.device_id",
        "test.sampled_at",
        "test.result",
    ],
)
@pytest.mark.parametrize("value", [12345, 1.5, True, ["x"], {"x": 1}])
def test_a_wrong_json_type_is_a_field_error_not_an_exception(path, value):
    assert reject_value(path, value) == "must be a string"


@pytest.mark.parametrize("path", ["patient", "test", "patient.address"])
def test_a_nested_object_of_the_wrong_type_is_a_field_error(path):
    assert reject_value(path, ["not", "an", "object"]) == "must be a JSON object"


# --- pharmacy_reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["A", "A-2026-000123", "a.b_c-D.9", "x" * 64])
def test_a_pharmacy_reference_of_1_to_64_allowed_characters_is_accepted(value):
    assert accept(set_field(valid_body(), "pharmacy_reference", value)).pharmacy_reference == value


@pytest.mark.parametrize("value", ["", "x" * 65, "A 2026", "A/2026", "réf-1", "A-1\n", "\u0661\u0662\u0663"])
def test_a_pharmacy_reference_outside_the_allowed_characters_or_length_is_rejected(value):
    reject_value("pharmacy_reference", value)


# --- performer_rpps ----------------------------------------------------------------------------------


def test_an_rpps_with_a_valid_luhn_key_is_accepted():
    rpps = with_luhn_digit("8100012345")

    assert accept(set_field(valid_body(), "performer_rpps", rpps)).performer_rpps == rpps


def test_an_rpps_with_a_wrong_luhn_key_is_rejected():
    wrong = VALID_RPPS[:-1] + str((int(VALID_RPPS[-1]) + 1) % 10)

    assert "Luhn" in reject_value("performer_rpps", wrong)


@pytest.mark.parametrize("value", ["1000387962", "100038796230", "1000387962A", " 10003879623", "\uff110003879623"])
def test_an_rpps_that_is_not_exactly_11_ascii_digits_is_rejected(value):
    assert reject_value("performer_rpps", value) == "must be exactly 11 digits"


def test_is_valid_rpps_checks_shape_and_luhn():
    assert is_valid_rpps(VALID_RPPS)
    assert not is_valid_rpps("10003879624")
    assert not is_valid_rpps("0")  # Luhn-valid but not 11 digits


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["patient.family_name", "patient.given_name"])
def test_surrounding_whitespace_is_stripped_from_names(path):
    submission = accept(set_field(valid_body(), path, "  Le Gall-Kerhervé \n"))

    assert getattr(submission.patient, path.split(".")[1]) == "Le Gall-Kerhervé"


@pytest.mark.parametrize("path", ["patient.family_name", "patient.given_name"])
def test_a_name_of_exactly_100_characters_is_accepted(path):
    accept(set_field(valid_body(), path, "é" * 100))


@pytest.mark.parametrize("path", ["patient.family_name", "patient.given_name"])
@pytest.mark.parametrize("value", ["", "   ", "Nomtroplong" * 10])
def test_a_name_that_is_empty_or_longer_than_100_characters_is_rejected(path, value):
    reject_value(path, value)


@pytest.mark.parametrize("path", ["patient.family_name", "patient.given_name"])
@pytest.mark.parametrize(
    "value",
    ["Mar\x00tin", "Mar\ttin", "Mar\ntin", "Mar\x1btin", "Mar\x7ftin", "Mar\u202etin", "Mar\u2028tin", "Mar\ud800tin"],
)
def test_a_name_with_a_control_character_is_rejected(path, value):
    assert reject_value(path, value) == "must not contain control characters"


def test_names_are_nfc_normalised_and_zero_width_joiners_are_allowed():
    body = set_field(valid_body(), "patient.family_name", "Me\u0301lanie")
    set_field(body, "patient.given_name", "\u0645\u200c\u0646")

    patient = accept(body).patient

    assert patient.family_name == "Mélanie"
    assert patient.given_name == "\u0645\u200c\u0646"


# --- birth_date --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["03/12/1984", "1984-12-3", "84-12-03", "1984-12-03T00:00:00", " 1984-12-03", "\uff11984-12-03", "19841203"],
)
def test_a_birth_date_not_in_strict_yyyy_mm_dd_format_is_rejected(value):
    assert reject_value("patient.birth_date", value) == "must be a date in YYYY-MM-DD format"


@pytest.mark.parametrize("value", ["1984-02-30", "1984-13-01", "1984-00-10", "1983-02-29"])
def test_a_birth_date_that_is_not_a_calendar_date_is_rejected(value):
    assert reject_value("patient.birth_date", value, body=minimal_body()) == "must be a valid calendar date"


def test_a_birth_date_of_today_is_accepted():
    accept(set_field(minimal_body(), "patient.birth_date", FIXED_NOW.date().isoformat()))


def test_a_birth_date_of_today_somewhere_on_earth_is_accepted_even_if_it_is_tomorrow_in_utc():
    now = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)  # already 1 December in Nouméa (UTC+11)

    accept(set_field(minimal_body(now), "patient.birth_date", "2026-12-01"), now=now)


def test_a_birth_date_in_the_future_is_rejected():
    value = (FIXED_NOW.date() + timedelta(days=2)).isoformat()

    assert reject_value("patient.birth_date", value, body=minimal_body()) == "must not be in the future"


def test_a_birth_date_exactly_130_years_ago_is_accepted():
    accept(set_field(minimal_body(), "patient.birth_date", "1896-11-30"))


def test_a_birth_date_more_than_130_years_ago_is_rejected():
    message = reject_value("patient.birth_date", "1896-11-29", body=minimal_body())

    assert message == "must not be more than 130 years ago"


# --- sex ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["female", "male", "other", "unknown"])
def test_each_contract_sex_value_is_accepted(value):
    assert accept(set_field(minimal_body(), "patient.sex", value)).patient.sex == value


@pytest.mark.parametrize("value", ["F", "Female", "woman", ""])
def test_a_sex_outside_the_contract_values_is_rejected(value):
    assert reject_value("patient.sex", value) == "must be one of: female, male, other, unknown"


# --- nir ---------------------------------------------------------------------------------------------


def test_the_contract_example_nir_has_a_wrong_control_key_and_is_rejected():
    assert reject_value("patient.nir", "284127512345678") == "must have a valid NIR control key"


def test_a_nir_with_wrong_control_key_is_rejected_without_echoing_it():
    wrong = VALID_NIR[:13] + f"{(int(VALID_NIR[13:]) + 1) % 100:02d}"

    message = reject_value("patient.nir", wrong)

    assert message == "must have a valid NIR control key"
    assert wrong not in message


def test_a_nir_with_one_changed_digit_is_rejected():
    changed = VALID_NIR[:9] + str((int(VALID_NIR[9]) + 1) % 10) + VALID_NIR[10:]

    reject_value("patient.nir", changed)


@pytest.mark.parametrize("value", ["2 84 12 75 123 456 87", "28412 7512 345687", " 284127512345687 "])
def test_spaces_in_a_nir_are_ignored_and_removed(value):
    assert accept(set_field(valid_body(), "patient.nir", value)).patient.nir == VALID_NIR


@pytest.mark.parametrize("value", ["28412751234568", "2841275123456870", "", "   "])
def test_a_nir_that_is_not_15_characters_without_spaces_is_rejected(value):
    assert reject_value("patient.nir", value) == "must be 15 characters (spaces ignored)"


@pytest.mark.parametrize("value", ["2841275123456A7", "284127512-45687", "2841275.2345687", "\uff1284127512345687"])
def test_a_nir_with_non_digit_characters_is_rejected(value):
    reject_value("patient.nir", value)


@pytest.mark.parametrize("department", ["2A", "2B", "2a", "2b"])
def test_a_corsican_nir_with_2a_or_2b_is_accepted_and_upper_cased(department):
    nir = with_nir_key(f"28412{department.upper()}123456")
    submitted = nir[:5] + department + nir[7:]

    assert accept(set_field(valid_body(), "patient.nir", submitted)).patient.nir == nir


def test_a_corsican_nir_with_the_key_computed_without_substitution_is_rejected():
    wrong = "284122A123456" + nir_key("284122B123456")  # the 2B substitution applied to a 2A number

    assert reject_value("patient.nir", wrong) == "must have a valid NIR control key"


@pytest.mark.parametrize("department", ["2C", "3A", "A2"])
def test_a_nir_with_letters_other_than_corsica_2a_2b_is_rejected(department):
    reject_value("patient.nir", f"28412{department}12345600")


@pytest.mark.parametrize("first", ["0", "5", "6", "9"])
def test_a_nir_starting_with_a_digit_other_than_1_2_3_4_7_8_is_rejected(first):
    nir = with_nir_key(f"{first}841275123456")

    assert reject_value("patient.nir", nir) == "must start with 1, 2, 3, 4, 7 or 8"


@pytest.mark.parametrize("first", ["1", "2", "3", "4", "7", "8"])
def test_a_nir_starting_with_1_2_3_4_7_or_8_is_accepted(first):
    accept(set_field(valid_body(), "patient.nir", with_nir_key(f"{first}841275123456")))


@pytest.mark.parametrize("sex", ["male", "other", "unknown"])
def test_a_nir_is_not_required_to_match_the_declared_sex(sex):
    body = set_field(valid_body(), "patient.sex", sex)

    assert accept(body).patient.nir == VALID_NIR  # VALID_NIR starts with 2


def test_a_nir_whose_birth_year_differs_from_birth_date_is_rejected():
    nir = with_nir_key("2851275123456")

    assert reject_value("patient.nir", nir) == "birth year does not match patient.birth_date"


def test_a_nir_whose_birth_month_differs_from_birth_date_is_rejected():
    nir = with_nir_key("2841175123456")

    assert reject_value("patient.nir", nir) == "birth month does not match patient.birth_date"


@pytest.mark.parametrize("month", [20, 30, 35, 42, 50, 62, 99])
def test_a_nir_with_an_unknown_month_code_is_accepted_whatever_the_birth_month(month):
    accept(set_field(valid_body(), "patient.nir", with_nir_key(f"284{month:02d}75123456")))


@pytest.mark.parametrize("month", [0, 13, 19, 43, 49])
def test_a_nir_with_an_invalid_month_code_is_rejected(month):
    nir = with_nir_key(f"284{month:02d}75123456")

    assert reject_value("patient.nir", nir) == "does not encode a valid birth month"


def test_nir_consistency_is_not_checked_when_birth_date_is_itself_invalid():
    body = set_field(valid_body(), "patient.birth_date", "not a date")

    assert set(errors_of(body)) == {"patient.birth_date"}


@pytest.mark.parametrize("value", [None, VALID_NIR])
def test_a_nir_is_optional(value):
    assert accept(set_field(valid_body(), "patient.nir", value)).patient.nir == value


def test_nir_helpers_normalise_and_validate():
    assert normalise_nir("2 84 12 2a 123 456 00") == "284122A12345600"
    assert is_valid_nir("2 84 12 75 123 456 87")
    assert not is_valid_nir("284127512345678")
    assert not is_valid_nir(with_nir_key("5841275123456"))


# --- phone -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["+33 6 12 34 56 78", "+33-6-12-34-56-78", "+33 (0)6 12 34 56 78", "+33612345678"])
def test_a_phone_is_normalised_to_e164(value):
    assert accept(set_field(valid_body(), "patient.phone", value)).patient.phone == "+33612345678"


FRENCH_MOBILES = {
    "FR": "+33756789012",
    "RE": "+262692123456",
    "GP": "+590690123456",
    "MQ": "+596696123456",
    "GF": "+594694123456",
    "PM": "+508551234",
    "NC": "+687751234",
    "PF": "+68987123456",
}


@pytest.mark.parametrize("value", FRENCH_MOBILES.values(), ids=FRENCH_MOBILES)
def test_a_metropolitan_or_overseas_french_mobile_is_accepted_for_sms(value):
    assert accept(set_field(valid_body(), "patient.phone", value)).patient.phone == value


@pytest.mark.parametrize("value", ["+447911123456", "+32470123456", "+12025550123"])
def test_a_foreign_mobile_is_refused_for_sms_with_a_rule_naming_france(value):
    message = assert_rejected(set_field(valid_body(), "patient.phone", value), "patient.phone", secret=value)

    assert message == "must be a mobile number of France (metropolitan or overseas) when notify contains sms"


def test_a_foreign_mobile_is_accepted_when_the_patient_gets_no_sms():
    body = set_field(set_field(valid_body(), "patient.phone", "+447911123456"), "notify", ["email"])

    assert accept(body).patient.phone == "+447911123456"


def test_a_stage_may_widen_where_an_sms_may_go():
    body = set_field(valid_body(), "patient.phone", "+32470123456")

    assert parse_submission(body, now=FIXED_NOW, sms_extra_regions=frozenset({"BE"})).patient.phone == "+32470123456"
    body = set_field(valid_body(), "patient.phone", "+447911123456")
    with pytest.raises(ValidationError) as caught:
        parse_submission(body, now=FIXED_NOW, sms_extra_regions=frozenset({"BE", "CH"}))
    (error,) = caught.value.errors
    assert error.message == (
        "must be a mobile number of France (metropolitan or overseas), BE or CH when notify contains sms"
    )


@pytest.mark.parametrize(
    "value", ["0612345678", "33612345678", "+", "+0612345678", "+33 6 CALL ME", "+336123456789012"]
)
def test_a_phone_not_in_e164_form_is_rejected(value):
    reject_value("patient.phone", value)


@pytest.mark.parametrize("value", ["+33012345678", "+3361234567", "+999123456789"])
def test_a_phone_that_is_not_a_valid_number_is_rejected(value):
    assert reject_value("patient.phone", value) == "must be a valid phone number"


def test_a_phone_is_required_when_notify_contains_sms():
    body = delete_field(valid_body(), "patient.phone")

    assert assert_rejected(body, "patient.phone") == "is required when notify contains sms"


def test_a_landline_is_rejected_when_notify_contains_sms():
    message = reject_value("patient.phone", "+33142685300")

    assert message == "must be a mobile number when notify contains sms"


def test_a_landline_is_accepted_when_notify_does_not_contain_sms():
    body = set_field(valid_body(), "notify", ["email"])
    set_field(body, "patient.phone", "+33 1 42 68 53 00")

    assert accept(body).patient.phone == "+33142685300"


def test_a_phone_is_optional_without_sms():
    body = set_field(valid_body(), "notify", ["email"])

    assert accept(delete_field(body, "patient.phone")).patient.phone is None


# --- email -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["claire@example.org", "claire.martin+covid@sub.example.fr", "c_m-1@x.io", "a@b.xn--p1ai"]
)
def test_a_plain_email_address_is_accepted_unchanged(value):
    assert accept(set_field(valid_body(), "patient.email", value)).patient.email == value


@pytest.mark.parametrize(
    "value",
    [
        "claire@example.org\r\nBcc: victim@example.org",
        "claire@example.org\nx",
        "claire@example.org,other@example.org",
        "claire@example.org;other@example.org",
        "Claire <claire@example.org>",
        "<claire@example.org>",
        "claire @example.org",
        " claire@example.org",
        "claire@example.org\t",
        '"claire"@example.org',
    ],
)
def test_an_email_with_header_injection_or_list_characters_is_rejected(value):
    message = reject_value("patient.email", value)

    assert message.startswith("must be one address without")


@pytest.mark.parametrize(
    "value",
    [
        "claire",
        "claire@",
        "@example.net",
        "claire@example",
        "claire@@example.org",
        "claire@exa@mple.org",
        "claire@example.o",
        "claire@-example.org",
        "claire..martin@example.org",
        ".claire@example.org",
        "claire@example.org.",
        "clàire@example.org",
        "x" * 65 + "@example.org",
    ],
)
def test_an_email_not_shaped_like_local_at_domain_tld_is_rejected(value):
    assert reject_value("patient.email", value) == "must be an address like name@example.org"


def test_an_email_of_254_characters_is_accepted_and_255_rejected():
    domain = ".".join(["a" * 63, "b" * 63, "c" * 63]) + ".org"  # 195 characters
    at_limit = "x" * (254 - len(domain) - 1) + "@" + domain
    assert len(at_limit) == 254

    accept(set_field(valid_body(), "patient.email", at_limit))
    assert reject_value("patient.email", "y" + at_limit) == "must be at most 254 characters"


def test_an_email_is_required_when_notify_contains_email():
    body = delete_field(valid_body(), "patient.email")

    assert assert_rejected(body, "patient.email") == "is required when notify contains email"


def test_an_email_is_optional_without_email_notification():
    body = set_field(valid_body(), "notify", ["sms"])

    assert accept(set_field(body, "patient.email", None)).patient.email is None


# --- address -----------------------------------------------------------------------------------------


def test_the_address_country_defaults_to_fr():
    body = delete_field(valid_body(), "patient.address.country")

    assert accept(body).patient.address == Address(line="3 rue X", postal_code="75011", city="Paris", country="FR")


def test_an_address_may_be_null_empty_or_partial():
    assert accept(set_field(valid_body(), "patient.address", None)).patient.address is None
    assert accept(set_field(valid_body(), "patient.address", {})).patient.address == Address(None, None, None, "FR")
    partial = accept(set_field(valid_body(), "patient.address", {"city": " Ajaccio "})).patient.address
    assert partial == Address(line=None, postal_code=None, city="Ajaccio", country="FR")


@pytest.mark.parametrize("value", ["7501", "750111", "75 011", "2A004", "\uff175011", "75011 ", " 75011"])
def test_a_french_postal_code_that_is_not_5_digits_is_rejected(value):
    assert reject_value("patient.address.postal_code", value) == "must be 5 digits when country is FR"


def test_a_foreign_postal_code_is_not_held_to_the_french_rule():
    body = set_field(valid_body(), "patient.address", {"postal_code": "SW1A 1AA", "city": "London", "country": "GB"})

    assert accept(body).patient.address == Address(line=None, postal_code="SW1A 1AA", city="London", country="GB")


@pytest.mark.parametrize("value", ["SW1A\n1AA", "x" * 17, "", "<b>"])
def test_a_foreign_postal_code_with_odd_characters_or_length_is_rejected(value):
    body = set_field(valid_body(), "patient.address.country", "GB")

    reject_value("patient.address.postal_code", value, body=body)


@pytest.mark.parametrize("value", ["fr", "FRA", "F", "", "F1"])
def test_a_country_that_is_not_two_upper_case_letters_is_rejected(value):
    message = reject_value("patient.address.country", value)

    assert message == "must be two upper-case letters (ISO 3166-1 alpha-2)"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("patient.address.line", ""),
        ("patient.address.line", "3 rue X\n4e étage"),
        ("patient.address.line", "y" * 201),
        ("patient.address.city", "  "),
        ("patient.address.city", "Pa\x00ris"),
        ("patient.address.city", "z" * 101),
    ],
)
def test_an_address_line_or_city_that_is_empty_too_long_or_has_control_characters_is_rejected(path, value):
    reject_value(path, value)


# --- test.kind and test.device_id --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["serology", "Antigen", "RT-PCR", "pcr"])
def test_a_test_kind_other_than_antigen_or_rt_pcr_is_rejected(value):
    assert reject_value("test.kind", value) == "must be one of: antigen, rt-pcr"


def test_an_rt_pcr_test_without_device_id_is_accepted():
    body = set_field(valid_body(), "test", {**valid_body()["test"], "kind": "rt-pcr"})
    del body["test"]["device_id"]

    test = accept(body).test

    assert test.kind == "rt-pcr"
    assert test.device_id is None


def test_an_rt_pcr_test_with_a_null_device_id_is_accepted():
    body = set_field(valid_body(), "test.kind", "rt-pcr")

    assert accept(set_field(body, "test.device_id", None)).test.device_id is None


def test_an_rt_pcr_test_with_a_device_id_is_rejected():
    body = set_field(valid_body(), "test.kind", "rt-pcr")

    assert assert_rejected(body, "test.device_id") == "must be absent for rt-pcr tests"


@pytest.mark.parametrize("value", [None, "absent"])
def test_an_antigen_test_requires_a_device_id(value):
    body = valid_body()
    if value is None:
        set_field(body, "test.device_id", None)
    else:
        delete_field(body, "test.device_id")

    assert assert_rejected(body, "test.device_id") == "is required for antigen tests"


@pytest.mark.parametrize("value", ["", "12a4", "1232 ", "-1232", "\uff11\uff12\uff13\uff12", "1" * 17])
def test_a_device_id_that_is_not_a_string_of_digits_is_rejected(value):
    reject_value("test.device_id", value)


def test_an_unlisted_device_id_is_accepted_when_no_device_list_is_given():
    assert accept(set_field(valid_body(), "test.device_id", "999999")).test.device_id == "999999"


def test_an_unlisted_device_id_is_rejected_when_a_device_list_is_given():
    message = reject_value("test.device_id", "999999", known=known_device_ids())

    assert message == "is not a known rapid antigen test device"


def test_a_listed_device_id_is_accepted_when_a_device_list_is_given():
    assert accept(valid_body(), known=known_device_ids()).test.device_id == "1232"


# --- test.sampled_at ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-30T08:15:00Z", datetime(2026, 11, 30, 8, 15, tzinfo=UTC)),
        ("2026-11-30t08:15:00z", datetime(2026, 11, 30, 8, 15, tzinfo=UTC)),
        ("2026-11-30T09:15:00.123456789+01:00", datetime(2026, 11, 30, 8, 15, 0, 123456, tzinfo=UTC)),
        ("2026-11-30T03:15:00-05:00", datetime(2026, 11, 30, 8, 15, tzinfo=UTC)),
        ("2026-11-30T08:15:00-00:00", datetime(2026, 11, 30, 8, 15, tzinfo=UTC)),
    ],
)
def test_an_rfc3339_sampled_at_with_an_offset_is_accepted(value, expected):
    sampled_at = accept(set_field(valid_body(), "test.sampled_at", value)).test.sampled_at

    assert sampled_at == expected
    assert sampled_at.tzinfo is not None


@pytest.mark.parametrize("value", ["2026-11-30T09:15:00", "2026-11-30T09:15:00.5"])
def test_a_sampled_at_without_offset_is_rejected(value):
    assert reject_value("test.sampled_at", value) == "must include a time zone offset (Z or +hh:mm)"


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29",
        "2026-11-30 09:15:00+01:00",
        "2026-11-30T09:15+01:00",
        "2026-11-30T09:15:00+0100",
        "2026-11-29T09:15:00+01",
        "30/11/2026 09:15",
        "1764490500",
        "2026-11-30T09:15:00+01:00 ",
    ],
)
def test_a_sampled_at_not_in_rfc3339_form_is_rejected(value):
    reject_value("test.sampled_at", value)


@pytest.mark.parametrize(
    "value", ["2026-11-31T09:15:00Z", "2026-11-30T24:00:00Z", "2026-11-30T09:60:00Z", "2026-11-30T09:15:00+24:00"]
)
def test_a_sampled_at_that_is_not_a_real_date_time_is_rejected(value):
    assert reject_value("test.sampled_at", value) == "must be a valid date-time"


def test_a_sampled_at_up_to_5_minutes_in_the_future_is_accepted():
    value = (FIXED_NOW + timedelta(minutes=5)).isoformat()

    accept(set_field(valid_body(), "test.sampled_at", value))


def test_a_sampled_at_more_than_5_minutes_in_the_future_is_rejected():
    value = (FIXED_NOW + timedelta(minutes=5, seconds=1)).isoformat()

    assert reject_value("test.sampled_at", value) == "must not be more than 5 minutes in the future"


def test_a_sampled_at_exactly_7_days_old_is_accepted():
    value = (FIXED_NOW - timedelta(days=7)).astimezone(PARIS_WINTER).isoformat()

    accept(set_field(valid_body(), "test.sampled_at", value))


def test_a_sampled_at_older_than_7_days_is_rejected():
    value = (FIXED_NOW - timedelta(days=7, seconds=1)).isoformat()

    assert reject_value("test.sampled_at", value) == "must not be older than 7 days"


def test_sampled_at_limits_are_relative_to_the_given_now():
    now = FIXED_NOW + timedelta(days=30)

    accept(valid_body(now), now=now)
    assert set(errors_of(valid_body(), now=now)) == {"test.sampled_at"}


# --- test.result -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["positive", "negative", "invalid"])
def test_each_contract_test_result_is_accepted(value):
    assert accept(set_field(valid_body(), "test.result", value)).test.result == value


@pytest.mark.parametrize("value", ["POSITIVE", "detected", "inconclusive", ""])
def test_a_test_result_outside_the_contract_values_is_rejected(value):
    assert reject_value("test.result", value) == "must be one of: positive, negative, invalid"


# --- notify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [([], ()), (None, ()), (["email", "sms"], ("email", "sms"))])
def test_notify_may_be_empty_null_or_any_order_of_distinct_channels(value, expected):
    assert accept(set_field(valid_body(), "notify", value)).notify == expected


@pytest.mark.parametrize("notify", [["paper"], ["paper", "sms"], ["email", "paper"]])
def test_paper_needs_no_phone_or_e_mail_and_goes_with_the_other_channels(notify):
    body = set_field(valid_body(), "notify", notify)
    if "sms" not in notify:
        body = delete_field(body, "patient.phone")
    if "email" not in notify:
        body = delete_field(body, "patient.email")

    assert accept(body).notify == tuple(notify)


def test_notify_defaults_to_no_channel():
    assert accept(delete_field(valid_body(), "notify")).notify == ()


@pytest.mark.parametrize(
    ("value", "bad"),
    [(["sms", "sms"], "notify[1]"), (["email", "email"], "notify[1]"), (["sms", "paper", "paper"], "notify[2]")],
)
def test_a_repeated_notify_channel_is_rejected_at_its_index(value, bad):
    assert assert_rejected(set_field(valid_body(), "notify", value), bad) == "is a duplicate"


@pytest.mark.parametrize("value", [["email", "sms", "paper", "email"], ["push"] * 5000])
def test_notify_longer_than_the_channels_is_refused_whole_without_walking_it(value):
    assert errors_of(set_field(valid_body(), "notify", value)) == {"notify": "must list at most 3 channels, each once"}


@pytest.mark.parametrize("item", ["push", "SMS", "", 1, None, ["sms"]])
def test_an_unknown_notify_channel_is_rejected_at_its_index(item):
    body = set_field(valid_body(), "notify", ["sms", item])

    assert assert_rejected(body, "notify[1]", secret=item) == "must be one of: sms, email, paper"


@pytest.mark.parametrize("value", ["sms", {"sms": True}, 1])
def test_notify_that_is_not_a_list_is_rejected(value):
    body = set_field(valid_body(), "notify", value)

    assert errors_of(body) == {"notify": "must be a list"}


# --- no submitted value in any error -----------------------------------------------------------------


def test_no_submitted_personal_value_appears_in_the_errors_of_a_fully_invalid_body():
    secrets = {
        "patient.family_name": "Dupont\x00Secret",
        "patient.given_name": "G" * 101,
        "patient.birth_date": "1984-02-31",
        "patient.nir": "184027512345699",
        "patient.phone": "+33142685300",
        "patient.email": "secret.person@example.org\r\nBcc: x@y.zz",
        "patient.address.line": "12 rue Secrète\x07",
        "patient.address.postal_code": "9999",
        "patient.address.city": "Ville\x1bSecrète",
    }
    body = valid_body()
    for path, value in secrets.items():
        set_field(body, path, value)

    with pytest.raises(ValidationError) as info:
        parse_submission(body, now=FIXED_NOW)

    text = str(info.value) + repr(info.value.errors)
    assert {error.field for error in info.value.errors} == set(secrets)
    for value in secrets.values():
        assert value not in text
    for fragment in ("Dupont", "Secret", "Secrète", "secret.person", "142685300", "9999", "1984"):
        assert fragment not in text
