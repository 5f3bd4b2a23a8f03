from __future__ import annotations

from chalicelib.domain.records import new_id


def test_ids_never_start_with_a_dash_so_command_lines_take_them():
    ids = [new_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert min(len(i) for i in ids) >= 22
    assert len(set(ids)) == len(ids)


def test_seconds_to_midnight_utc_count_to_the_next_utc_day_and_never_zero():
    from datetime import UTC, datetime

    from chalicelib.domain.records import seconds_to_midnight_utc

    assert seconds_to_midnight_utc(datetime(2022, 1, 10, 23, 59, 30, tzinfo=UTC)) == 30
    assert seconds_to_midnight_utc(datetime(2022, 1, 10, 0, 0, 0, tzinfo=UTC)) == 86_400
    assert seconds_to_midnight_utc(datetime(2022, 1, 10, 23, 59, 59, 999_000, tzinfo=UTC)) == 1


def test_a_reference_digest_is_an_hmac_of_pharmacy_and_reference_under_the_key():
    import hashlib
    import hmac

    from chalicelib.domain.records import reference_digest

    digest = reference_digest(b"k" * 32, "ph_1", "284127512345687")
    assert digest == hmac.new(b"k" * 32, b"ph_1\n284127512345687", hashlib.sha256).hexdigest()
    assert digest != reference_digest(b"j" * 32, "ph_1", "284127512345687")  # keyed: no key, no dictionary attack
    assert digest != reference_digest(b"k" * 32, "ph_2", "284127512345687")
