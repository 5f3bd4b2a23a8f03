"""What one result costs on this machine and in AWS calls, measured in-process on moto (input of ``bench/peak.py``).

One run of the whole path, stage by stage, on moto in-process with the local stack's patches
(``infra/local/moto_patches.py``): signed submissions through the results service (the API function's work), the
results stream through the outbox relay, the national queue through the national worker (the stand-in national
system over HTTP on loopback), the notify queue through the notifier (moto's SNS and SES), and the audit table's
stream through the audit chain. The local poller (``infra/local/poller.py``) drives the streams and the queues as
Lambda would. For each stage it records:

- the AWS calls per result, by operation, as botocore makes them (``bench/awscalls.py``'s way);
- DynamoDB capacity units per result, from the size of every item read or written (DynamoDB's sizing rules: a write
  unit per KB, a read unit per 4 KB, half for an eventually consistent read, twice for a transaction's items,
  condition checks included; one more write per global secondary index whose projection the write changes);
- the time spent in Relais' own code (and in botocore's client side) per result: the stage's wall time less the time
  inside the AWS calls and inside the national system's or the SMS/e-mail provider's answer;
- the order of the calls of a typical message (which ones come before the national POST or the SMS), which the
  simulation uses to place the external call inside a message's service time;
- the bytes the stage writes to its log (Powertools lines and EMF metric lines), for CloudWatch Logs ingestion.

Which results ask for which channels is :data:`CHANNEL_MIX` (an assumption, documented in ``docs/capacity.md``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.client import LIFTED_KEY_RATE

#: Share of results by notification channels asked (an assumption: a patient gives a mobile number nearly always,
#: an e-mail address sometimes). 20 results measured per pattern repeat.
CHANNEL_MIX: tuple[tuple[tuple[str, ...], int], ...] = (
    (("sms",), 16),
    (("sms", "email"), 2),
    (("email",), 1),
    ((), 1),
)
STAGES = ("intake", "relay", "national", "notify", "audit-chain")


@dataclass
class StageCost:
    """Per-result figures of one stage (averages over the results measured)."""

    calls: dict[str, float] = field(default_factory=dict)  # "service:Operation" → calls per result
    wru: float = 0.0  # DynamoDB write request units per result (GSI writes included)
    rru: float = 0.0  # DynamoDB read request units per result
    own_ms: float = 0.0  # Relais code + botocore client side, per result, on this machine
    log_bytes: float = 0.0  # bytes written to stdout (log lines, EMF) per result
    invocations: float = 0.0  # handler invocations per result, as the poller made them
    sequence: tuple[str, ...] = ()  # calls of a typical message, in order, "external" marking the outside call

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls_per_result": {k: round(v, 4) for k, v in sorted(self.calls.items())},
            "dynamodb_wru_per_result": round(self.wru, 3),
            "dynamodb_rru_per_result": round(self.rru, 3),
            "own_code_ms_per_result": round(self.own_ms, 3),
            "log_bytes_per_result": round(self.log_bytes, 1),
            "invocations_per_result": round(self.invocations, 4),
            "typical_message_calls": list(self.sequence),
        }


# -- DynamoDB sizing --------------------------------------------------------------------------------------------------
def _value_size(value: dict[str, Any]) -> int:
    (kind, raw), *_ = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        digits = str(raw).lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in raw.items())
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(_value_size({"N": n}) for n in raw)
    if kind == "BS":
        return sum(len(b) for b in raw)
    return 0


def item_size(item: dict[str, Any] | None) -> int:
    """An item's size as DynamoDB counts it (attribute names + values), in bytes."""
    return sum(len(k.encode()) + _value_size(v) for k, v in (item or {}).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units if consistent else units / 2)


