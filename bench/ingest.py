"""Issue 2 figures: ingest path cost in one warm process on moto in-process.

- KMS calls per 1,000 accepted results (target ≤ 2)
- time per accepted result (signature check, validation, encryption, the one DynamoDB
  transaction, and the stream relay's queueing) ÷ a bare plaintext put_item of the same size
  on the same moto (target ≤ 3)
- AWS calls per accepted result, by service
- cold import of app.py ÷ import boto3 in the same run (target ≤ 2.5)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

N = int(os.environ.get("BENCH_N", "1000"))


def _env() -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="eu-west-3",
        AWS_REGION="eu-west-3",
        AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)


def ingest_figures() -> dict[str, Any]:
    _env()
    import boto3
    from moto import mock_aws

    from bench.awscalls import by_service, counting_aws_calls, seconds_in
    from chalicelib import bootstrap
    from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
    from chalicelib.events.dispatch import dispatch_results
    from infra.local.moto_patches import patch_moto
    from infra.provision import provision
    from tests.factories import valid_body
    from tests.signing import new_keypair, sign, to_signed_request

    patch_moto()  # the local stack's moto: a transaction costs O(its items) and a send O(1), as in AWS
    with mock_aws():
        os.environ.update(provision(boto3.client("cloudformation"), "bench"))
        bootstrap.reset()
        private_key, pem = new_keypair()
        pharmacy_id, key_id = new_id(16), new_id(16)
        bootstrap.registry().add_pharmacy(
            Pharmacy(pharmacy_id, "750000001", "Pharmacie Bench", "active", daily_quota=N + 100),
            PharmacyKey(key_id, pharmacy_id, pem, datetime.now(UTC)),
        )
        service = bootstrap.results_service()
        url = "https://api.relais.example/v1/results"
        requests = []
        for i in range(N + 20):
            body = valid_body(datetime.now(UTC))
            body["pharmacy_reference"] = f"BENCH-{i:06d}"
            raw = json.dumps(body).encode()
            headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
            requests.append(to_signed_request("POST", url, headers, raw))
        # Warm up: first data key, key cache, pharmacy cache, lazy imports.
        for req in requests[:20]:
            service.submit(req, content_type="application/json")
        stream_records = []
        with counting_aws_calls() as calls:
            started = time.perf_counter()
            for req in requests[20:]:
                status, answer = service.submit(req, content_type="application/json")
                assert status == 201, status
                stream_records.append({"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": answer["id"]}}}})
            for start in range(0, len(stream_records), 100):  # the relay, in Lambda-sized batches
                dispatch_results({"Records": stream_records[start : start + 100]})
            ingest_s = time.perf_counter() - started
        item = boto3.client("dynamodb").get_item(
            TableName=os.environ["RELAIS_RESULTS_TABLE"], Key={"id": {"S": answer["id"]}}
        )["Item"]
        size = len(item["payload"]["B"])
        client = boto3.client("dynamodb")
        table = os.environ["RELAIS_STATE_TABLE"]
        started = time.perf_counter()
        for i in range(N):
            client.put_item(
                TableName=table, Item={"pk": {"S": f"bare#{i}"}, "expires_at": {"N": "1"}, "blob": {"S": "x" * size}}
            )
        bare_s = time.perf_counter() - started
    per_result_ms = ingest_s / N * 1000
    bare_ms = bare_s / N * 1000
    kms = sum(n for k, n in calls.items() if k.startswith("kms:"))
    own_ms = (ingest_s - seconds_in(calls)) / N * 1000
    transact_ms = seconds_in(calls, "dynamodb") / N * 1000
    return {
        "results": N,
        "kms_calls_per_1000_results": round(kms * 1000 / N, 2),
        "ingest_ms_per_result": round(per_result_ms, 3),
        "bare_put_item_ms": round(bare_ms, 3),
        "ingest_to_put_item_ratio": round(per_result_ms / bare_ms, 2),
        "aws_calls_per_result_by_service": {k: round(v / N, 3) for k, v in by_service(calls).items()},
        "aws_calls_by_operation": {k: v for k, v in calls.items() if not k.startswith("seconds:")},
        "relais_code_ms_per_result": round(own_ms, 3),
        "relais_code_to_put_item_ratio": round(own_ms / bare_ms, 2),
        "moto_transact_write_ms_per_result": round(transact_ms, 3),
        "ciphertext_bytes": size,
    }


def _import_ms(module: str) -> float:
    code = f"import time; t=time.perf_counter(); import {module}; print((time.perf_counter()-t)*1000)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return float(out.stdout.strip())


def cold_import_figures(runs: int = 7) -> dict[str, Any]:
    app_ms = statistics.median(_import_ms("app") for _ in range(runs))
    boto_ms = statistics.median(_import_ms("boto3") for _ in range(runs))
    return {
        "import_app_ms": round(app_ms, 1),
        "import_boto3_ms": round(boto_ms, 1),
        "app_to_boto3_ratio": round(app_ms / boto_ms, 2),
    }


def main() -> int:
    figures = {"ingest": ingest_figures(), "cold_import": cold_import_figures()}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
