"""Receipts (contract §6) over moto: the keys (sealed at rest, opened once per process, rotated), the receipts as a
JOSE library the product does not use verifies them (joserfc), the national receipt and the statement's counts."""

from __future__ import annotations

import base64
import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from chalicelib import bootstrap
from tests.integration.helpers import (
    PERSONAL_VALUES,
    attribute_strings,
    audit_events,
    distinctive_body,
    encode,
    get_result,
    get_statement,
    post_result,
    problem,
    scan,
)


def jwks(client: Any) -> dict[str, Any]:
    response = client.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    document: dict[str, Any] = json.loads(response.body)
    return document


def joserfc_verify(receipt: str, keys: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a receipt, verified by joserfc with the JWKS alone (not Relais's code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "EdDSA is deprecated via RFC 9864": the contract names EdDSA
        verified = jws.deserialize_compact(receipt, KeySet.import_key_set(keys), algorithms=["EdDSA"])
    return dict(verified.headers()), json.loads(verified.payload)


def receipt_items() -> list[dict[str, Any]]:
    from chalicelib.adapters.receipt_keys import ITEM_KEY

    return [item for item in scan("RELAIS_STATE_TABLE") if item["pk"]["S"] == ITEM_KEY]


class KmsCalls:
    """KMS operations of this process, with the envelope purpose they were made for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: Any, params: Any, **_: Any) -> None:
        self.calls.append((model.name, params.get("EncryptionContext", {}).get("purpose", "")))

    def of(self, purpose: str) -> list[str]:
        return [name for name, used_for in self.calls if used_for == purpose]


# -- receipts of POST /v1/results -----------------------------------------------------------------------------------


def test_every_201_and_200_carries_a_receipt_a_jose_library_verifies_with_the_jwks_alone(client, pharmacy):
    body = encode(distinctive_body("RCPT-0001"))

    created = post_result(client, pharmacy, body)
    replay = post_result(client, pharmacy, body)

    assert (created.status_code, replay.status_code) == (201, 200)
    receipt = json.loads(created.body)["receipt"]
    header, payload = joserfc_verify(receipt, jwks(client))
    assert header["typ"] == "relais-receipt+jwt" and header["alg"] == "EdDSA"
    assert set(payload) == {"iss", "result_id", "pharmacy_id", "pharmacy_reference", "body_sha256", "accepted_at"}
    assert payload["iss"] == "relais:test"
    assert payload["result_id"] == json.loads(created.body)["id"]
    assert payload["pharmacy_id"] == pharmacy.pharmacy_id
    assert payload["pharmacy_reference"] == "RCPT-0001"
    from chalicelib.domain.receipts import body_sha256

    assert payload["body_sha256"] == body_sha256(body)
    accepted_at = datetime.fromisoformat(payload["accepted_at"].replace("Z", "+00:00"))
    assert abs(accepted_at - datetime.now(UTC)) < timedelta(minutes=1)
    # the 200 replay of the same bytes signs the same payload again: the very same receipt (Ed25519 is deterministic)
    assert json.loads(replay.body)["receipt"] == receipt


def test_a_receipt_altered_or_signed_by_another_key_fails_the_jose_library_too(client, pharmacy):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from chalicelib.domain.receipts import b64url, b64url_decode, sign

    receipt = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]
    header, payload, _signature = receipt.split(".")
    claims = json.loads(b64url_decode(payload))
    forged_payload = b64url(json.dumps({**claims, "accepted_at": "2020-01-01T00:00:00Z"}).encode())
    kid = json.loads(b64url_decode(header))["kid"]

    for forged in (f"{header}.{forged_payload}.{_signature}", sign(Ed25519PrivateKey.generate(), kid, claims)):
        with pytest.raises(BadSignatureError):
            joserfc_verify(forged, jwks(client))


def test_no_receipt_is_signed_and_nothing_is_stored_when_the_signing_key_cannot_be_opened(client, pharmacy):
    from chalicelib.errors import DependencyUnavailableError

    class Broken:
        def signer(self) -> Any:
            raise DependencyUnavailableError("kms")

    bootstrap.override(receipt_keyring=Broken())
    response = post_result(client, pharmacy, distinctive_body())

    assert response.status_code == 503
    assert problem(response)["status"] == 503
    assert scan("RELAIS_RESULTS_TABLE") == []


class OpensOnce:
    """The stage's keyring, whose every look at the signing key after the first fails (a refresh of the keys' copy
    or a rotated-in key to open, after the commit, would be a DynamoDB or KMS call that can fail)."""

    def __init__(self) -> None:
        from chalicelib.adapters.receipt_keys import ReceiptKeyring

        self.keyring = ReceiptKeyring(bootstrap.envelope(), bootstrap.clock)
        self.calls = 0

    def signer(self) -> Any:
        from chalicelib.errors import DependencyUnavailableError

        self.calls += 1
        if self.calls > 1:
            raise DependencyUnavailableError("kms")
        return self.keyring.signer()

    def published(self, retention_days: int) -> dict[str, Any]:
        return self.keyring.published(retention_days)


def test_a_stored_result_is_signed_with_the_key_opened_before_its_commit(client, pharmacy):
    body = encode(distinctive_body("RCPT-ONCE"))
    keys = []
    for expected in (201, 200):  # a new result, then its identical replay: each request looks at the key once
        keys.append(OpensOnce())
        bootstrap.override(receipt_keyring=keys[-1])
        response = post_result(client, pharmacy, body)

        assert response.status_code == expected, response.body
        _header, payload = joserfc_verify(json.loads(response.body)["receipt"], jwks(client))
        assert payload["pharmacy_reference"] == "RCPT-ONCE"
    assert [k.calls for k in keys] == [1, 1]
    assert len(scan("RELAIS_RESULTS_TABLE")) == 1


def test_a_statement_is_signed_with_the_key_opened_before_its_commit(client, pharmacy):
    assert post_result(client, pharmacy, distinctive_body()).status_code == 201
    bootstrap.override(receipt_keyring=OpensOnce())

    response = get_statement(client, pharmacy, datetime.now(UTC).strftime("%Y-%m"))

    assert response.status_code == 200, response.body
    assert joserfc_verify(json.loads(response.body)["receipt"], jwks(client))[1]["accepted"] == 1


# -- the keys -------------------------------------------------------------------------------------------------------


def test_the_signing_key_is_sealed_at_rest_and_opened_once_per_cold_process(client, pharmacy):
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from chalicelib.adapters.receipt_keys import PURPOSE

    assert post_result(client, pharmacy, distinctive_body()).status_code == 201  # the first process makes the key
    (item,) = receipt_items()
    kid, private_key = bootstrap.receipt_keyring().signer()
    raw = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    stored = "".join(attribute_strings(item))
    in_clear = {
        "raw": raw.decode("latin-1"),
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }
    for form, text in in_clear.items():
        assert text.lower() not in stored.lower() if form == "hex" else text not in stored, f"private key in {form}"
    assert kid in stored and "expires_at" not in item  # kept for good: retired keys stay published

    bootstrap.override()  # a cold process
    calls = KmsCalls()
    bootstrap.botocore_session().register("before-parameter-build.kms.*", calls)
    for _ in range(30):
        assert post_result(client, pharmacy, distinctive_body()).status_code == 201
    jwks(client)
    assert calls.of(PURPOSE) == ["Decrypt"], "the receipt key opens once per process, then stays in memory"


def test_two_cold_processes_racing_for_the_first_key_end_up_with_one(aws, monkeypatch):
    from chalicelib.adapters.receipt_keys import ReceiptKeyring

    first = ReceiptKeyring(bootstrap.envelope(), bootstrap.clock)
    second = ReceiptKeyring(bootstrap.envelope(), bootstrap.clock)
    bootstrap.registry()  # binds the tables
    kid = first.signer()[0]
    reads = iter([None])  # the second read before the first wrote: it makes a key too, and loses the write
    real_read = ReceiptKeyring._read
    monkeypatch.setattr(second, "_read", lambda: next(reads, None) or real_read())

    assert second.signer()[0] == kid
    assert len(receipt_items()[0]["keys"]["L"]) == 1


def test_a_rotation_that_lost_a_race_writes_nothing(aws, monkeypatch):
    from chalicelib.adapters.receipt_keys import ReceiptKeyring
    from chalicelib.errors import ConflictError

    bootstrap.registry()
    keyring = ReceiptKeyring(bootstrap.envelope(), bootstrap.clock)
    keyring.signer()
    stale = ReceiptKeyring._read()
    ReceiptKeyring(bootstrap.envelope(), bootstrap.clock).rotate()  # another operator's, meanwhile
    monkeypatch.setattr(keyring, "_read", lambda: stale)

    with pytest.raises(ConflictError, match="changed meanwhile"):
        keyring.rotate()
    assert len(receipt_items()[0]["keys"]["L"]) == 2


def test_a_sealed_key_whose_public_half_was_swapped_does_not_sign(aws):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from chalicelib.adapters.receipt_keys import ITEM_KEY, ReceiptKeyring
    from chalicelib.domain.receipts import b64url
    from chalicelib.errors import DecryptionError
    from tests.integration.helpers import dynamodb, table_name

    bootstrap.registry()
    ReceiptKeyring(bootstrap.envelope(), bootstrap.clock).signer()  # made, and opened by its maker only
    other = b64url(Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    dynamodb().update_item(
        TableName=table_name("RELAIS_STATE_TABLE"),
        Key={"pk": {"S": ITEM_KEY}},
        UpdateExpression="SET #keys[0].x = :x",
        ExpressionAttributeNames={"#keys": "keys"},
        ExpressionAttributeValues={":x": {"S": other}},
    )

    with pytest.raises(DecryptionError):
        ReceiptKeyring(bootstrap.envelope(), bootstrap.clock).signer()  # a cold process opens it


def test_rotation_publishes_the_new_key_first_then_signs_with_it_and_keeps_the_old_one_published(client, pharmacy):
    from chalicelib.adapters.receipt_keys import ACTIVATION_DELAY, PUBLISHED_AFTER_RETENTION
    from chalicelib.errors import ConflictError

    old = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]
    old_kid = joserfc_verify(old, jwks(client))[0]["kid"]

    new_key = bootstrap.receipt_keyring().rotate()
    with pytest.raises(ConflictError):
        bootstrap.receipt_keyring().rotate()  # one waiting key at a time

    published = {k["kid"] for k in jwks(client)["keys"]}
    assert published == {old_kid, new_key.kid}, "the new key is published before it signs"
    waiting = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]
    assert joserfc_verify(waiting, jwks(client))[0]["kid"] == old_kid

    later = datetime.now(UTC) + ACTIVATION_DELAY + timedelta(seconds=1)
    bootstrap.override(clock=lambda: later)
    signed_later = json.loads(post_result(client, pharmacy, distinctive_body(), created=int(later.timestamp())).body)
    keys = jwks(client)
    assert joserfc_verify(signed_later["receipt"], keys)[0]["kid"] == new_key.kid
    assert joserfc_verify(old, keys)[1]["result_id"], "a receipt of the retired key still verifies"
    (retired,) = [k for k in keys["keys"] if k["kid"] == old_kid]
    assert "retired_at" in retired

    retention = timedelta(days=bootstrap.settings().result_retention_days)
    gone = later + retention + PUBLISHED_AFTER_RETENTION + timedelta(days=1)
    bootstrap.override(clock=lambda: gone)
    assert {k["kid"] for k in jwks(client)["keys"]} == {new_key.kid}, "retention plus a year later, it goes"


def test_reading_the_keys_never_makes_one_only_signing_does(cli, client, pharmacy, capsys):
    empty = client.http.get("/.well-known/jwks.json")
    assert json.loads(empty.body) == {"keys": []}
    assert empty.headers["Cache-Control"] == "no-store", "an empty set must not be cached past the first receipt"
    capsys.readouterr()  # the requests' logs
    code, document, _ = relais(capsys, "receipt", "verify", "a.b.c")  # the stage's keys, read as the route does
    assert code == 1, document
    assert receipt_items() == [], "a read made the stage's first key"

    receipt = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]  # same process

    (key,) = jwks(client)["keys"]
    assert joserfc_verify(receipt, {"keys": [key]})[0]["kid"] == key["kid"]
    assert len(receipt_items()) == 1


def test_an_immediate_rotation_is_not_held_up_by_a_waiting_key_and_only_its_key_signs(cli, client, pharmacy, capsys):
    from chalicelib.adapters.receipt_keys import ACTIVATION_DELAY

    old = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]
    old_kid = joserfc_verify(old, jwks(client))[0]["kid"]
    capsys.readouterr()  # the requests' logs
    code, waiting, _ = relais(capsys, "receipt", "rotate-key", "--yes")
    assert code == 0, waiting

    code, emergency, _ = relais(capsys, "receipt", "rotate-key", "--now", "--yes")

    assert code == 0, emergency
    bootstrap.override()  # every process, once its copy of the keys is refreshed
    keys = jwks(client)
    assert {k["kid"] for k in keys["keys"]} == {old_kid, waiting["kid"], emergency["kid"]}, "all stay published"
    now = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]
    assert joserfc_verify(now, keys)[0]["kid"] == emergency["kid"]
    assert joserfc_verify(old, keys)[1]["result_id"], "the old key's receipts still verify"
    retired = {k["kid"] for k in keys["keys"] if "retired_at" in k}
    assert retired == {old_kid, waiting["kid"]}

    later = datetime.now(UTC) + ACTIVATION_DELAY + timedelta(seconds=1)  # when the waiting key would have started
    bootstrap.override(clock=lambda: later)
    signed_later = post_result(client, pharmacy, distinctive_body(), created=int(later.timestamp()))
    assert joserfc_verify(json.loads(signed_later.body)["receipt"], jwks(client))[0]["kid"] == emergency["kid"]


# -- national receipt -----------------------------------------------------------------------------------------------


def test_the_national_receipt_comes_once_the_result_is_reported(client, pharmacy):
    answer = json.loads(post_result(client, pharmacy, distinctive_body()).body)
    rid = answer["id"]
    pending = json.loads(get_result(client, pharmacy, rid).body)
    assert "receipt" not in pending["national"]

    record = bootstrap.store().get_result(rid)
    reported_at = datetime.now(UTC).replace(microsecond=0)
    bootstrap.national_statuses().mark_reported(
        rid, reported_at, pharmacy_id=pharmacy.pharmacy_id, received_at=record.received_at
    )

    national = json.loads(get_result(client, pharmacy, rid).body)["national"]
    assert national["status"] == "reported"
    header, payload = joserfc_verify(national["receipt"], jwks(client))
    assert header["typ"] == "relais-receipt+jwt"
    assert payload == {
        "iss": "relais:test",
        "result_id": rid,
        "pharmacy_id": pharmacy.pharmacy_id,
        "reported_at": reported_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# -- statements -----------------------------------------------------------------------------------------------------


def _report(result_id: str) -> None:
    record = bootstrap.store().get_result(result_id)
    bootstrap.national_statuses().mark_reported(
        result_id,
        datetime.now(UTC),
        version=record.version,
        pharmacy_id=record.pharmacy_id,
        received_at=record.received_at,
    )


def test_the_statement_counts_billed_results_once_and_only_the_callers(client, pharmacy, other_pharmacy):
    month = datetime.now(UTC).strftime("%Y-%m")
    bodies = [encode(distinctive_body()) for _ in range(3)]
    ids = [json.loads(post_result(client, pharmacy, body).body)["id"] for body in bodies]
    assert post_result(client, pharmacy, bodies[0]).status_code == 200  # a duplicate: never counted
    foreign = json.loads(post_result(client, other_pharmacy, distinctive_body()).body)["id"]
    for rid in (ids[0], ids[1], foreign):
        _report(rid)
    _report(ids[0])  # a second report of the same result (a later version, a duplicate message): counted once
    statuses = bootstrap.national_statuses()
    from chalicelib.adapters.tables import ResultItem

    ResultItem(id=ids[1]).update(actions=[ResultItem.national_status.set("failed")])  # as if dead-lettered
    assert statuses.mark_pending(ids[1])  # a redrive, then reported again: still once
    _report(ids[1])

    response = get_statement(client, pharmacy, month)

    assert response.status_code == 200, response.body
    statement = json.loads(response.body)
    assert {k: v for k, v in statement.items() if k != "receipt"} == {
        "pharmacy_id": pharmacy.pharmacy_id,
        "month": month,
        "accepted": 3,
        "reported": 2,
    }
    _header, payload = joserfc_verify(statement["receipt"], jwks(client))
    assert {k: payload[k] for k in ("pharmacy_id", "month", "accepted", "reported")} == {
        "pharmacy_id": pharmacy.pharmacy_id,
        "month": month,
        "accepted": 3,
        "reported": 2,
    }
    assert payload["iss"] == "relais:test" and "issued_at" in payload
    other = json.loads(get_statement(client, other_pharmacy, month).body)
    assert (other["accepted"], other["reported"]) == (1, 1)
    twelve_before = datetime.now(UTC).year * 12 + datetime.now(UTC).month - 1 - 12
    earlier = json.loads(
        get_statement(client, pharmacy, f"{twelve_before // 12:04d}-{twelve_before % 12 + 1:02d}").body
    )
    assert (earlier["accepted"], earlier["reported"]) == (0, 0)


def test_the_statement_is_audited_as_one_event_without_personal_data(client, pharmacy):
    month = datetime.now(UTC).strftime("%Y-%m")
    assert get_statement(client, pharmacy, month).status_code == 200

    (event,) = audit_events("statement.read")
    assert (event["outcome"], event["pharmacy_id"], event.get("record")) == ("success", pharmacy.pharmacy_id, None)
    assert event["reason"] == f"month:{month}"


@pytest.mark.parametrize(
    ("month", "message"),
    [
        (None, "is required (YYYY-MM)"),
        ("2026-13", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("2026-1", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("november", "must be a month as YYYY-MM, e.g. 2026-11"),
        ("9999-12", "is in the future: a statement covers a month begun or past"),
    ],
)
def test_a_malformed_or_future_month_is_a_400_naming_the_field(client, pharmacy, month, message):
    response = get_statement(client, pharmacy, month)

    assert response.status_code == 400
    assert problem(response)["errors"] == [{"field": "month", "message": message}]
    (event,) = audit_events("statement.read")
    assert event["outcome"] == "rejected"


@pytest.mark.parametrize("month", ["1900-01", "2020-01"])
def test_a_month_older_than_its_counters_is_a_400_not_signed_zeros(client, pharmacy, month):
    response = get_statement(client, pharmacy, month)

    assert response.status_code == 400
    (error,) = problem(response)["errors"]
    assert error["field"] == "month"
    assert error["message"].startswith("is older than the counts kept: the oldest month with a statement now is ")
    assert "receipt" not in response.body.decode()
    (event,) = audit_events("statement.read")
    assert event["outcome"] == "rejected"


def test_an_unsigned_statement_request_is_a_401(client):
    response = client.http.get("/v1/statement?month=2026-11")
    assert response.status_code == 401


def test_the_receipt_item_and_the_counters_hold_no_personal_data(client, pharmacy):
    body = distinctive_body("RCPT-PRIVATE-REF")
    rid = json.loads(post_result(client, pharmacy, body).body)["id"]
    _report(rid)
    get_statement(client, pharmacy, datetime.now(UTC).strftime("%Y-%m"))

    state = json.dumps([list(attribute_strings(item)) for item in scan("RELAIS_STATE_TABLE")])
    for value in (*PERSONAL_VALUES, "RCPT-PRIVATE-REF"):
        assert value not in state


# -- relais receipt verify / rotate-key (env mode: the stage's keys read as the route serves them) ------------------


@pytest.fixture
def cli(aws, monkeypatch, tmp_path):
    monkeypatch.setenv("RELAIS_CLI_USE_ENV", "1")
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path / "state"))
    return aws


def relais(capsys: Any, *argv: str) -> tuple[int, dict[str, Any], str]:
    from relais_cli.main import main

    code = main(["--json", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_relais_receipt_verify_accepts_a_receipt_and_its_body(cli, client, pharmacy, capsys, tmp_path):
    body = encode(distinctive_body())
    receipt = json.loads(post_result(client, pharmacy, body).body)["receipt"]
    (tmp_path / "body.json").write_bytes(body)
    capsys.readouterr()

    code, report, _ = relais(capsys, "receipt", "verify", receipt, "--body", str(tmp_path / "body.json"))

    assert code == 0, report
    assert report["valid"] is True and report["body_matches"] is True
    assert report["payload"]["pharmacy_id"] == pharmacy.pharmacy_id


def test_relais_receipt_verify_refuses_each_kind_of_bad_receipt_clearly(cli, client, pharmacy, capsys, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from chalicelib.domain.receipts import b64url, b64url_decode, sign

    body = encode(distinctive_body())
    receipt = json.loads(post_result(client, pharmacy, body).body)["receipt"]
    header, payload, signature = receipt.split(".")
    claims = json.loads(b64url_decode(payload))
    kid = json.loads(b64url_decode(header))["kid"]
    tampered = f"{header}.{b64url(json.dumps({**claims, 'result_id': 'X' * 24}).encode())}.{signature}"
    (tmp_path / "other.json").write_bytes(body + b" ")
    (tmp_path / "keys.json").write_text(json.dumps(jwks(client)))
    capsys.readouterr()

    cases = [
        ((tampered,), "(bad_signature)"),
        ((sign(Ed25519PrivateKey.generate(), kid, claims),), "(bad_signature)"),
        ((sign(Ed25519PrivateKey.generate(), "unknown-kid-0000000000", claims),), "(unknown_kid)"),
        ((receipt, "--body", str(tmp_path / "other.json")), "(body_mismatch)"),
        (("not a receipt",), "(malformed)"),
        ((tampered, "--jwks", str(tmp_path / "keys.json")), "(bad_signature)"),
    ]
    for argv, reason in cases:
        code, document, err = relais(capsys, "receipt", "verify", *argv)
        assert code == 1, argv
        assert reason in document["error"], document
        assert "relais: error: receipt does not" in err


def test_relais_receipt_rotate_key_adds_a_published_key(cli, client, capsys):
    bootstrap.receipt_keyring().signer()  # the stage's first key
    code, document, _ = relais(capsys, "receipt", "rotate-key", "--yes")

    assert code == 0, document
    assert document["kid"] in {k["kid"] for k in jwks(client)["keys"]}
    assert len(jwks(client)["keys"]) == 2
    code, document, _ = relais(capsys, "receipt", "rotate-key", "--yes")
    assert code == 1 and "not rotated" in document["error"]


def test_a_starting_stage_makes_its_first_key_once_and_the_jwks_is_cacheable_from_then(client, pharmacy):
    keyring = bootstrap.receipt_keyring()
    kid = keyring.ensure_key()
    assert keyring.ensure_key() == kid, "a second start keeps the key"
    answer = client.http.get("/.well-known/jwks.json")
    assert [k["kid"] for k in json.loads(answer.body)["keys"]] == [kid]
    assert answer.headers["Cache-Control"] == "public, max-age=300"
    receipt = json.loads(post_result(client, pharmacy, distinctive_body()).body)["receipt"]
    assert joserfc_verify(receipt, jwks(client))[0]["kid"] == kid
