"""Receipts (contract §6), pure: the JWS Relais writes, what verifies and what does not, and the statement's month."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.adapters.results_store import USAGE_DAYS
from chalicelib.domain import receipts
from chalicelib.domain.receipts import ReceiptError, b64url, b64url_decode, public_jwk, sign, verify
from chalicelib.domain.records import ResultRecord
from chalicelib.errors import ValidationError
from chalicelib.services.receipts import STATEMENT_MARGIN_DAYS, Receipts, oldest_statement_month, parse_month

KID = "kid_0123456789abcdefAB"
AT = datetime(2026, 11, 30, 8, 30, 12, 345678, tzinfo=UTC)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys_of(*pairs: tuple[str, Ed25519PrivateKey]) -> dict[str, Any]:
    return {"keys": [public_jwk(kid, private.public_key()) for kid, private in pairs]}


def acceptance(body: bytes = b'{"a": 1}') -> dict[str, Any]:
    return receipts.acceptance_payload(
        stage="prod", result_id="R" * 24, pharmacy_id="ph_12345678", pharmacy_reference="A-1", body=body, accepted_at=AT
    )


def test_the_acceptance_payload_has_exactly_the_contract_fields():
    payload = acceptance(b'{"a": 1}')

    assert payload == {
        "iss": "relais:prod",
        "result_id": "R" * 24,
        "pharmacy_id": "ph_12345678",
        "pharmacy_reference": "A-1",
        "body_sha256": base64.urlsafe_b64encode(hashlib.sha256(b'{"a": 1}').digest()).rstrip(b"=").decode(),
        "accepted_at": "2026-11-30T08:30:12Z",
    }
    assert acceptance(b'{"a":1}')["body_sha256"] != payload["body_sha256"], "the exact bytes, not the JSON value"


def test_the_report_payload_has_exactly_the_contract_fields():
    payload = receipts.report_payload(stage="local", result_id="R" * 24, pharmacy_id="ph_12345678", reported_at=AT)

    assert payload == {
        "iss": "relais:local",
        "result_id": "R" * 24,
        "pharmacy_id": "ph_12345678",
        "reported_at": "2026-11-30T08:30:12Z",
    }


def test_a_receipt_is_a_compact_jws_with_the_contract_header_and_verifies(key):
    token = sign(key, KID, acceptance())

    header, payload, signature = token.split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "EdDSA", "kid": KID, "typ": "relais-receipt+jwt"}
    assert json.loads(b64url_decode(payload)) == acceptance()
    assert len(b64url_decode(signature)) == 64
    verified = verify(token, keys_of((KID, key)))
    assert (verified.kid, verified.payload) == (KID, acceptance())


def test_the_same_payload_under_the_same_key_is_the_same_receipt(key):
    assert sign(key, KID, acceptance()) == sign(key, KID, dict(reversed(list(acceptance().items()))))


def test_a_jose_library_relais_does_not_use_verifies_it_with_the_jwk_alone(key):
    from joserfc import jws
    from joserfc.jwk import KeySet

    token = sign(key, KID, acceptance())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags "EdDSA" (RFC 9864); the contract names it
        verified = jws.deserialize_compact(token, KeySet.import_key_set(keys_of((KID, key))), algorithms=["EdDSA"])
    assert json.loads(verified.payload) == acceptance()


def _reason(token: str, jwks: dict[str, Any]) -> str:
    with pytest.raises(ReceiptError) as caught:
        verify(token, jwks)
    return caught.value.reason


def test_a_tampered_payload_fails(key):
    header, _payload, signature = sign(key, KID, acceptance()).split(".")
    forged = b64url(json.dumps({**acceptance(), "accepted_at": "2020-01-01T00:00:00Z"}).encode())

    assert _reason(f"{header}.{forged}.{signature}", keys_of((KID, key))) == "bad_signature"


def test_a_tampered_signature_fails(key):
    header, payload, signature = sign(key, KID, acceptance()).split(".")
    flipped = b64url(bytes([b64url_decode(signature)[0] ^ 1]) + b64url_decode(signature)[1:])

    assert _reason(f"{header}.{payload}.{flipped}", keys_of((KID, key))) == "bad_signature"


def test_a_receipt_signed_by_another_key_under_a_published_kid_fails(key):
    assert _reason(sign(Ed25519PrivateKey.generate(), KID, acceptance()), keys_of((KID, key))) == "bad_signature"


def test_an_unknown_kid_fails(key):
    assert _reason(sign(key, "kid_not_published_000", acceptance()), keys_of((KID, key))) == "unknown_kid"


def test_a_kid_published_for_another_kind_of_key_fails(key):
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": KID}]}
    assert _reason(sign(key, KID, acceptance()), jwks) == "unknown_kid"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "EdDSA", "kid": KID, "typ": "JWT"}, "wrong_typ"),
        ({"alg": "none", "kid": KID, "typ": "relais-receipt+jwt"}, "wrong_alg"),
        ({"alg": "EdDSA", "typ": "relais-receipt+jwt"}, "unknown_kid"),
    ],
)
def test_a_wrong_header_fails_before_any_signature_check(key, header, reason):
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(acceptance()).encode())}"
    token = f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"

    assert _reason(token, keys_of((KID, key))) == reason


@pytest.mark.parametrize(
    "token", ["", "a.b", "a.b.c.d", "!!!.e30.AA", "W10.e30.AA", "e30.W10.AA", "e30.bm90IGpzb24.AA"]
)
def test_a_malformed_receipt_fails(key, token):
    assert _reason(token, keys_of((KID, key))) in ("malformed", "wrong_typ")


def test_a_retired_key_is_published_with_its_retirement_and_still_verifies(key):
    jwk = public_jwk(KID, key.public_key(), retired_at="2026-12-01T00:00:00Z")

    assert jwk["retired_at"] == "2026-12-01T00:00:00Z"
    assert verify(sign(key, KID, acceptance()), {"keys": [jwk]}).kid == KID


def test_base64url_has_no_padding_and_refuses_other_alphabets():
    assert b64url(b"\xff\xfe") == "__4"
    assert b64url_decode("__4") == b"\xff\xfe"
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode("+/4=")
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode("A")  # one character is no whole byte


# -- the service ----------------------------------------------------------------------------------------------------


class Keys:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.opened = 0

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        self.opened += 1
        return KID, self.key


def record(**changes: Any) -> ResultRecord:
    base: dict[str, Any] = {
        "id": "R" * 24,
        "pharmacy_id": "ph_12345678",
        "reference_digest": "d",
        "key_id": "k",
        "received_at": AT,
        "expires_at": 0,
        "ciphertext": b"",
    }
    return ResultRecord(**{**base, **changes})


def test_a_national_receipt_exists_only_once_reported(key):
    signer = Receipts(Keys(key), stage="prod")

    assert signer.national(record()) is None
    assert signer.national(record(national_status="failed", national_reported_at=AT)) is None
    token = signer.national(record(national_status="reported", national_reported_at=AT))
    assert token is not None
    assert verify(token, keys_of((KID, key))).payload["reported_at"] == "2026-11-30T08:30:12Z"


def test_a_statement_receipt_signs_the_fields_with_its_issuer_and_time(key):
    fields = {"pharmacy_id": "ph_12345678", "month": "2026-11", "accepted": 3, "reported": 2}

    token = Receipts(Keys(key), stage="prod").ready().statement(fields, AT)

    assert verify(token, keys_of((KID, key))).payload == {
        **fields,
        "iss": "relais:prod",
        "issued_at": "2026-11-30T08:30:12Z",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is required (YYYY-MM)"),
        ("", "is required (YYYY-MM)"),
        ("2026-00", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("2026-13", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("26-11", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("2026-11-01", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("2026-12", "is in the future: a statement covers a month begun or past"),
    ],
)
def test_a_statement_month_is_yyyy_mm_and_not_in_the_future(value, message):
    with pytest.raises(ValidationError) as caught:
        parse_month(value, AT, USAGE_DAYS)
    assert [(e.field, e.message) for e in caught.value.errors] == [("month", message)]


@pytest.mark.parametrize("value", ["2026-11", "2026-01", "2025-11"])
def test_the_current_and_earlier_months_whose_counts_are_kept_are_statement_months(value):
    assert parse_month(value, AT, USAGE_DAYS) == value


@pytest.mark.parametrize("value", ["2025-10", "2019-12", "1900-01", "0000-01"])
def test_a_month_older_than_its_counters_is_a_400_naming_the_oldest_month_kept(value):
    with pytest.raises(ValidationError) as caught:
        parse_month(value, AT, USAGE_DAYS)
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("month", "is older than the counts kept: the oldest month with a statement now is 2025-11")
    ]


def test_every_shard_of_an_accepted_month_outlives_the_statement_by_the_margin():
    """The earliest a counter of month M expires is M's first second plus the counters' days (a result received
    then): on every day of four years (a leap year included), the oldest month accepted is still whole, the month
    before it would not be, and the window holds at least the current month and the 12 before it."""
    day = datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)
    while day.year < 2030:
        oldest = oldest_statement_month(day, USAGE_DAYS)
        start = datetime.strptime(oldest, "%Y-%m").replace(tzinfo=UTC)
        assert start + timedelta(days=USAGE_DAYS - STATEMENT_MARGIN_DAYS) > day, (day, oldest)
        before = (start - timedelta(days=1)).replace(day=1)
        assert before + timedelta(days=USAGE_DAYS - STATEMENT_MARGIN_DAYS) <= day, (day, oldest)
        twelve_before = (day.year * 12 + day.month - 1) - 12
        assert oldest <= f"{twelve_before // 12:04d}-{twelve_before % 12 + 1:02d}", (day, oldest)
        day += timedelta(days=1)
