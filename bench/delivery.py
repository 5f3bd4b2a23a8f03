"""Issue 3 figures: national delivery through the local stack, and its AWS/KMS cost per result.

- results per second through the local stack (signed HTTP submissions → stream relay → queue →
  worker → stand-in national system → status ``reported``), receiver healthy
- latency from acceptance (``received_at``) to ``reported`` (median, p95)
- AWS calls and KMS calls per delivered result (in-process, moto, counted at botocore)
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

N = int(os.environ.get("BENCH_DELIVERY_N", "200"))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def local_stack_figures() -> dict[str, Any]:
    from bench.client import LIFTED_KEY_RATE, post_signed
    from tests.e2e.conftest import start_stack
    from tests.factories import valid_body

    with tempfile.TemporaryDirectory() as directory:
        stack = start_stack(Path(directory), dict(LIFTED_KEY_RATE))
        try:
            _pharmacy_id, key_id, private_key = stack.register_pharmacy("Pharmacie bench")
            url = f"{stack.api_url}/v1/results"

            def submit(i: int) -> str:
                body = valid_body(datetime.now(UTC))
                body["pharmacy_reference"] = f"BENCH-D-{i:05d}"
                body["notify"] = []
                answer = post_signed(url, json.dumps(body).encode(), key_id=key_id, private_key=private_key)
                assert answer.status_code == 201, answer.status_code
                return str(answer.json()["id"])

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=4) as pool:
                ids = list(pool.map(submit, range(N)))
            submitted_s = time.monotonic() - started
            ddb = stack.client("dynamodb")
            table = stack.env["RELAIS_RESULTS_TABLE"]
            deadline = time.monotonic() + 600
            rows: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                rows = [r for r in _scan(ddb, table) if r["id"]["S"] in set(ids)]
                if len(rows) == N and all(r["national_status"]["S"] == "reported" for r in rows):
                    break
                time.sleep(0.5)
            done_s = time.monotonic() - started
        finally:
            stack.stop()
    latencies = []
    received, reported = [], []
    for r in rows:
        got = datetime.fromisoformat(r["received_at"]["S"].replace("Z", "+00:00"))
        out = datetime.fromisoformat(r["national_reported_at"]["S"].replace("Z", "+00:00"))
        latencies.append((out - got).total_seconds())
        received.append(got)
        reported.append(out)
    span = (max(reported) - min(received)).total_seconds()
    return {
        "results": N,
        "submission_seconds": round(submitted_s, 1),
        "all_reported_after_seconds": round(done_s, 1),
        "delivered_per_second": round(N / span, 1),
        "acceptance_to_reported_median_s": round(statistics.median(latencies), 2),
        "acceptance_to_reported_p95_s": round(_percentile(latencies, 0.95), 2),
    }


def _scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def calls_per_delivered_result(count: int = 200) -> dict[str, Any]:
    """In-process (moto + the real stand-in over HTTP): AWS and KMS calls of the worker per delivered result."""
    from bench.ingest import _env

    _env()
    import boto3
    from moto import mock_aws

    from bench.awscalls import by_service, counting_aws_calls

    with mock_aws():
        from chalicelib import bootstrap
        from infra.local.national import serve
        from infra.provision import provision

        os.environ.update(provision(boto3.client("cloudformation"), "benchd"))
        server, _ = serve(0, "bench-token")
        boto3.client("ssm").put_parameter(Name="/bench/token", Value="bench-token", Type="SecureString")
        os.environ.update(
            RELAIS_NATIONAL_URL=f"http://127.0.0.1:{server.server_address[1]}/fhir",
            RELAIS_NATIONAL_TOKEN_PARAMETER="/bench/token",
        )
        bootstrap.reset()
        from tests.integration.test_national_delivery import _drain, _seed_results

        ids = _seed_results(count)
        bootstrap.national_queue().enqueue(ids)
        bootstrap.reset()  # a cold worker: its first data-key fetch and token read are counted
        with counting_aws_calls() as calls:
            _drain(300)
        server.shutdown()
    operations = {k: v for k, v in calls.items() if not k.startswith("seconds:")}
    worker_ops = {
        k: v
        for k, v in operations.items()
        if not k.startswith("sqs:ReceiveMessage")
        and not k.startswith("sqs:DeleteMessage")
        and not k.startswith("sqs:GetQueueAttributes")
    }
    return {
        "delivered": count,
        "aws_calls_per_result_by_service_worker": {
            k: round(v / count, 3) for k, v in by_service(type(calls)(worker_ops)).items()
        },
        "kms_calls_per_result": round(sum(v for k, v in operations.items() if k.startswith("kms:")) / count, 4),
        "operations": operations,
        "note": "ReceiveMessage/DeleteMessage are the event source mapping's (Lambda's), not the worker's",
    }


def main() -> int:
    print(json.dumps({"calls": calls_per_delivered_result(), "local_stack": local_stack_figures()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
