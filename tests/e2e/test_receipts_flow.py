"""Receipts (contract §6) through the local stack, over real HTTP: the receipt of a submission verified with joserfc
(a JOSE library Relais does not use) and the JWKS alone, the national receipt once reported, the month's statement,
and ``relais receipt verify`` as an operator runs it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from tests.e2e.conftest import resend_on_503
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e


def _verify(receipt: str, keys: dict[str, Any]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags "EdDSA" (RFC 9864); the contract names it
        verified = jws.deserialize_compact(receipt, KeySet.import_key_set(keys), algorithms=["EdDSA"])
    assert verified.headers()["typ"] == "relais-receipt+jwt"
    payload: dict[str, Any] = json.loads(verified.payload)
    return payload


def _jwks(stack: Any) -> dict[str, Any]:
    answer = resend_on_503(lambda: requests.get(f"{stack.api_url}/.well-known/jwks.json", timeout=30))  # unsigned
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"].startswith("public, max-age=")
    document: dict[str, Any] = answer.json()
    return document


def _get(stack: Any, key_id: str, private_key: Any, path: str) -> requests.Response:
    url = f"{stack.api_url}{path}"
    return resend_on_503(
        lambda: requests.get(url, headers=sign("GET", url, key_id=key_id, private_key=private_key), timeout=30)
    )


def test_a_receipt_verifies_with_the_jwks_then_the_national_receipt_and_the_statement(local_stack, tmp_path):
    pharmacy_id, key_id, private_key = local_stack.register_pharmacy()
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = "RCPT-E2E-1"
    body["notify"] = []
    raw = json.dumps(body).encode()
    url = f"{local_stack.api_url}/v1/results"

    answer = resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    )

    assert answer.status_code == 201, answer.text
    result_id = answer.json()["id"]
    receipt = answer.json()["receipt"]
    payload = _verify(receipt, _jwks(local_stack))
    assert payload["result_id"] == result_id and payload["pharmacy_id"] == pharmacy_id
    assert payload["pharmacy_reference"] == "RCPT-E2E-1" and payload["iss"] == "relais:local"
    header, _payload, signature = receipt.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**payload, "pharmacy_reference": "X"}).encode()).rstrip(b"=")
    with pytest.raises(BadSignatureError):
        _verify(f"{header}.{forged.decode()}.{signature}", _jwks(local_stack))

    # the operator's command, as a separate process against the stack: the receipt and the exact body bytes
    (tmp_path / "body.json").write_bytes(raw)
    verified = local_stack.relais("receipt", "verify", receipt, "--body", str(tmp_path / "body.json"))
    assert verified["valid"] is True and verified["body_matches"] is True
    (tmp_path / "other.json").write_bytes(raw + b"\n")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "relais_cli.main",
            "--json",
            "receipt",
            "verify",
            receipt,
            "--body",
            f"{tmp_path}/other.json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RELAIS_STATE_DIR": str(local_stack.state_file.parent)},
    )
    assert refused.returncode == 1 and "body_mismatch" in json.loads(refused.stdout)["error"]

    deadline = time.monotonic() + 60
    while True:
        national = _get(local_stack, key_id, private_key, f"/v1/results/{result_id}").json()["national"]
        if national["status"] == "reported" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert national["status"] == "reported"
    assert _verify(national["receipt"], _jwks(local_stack)) == {
        "iss": "relais:local",
        "result_id": result_id,
        "pharmacy_id": pharmacy_id,
        "reported_at": national["reported_at"],
    }

    month = datetime.now(UTC).strftime("%Y-%m")
    statement = _get(local_stack, key_id, private_key, f"/v1/statement?month={month}")
    assert statement.status_code == 200, statement.text
    document = statement.json()
    assert (document["accepted"], document["reported"], document["month"]) == (1, 1, month)
    signed = _verify(document["receipt"], _jwks(local_stack))
    assert (signed["accepted"], signed["reported"], signed["pharmacy_id"]) == (1, 1, pharmacy_id)
    for refused_month in ("2999-01", "1900-01"):  # in the future; older than the counters are kept
        refused_answer = _get(local_stack, key_id, private_key, f"/v1/statement?month={refused_month}")
        assert refused_answer.status_code == 400 and refused_answer.json()["errors"][0]["field"] == "month"


def test_the_python_receipt_example_of_docs_api_verifies_a_receipt_of_the_stack(local_stack, monkeypatch):
    from tests.e2e.conftest import REPO_ROOT

    api = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    receipts_section = api.split("## Receipts\n", 1)[1]
    example = receipts_section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "https://relais.example.fr" in example and '"relais:prod"' in example
    stack_example = example.replace("https://relais.example.fr", local_stack.api_url)
    # A receipt first: the example reads the JWKS when it loads, and a stage that signed nothing publishes no key.
    _, key_id, private_key = local_stack.register_pharmacy()
    body = valid_body(datetime.now(UTC))
    body["notify"] = []
    raw = json.dumps(body).encode()
    url = f"{local_stack.api_url}/v1/results"
    receipt = resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    ).json()["receipt"]
    # The example reads the JWKS with requests.get: sent again after a 503 of the throttled local AWS.
    get = requests.get
    monkeypatch.setattr(requests, "get", lambda *args, **kwargs: resend_on_503(lambda: get(*args, **kwargs)))
    namespace: dict[str, Any] = {}
    prod_only: dict[str, Any] = {}  # the example as printed: it accepts production's receipts only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's RFC 9864 note on "EdDSA", as api.md says
        exec(stack_example.replace('"relais:prod"', '"relais:local"'), namespace)
        exec(stack_example, prod_only)

        claims = namespace["verify_receipt"](receipt, raw)
        assert claims["pharmacy_reference"] == body["pharmacy_reference"]
        with pytest.raises(ValueError, match="other bytes"):
            namespace["verify_receipt"](receipt, raw + b" ")
        with pytest.raises(ValueError, match="another stage"):
            prod_only["verify_receipt"](receipt, raw)


JOSE_DIR = Path(__file__).resolve().parent / "jose"


@pytest.fixture(scope="module")
def jose_modules() -> Path:
    """``jose`` from npm, pinned in ``tests/e2e/jose/package-lock.json``; ``npm ci`` once when missing."""
    modules = JOSE_DIR / "node_modules"
    if not (modules / "jose" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            if os.environ.get("CI"):
                pytest.fail("node and npm are needed to run api.md's JavaScript receipt example")
            pytest.skip("node or npm is missing (needed for api.md's JavaScript receipt example)")
        subprocess.run([npm, "ci", "--prefix", str(JOSE_DIR), "--no-audit", "--no-fund"], check=True, timeout=300)
    return modules


def test_the_javascript_receipt_example_of_docs_api_verifies_a_stack_receipt(local_stack, jose_modules, tmp_path):
    from tests.e2e.conftest import REPO_ROOT

    api = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    example = api.split("## Receipts\n", 1)[1].split("```js\n", 1)[1].split("```", 1)[0]
    assert "https://relais.example.fr" in example and '"relais:prod"' in example
    (tmp_path / "node_modules").symlink_to(jose_modules)
    runner = (
        # The JWKS fetch says when the throttled local AWS answered 503 (jose's error does not): the run is tried again.
        "\nconst plainFetch = globalThis.fetch;\n"
        + "globalThis.fetch = async (...args) => {\n"
        + "  const answer = await plainFetch(...args);\n"
        + '  if (answer.status === 503) console.error("HTTP 503 from " + String(args[0]));\n'
        + "  return answer;\n"
        + "};\n"
        + "const [receipt, bodyFile] = process.argv.slice(2);\n"
        + 'const { readFileSync } = await import("node:fs");\n'
        + "console.log(JSON.stringify(await verifyReceipt(receipt, readFileSync(bodyFile))));\n"
    )
    stack_example = example.replace("https://relais.example.fr", local_stack.api_url)
    script = tmp_path / "verify.mjs"
    script.write_text(stack_example.replace('"relais:prod"', '"relais:local"') + runner, encoding="utf-8")
    prod_only = tmp_path / "verify-prod.mjs"  # the example as printed: it accepts production's receipts only
    prod_only.write_text(stack_example + runner, encoding="utf-8")
    _, key_id, private_key = local_stack.register_pharmacy()
    body = valid_body(datetime.now(UTC))
    body["notify"] = []
    raw = json.dumps(body).encode()
    url = f"{local_stack.api_url}/v1/results"
    receipt = resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    ).json()["receipt"]
    (tmp_path / "body.json").write_bytes(raw)
    (tmp_path / "other.json").write_bytes(raw + b" ")

    def node(body_file: str, verifier: Path = script) -> subprocess.CompletedProcess[str]:
        for _attempt in range(4):  # run again when the JWKS answered 503 (the throttled local AWS)
            done = subprocess.run(
                ["node", str(verifier), receipt, str(tmp_path / body_file)],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if "HTTP 503 from " not in done.stderr:
                break
            time.sleep(1)
        return done

    verified = node("body.json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["pharmacy_reference"] == body["pharmacy_reference"]
    refused = node("other.json")
    assert refused.returncode != 0 and "the receipt is for other bytes" in refused.stderr
    elsewhere = node("body.json", prod_only)
    assert elsewhere.returncode != 0 and "a receipt of another stage" in elsewhere.stderr
