"""The one way Relais encrypts personal data: AWS Encryption SDK envelopes under one KMS key.

- Committing, unsigned algorithm suite (``AES_256_GCM_HKDF_SHA512_COMMIT_KEY``) with the
  ``REQUIRE_ENCRYPT_REQUIRE_DECRYPT`` commitment policy. One writer and one reader share a trust
  domain (the Relais functions), so a signing suite would add cost without adding a guarantee.
- The KMS key is named by its full ARN (``StrictAwsKmsMasterKeyProvider``): no alias, no discovery.
- Every message carries an encryption context of opaque ids only (``purpose``, ``result_id``,
  ``pharmacy_id``…), authenticated in the message header and checked on decrypt, so a ciphertext
  copied onto another record fails to decrypt.
- Data keys are cached (``CachingCryptoMaterialsManager``) so KMS is called about once per
  ``max_age`` per process. The SDK's cache is keyed by the *whole* encryption context, which would
  defeat caching with a per-record id in it; :class:`RecordBindingMaterialsManager` therefore asks
  KMS for data keys under the coarse context (``purpose`` and ``stage``: what the KMS key policy and
  grants can constrain) and puts the full, record-binding context in the authenticated header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attr
import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, DecryptKeyError, GenerateKeyError
from aws_encryption_sdk.identifiers import Algorithm
from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.materials_managers import (
    DecryptionMaterials,
    DecryptionMaterialsRequest,
    EncryptionMaterials,
    EncryptionMaterialsRequest,
)
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
from botocore.exceptions import BotoCoreError

from chalicelib.errors import DecryptionError, DependencyUnavailableError

ALGORITHM = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY

#: Keys allowed in an encryption context, and the shape of their values: opaque ids only.
CONTEXT_KEYS: Mapping[str, re.Pattern[str]] = {
    "purpose": re.compile(r"^[a-z][a-z0-9-]{1,31}$"),  # result, link, audit-seal
    "stage": re.compile(r"^[a-z][a-z0-9-]{1,15}$"),
    "result_id": re.compile(r"^[A-Za-z0-9_-]{16,64}$"),
    "pharmacy_id": re.compile(r"^[A-Za-z0-9_-]{8,64}$"),
    "link_id": re.compile(r"^[A-Za-z0-9_-]{16,64}$"),
    "part": re.compile(r"^[a-z][a-z0-9-]{1,31}$"),  # which part of a record (the result's pharmacy reference)
    "version": re.compile(r"^[1-9][0-9]{0,3}$"),  # a result's version after a correction (services/vault.py)
    "key_id": re.compile(r"^[A-Za-z0-9_-]{16,64}$"),  # a receipt signing key's kid (adapters/receipt_keys.py)
}
#: The part of the context under which data keys are generated and cached.
KEY_CONTEXT = ("purpose", "stage")


def _check_context(context: Mapping[str, str]) -> None:
    for key, value in context.items():
        pattern = CONTEXT_KEYS.get(key)
        if pattern is None or not pattern.match(value):
            # Name the key only: a value could be anything a caller passed by mistake.
            raise ValueError(f"encryption context key {key!r} is not an allowed opaque id")
    if "purpose" not in context:
        raise ValueError("encryption context needs a purpose")


class RecordBindingMaterialsManager(CryptoMaterialsManager):  # type: ignore[misc]
    """Cache data keys per purpose; bind each message to its record through the header context."""

    def __init__(self, inner: CryptoMaterialsManager) -> None:
        self._inner = inner

    @staticmethod
    def _key_context(context: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in context.items() if k in KEY_CONTEXT}

    def get_encryption_materials(self, request: EncryptionMaterialsRequest) -> EncryptionMaterials:
        narrowed = attr.evolve(request, encryption_context=self._key_context(request.encryption_context))
        materials = self._inner.get_encryption_materials(narrowed)
        return EncryptionMaterials(
            algorithm=materials.algorithm,
            data_encryption_key=materials.data_encryption_key,
            encrypted_data_keys=materials.encrypted_data_keys,
            encryption_context={**materials.encryption_context, **request.encryption_context},
            signing_key=materials.signing_key,
        )

    def decrypt_materials(self, request: DecryptionMaterialsRequest) -> DecryptionMaterials:
        narrowed = attr.evolve(request, encryption_context=self._key_context(request.encryption_context))
        return self._inner.decrypt_materials(narrowed)


class Envelope:
    """Encrypt and decrypt small records under the Relais KMS key."""

    def __init__(
        self,
        *,
        key_arn: str,
        stage: str,
        botocore_session: Any = None,
        max_age_seconds: float = 300.0,
        max_messages: int = 10_000,
    ) -> None:
        if not key_arn.startswith("arn:") or ":key/" not in key_arn:
            raise ValueError("the KMS key must be given by its full key ARN")
        provider_kwargs: dict[str, Any] = {"key_ids": [key_arn]}
        if botocore_session is not None:
            provider_kwargs["botocore_session"] = botocore_session
        provider = StrictAwsKmsMasterKeyProvider(**provider_kwargs)
        caching = CachingCryptoMaterialsManager(
            master_key_provider=provider,
            cache=LocalCryptoMaterialsCache(capacity=64),
            max_age=float(max_age_seconds),
            max_messages_encrypted=max_messages,
        )
        self._cmm = RecordBindingMaterialsManager(caching)
        self._client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        )
        self._stage = stage

    def _full_context(self, context: Mapping[str, str]) -> dict[str, str]:
        full = {**context, "stage": self._stage}
        _check_context(full)
        return full

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt ``plaintext`` bound to ``context``; KMS trouble raises DependencyUnavailableError."""
        full = self._full_context(context)
        try:
            ciphertext, _header = self._client.encrypt(
                source=plaintext, materials_manager=self._cmm, encryption_context=full, algorithm=ALGORITHM
            )
        except (GenerateKeyError, AWSEncryptionSDKClientError, BotoCoreError) as exc:
            # The SDK wraps KMS's error answers; a KMS it cannot reach at all (BotoCoreError) comes through as is.
            raise DependencyUnavailableError("kms") from exc
        return bytes(ciphertext)

    def decrypt(self, ciphertext: bytes, context: Mapping[str, str]) -> bytes:
        """Decrypt and check that the message was made for exactly this ``context``."""
        expected = self._full_context(context)
        try:
            plaintext, header = self._client.decrypt(source=ciphertext, materials_manager=self._cmm)
        except (DecryptKeyError, BotoCoreError) as exc:
            raise DependencyUnavailableError("kms") from exc
        except AWSEncryptionSDKClientError as exc:
            raise DecryptionError("ciphertext could not be decrypted") from exc
        actual = {k: v for k, v in header.encryption_context.items() if not k.startswith("aws-crypto-")}
        if actual != expected:
            raise DecryptionError("ciphertext belongs to another record")
        if header.algorithm != ALGORITHM:
            raise DecryptionError("unexpected algorithm suite")
        return bytes(plaintext)
