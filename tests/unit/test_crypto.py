"""The KMS envelope (``chalicelib/adapters/crypto.py``) on moto in-process, provisioned like production."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.errors import DecryptionError, DependencyUnavailableError

PURPOSE = "result"


def _context(**changes: str) -> dict[str, str]:
    context = {"purpose": PURPOSE, "result_id": secrets.token_urlsafe(18), "pharmacy_id": "ph_0123456789"}
    context.update(changes)
    return context


class KmsCalls:
    """Counts the KMS operations made through bootstrap's botocore session."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)


@pytest.fixture
def kms_calls(aws) -> KmsCalls:
    """Registered on the shared session *before* the envelope builds its KMS client (clients copy hooks)."""
    calls = KmsCalls()
    bootstrap.botocore_session().register("before-call.kms.*", calls)
    return calls


@pytest.fixture
def envelope(aws, kms_calls) -> Any:
    return bootstrap.envelope()


def test_a_round_trip_returns_the_plaintext(envelope):
    context = _context()

    assert envelope.decrypt(envelope.encrypt(b'{"nir":"x"}', context), context) == b'{"nir":"x"}'


def test_messages_use_the_committing_unsigned_suite_and_carry_opaque_ids_only(envelope):
    import io

    from aws_encryption_sdk.identifiers import Algorithm
    from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header

    context = _context()
    ciphertext = envelope.encrypt(b"payload", context)

    assert ciphertext[0] == 0x02, "message format version 2 (key commitment)"
    suite = Algorithm.get_by_id(int.from_bytes(ciphertext[1:3], "big"))
    assert suite is Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert suite.is_committing()
    assert not suite.is_signing()
    header, _ = deserialize_header(io.BytesIO(ciphertext))
    assert header.algorithm is suite
    assert header.encryption_context == {**context, "stage": bootstrap.settings().stage}
    assert [key.key_provider.key_info.decode() for key in header.encrypted_data_keys] == [
        bootstrap.settings().kms_key_arn
    ]


def _foreign_message(policy_name: str, suite_name: str) -> bytes:
    """A message made by another ESDK client under the same key, KMS context and header context."""
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import Algorithm
    from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider

    writer = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=getattr(aws_encryption_sdk.CommitmentPolicy, policy_name)
    )
    provider = StrictAwsKmsMasterKeyProvider(
        key_ids=[bootstrap.settings().kms_key_arn], botocore_session=bootstrap.botocore_session()
    )
    message, _ = writer.encrypt(
        source=b"payload",
        key_provider=provider,
        encryption_context={"purpose": PURPOSE, "stage": bootstrap.settings().stage},
        algorithm=getattr(Algorithm, suite_name),
    )
    return bytes(message)


