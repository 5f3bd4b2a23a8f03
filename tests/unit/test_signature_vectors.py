"""``docs/signature-test-vectors.json``: reproducible, in the published shape, and true for Relais' own verifier."""

from __future__ import annotations

import importlib.util
import json
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chalicelib.errors import AuthenticationError
from chalicelib.services.authn import (
    FAILURE_REASONS,
    PUBLISHED_TEST_PUBLIC_KEY,
    KeyRecord,
    Principal,
    SignedRequest,
    authenticate,
    public_key_from_pem,
    public_reason,
)
from tests.signing import new_keypair, to_signed_request
from tests.unit.test_authn import FakeKeys, FakeNonces

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "signature-test-vectors.json"
GENERATOR = ROOT / "docs" / "examples" / "make_signature_vectors.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_signature_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


VECTOR_LIST = _document()["vectors"]
KEY = _document()["key"]


def _keys(public_key_pem: str = KEY["public_key_pem"]) -> FakeKeys:
    return FakeKeys(
        KeyRecord(
            key_id=KEY["key_id"],
            pharmacy_id="ph_vectors",
            public_key_pem=public_key_pem,
            revoked_at=None,
            pharmacy_active=True,
        )
    )


def _request(vector: dict[str, Any]) -> SignedRequest:
    request = vector["request"]
    body = None if request["body"] is None else request["body"].encode("utf-8")
    return to_signed_request(request["method"], request["url"], request["headers"], body)


def _verify(vector: dict[str, Any], keys: FakeKeys | None = None, *, accept_test_key: bool = True) -> Principal:
    return authenticate(
        _request(vector),
        keys=keys or _keys(),
        nonces=FakeNonces(),
        now=parsedate_to_datetime(vector["request"]["headers"]["Date"]),
        accept_test_key=accept_test_key,
    )


def test_the_file_is_what_the_generator_writes():
    assert VECTORS.read_text(encoding="utf-8") == _generator().render()


def test_the_document_has_exactly_the_published_shape():
    document = _document()
    assert set(document) == {"key", "vectors"}
    assert set(document["key"]) == {"key_id", "alg", "private_key_pem", "public_key_pem"}
    assert document["key"]["alg"] == "ed25519"
    for vector in document["vectors"]:
        expected = {"name", "valid", "request", "signature_base", "signature_input", "signature"}
        assert set(vector) == expected | ({"why"} if not vector["valid"] else set())
        assert set(vector["request"]) == {"method", "url", "headers", "body"}
        assert vector["request"]["body"] is None or isinstance(vector["request"]["body"], str)
        assert vector["signature_input"] == vector["request"]["headers"]["Signature-Input"]
        assert vector["signature"] == vector["request"]["headers"]["Signature"]
        assert vector["signature_input"].split("=", 1)[1] in vector["signature_base"].splitlines()[-1]
    names = {v["name"] for v in document["vectors"]}
    assert {"result submission", "status read", "resend"} <= names
    assert {"tampered body", "digest not covered", "created outside the window", "wrong alg"} <= names


def test_the_key_is_the_published_test_key_that_relais_knows():
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(KEY["private_key_pem"].encode(), password=None)
    public = public_key_from_pem(KEY["public_key_pem"])
    assert private.public_key() == public  # type: ignore[comparison-overlap]
    assert PUBLISHED_TEST_PUBLIC_KEY in KEY["public_key_pem"].replace("\n", "")


@pytest.mark.parametrize("vector", [v for v in VECTOR_LIST if v["valid"]], ids=lambda v: v["name"])
def test_a_valid_vector_verifies(vector):
    assert _verify(vector) == Principal(key_id=KEY["key_id"], pharmacy_id="ph_vectors")


@pytest.mark.parametrize("vector", [v for v in VECTOR_LIST if not v["valid"]], ids=lambda v: v["name"])
def test_an_invalid_vector_fails_for_the_stated_reason(vector):
    with pytest.raises(AuthenticationError) as caught:
        _verify(vector)
    assert public_reason(caught.value) == vector["why"].split(": ", 1)[0]


@pytest.mark.parametrize("vector", [v for v in VECTOR_LIST if v["valid"]][:1], ids=lambda v: v["name"])
def test_the_published_key_is_refused_where_the_test_key_is_not_accepted(vector):
    with pytest.raises(AuthenticationError) as caught:
        _verify(vector, accept_test_key=False)
    assert caught.value.reason == "test_key"
    assert public_reason(caught.value) == "key_refused"


def test_a_valid_vector_fails_with_another_key():
    _, other_pem = new_keypair()
    with pytest.raises(AuthenticationError) as caught:
        _verify(VECTOR_LIST[0], _keys(other_pem))
    assert public_reason(caught.value) == "signature_mismatch"


def test_every_audited_reason_has_a_public_reason():
    for reason in FAILURE_REASONS:
        assert public_reason(AuthenticationError(reason)) != "signature_invalid"
    assert public_reason(AuthenticationError("not_a_reason")) == "signature_invalid"
    assert public_reason(AuthenticationError("missing_components", component="content-type")) == (
        "component_missing:content-type"
    )


def test_docs_api_shows_the_submission_vector_as_it_is():
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    vector = next(v for v in VECTOR_LIST if v["name"] == "result submission")
    assert f"```\n{vector['signature_base']}\n```" in api
    assert f"Signature-Input: {vector['signature_input']}\nSignature: {vector['signature']}\n" in api
    with_date = next(v for v in VECTOR_LIST if v["name"] == "result submission also covering date")
    assert f"```\n{with_date['signature_base']}\n```" in api
