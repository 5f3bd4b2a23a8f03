"""The vendor kit against the local stack: a client with no library at all (``docs/examples/submit-with-openssl.sh``,
openssl and curl only), onboarded as an operator does it, the published test key, which the local stack accepts, and
the Python examples of docs/api.md and of the README (keys, onboarding, a submission and its receipt)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from relais_cli.identifiers import with_finess_key
from tests.e2e.conftest import REPO_ROOT, LocalStack
from tests.factories import valid_body
from tests.signing import new_keypair

pytestmark = pytest.mark.e2e

SCRIPT = REPO_ROOT / "docs" / "examples" / "submit-with-openssl.sh"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed by the vendor kit's example (README, prerequisites)"
    return path


def _submit(key_id: str, private_key: Path, body: Path, api_url: str) -> tuple[int, str, dict[str, object], str]:
    """Run the example; (exit code, status line, answer document, what it printed on stderr). Run again (a new
    signature each time) when it printed 503: the throttled local AWS, nothing accepted."""
    for _attempt in range(4):
        done = subprocess.run(
            [str(SCRIPT), key_id, str(private_key), str(body), api_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        status, _, answer = done.stdout.partition("\n")
        if status != "503":
            break
        time.sleep(1)
    return done.returncode, status, json.loads(answer), done.stderr


def _onboard(stack: LocalStack, public_key: Path) -> str:
    finess = with_finess_key(f"75{secrets.randbelow(10**6):06d}")
    added = stack.relais(
        "pharmacy", "add", "--finess", finess, "--name", "Pharmacie OpenSSL", "--public-key", str(public_key)
    )
    return str(added["key_id"])


def _body(tmp_path: Path) -> tuple[Path, str]:
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"OPENSSL-{secrets.token_hex(6)}"
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body, indent=2), encoding="utf-8")
    return path, str(body["pharmacy_reference"])


def test_the_openssl_example_submits_a_result_and_a_resubmission_is_safe(local_stack, tmp_path):
    openssl = _tool("openssl")
    _tool("curl")
    private_key, public_key = tmp_path / "pharmacy.key.pem", tmp_path / "pharmacy.pub.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(private_key)], check=True)
    subprocess.run([openssl, "pkey", "-in", str(private_key), "-pubout", "-out", str(public_key)], check=True)
    key_id = _onboard(local_stack, public_key)
    body, reference = _body(tmp_path)

    code, status, answer, printed = _submit(key_id, private_key, body, local_stack.api_url)

    assert (code, status) == (0, "201"), printed
    assert answer["pharmacy_reference"] == reference
    assert answer["status"] == "accepted"
    base = printed.split("signature base:\n", 1)[1].strip().splitlines()
    assert base[:3] == [
        '"@method": POST',
        f'"@authority": {local_stack.api_url.split("://")[1]}',
        '"@path": /v1/results',
    ]
    assert f'keyid="{key_id}";alg="ed25519";nonce="' in base[-1]

    again = _submit(key_id, private_key, body, local_stack.api_url)
    assert again[:3] == (0, "200", answer), "the same document again: the first answer, nothing new"


def test_the_published_test_key_works_on_the_local_stack(local_stack, tmp_path):
    key = json.loads((REPO_ROOT / "docs" / "signature-test-vectors.json").read_text(encoding="utf-8"))["key"]
    (tmp_path / "test.key.pem").write_text(key["private_key_pem"], encoding="utf-8")
    (tmp_path / "test.pub.pem").write_text(key["public_key_pem"], encoding="utf-8")
    key_id = _onboard(local_stack, tmp_path / "test.pub.pem")
    body, _ = _body(tmp_path)

    code, status, answer, printed = _submit(key_id, tmp_path / "test.key.pem", body, local_stack.api_url)

    assert (code, status) == (0, "201"), printed
    assert answer["status"] == "accepted"


def test_the_python_example_of_docs_api_submits_and_follows_a_result(local_stack, tmp_path):
    api = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    example = api.split("```python\n", 1)[1].split("```", 1)[0]
    private_key, public_pem = new_keypair()
    (tmp_path / "pharmacy.pub.pem").write_text(public_pem, encoding="utf-8")
    (tmp_path / "pharmacy.key.pem").write_bytes(
        private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    key_id = _onboard(local_stack, tmp_path / "pharmacy.pub.pem")

    done = _run_python_example(example, local_stack, key_id, tmp_path, reference_prefix="PY")

    assert done.returncode == 0, done.stderr
    submitted, followed = done.stdout.splitlines()
    assert submitted.startswith("201 {")
    assert "'national': {'status': " in followed


def test_the_readme_client_example_makes_its_keys_onboards_and_gets_a_receipt(local_stack, tmp_path):
    """README's two blocks as printed, but for where the stack and the CLI are and the pharmacy reference."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Pharmacy software\n", 1)[1].split("\n## ", 1)[0]
    shell = section.split("```sh\n", 1)[1].split("```", 1)[0]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    _tool("openssl")
    cli = f"{shlex.quote(sys.executable)} -m relais_cli.main"
    assert ".venv/bin/relais " in shell

    onboarded = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shell.replace(".venv/bin/relais ", f"{cli} ")],
        cwd=tmp_path,
        env={
            **os.environ,
            "RELAIS_STATE_DIR": str(local_stack.state_file.parent),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert onboarded.returncode == 0, onboarded.stderr
    key_id = json.loads(onboarded.stdout.strip().splitlines()[-1])["key_id"]
    done = _run_python_example(python, local_stack, key_id, tmp_path, reference_prefix="README")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("201 {")
    assert "'status': 'accepted', 'receipt': 'ey" in done.stdout


def _run_python_example(
    example: str, stack: LocalStack, key_id: str, cwd: Path, *, reference_prefix: str
) -> subprocess.CompletedProcess[str]:
    """A documented Python client example run as printed, but for the stack's URL, the key id and a fresh
    pharmacy reference (each run a new result). Run again when what it printed shows a 503 (the throttled local
    AWS: the submission's status, or a follow's problem document)."""
    for _attempt in range(4):
        script = example.replace("KEY_ID_FROM_relais_pharmacy_add", key_id).replace(
            "http://127.0.0.1:8000", stack.api_url
        )
        script = script.replace(
            '"pharmacy_reference": "A-2026-000123"',
            f'"pharmacy_reference": "{reference_prefix}-{secrets.token_hex(6)}"',
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
        if not any(line.startswith("503 ") or "'status': 503" in line for line in done.stdout.splitlines()):
            break
        time.sleep(1)
    return done