def test_a_non_committing_message_is_refused_on_decrypt(envelope):
    from aws_encryption_sdk.exceptions import ActionNotAllowedError

    committing = _foreign_message("REQUIRE_ENCRYPT_ALLOW_DECRYPT", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY")
    legacy = _foreign_message("FORBID_ENCRYPT_ALLOW_DECRYPT", "AES_256_GCM_IV12_TAG16_HKDF_SHA256")

    assert envelope.decrypt(committing, {"purpose": PURPOSE}) == b"payload", "control: same key and context"
    with pytest.raises(DecryptionError) as raised:
        envelope.decrypt(legacy, {"purpose": PURPOSE})
    assert isinstance(raised.value.__cause__, ActionNotAllowedError)


NOT_OPAQUE = {
    "value with a space": {"purpose": PURPOSE, "result_id": "Claire Martin 1984"},
    "unknown key": {"purpose": PURPOSE, "nir": "284127512345687"},
    "not an opaque id": {"purpose": PURPOSE, "result_id": "claire@example.org"},
    "id too short to be random": {"purpose": PURPOSE, "result_id": "short"},
    "no purpose": {"result_id": secrets.token_urlsafe(18)},
    "purpose not a slug": {"purpose": "Result Of Claire"},
}


def test_the_encryption_context_must_be_opaque_ids_only(envelope, kms_calls):
    for case, context in NOT_OPAQUE.items():
        with pytest.raises(ValueError, match="context") as raised:
            envelope.encrypt(b"payload", context)
        for value in context.values():
            if value != PURPOSE:
                assert value not in str(raised.value), (case, "the error names the key, never the value")
    assert kms_calls.operations == [], "refused before anything reaches KMS"


def test_decrypting_with_a_non_opaque_context_is_refused_too(envelope):
    ciphertext = envelope.encrypt(b"payload", _context())

    with pytest.raises(ValueError, match="context"):
        envelope.decrypt(ciphertext, {"purpose": PURPOSE, "family_name": "Martin"})


def test_a_wrong_context_fails_with_decryption_error(envelope):
    context = _context()
    ciphertext = envelope.encrypt(b"payload", context)
    wrong_contexts = {
        "other result": {**context, "result_id": secrets.token_urlsafe(18)},
        "other pharmacy": {**context, "pharmacy_id": "ph_9876543210"},
        "other purpose": {**context, "purpose": "link"},
        "pharmacy missing": {k: v for k, v in context.items() if k != "pharmacy_id"},
        "extra id": {**context, "link_id": secrets.token_urlsafe(18)},
    }

    def refused(wrong: dict[str, str]) -> bool:
        try:
            envelope.decrypt(ciphertext, wrong)
        except DecryptionError:
            return True
        return False

    assert [case for case, wrong in wrong_contexts.items() if not refused(wrong)] == []
    assert envelope.decrypt(ciphertext, context) == b"payload"


def test_a_message_of_another_stage_fails_with_decryption_error(envelope):
    from chalicelib.adapters.crypto import Envelope

    context = _context()
    ciphertext = envelope.encrypt(b"payload", context)
    other_stage = Envelope(
        key_arn=bootstrap.settings().kms_key_arn, stage="prod", botocore_session=bootstrap.botocore_session()
    )

    with pytest.raises(DecryptionError):
        other_stage.decrypt(ciphertext, context)


def test_a_tampered_ciphertext_fails_with_decryption_error(envelope):
    context = _context()
    ciphertext = bytearray(envelope.encrypt(b"payload", context))
    ciphertext[-40] ^= 0x01

    with pytest.raises(DecryptionError):
        envelope.decrypt(bytes(ciphertext), context)


def test_a_thousand_encryptions_cost_at_most_two_kms_calls(envelope, kms_calls):
    contexts = [_context() for _ in range(1000)]

    ciphertexts = [envelope.encrypt(b'{"result":"negative"}', context) for context in contexts]

    assert 1 <= len(kms_calls.operations) <= 2, kms_calls.operations
    assert set(kms_calls.operations) <= {"GenerateDataKey", "Encrypt"}
    before = len(kms_calls.operations)
    for ciphertext, context in zip(ciphertexts[:200], contexts[:200], strict=True):
        assert envelope.decrypt(ciphertext, context) == b'{"result":"negative"}'
    assert len(kms_calls.operations) - before <= 1, "data keys are cached for decryption too"


def test_an_unavailable_kms_is_a_dependency_error(aws):
    from botocore.awsrequest import AWSResponse

    def kms_down(params: Any, **_: Any) -> Any:
        error = {"Error": {"Code": "KMSInternalException", "Message": "down"}, "ResponseMetadata": {}}
        return AWSResponse(params["url"], 500, {}, None), error

    bootstrap.botocore_session().register("before-call.kms.*", kms_down)

    with pytest.raises(DependencyUnavailableError):
        bootstrap.envelope().encrypt(b"payload", _context())


@pytest.mark.parametrize(
    "key",
    [
        "alias/relais-test",
        "arn:aws:kms:eu-west-3:123456789012:alias/relais-test",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "",
    ],
)
def test_the_envelope_refuses_anything_but_a_full_key_arn(key):
    from chalicelib.adapters.crypto import Envelope

    with pytest.raises(ValueError, match="ARN"):
        Envelope(key_arn=key, stage="test")


def test_an_unreachable_kms_is_a_dependency_error_on_decrypt_too(aws):
    from botocore.exceptions import EndpointConnectionError

    from chalicelib.adapters.crypto import Envelope

    context = _context()
    ciphertext = bootstrap.envelope().encrypt(b"payload", context)

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://kms.eu-west-3.amazonaws.com")

    bootstrap.botocore_session().register("before-call.kms", unreachable)
    settings = bootstrap.settings()
    cold = Envelope(  # a fresh process: no cached data key, so decrypting needs KMS
        key_arn=settings.kms_key_arn, stage=settings.stage, botocore_session=bootstrap.botocore_session()
    )

    with pytest.raises(DependencyUnavailableError):
        cold.decrypt(ciphertext, context)
