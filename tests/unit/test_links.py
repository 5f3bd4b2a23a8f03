"""Link tokens and the rules deciding whether a link still opens (pure domain, no AWS)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.links import (
    ACTIVE,
    EXPIRED,
    LOCKED,
    REVOKED,
    Link,
    birth_dates_match,
    client_key,
    is_wellformed_birth_date,
    is_wellformed_token,
    link_expiry,
    link_state,
    new_token,
    rate_window,
    token_hash,
)
from chalicelib.errors import ValidationError
from chalicelib.services.patient import parse_view_request

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def a_link(**changes: object) -> Link:
    fields: dict[str, object] = {
        "link_id": "L" * 22,
        "token_hash": "0" * 64,
        "result_id": "R" * 24,
        "pharmacy_id": "ph_0000000001",
        "generation": 0,
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=72),
    }
    fields.update(changes)
    return Link(**fields)  # type: ignore[arg-type]


def test_tokens_carry_at_least_128_random_bits_in_base64url():
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in list(tokens)[:50]:
        assert is_wellformed_token(token)
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128


def test_tokens_look_uniformly_random():
    # every base64url character shows up, with no strong bias, over many tokens
    counts: dict[str, int] = {}
    for _ in range(1000):
        for char in new_token()[:42]:  # the last character carries only 4 bits
            counts[char] = counts.get(char, 0) + 1
    assert len(counts) == 64
    expected = 42_000 / 64
    assert all(0.7 * expected < n < 1.3 * expected for n in counts.values())


def test_only_a_sha256_of_the_token_is_kept():
    token = new_token()
    assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token not in token_hash(token)


def test_a_link_expires_exactly_at_its_ttl_checked_against_the_given_clock():
    link = a_link()
    assert link_state(link, now=NOW + timedelta(hours=71, minutes=59), current_generation=0, lock_attempts=5) == ACTIVE
    assert link_state(link, now=NOW + timedelta(hours=72), current_generation=0, lock_attempts=5) == EXPIRED


def test_a_newer_generation_or_an_explicit_revocation_revokes():
    assert link_state(a_link(), now=NOW, current_generation=1, lock_attempts=5) == REVOKED
    assert link_state(a_link(revoked=True), now=NOW, current_generation=0, lock_attempts=5) == REVOKED


def test_five_attempts_lock_and_the_lock_wins_over_everything():
    assert link_state(a_link(attempts=4), now=NOW, current_generation=0, lock_attempts=5) == ACTIVE
    assert link_state(a_link(attempts=5), now=NOW, current_generation=0, lock_attempts=5) == LOCKED
    late = NOW + timedelta(days=10)
    assert link_state(a_link(attempts=5, revoked=True), now=late, current_generation=3, lock_attempts=5) == LOCKED


def test_link_ttl_is_bounded_to_seven_days():
    assert link_expiry(NOW, 168) == NOW + timedelta(days=7)
    with pytest.raises(ValueError, match="link_ttl_hours"):
        link_expiry(NOW, 169)
    with pytest.raises(ValueError, match="link_ttl_hours"):
        link_expiry(NOW, 0)


def test_birth_dates_compare_exactly():
    assert birth_dates_match("1984-12-03", "1984-12-03")
    assert not birth_dates_match("1984-12-04", "1984-12-03")
    assert not birth_dates_match("1984-12-03 ", "1984-12-03")


@pytest.mark.parametrize("value", ["1984-12-03", "2000-02-29"])
def test_wellformed_birth_dates(value):
    assert is_wellformed_birth_date(value)


@pytest.mark.parametrize("value", ["1984-2-3", "03/12/1984", "1984-02-30", "", None, 19841203, "1984-12-03T00:00"])
def test_malformed_birth_dates(value):
    assert not is_wellformed_birth_date(value)


@pytest.mark.parametrize(
    "value", ["A" * 21, "A" * 65, "A" * 30 + "=", "A" * 30 + "+", "A" * 30 + "/", "A" * 30 + "\n", "", None, 42]
)
def test_malformed_tokens(value):
    assert not is_wellformed_token(value)


def test_the_view_request_is_parsed_strictly_without_echoing_values():
    assert parse_view_request({"token": "A" * 43, "birth_date": "1984-12-03"}) == ("A" * 43, "1984-12-03")
    with pytest.raises(ValidationError) as caught:
        parse_view_request({"token": 12345, "birth_date": "1984-12-03", "extra": "Martin"})
    assert {e.field for e in caught.value.errors} == {"token", "extra"}
    assert "12345" not in str(caught.value) and "Martin" not in str(caught.value)


def test_any_string_token_is_left_to_the_lookup_not_refused_by_its_shape():
    """Contract §4: a token that opens nothing is one 404, whatever its shape; only a non-string is a 400."""
    for token in ("unknown-token", "", "A" * 21, "A" * 65, "ab+/=", "é" * 30):
        assert parse_view_request({"token": token, "birth_date": "1984-12-03"}) == (token, "1984-12-03")


def test_an_unknown_key_is_named_only_when_it_looks_like_an_identifier():
    body = {"token": "A" * 43, "birth_date": "1984-12-03", "Claire Martin 1984-12-03": 1, "0612345678": 2, "nir": 3}
    with pytest.raises(ValidationError) as caught:
        parse_view_request(body)
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("body", "contains an unknown field"),  # once for both keys that could be personal data
        ("nir", "unknown field"),
    ]
    assert "Claire" not in str(caught.value) and "0612345678" not in str(caught.value)


def test_rate_windows_are_fixed_and_tell_when_they_end():
    index, left = rate_window(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC), 600)
    assert left == 570
    assert rate_window(datetime(2026, 1, 1, 0, 9, 59, tzinfo=UTC), 600)[0] == index
    assert rate_window(datetime(2026, 1, 1, 0, 10, 0, tzinfo=UTC), 600)[0] == index + 1


def test_client_addresses_are_only_kept_hashed_per_stage():
    key = client_key("203.0.113.9", "prod")
    assert "203.0.113.9" not in key and len(key) == 64
    assert key != client_key("203.0.113.9", "dev")
