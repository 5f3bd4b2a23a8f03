"""A 401 says why on the stages that explain (local, sandbox) and nothing anywhere else; the published test key
works on the local stage only."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib import bootstrap
from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
from tests.integration.helpers import (
    RESULTS_PATH,
    PharmacyActor,
    count_results,
    distinctive_body,
    encode,
    post_result,
    problem,
    signed_headers,
)

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "docs" / "signature-test-vectors.json").read_text())


def _stage(name: str, explain: int) -> None:
    pinned = "localhost" if name == "prod" else ""  # prod serves no pharmacy without its allowed authorities
    bootstrap.override(
        settings=replace(bootstrap.settings(), stage=name, explain_auth_failures=explain, allowed_authorities=pinned)
    )


def _test_key_pharmacy() -> PharmacyActor:
    key = VECTORS["key"]
    pharmacy_id, key_id = f"ph_{new_id(16)}", new_id()
    bootstrap.registry().add_pharmacy(
        Pharmacy(pharmacy_id, "750000001", "Pharmacie des vecteurs", "active"),
        PharmacyKey(key_id, pharmacy_id, key["public_key_pem"], datetime.now(UTC)),
    )
    return PharmacyActor(pharmacy_id, key_id, key["private_key_pem"].encode(), key["public_key_pem"], "750000001")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"created": int(datetime.now(UTC).timestamp()) - 400}, "created_out_of_window"),
        ({"covered": ("@method", "@authority", "@path", "content-type")}, "component_missing:content-digest"),
        ({"nonce": "short"}, "nonce_invalid"),
        ({"include_alg": False}, "alg_not_ed25519"),
    ],
)
@pytest.mark.parametrize("stage", ["local", "sandbox"])
def test_a_401_says_why_on_local_and_sandbox(client, pharmacy, stage, change, reason):
    _stage(stage, 1)
    response = post_result(client, pharmacy, distinctive_body(), **change)
    assert response.status_code == 401
    assert problem(response) == {
        "type": "urn:relais:problem:not-authenticated",
        "title": "Not authenticated",
        "status": 401,
        "reason": reason,
    }
    assert count_results() == 0


def test_a_body_changed_after_signing_is_a_digest_mismatch_and_an_unknown_key_is_named(client, pharmacy):
    _stage("sandbox", 1)
    raw = encode(distinctive_body())
    headers = signed_headers(pharmacy, "POST", RESULTS_PATH, raw)
    changed = raw.replace(b'"result": "negative"', b'"result": "positive"')
    assert changed != raw
    tampered = client.http.post(RESULTS_PATH, body=changed, headers=headers)
    assert problem(tampered)["reason"] == "digest_mismatch"
    stranger = replace(pharmacy, key_id="no-such-key")
    assert problem(post_result(client, stranger, distinctive_body()))["reason"] == "unknown_key"


@pytest.mark.parametrize("stage", ["prod", "test"])
def test_every_other_stage_keeps_one_identical_401(client, pharmacy, stage):
    _stage(stage, 0)
    stale = post_result(client, pharmacy, distinctive_body(), created=int(datetime.now(UTC).timestamp()) - 400)
    unknown = post_result(client, replace(pharmacy, key_id="no-such-key"), distinctive_body())
    assert stale.status_code == unknown.status_code == 401
    assert stale.body == unknown.body
    assert set(problem(stale)) == {"type", "title", "status"}


def test_the_published_test_key_works_on_local_only(client, aws):
    actor = _test_key_pharmacy()
    _stage("sandbox", 1)
    refused = post_result(client, actor, distinctive_body())
    assert (refused.status_code, problem(refused)["reason"]) == (401, "key_refused")
    _stage("local", 1)
    accepted = post_result(client, actor, distinctive_body())
    assert accepted.status_code == 201, accepted.body
