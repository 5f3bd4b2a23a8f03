"""Authentication of signed pharmacy requests (contract.md §2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures import algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.errors import AuthenticationError
from chalicelib.services.authn import (
    FAILURE_REASONS,
    KeyRecord,
    Principal,
    SignedRequest,
    authenticate,
    public_key_from_pem,
)
from tests.signing import new_keypair, sign, to_signed_request

NOW = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
BASE = "https://relais.example.fr"
RESULTS = f"{BASE}/v1/results"
BODY = json.dumps({"pharmacy_reference": "A-2026-000123"}).encode()
KEY_ID = "pk_test_1"
PRIVATE_KEY, PUBLIC_PEM = new_keypair()
OTHER_KEY, OTHER_PEM = new_keypair()


class FakeKeys:
    def __init__(self, *records: KeyRecord) -> None:
        self.records = {r.key_id: r for r in records}

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self.records.get(key_id)


@dataclass
class FakeNonces:
    used: set[tuple[str, str]] = field(default_factory=set)
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def use_once(self, key_id: str, nonce: str, expires_at: int) -> bool:
        self.calls.append((key_id, nonce, expires_at))
        if (key_id, nonce) in self.used:
            return False
        self.used.add((key_id, nonce))
        return True


def record(**changes) -> KeyRecord:
    base = KeyRecord(
        key_id=KEY_ID, pharmacy_id="ph_1", public_key_pem=PUBLIC_PEM, revoked_at=None, pharmacy_active=True
    )
    return replace(base, **changes)


@pytest.fixture
def keys() -> FakeKeys:
    return FakeKeys(record())


@pytest.fixture
def nonces() -> FakeNonces:
    return FakeNonces()


def signed(method="POST", url=RESULTS, body: bytes | None = BODY, **options) -> SignedRequest:
    options.setdefault("created", NOW_S)
    options.setdefault("key_id", KEY_ID)
    options.setdefault("private_key", PRIVATE_KEY)
    headers = sign(method, url, body=body, **options)
    return to_signed_request(method, url, headers, body)


def with_headers(request: SignedRequest, **headers: str | None) -> SignedRequest:
    merged = dict(request.headers)
    for keyword, value in headers.items():
        name = keyword.replace("_", "-")
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return replace(request, headers=merged)


def check(request: SignedRequest, keys, nonces, **kwargs) -> Principal:
    return authenticate(request, keys=keys, nonces=nonces, now=kwargs.pop("now", NOW), **kwargs)


def reason_of(request: SignedRequest, keys, nonces, **kwargs) -> str:
    with pytest.raises(AuthenticationError) as caught:
        check(request, keys, nonces, **kwargs)
    assert caught.value.reason in FAILURE_REASONS
    return caught.value.reason


# --- accepted --------------------------------------------------------------------------------------------------------


def test_a_signed_post_with_a_body_identifies_the_pharmacy_by_its_key(keys, nonces):
    assert check(signed(), keys, nonces) == Principal(key_id=KEY_ID, pharmacy_id="ph_1")


def test_a_signed_get_without_a_body_is_accepted(keys, nonces):
    request = signed("GET", f"{RESULTS}/abc", body=None)
    assert "content-digest" in request.headers  # requests-http-signature digests the empty body too
    assert check(request, keys, nonces).pharmacy_id == "ph_1"


def test_a_get_signed_without_any_content_digest_is_accepted(keys, nonces):
    request = signed("GET", f"{RESULTS}/abc?x=1", body=None, covered=("@method", "@authority", "@path"))
    assert "content-digest" not in request.headers
    assert check(request, keys, nonces).key_id == KEY_ID


def test_header_names_are_matched_case_insensitively(keys, nonces):
    request = signed()
    shouted = replace(request, headers={name.upper(): value for name, value in request.headers.items()})
    assert check(shouted, keys, nonces).key_id == KEY_ID


def test_the_nonce_is_consumed_with_a_ttl_past_the_acceptance_window(keys, nonces):
    check(signed(nonce="n" * 16), keys, nonces)
    assert nonces.calls == [(KEY_ID, "n" * 16, NOW_S + 300 + 60)]


# --- missing or malformed signature fields ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["signature", "signature-input"])
def test_a_request_without_either_signature_header_is_refused(keys, nonces, header):
    request = with_headers(signed(), **{header: None})
    assert reason_of(request, keys, nonces) == "missing_signature"


def test_an_unsigned_request_is_refused(keys, nonces):
    request = SignedRequest("POST", "relais.example.fr", "/v1/results", "", {"content-type": "application/json"}, b"")
    assert reason_of(request, keys, nonces) == "missing_signature"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("signature-input", "pyhms=(("),
        ("signature-input", 'pyhms=("@method";created=1'),
        ("signature-input", "pyhms=token-not-a-list"),
        ("signature-input", 'pyhms=("@method" "@authority");created=1;keyid="k";keyid="k"'),
        ("signature-input", 'pyhms=("@method");keyid="\u00e9"'),
        ("signature", "pyhms=not-bytes"),
        ("signature", "pyhms=:not base64:"),
        ("signature", "other=:AAAA:"),
    ],
)
def test_malformed_signature_fields_are_refused(keys, nonces, header, value):
    request = with_headers(signed(), **{header: value})
    assert reason_of(request, keys, nonces) == "malformed_signature"


def test_a_signature_input_with_a_non_integer_created_is_refused(keys, nonces):
    request = signed()
    value = request.headers["signature-input"].replace(f"created={NOW_S}", f'created="{NOW_S}"')
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "malformed_signature"


def test_a_signature_input_without_created_is_refused(keys, nonces):
    request = signed()
    value = request.headers["signature-input"].replace(f";created={NOW_S}", "")
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "malformed_signature"


def test_a_signature_input_without_keyid_is_refused(keys, nonces):
    request = signed()
    value = request.headers["signature-input"].replace(f';keyid="{KEY_ID}"', "")
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "malformed_signature"


def test_unknown_signature_parameters_are_refused(keys, nonces):
    request = signed()
    value = request.headers["signature-input"] + ';extra="x"'
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "malformed_signature"


def test_two_signatures_are_refused(keys, nonces):
    first = signed()
    second = signed(label="second")
    request = with_headers(
        first,
        signature_input=f"{first.headers['signature-input']}, {second.headers['signature-input']}",
        signature=f"{first.headers['signature']}, {second.headers['signature']}",
    )
    assert reason_of(request, keys, nonces) == "multiple_signatures"


def test_a_label_repeated_in_one_field_counts_as_two_signatures(keys, nonces):
    request = signed()
    value = f"{request.headers['signature-input']}, {request.headers['signature-input']}"
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "multiple_signatures"


def test_two_signature_header_lines_count_as_two_signatures(keys, nonces):
    first, second = signed(), signed(label="second")
    headers = dict(first.headers)
    headers["Signature-Input"] = second.headers["signature-input"]
    headers["Signature"] = second.headers["signature"]
    assert reason_of(replace(first, headers=headers), keys, nonces) == "multiple_signatures"


@settings(max_examples=200, deadline=None)
@given(signature_input=st.text(max_size=200), signature=st.text(max_size=200))
def test_arbitrary_signature_fields_only_ever_raise_authentication_errors(signature_input, signature):
    request = SignedRequest(
        "POST",
        "relais.example.fr",
        "/v1/results",
        "",
        {"signature-input": signature_input, "signature": signature, "content-type": "application/json"},
        BODY,
    )
    keys, nonces = FakeKeys(record()), FakeNonces()
    with pytest.raises(AuthenticationError) as caught:
        check(request, keys, nonces)
    assert caught.value.reason in FAILURE_REASONS
    assert nonces.calls == []


# --- algorithm and key -----------------------------------------------------------------------------------------------


def test_a_signature_with_another_algorithm_is_refused(keys, nonces):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    request = signed(private_key=ec_key, signature_algorithm=algorithms.ECDSA_P256_SHA256)
    assert reason_of(request, keys, nonces) == "bad_algorithm"


def test_a_signature_without_alg_is_refused(keys, nonces):
    assert reason_of(signed(include_alg=False), keys, nonces) == "bad_algorithm"


def test_an_alg_differing_only_in_case_is_refused(keys, nonces):
    request = signed()
    value = request.headers["signature-input"].replace('alg="ed25519"', 'alg="Ed25519"')
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "bad_algorithm"


def test_an_unknown_keyid_is_refused(keys, nonces):
    with pytest.raises(AuthenticationError) as caught:
        check(signed(key_id="pk_nobody"), keys, nonces)
    assert (caught.value.reason, caught.value.key_id) == ("unknown_key", "pk_nobody")


def test_a_signature_made_with_another_key_is_refused(keys, nonces):
    assert reason_of(signed(private_key=OTHER_KEY), keys, nonces) == "bad_signature"


def test_a_non_ed25519_registered_key_is_refused(nonces):
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    keys = FakeKeys(record(public_key_pem=ec_pem))
    assert reason_of(signed(), keys, nonces) == "bad_key"


def test_a_registered_key_that_is_not_pem_is_refused(nonces):
    keys = FakeKeys(record(public_key_pem="not a key"))
    assert reason_of(signed(), keys, nonces) == "bad_key"


# --- body and digest -------------------------------------------------------------------------------------------------


def test_a_body_changed_in_transit_fails_the_digest(keys, nonces):
    request = replace(signed(), body=BODY.replace(b"A-2026", b"B-2026"))
    assert reason_of(request, keys, nonces) == "digest_mismatch"


def test_a_body_changed_with_a_recomputed_digest_fails_the_signature(keys, nonces):
    original = signed()
    tampered_body = BODY.replace(b"A-2026", b"B-2026")
    fresh_digest = sign("POST", RESULTS, key_id=KEY_ID, private_key=OTHER_KEY, body=tampered_body)["Content-Digest"]
    request = replace(with_headers(original, content_digest=fresh_digest), body=tampered_body)
    assert reason_of(request, keys, nonces) == "bad_signature"


def test_a_body_without_content_digest_is_refused(keys, nonces):
    request = with_headers(signed(), content_digest=None)
    assert reason_of(request, keys, nonces) == "missing_digest"


def test_a_digest_without_sha256_is_refused(keys, nonces):
    request = with_headers(signed(), content_digest="sha-512=:" + "A" * 86 + "==:")
    assert reason_of(request, keys, nonces) == "bad_digest"


def test_a_malformed_digest_is_refused(keys, nonces):
    request = with_headers(signed(), content_digest="sha-256=nope")
    assert reason_of(request, keys, nonces) == "bad_digest"


def test_a_post_signed_without_content_digest_is_refused(keys, nonces):
    request = signed(covered=("@method", "@authority", "@path", "content-type"))
    assert reason_of(request, keys, nonces) == "missing_components"


def test_a_post_signed_without_content_type_is_refused(keys, nonces):
    request = signed(covered=("@method", "@authority", "@path", "content-digest"))
    assert reason_of(request, keys, nonces) == "missing_components"


@pytest.mark.parametrize("component", ["@method", "@authority", "@path"])
def test_a_request_not_covering_a_required_derived_component_is_refused(keys, nonces, component):
    covered = tuple(c for c in ("@method", "@authority", "@path", "content-digest", "content-type") if c != component)
    assert reason_of(signed(covered=covered), keys, nonces) == "missing_components"


def test_a_component_with_parameters_does_not_count_as_the_whole_field(keys, nonces):
    covered = ("@method", "@authority", "@path", '"content-digest";key="sha-256"', "content-type")
    assert reason_of(signed(covered=covered), keys, nonces) == "missing_components"


def test_a_changed_content_type_fails_the_signature(keys, nonces):
    request = with_headers(signed(), content_type="text/plain")
    assert reason_of(request, keys, nonces) == "bad_signature"


# --- request target --------------------------------------------------------------------------------------------------


def test_a_changed_path_fails_the_signature(keys, nonces):
    assert reason_of(replace(signed(), path="/v1/results/other"), keys, nonces) == "bad_signature"


def test_a_changed_method_fails_the_signature(keys, nonces):
    assert reason_of(replace(signed(), method="PUT"), keys, nonces) == "bad_signature"


def test_a_changed_authority_fails_the_signature(keys, nonces):
    assert reason_of(replace(signed(), authority="evil.example.org"), keys, nonces) == "bad_signature"


def test_a_path_the_library_cannot_parse_is_malformed_not_a_crash(keys, nonces):
    assert reason_of(replace(signed(), path="/v1/results with space"), keys, nonces) == "malformed_signature"


# --- time window -----------------------------------------------------------------------------------------------------


def test_a_signature_created_more_than_300_seconds_ago_is_stale(keys, nonces):
    assert reason_of(signed(created=NOW_S - 301), keys, nonces) == "stale"


def test_a_signature_created_more_than_300_seconds_ahead_is_in_the_future(keys, nonces):
    assert reason_of(signed(created=NOW_S + 301), keys, nonces) == "future"


@pytest.mark.parametrize("offset", [-300, 300])
def test_a_signature_created_exactly_at_the_window_edge_is_accepted(keys, nonces, offset):
    assert check(signed(created=NOW_S + offset), keys, nonces).key_id == KEY_ID


def test_the_window_is_configurable(keys, nonces):
    assert reason_of(signed(created=NOW_S - 61), keys, nonces, window_seconds=60) == "stale"


def test_the_server_clock_is_the_injected_one_not_the_wall_clock(keys, nonces):
    long_ago = datetime(2021, 3, 1, 12, 0, tzinfo=UTC)
    request = signed(created=int(long_ago.timestamp()))
    assert check(request, keys, nonces, now=long_ago).key_id == KEY_ID


def test_an_expired_signature_is_refused(keys, nonces):
    request = signed()
    value = request.headers["signature-input"] + f";expires={NOW_S - 1}"
    # the signature no longer matches either, but the expiry is reported first
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "expired"


def test_a_naive_server_clock_is_a_programming_error(keys, nonces):
    with pytest.raises(ValueError, match="timezone-aware"):
        check(signed(), keys, nonces, now=NOW.replace(tzinfo=None))


# --- nonce -----------------------------------------------------------------------------------------------------------


def test_a_signature_without_nonce_is_refused(keys, nonces):
    assert reason_of(signed(use_nonce=False), keys, nonces) == "bad_nonce"


@pytest.mark.parametrize("nonce", ["x" * 15, "x" * 129])
def test_a_nonce_outside_16_to_128_characters_is_refused(keys, nonces, nonce):
    assert reason_of(signed(nonce=nonce), keys, nonces) == "bad_nonce"


@pytest.mark.parametrize("nonce", ["x" * 16, "x" * 128])
def test_nonces_of_16_and_128_characters_are_accepted(keys, nonces, nonce):
    assert check(signed(nonce=nonce), keys, nonces).key_id == KEY_ID


def test_a_non_string_nonce_is_refused(keys, nonces):
    request = signed(nonce="n" * 20)
    value = request.headers["signature-input"].replace('nonce="' + "n" * 20 + '"', "nonce=123456789012345")
    assert reason_of(with_headers(request, signature_input=value), keys, nonces) == "bad_nonce"


def test_a_replayed_request_is_refused_the_second_time(keys, nonces):
    request = signed()
    check(request, keys, nonces)
    assert reason_of(request, keys, nonces) == "replayed_nonce"


def test_the_same_nonce_under_another_key_is_independent(nonces):
    other = record(key_id="pk_test_2", public_key_pem=OTHER_PEM)
    keys = FakeKeys(record(), other)
    check(signed(nonce="same-nonce-123456"), keys, nonces)
    assert check(signed(nonce="same-nonce-123456", key_id="pk_test_2", private_key=OTHER_KEY), keys, nonces)


def test_a_nonce_is_not_consumed_when_the_signature_is_invalid(keys, nonces):
    nonce = "n" * 24
    assert reason_of(signed(nonce=nonce, private_key=OTHER_KEY), keys, nonces) == "bad_signature"
    assert nonces.calls == []
    assert check(signed(nonce=nonce), keys, nonces).key_id == KEY_ID


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"revoked_at": NOW - timedelta(seconds=1)}, "revoked_key"), ({"pharmacy_active": False}, "suspended_pharmacy")],
)
def test_a_nonce_is_not_consumed_by_a_refused_key(nonces, changes, reason):
    assert reason_of(signed(), FakeKeys(record(**changes)), nonces) == reason
    assert nonces.calls == []


# --- revocation and suspension ---------------------------------------------------------------------------------------


def test_a_revoked_key_is_refused(nonces):
    keys = FakeKeys(record(revoked_at=NOW - timedelta(days=1)))
    with pytest.raises(AuthenticationError) as caught:
        check(signed(), keys, nonces)
    assert (caught.value.reason, caught.value.key_id) == ("revoked_key", KEY_ID)


def test_a_key_revoked_at_this_very_instant_is_refused(nonces):
    assert reason_of(signed(), FakeKeys(record(revoked_at=NOW)), nonces) == "revoked_key"


def test_a_revocation_scheduled_in_the_future_is_not_yet_effective(nonces):
    keys = FakeKeys(record(revoked_at=NOW + timedelta(hours=1)))
    assert check(signed(), keys, nonces).key_id == KEY_ID


def test_a_suspended_pharmacy_is_refused(nonces):
    assert reason_of(signed(), FakeKeys(record(pharmacy_active=False)), nonces) == "suspended_pharmacy"


# --- public_key_from_pem ---------------------------------------------------------------------------------------------


def test_public_key_from_pem_loads_an_ed25519_key():
    key = public_key_from_pem(PUBLIC_PEM)
    assert key.public_bytes_raw() == PRIVATE_KEY.public_key().public_bytes_raw()


def test_public_key_from_pem_rejects_an_ec_p256_key():
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        public_key_from_pem(pem)


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "clé",
    ],
)
def test_public_key_from_pem_rejects_what_is_not_a_public_key_pem(pem):
    with pytest.raises(ValueError, match="PEM"):
        public_key_from_pem(pem)


def test_public_key_from_pem_rejects_a_private_key():
    pem = PRIVATE_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError, match="PEM"):
        public_key_from_pem(pem)


def test_revocation_is_only_reported_for_requests_whose_signature_verified(nonces):
    keys = FakeKeys(record(revoked_at=NOW - timedelta(days=1)))
    assert reason_of(signed(private_key=OTHER_KEY), keys, nonces) == "bad_signature"