class CapacityMeter:
    """Counts calls and capacity units at botocore's single call path (looking items up to size them)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.wru = 0.0
        self.rru = 0.0
        self.inside_s = 0.0  # time inside AWS calls (and the lookups that size them)
        self.trace: list[str] = []
        self._indexes: dict[str, list[tuple[set[str], str]]] = {}

    def _gsis(self, original: Any, client: Any, table: str) -> list[tuple[set[str], str]]:
        if table not in self._indexes:
            described = original(client, "DescribeTable", {"TableName": table})["Table"]
            self._indexes[table] = [
                ({k["AttributeName"] for k in g["KeySchema"]}, g["Projection"]["ProjectionType"])
                for g in described.get("GlobalSecondaryIndexes", [])
            ]
        return self._indexes[table]

    def _lookup(self, original: Any, client: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        got = original(client, "GetItem", {"TableName": table, "Key": key, "ConsistentRead": True})
        item: dict[str, Any] | None = got.get("Item")
        return item

    def _write(
        self,
        original: Any,
        client: Any,
        table: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        factor: int,
    ) -> None:
        size = max(item_size(before), item_size(after))
        self.wru += write_units(size) * factor
        for keys, projection in self._gsis(original, client, table):
            in_before = before is not None and keys <= before.keys()
            in_after = after is not None and keys <= after.keys()
            if not (in_before or in_after):
                continue
            moved = in_before != in_after or any((before or {}).get(k) != (after or {}).get(k) for k in keys)
            if moved or projection == "ALL":
                # A key change is a delete plus a put in the index; an ALL projection copies every change.
                projected = item_size(after if in_after else before) if projection == "ALL" else 100
                self.wru += write_units(projected) * (2 if in_before and in_after and moved else 1)

    def around(self, original: Any, client: Any, operation: str, params: Any) -> Any:
        service = client.meta.service_model.service_name
        self.calls[f"{service}:{operation}"] += 1
        self.trace.append(f"{service}:{operation}")
        started = time.perf_counter()
        try:
            if service != "dynamodb":
                return original(client, operation, params)
            return self._dynamodb(original, client, operation, params)
        finally:
            self.inside_s += time.perf_counter() - started

    def _dynamodb(self, original: Any, client: Any, operation: str, params: Any) -> Any:
        if operation == "GetItem":
            answer = original(client, operation, params)
            self.rru += read_units(item_size(answer.get("Item")), bool(params.get("ConsistentRead")))
            return answer
        if operation in ("Query", "Scan"):
            answer = original(client, operation, params)
            size = sum(item_size(i) for i in answer.get("Items", []))
            self.rru += read_units(size, bool(params.get("ConsistentRead")))
            return answer
        if operation == "PutItem":
            table = params["TableName"]
            answer = original(client, operation, params)
            self._write(original, client, table, None, params["Item"], 1)
            return answer
        if operation in ("UpdateItem", "DeleteItem"):
            table, key = params["TableName"], params["Key"]
            before = self._lookup(original, client, table, key)
            answer = original(client, operation, params)
            after = self._lookup(original, client, table, key) if operation == "UpdateItem" else None
            self._write(original, client, table, before, after, 1)
            return answer
        if operation == "TransactWriteItems":
            befores = []
            for entry in params["TransactItems"]:
                (kind, body), *_ = entry.items()
                key = body.get("Key")
                befores.append(self._lookup(original, client, body["TableName"], key) if key else None)
            answer = original(client, operation, params)
            for entry, before in zip(params["TransactItems"], befores, strict=True):
                (kind, body), *_ = entry.items()
                table = body["TableName"]
                if kind == "Put":
                    self._write(original, client, table, None, body["Item"], 2)
                elif kind == "Update":
                    self._write(original, client, table, before, self._lookup(original, client, table, body["Key"]), 2)
                elif kind == "Delete":
                    self._write(original, client, table, before, None, 2)
                else:  # ConditionCheck: write units of the item checked, twice
                    self.wru += write_units(item_size(before)) * 2
            return answer
        if operation == "TransactGetItems":
            answer = original(client, operation, params)
            for got in answer.get("Responses", []):
                self.rru += 2 * read_units(item_size(got.get("Item")), True)
            return answer
        return original(client, operation, params)


@contextlib.contextmanager
def metering(meter: CapacityMeter) -> Iterator[CapacityMeter]:
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def metered(self: BaseClient, operation_name: str, api_params: Any) -> Any:
        return meter.around(original, self, operation_name, api_params)

    BaseClient._make_api_call = metered  # type: ignore[method-assign]
    try:
        yield meter
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


@contextlib.contextmanager
def external_calls(meter: CapacityMeter, seconds: list[float]) -> Iterator[None]:
    """Time the national POST and the SMS / e-mail hand-overs (outside AWS pricing: the receiver, the provider)."""
    from chalicelib.adapters.messaging import Messaging
    from chalicelib.adapters.national_client import NationalClient

    patched = [(NationalClient, "post_bundle"), (Messaging, "send_sms"), (Messaging, "send_email")]
    originals = [getattr(cls, name) for cls, name in patched]

    def timed(name: str, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            meter.trace.append(f"external:{name}")
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[0] += time.perf_counter() - started

        return wrapper

    for (cls, name), method in zip(patched, originals, strict=True):
        setattr(cls, name, timed(name, method))
    try:
        yield
    finally:
        for (cls, name), method in zip(patched, originals, strict=True):
            setattr(cls, name, method)


@contextlib.contextmanager
def captured_stdout_bytes(out: list[int]) -> Iterator[None]:
    """Bytes written to file descriptor 1 inside the block (Powertools' log handler and EMF lines write there)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            out[0] += os.fstat(sink.fileno()).st_size


def _typical(traces: list[tuple[str, ...]]) -> tuple[str, ...]:
    return Counter(traces).most_common(1)[0][0] if traces else ()


def measure(n: int = 200) -> dict[str, StageCost]:
    """Run ``n`` results through every stage in-process on moto; each stage's :class:`StageCost`."""
    from bench.ingest import _env

    _env()
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap
    from chalicelib.config import get_settings
    from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
    from infra.local.moto_patches import patch_moto
    from infra.local.national import serve
    from infra.local.poller import Poller
    from infra.provision import provision
    from tests.factories import valid_body
    from tests.signing import new_keypair, sign, to_signed_request

    patch_moto()
    pattern = [channels for channels, weight in CHANNEL_MIX for _ in range(weight)]
    costs: dict[str, StageCost] = {}
    with mock_aws():
        os.environ.update(provision(boto3.client("cloudformation"), "peak"))
        os.environ.update(LIFTED_KEY_RATE)
        server, _ = serve(0, "peak-token")
        boto3.client("ssm").put_parameter(Name="/peak/token", Value="peak-token", Type="SecureString")
        os.environ.update(
            RELAIS_NATIONAL_URL=f"http://127.0.0.1:{server.server_address[1]}/fhir",
            RELAIS_NATIONAL_TOKEN_PARAMETER="/peak/token",
        )
        bootstrap.reset()
        get_settings.cache_clear()
        boto3.client("ses").verify_email_identity(EmailAddress=bootstrap.settings().email_sender)
        private_key, pem = new_keypair()
        pharmacy_id, key_id = new_id(16), new_id(16)
        bootstrap.registry().add_pharmacy(
            Pharmacy(pharmacy_id, "750000001", "Pharmacie Peak", "active", daily_quota=4 * n + 100),
            PharmacyKey(key_id, pharmacy_id, pem, datetime.now(UTC)),
        )
        url = "https://api.relais.example/v1/results"
        requests = []
        for i in range(n + 10):
            body = valid_body(datetime.now(UTC))
            body["pharmacy_reference"] = f"PEAK-{i:06d}"
            body["notify"] = list(pattern[i % len(pattern)])
            raw = json.dumps(body).encode()
            headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
            requests.append(to_signed_request("POST", url, headers, raw))
        service = bootstrap.results_service()
        for request in requests[:10]:  # warm: data key, caches, lazy imports (their records are in the streams)
            service.submit(request)
        poller = Poller(bootstrap.settings(), wait_seconds=0)

        def stage(name: str, results: int, work: Any, sequence: tuple[str, ...] = ()) -> None:
            meter, external, logged = CapacityMeter(), [0.0], [0]
            with metering(meter), external_calls(meter, external), captured_stdout_bytes(logged):
                started = time.perf_counter()
                invocations, traces = work(meter)
                wall = time.perf_counter() - started
            own = wall - meter.inside_s - external[0]
            costs[name] = StageCost(
                calls={k: v / results for k, v in meter.calls.items()},
                wru=meter.wru / results,
                rru=meter.rru / results,
                own_ms=own / results * 1000,
                log_bytes=logged[0] / results,
                invocations=invocations / results,
                sequence=sequence or _typical(traces),
            )

        def intake(meter: CapacityMeter) -> tuple[int, list[tuple[str, ...]]]:
            traces = []
            for request in requests[10:]:
                meter.trace = []
                assert service.submit(request).created
                traces.append(tuple(meter.trace))
            return n, traces

        def drain_stream(variable: str) -> Any:
            def work(meter: CapacityMeter) -> tuple[int, list[tuple[str, ...]]]:
                batches = 0
                while poller.poll_stream_once(variable):
                    batches += 1
                return batches, []

            return work

        def drain_queue(setting: str, most: int | None = None) -> Any:
            def work(meter: CapacityMeter) -> tuple[int, list[tuple[str, ...]]]:
                batches, traces = 0, []
                while most is None or batches < most:
                    meter.trace = []
                    batch = poller.poll_queue_once(setting)
                    if not batch.received:
                        break
                    batches += 1
                    assert not batch.failed, batch
                    if batch.received == 1:  # one message alone: its calls, in order (receive and delete aside)
                        traces.append(tuple(c for c in meter.trace if "Message" not in c))
                return batches, traces

            return work

        def one_by_one(setting: str, count: int) -> tuple[str, ...]:
            """The typical message's calls, from ``count`` messages handled one per batch (not counted)."""
            size = poller._queue_batch_sizes[setting]
            poller._queue_batch_sizes[setting] = 1
            traces: list[tuple[str, ...]] = []
            meter = CapacityMeter()
            with metering(meter), external_calls(meter, [0.0]), captured_stdout_bytes([0]):
                traces = drain_queue(setting, count)(meter)[1]
            poller._queue_batch_sizes[setting] = size
            return _typical(traces)

        total = n + 10  # the warm-up results go through every later stage too
        traced = 20  # messages of each queue handled one by one for their trace, not counted
        stage("intake", n, intake)
        stage("relay", total, drain_stream("RELAIS_RESULTS_STREAM_ARN"))
        sequence = one_by_one("national_queue_url", traced)
        stage("national", total - traced, drain_queue("national_queue_url"), sequence)
        sequence = one_by_one("notify_queue_url", traced)
        stage("notify", total - traced, drain_queue("notify_queue_url"), sequence)
        stage("audit-chain", total, drain_stream("RELAIS_AUDIT_STREAM_ARN"))
        server.shutdown()
    return costs


def main() -> int:
    n = int(os.environ.get("BENCH_PEAK_N", "200"))
    print(json.dumps({k: v.as_dict() for k, v in measure(n).items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
