"""Property-based checks of NIR and RPPS validation against independently computed check digits."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.validation import is_valid_nir, is_valid_rpps, normalise_nir, parse_submission
from tests.factories import FIXED_NOW, luhn_check_digit, set_field, valid_body, with_luhn_digit, with_nir_key

DIGITS = "0123456789"

sex_digits = st.sampled_from("123478")
two_digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
departments = st.one_of(
    st.integers(1, 99).map(lambda n: f"{n:02d}"),
    st.sampled_from(["2A", "2B"]),
)
three_digits = st.integers(0, 999).map(lambda n: f"{n:03d}")
nir_bodies = st.builds(
    lambda sex, year, month, department, commune, order: sex + year + month + department + commune + order,
    sex_digits,
    two_digits,
    two_digits,
    departments,
    three_digits,
    three_digits,
)
rpps_bodies = st.text(alphabet=DIGITS, min_size=10, max_size=10)


def _replace(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


@given(nir_bodies)
def test_a_nir_with_its_computed_control_key_is_valid(first_13):
    assert is_valid_nir(with_nir_key(first_13))


@given(nir_bodies, st.data())
def test_a_nir_with_any_other_control_key_is_rejected(first_13, data):
    nir = with_nir_key(first_13)
    other_key = data.draw(two_digits.filter(lambda key: key != nir[13:]))

    assert not is_valid_nir(first_13 + other_key)


@given(nir_bodies, st.data())
def test_a_nir_with_one_digit_changed_is_rejected(first_13, data):
    nir = with_nir_key(first_13)
    index = data.draw(st.sampled_from([i for i, char in enumerate(nir) if char.isdigit()]))
    replacement = data.draw(st.sampled_from(DIGITS).filter(lambda digit: digit != nir[index]))

    assert not is_valid_nir(_replace(nir, index, replacement))


@given(nir_bodies.filter(lambda body: body[5:7] in ("2A", "2B")))
def test_a_corsican_nir_with_2a_and_2b_swapped_is_rejected(first_13):
    nir = with_nir_key(first_13)
    swapped = _replace(nir, 6, "B" if nir[6] == "A" else "A")

    assert not is_valid_nir(swapped)


@given(nir_bodies, st.lists(st.integers(0, 15), max_size=5))
def test_spaces_and_lower_case_in_a_valid_nir_do_not_matter(first_13, positions):
    nir = with_nir_key(first_13)
    spaced = nir.lower()
    for position in sorted(positions, reverse=True):
        spaced = spaced[:position] + " " + spaced[position:]

    assert normalise_nir(spaced) == nir
    assert is_valid_nir(spaced)


@settings(max_examples=50)
@given(
    st.dates(min_value=date(1897, 1, 1), max_value=date(2026, 11, 29)),
    st.sampled_from("1278"),
    departments,
    st.booleans(),
)
def test_a_valid_nir_matching_the_birth_date_is_accepted_in_a_submission(birth_date, sex, department, unknown_month):
    month = "20" if unknown_month else f"{birth_date.month:02d}"
    nir = with_nir_key(f"{sex}{birth_date.year % 100:02d}{month}{department}123456")
    body = set_field(valid_body(), "patient.birth_date", birth_date.isoformat())
    set_field(body, "patient.nir", nir)

    assert parse_submission(body, now=FIXED_NOW).patient.nir == nir


@given(rpps_bodies)
def test_an_rpps_with_its_computed_luhn_digit_is_valid(first_10):
    assert is_valid_rpps(with_luhn_digit(first_10))


@given(rpps_bodies, st.data())
def test_an_rpps_with_any_other_check_digit_is_rejected(first_10, data):
    other = data.draw(st.sampled_from(DIGITS).filter(lambda digit: digit != luhn_check_digit(first_10)))

    assert not is_valid_rpps(first_10 + other)


@given(rpps_bodies, st.integers(0, 10), st.data())
def test_an_rpps_with_one_digit_changed_is_rejected(first_10, index, data):
    rpps = with_luhn_digit(first_10)
    replacement = data.draw(st.sampled_from(DIGITS).filter(lambda digit: digit != rpps[index]))

    assert not is_valid_rpps(_replace(rpps, index, replacement))


@given(rpps_bodies, st.integers(0, 9))
def test_an_rpps_with_two_adjacent_different_digits_swapped_is_rejected(first_10, index):
    rpps = with_luhn_digit(first_10)
    swapped = rpps[:index] + rpps[index + 1] + rpps[index] + rpps[index + 2 :]

    # Luhn misses exactly the 0<->9 transposition
    if rpps[index] != rpps[index + 1] and {rpps[index], rpps[index + 1]} != {"0", "9"}:
        assert not is_valid_rpps(swapped)


@given(st.text(max_size=20).filter(lambda text: len(text) != 11 or not text.isascii() or not text.isdigit()))
def test_anything_but_11_ascii_digits_is_never_a_valid_rpps(text):
    assert not is_valid_rpps(text)
