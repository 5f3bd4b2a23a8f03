"""Issue 2 figures: ingest path cost in one warm process on moto in-process.

- KMS calls per 1,000 accepted results (target ≤ 2)
- time per accepted result (signature check, validation, encryption, the one DynamoDB
  transaction, and the stream relay's queueing) ÷ a bare plaintext put_item of the same size
  on the same moto (target ≤ 3)
- AWS calls per accepted result, by service
- cold import of app.py ÷ import boto3 in the same run (target ≤ 2.5)

Two comparisons explain the ratio: the ingest path ÷ the very transaction it sends, replayed bare with boto3
(what Relais adds over its storage), and the "floor": a transaction of only what any design must write atomically
per result (the single-use nonce, the audit event, the ciphertext) plus Relais' own code, ÷ the put_item.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from bench.client import LIFTED_KEY_RATE

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


@contextmanager
def moto_with_one_pharmacy(name: str, daily_quota: int) -> Iterator[tuple[str, str, Any]]:
    """The application on moto in this process, patched as the local stack runs it (a transaction costs O(its items)
    and a send O(1), as in AWS), provisioned from the template, with one registered pharmacy whose key submits
    everything (its per-second limit lifted: not what is measured). Yields ``(pharmacy_id, key_id, private_key)``."""
    _env()
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap
    from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
    from infra.local.moto_patches import patch_moto
    from infra.provision import provision
    from tests.signing import new_keypair

    patch_moto()
    with mock_aws():
        os.environ.update(provision(boto3.client("cloudformation"), "bench"))
        os.environ.update(LIFTED_KEY_RATE)
        bootstrap.reset()
        private_key, pem = new_keypair()
        pharmacy_id, key_id = new_id(16), new_id(16)
        bootstrap.registry().add_pharmacy(
            Pharmacy(pharmacy_id, "750000001", name, "active", daily_quota=daily_quota),
            PharmacyKey(key_id, pharmacy_id, pem, datetime.now(UTC)),
        )
        yield pharmacy_id, key_id, private_key


def ingest_figures() -> dict[str, Any]:
    import boto3

    from bench.awscalls import by_service, counting_aws_calls, seconds_in
    from chalicelib import bootstrap
    from chalicelib.events.dispatch import dispatch_results
    from tests.factories import valid_body
    from tests.signing import sign, to_signed_request

    with moto_with_one_pharmacy("Pharmacie Bench", 4 * N + 100) as (_, key_id, private_key):
        service = bootstrap.results_service()
        url = "https://api.relais.example/v1/results"
        requests = []
        for i in range(N + 20):
            body = valid_body(datetime.now(UTC))
            body["pharmacy_reference"] = f"BENCH-{i:06d}"
            raw = json.dumps(body).encode()
            headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
            requests.append(to_signed_request("POST", url, headers, raw))
        # Warm up: first data key, key cache, pharmacy cache, lazy imports; keep one transaction to replay bare.
        with captured_transaction() as transaction:
            for req in requests[:20]:
                service.submit(req)
        stream_records = []
        with counting_aws_calls() as calls:
            started = time.perf_counter()
            for req in requests[20:]:
                accepted = service.submit(req)
                assert accepted.created, accepted
                stream_records.append({"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": accepted.result_id}}}})
            for start in range(0, len(stream_records), 100):  # the relay, in Lambda-sized batches
                dispatch_results({"Records": stream_records[start : start + 100]})
            ingest_s = time.perf_counter() - started
        item = boto3.client("dynamodb").get_item(
            TableName=os.environ["RELAIS_RESULTS_TABLE"], Key={"id": {"S": accepted.result_id}}
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
        same_items_ms = _replay_ms(client, transaction["TransactItems"], N, "same")
        floor_ms = _replay_ms(client, _unavoidable(transaction["TransactItems"]), N, "floor")
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
        "bare_transaction_of_the_same_items_ms": round(same_items_ms, 3),
        "ingest_to_bare_same_transaction_ratio": round(per_result_ms / same_items_ms, 2),
        "in_path_transaction_to_bare_replay_ratio": round(transact_ms / same_items_ms, 2),
        "floor_transaction_nonce_audit_result_ms": round(floor_ms, 3),
        "floor_ratio_with_relais_code": round((floor_ms + own_ms) / bare_ms, 2),
        "ciphertext_bytes": size,
    }


@contextmanager
def captured_transaction() -> Iterator[dict[str, Any]]:
    """The parameters of the last TransactWriteItems call made inside the block (whatever library made it)."""
    from botocore.client import BaseClient

    captured: dict[str, Any] = {}
    original = BaseClient._make_api_call

    def capture(self: BaseClient, operation_name: str, api_params: Any) -> Any:
        if operation_name == "TransactWriteItems":
            captured.clear()
            captured.update(copy.deepcopy(api_params))
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = capture  # type: ignore[method-assign]
    try:
        yield captured
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def _unavoidable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What any design must write atomically per result (one-use nonce, one audit event): nonce, event, ciphertext."""
    results, audit = os.environ["RELAIS_RESULTS_TABLE"], os.environ["RELAIS_AUDIT_TABLE"]
    kept = []
    for item in items:
        put = item.get("Put")
        if put is None:
            continue
        if put["TableName"] in (results, audit) or any(
            str(v.get("S", "")).startswith("nonce#") for v in put["Item"].values()
        ):
            kept.append(item)
    return kept


def _replay_ms(client: Any, items: list[dict[str, Any]], n: int, tag: str) -> float:
    """ms per TransactWriteItems of ``items`` sent bare (boto3), each time under fresh keys for the puts."""
    keys: dict[str, list[str]] = {}
    for item in items:
        table = (item.get("Put") or item.get("Update") or {}).get("TableName")
        if table and table not in keys:
            schema = client.describe_table(TableName=table)["Table"]["KeySchema"]
            keys[table] = [k["AttributeName"] for k in schema if k["KeyType"] == "HASH"]
    batches = []
    for i in range(n):  # built before the clock starts: only the calls are timed
        batch = copy.deepcopy(items)
        for item in batch:
            put, update = item.get("Put"), item.get("Update")
            if put:
                for name in keys[put["TableName"]]:
                    put["Item"][name] = {"S": f"{put['Item'][name]['S']}#{tag}{i}"}
            elif update and "attribute_not_exists" in update.get("ConditionExpression", ""):
                # a first-write guard (the pharmacy reference's): passes once per key, so a fresh key each time
                for name in keys[update["TableName"]]:
                    update["Key"][name] = {"S": f"{update['Key'][name]['S']}#{tag}{i}"}
        batches.append(batch)
    started = time.perf_counter()
    for batch in batches:
        client.transact_write_items(TransactItems=batch)
    return (time.perf_counter() - started) / n * 1000


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
