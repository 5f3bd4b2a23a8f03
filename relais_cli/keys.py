"""Pharmacy public keys as the operator hands them over: an Ed25519 SubjectPublicKeyInfo PEM file.

A private key must never reach Relais, so a file holding one is refused outright, before anything else is
read from it, and nothing of a key file is ever printed. What is stored is the public key re-encoded from the
parsed key object, so comments or other blocks around it in the file never reach the registry.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from chalicelib.services.authn import is_published_test_key, public_key_from_pem
from relais_cli.errors import CliError

PRIVATE_KEY_REFUSED = "this is a private key; give the public key — the private key never leaves the pharmacy"
TEST_KEY_REFUSED = (
    "this is the published test key of docs/signature-test-vectors.json: anyone can sign with it, "
    "so only the local stack accepts it"
)
MAX_KEY_FILE_BYTES = 16 * 1024


def read_public_key_file(path: str | Path) -> str:
    """The Ed25519 public key of ``path`` as a canonical SubjectPublicKeyInfo PEM string; CliError otherwise."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read the public key file {str(file)!r}: {exc.strerror or exc}") from None
    return public_key_pem_from_bytes(raw, name=str(file))


def public_key_pem_from_bytes(raw: bytes, *, name: str = "the key file") -> str:
    """Validate the content of a public key file (see :func:`read_public_key_file`)."""
    if b"PRIVATE KEY" in raw:  # PKCS#8, encrypted PKCS#8, OpenSSH, and legacy "EC/RSA PRIVATE KEY" blocks
        raise CliError(f"{name}: {PRIVATE_KEY_REFUSED}")
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise CliError(f"{name}: too large for a public key file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CliError(f"{name}: not a PEM file (expected -----BEGIN PUBLIC KEY-----)") from None
    if text.lstrip().startswith("ssh-ed25519"):
        raise CliError(
            f"{name}: this is an OpenSSH public key; convert it to PEM with `ssh-keygen -e -m PKCS8 -f FILE`"
        )
    if "-----BEGIN PUBLIC KEY-----" not in text:
        raise CliError(f"{name}: not a PEM SubjectPublicKeyInfo public key (expected -----BEGIN PUBLIC KEY-----)")
    try:
        key = public_key_from_pem(text)
    except ValueError as exc:
        raise CliError(f"{name}: {exc}") from None
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def refuse_test_key(public_key_pem: str, stage: str) -> None:
    """CliError when ``public_key_pem`` is the published test key and ``stage`` is not the local stack's."""
    if stage != "local" and is_published_test_key(public_key_from_pem(public_key_pem)):
        raise CliError(f"{TEST_KEY_REFUSED} (this is stage {stage!r})")
