"""Issue 13 (receipts, contract §6) figures, in-process on moto, min/median/max over ``BENCH_RECEIPT_RUNS`` (3) runs:

- what signing a receipt adds to a submission: one ``Receipts.ready().acceptance`` (the key already opened, then
  payload, JSON, Ed25519, base64url), median and p95 in µs, ÷ the median of one whole in-process intake
  (``ResultsService.submit`` on moto, the floor ``bench/ingest.py`` measures) in the same run;
- KMS calls per 1,000 receipts in a warm process (and from a cold one), counted by envelope purpose: the receipt key's
  own (target ≤ 2) and every KMS call of those 1,000 submissions;
- cold import: whether ``import app`` loads any receipt module (target: none), and what importing them costs the
  first request that needs them (``chalicelib.services.receipts`` after what a first request already loads).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bench.figures import spread

RUNS = int(os.environ.get("BENCH_RECEIPT_RUNS", "3"))
N = int(os.environ.get("BENCH_RECEIPT_N", "1000"))
SIGNS = 5000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECEIPT_MODULES = ("chalicelib.domain.receipts", "chalicelib.services.receipts", "chalicelib.adapters.receipt_keys")


def _p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


def one_run() -> dict[str, Any]:
    from bench.ingest import moto_with_one_pharmacy
    from chalicelib import bootstrap
    from chalicelib.adapters.receipt_keys import PURPOSE
    from tests.factories import valid_body
    from tests.signing import sign, to_signed_request

    with moto_with_one_pharmacy("Pharmacie Bench", 4 * N + 100) as (pharmacy_id, key_id, private_key):
        url = "https://api.relais.example/v1/results"
        requests = []
        for i in range(N + 20):
            body = valid_body(datetime.now(UTC))
            body["pharmacy_reference"] = f"RCPT-{i:06d}"
            raw = json.dumps(body).encode()
            requests.append(
                to_signed_request("POST", url, sign("POST", url, key_id=key_id, private_key=private_key, body=raw), raw)
            )

        kms: Counter[tuple[str, str]] = Counter()
        warm = False

        def count(model: Any, params: Any, **_: Any) -> None:
            kms[(("warm" if warm else "cold"), params.get("EncryptionContext", {}).get("purpose", model.name))] += 1

        bootstrap.botocore_session().register("before-parameter-build.kms.*", count)
        service = bootstrap.results_service()
        for req in requests[:20]:  # cold: the first data key, the reference and receipt keys opened, caches
            service.submit(req)
        warm = True
        intake_us = []
        for req in requests[20:]:
            started = time.perf_counter()
            assert service.submit(req).created
            intake_us.append((time.perf_counter() - started) * 1e6)

        receipts = bootstrap.receipts()
        sign_us = []
        for i in range(SIGNS):
            started = time.perf_counter()
            receipts.ready().acceptance(  # what a request does: the key it opened, then its receipt
                result_id=f"{i:024d}",
                pharmacy_id=pharmacy_id,
                pharmacy_reference=f"RCPT-{i:06d}",
                body=requests[i % N].body,
                accepted_at=datetime.now(UTC),
            )
            sign_us.append((time.perf_counter() - started) * 1e6)
    warm_receipt_key = sum(n for (phase, purpose), n in kms.items() if phase == "warm" and purpose == PURPOSE)
    warm_all = sum(n for (phase, _), n in kms.items() if phase == "warm")
    return {
        "sign_median_us": statistics.median(sign_us),
        "sign_p95_us": _p95(sign_us),
        "intake_median_us": statistics.median(intake_us),
        "intake_p95_us": _p95(intake_us),
        "sign_to_intake_median_percent": 100 * statistics.median(sign_us) / statistics.median(intake_us),
        "receipt_key_kms_calls_per_1000_warm": warm_receipt_key * 1000 / N,
        "all_kms_calls_per_1000_warm": warm_all * 1000 / N,
        "kms_calls_cold_process_by_purpose": {
            purpose: n for (phase, purpose), n in sorted(kms.items()) if phase == "cold"
        },
    }


def _in_subprocess(code: str) -> Any:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_figures() -> dict[str, Any]:
    loaded = _in_subprocess(
        f"import json, sys; import app; print(json.dumps([m for m in {list(RECEIPT_MODULES)!r} if m in sys.modules]))"
    )
    first_request = (
        "import json, time; import app; import chalicelib.services.authn, chalicelib.services.results; "
        "import sys; t = time.perf_counter(); import chalicelib.adapters.receipt_keys; "
        "print(json.dumps((time.perf_counter() - t) * 1000))"
    )
    app_import = (
        "import json, time; t = time.perf_counter(); import app; print(json.dumps((time.perf_counter() - t) * 1000))"
    )
    return {
        "receipt_modules_loaded_by_import_app": loaded,
        "import_app_ms": spread([_in_subprocess(app_import) for _ in range(RUNS)], 1),
        "receipt_key_adapter_import_after_first_request_ms": spread(
            [_in_subprocess(first_request) for _ in range(RUNS)], 2
        ),
    }


def main() -> int:
    runs = []
    for _ in range(RUNS):
        done = subprocess.run(
            [sys.executable, "-c", "import json; from bench.receipts import one_run; print(json.dumps(one_run()))"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    figures: dict[str, Any] = {"runs": RUNS, "results_per_run": N, "signatures_per_run": SIGNS}
    for name in runs[0]:
        if name == "kms_calls_cold_process_by_purpose":
            figures[name] = runs[0][name]
        else:
            figures[name] = spread([float(run[name]) for run in runs], 2)
    figures.update(import_figures())
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
