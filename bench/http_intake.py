"""Issue 10 figures: intake over HTTP on the local stack, against a floor measured in the same run.

One local stack (:mod:`bench.localstack`: moto server, stand-in national system, ``chalice local`` API, the poller
started and paused by the bench) and, on the same moto server, the floor: ``bench/floor_app`` (the same ``chalice
local``, one unauthenticated route writing one plaintext ``put_item`` of a stored result's size into the state
table). Clients are threads of this process (``requests``, a new connection per request unless kept alive); every
request is signed before the clock starts (client CPU is then mostly HTTP, the same for the floor and the stack);
at 8 clients each client is its own pharmacy.

1. ``ratio``: ``BENCH_HTTP_RUNS`` runs (default 3), each: the floor at 8 and 1 clients and the stack with the
   poller paused (SIGSTOP: the workers' load gone) at 8 and 1 clients, then the poller resumed and the stack
   drained, then the stack with every worker running at 8 clients (drained after) and 1 client (drained after).
   ``BENCH_HTTP_N`` results per 8-client stack phase (default 160), ``BENCH_HTTP_N1`` per 1-client phase (default
   40), the floor 3 times as many. Accepted per second (first send to last answer), p50/p95 latency, each stack
   figure ÷ the floor of the same run; min/median/max over the runs. The floor runs with the poller paused (only
   moto and the floor app work). One connection per request; ``BENCH_HTTP_KEEPALIVE_RUNS`` more runs (default 0)
   of the floor and the paused stack with kept-alive connections, which every request pays ~40 ms for.
2. ``cpu``: CPU seconds of each process group (``/proc``: API, workers = the poller, local AWS = moto, stand-in,
   and the clients) over a ``BENCH_HTTP_CPU_N``-result run at 8 clients (default 1,000), from the first request
   to everything drained (stand-in holds them all, queues empty, workers quiet), per result; the idle rate of each
   part beside it. Then ``BENCH_HTTP_SEED`` results' worth of items (default 10,000 stored results) are written
   directly into the tables, copies of what the processed results left there (results, state, audit, audit
   chain), with the poller stopped and restarted at the streams' end (:mod:`bench.poller_latest`), and the same
   run again.
3. ``burst``: ``BENCH_HTTP_BURST`` results (default 500) at 8 clients, every worker running: from each ``201`` at
   the client to ``national_reported_at`` on the result and to ``sms_sent_at`` on its notification claim (set
   once SNS accepted the SMS), p50/p95/max; ``BENCH_HTTP_BURST_RUNS`` bursts (default 1: each takes over a
   minute to deliver), each from a drained stack.
4. ``cold``: a cold process (:mod:`bench.cold_start`) imports ``app.py`` and handles ``BENCH_HTTP_COLD_N``
   (default 1,000) signed API Gateway events against the stack's moto: KMS calls per 1,000 results, first request
   included; then ``import app`` plus every module its first request imported, timed cold (median of 7 fresh
   processes) ÷ ``import boto3`` (the same way, :func:`bench.ingest._import_ms`).

    python -m bench.http_intake              # everything (about 10 minutes on 2 cores)
    python -m bench.http_intake ratio cold   # some parts (cpu and burst need a drained stack: fine alone too)

Prints one JSON document last.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import spread
from bench.localstack import BenchStack, utc_seconds

RUNS = int(os.environ.get("BENCH_HTTP_RUNS", "3"))
N8 = int(os.environ.get("BENCH_HTTP_N", "160"))
N1 = int(os.environ.get("BENCH_HTTP_N1", "40"))
#: The floor sends this many times as many requests as the stack: at 3-10 times the stack's pace, its phases would
#: otherwise last well under a second, at the mercy of whatever else the machine runs.
FLOOR_SHARE = 3
CPU_N = int(os.environ.get("BENCH_HTTP_CPU_N", "1000"))
SEED = int(os.environ.get("BENCH_HTTP_SEED", "10000"))
BURST_N = int(os.environ.get("BENCH_HTTP_BURST", "500"))
BURST_RUNS = int(os.environ.get("BENCH_HTTP_BURST_RUNS", "1"))
COLD_N = int(os.environ.get("BENCH_HTTP_COLD_N", "1000"))
#: Runs of the same measurements with clients that keep their connection open (``requests.Session``), default 0.
#: The main runs open one connection per request: ``chalice local`` writes a response's headers and body in two
#: sends with Nagle's algorithm on, so on a kept-alive connection every request waits for the client's delayed ACK
#: (about 40 ms on Linux), floor and stack alike, and the floor measures that wait, not its work (bench/README.md).
KEEPALIVE_RUNS = int(os.environ.get("BENCH_HTTP_KEEPALIVE_RUNS", "0"))
CLIENTS = 8
PARTS = ("api", "poller", "aws", "national", "floor", "clients")
REPO_ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Pharmacy:
    pharmacy_id: str
    key_id: str
    private_key: Any


Prepared = tuple[str, bytes, dict[str, str]]


class Bench:
    """The stack, its pharmacies, and the bookkeeping of what was accepted (for the drain checks)."""

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.accepted = 0  # results the stack accepted so far: the stand-in must end up holding them all
        self.pharmacies: list[Pharmacy] = []
        self.serial = 0
        self.keepalive = False  # clients keep their connection between requests (see KEEPALIVE_RUNS)

    # --- set-up -----------------------------------------------------------------------------------------------

    def register_pharmacies(self, count: int) -> list[Pharmacy]:
        """``count`` active pharmacies (quota far above the bench) with fresh Ed25519 keys, in the stack's registry."""
        from chalicelib import bootstrap
        from chalicelib.domain.records import Pharmacy as PharmacyRecord
        from chalicelib.domain.records import PharmacyKey, new_id
        from tests.signing import new_keypair

        made = []
        for index in range(count):
            private_key, public_pem = new_keypair()
            pharmacy_id, key_id = new_id(), new_id()
            finess = f"99{os.getpid() % 1000:03d}{len(self.pharmacies) + index:04d}"
            bootstrap.registry().add_pharmacy(
                PharmacyRecord(pharmacy_id, finess, f"Pharmacie bench {index}", "active", daily_quota=1_000_000),
                PharmacyKey(key_id, pharmacy_id, public_pem, datetime.now(UTC)),
            )
            made.append(Pharmacy(pharmacy_id, key_id, private_key))
        self.pharmacies.extend(made)
        return made

    def body(self, tag: str) -> bytes:
        from tests.factories import valid_body

        self.serial += 1
        body = valid_body(datetime.now(UTC))  # SMS and e-mail asked for, every optional field filled
        body["pharmacy_reference"] = f"B-{tag}-{self.serial:06d}"
        return json.dumps(body).encode()

    def signed(self, n: int, clients: int, tag: str) -> list[list[Prepared]]:
        """``n`` signed submissions split among ``clients`` clients, client ``c`` signing as pharmacy ``c``."""
        from tests.signing import sign

        url = f"{self.stack.api_url}/v1/results"
        batches: list[list[Prepared]] = [[] for _ in range(clients)]
        for i in range(n):
            pharmacy = self.pharmacies[i % clients]
            raw = self.body(tag)
            headers = sign("POST", url, key_id=pharmacy.key_id, private_key=pharmacy.private_key, body=raw)
            batches[i % clients].append((url, raw, headers))
        return batches

    def unsigned(self, n: int, clients: int, tag: str) -> list[list[Prepared]]:
        url = f"{self.stack.floor_url}/floor"
        batches: list[list[Prepared]] = [[] for _ in range(clients)]
        for i in range(n):
            batches[i % clients].append((url, self.body(tag), {"Content-Type": "application/json"}))
        return batches

    # --- driving ----------------------------------------------------------------------------------------------

    def drive(self, batches: list[list[Prepared]]) -> dict[str, Any]:
        """Send every batch from its own client thread at once; throughput, latency, CPU by part, ids accepted."""
        import requests

        start = threading.Barrier(len(batches))

        def client(batch: list[Prepared]) -> list[tuple[float, float, int, float, str]]:
            # Without keep-alive, a new session per request: a pooled connection the server is closing (it answered
            # "Connection: close") could otherwise be reused in the instant before it goes.
            session = requests.Session() if self.keepalive else requests
            extra = {} if self.keepalive else {"Connection": "close"}
            done = []
            start.wait()
            for url, raw, headers in batch:
                sent = time.perf_counter()
                answer = session.post(url, data=raw, headers={**headers, **extra}, timeout=120)
                received = time.perf_counter()
                rid = str(answer.json().get("id", "")) if answer.status_code == 201 else ""
                done.append((sent, received, answer.status_code, time.time(), rid))
            return done

        cpu_before = self.stack.cpu()
        with ThreadPoolExecutor(max_workers=len(batches)) as pool:
            rows = [row for rows in pool.map(client, batches) for row in rows]
        cpu_after = self.stack.cpu()
        ok = [row for row in rows if row[2] == 201]
        seconds = max(row[1] for row in rows) - min(row[0] for row in rows)
        latencies = [(row[1] - row[0]) * 1000 for row in ok]
        return {
            "clients": len(batches),
            "sent": len(rows),
            "accepted": len(ok),
            "other_statuses": sorted({row[2] for row in rows if row[2] != 201}),
            "seconds": round(seconds, 2),
            "per_second": round(len(ok) / seconds, 1),
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(percentile(latencies, 0.95), 1) if latencies else None,
            "cpu_ms_per_request": {
                part: round((cpu_after[part] - cpu_before[part]) * 1000 / max(1, len(rows)), 1)
                for part in PARTS
                if part in cpu_after and part in cpu_before
            },
            "_accepted_at": {row[4]: row[3] for row in ok if row[4]},
        }

    def stack_phase(self, n: int, clients: int, tag: str) -> dict[str, Any]:
        figures = self.drive(self.signed(n, clients, tag))
        self.accepted += figures["accepted"]
        return figures

    def floor_phase(self, n: int, clients: int, tag: str) -> dict[str, Any]:
        return self.drive(self.unsigned(n, clients, tag))

    def drain(self) -> float:
        return self.stack.wait_drained(self.accepted)

    def idle_cpu(self, seconds: float = 5.0) -> dict[str, float]:
        """CPU milliseconds per second of each part with nothing to do."""
        before = self.stack.cpu()
        time.sleep(seconds)
        after = self.stack.cpu()
        return {part: round((after[part] - before[part]) * 1000 / seconds, 1) for part in after if part in before}


def _public(phase: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in phase.items() if not k.startswith("_")}


# --- 1. throughput ratios -----------------------------------------------------------------------------------


def ratio_figures(bench: Bench, count: int, *, keepalive: bool = False) -> dict[str, Any]:
    """``count`` runs of the floor and the stack side by side (with kept-alive connections: the paused stack only)."""
    runs: list[dict[str, Any]] = []
    bench.keepalive = keepalive
    modes = ("paused",) if keepalive else ("running", "paused")
    for run in range(count):
        print(f"ratio run {run + 1}/{count}{' (keep-alive)' if keepalive else ''}", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        bench.stack.pause_poller()
        phases = {
            "floor_8": bench.floor_phase(FLOOR_SHARE * N8, CLIENTS, f"f8r{run}"),
            "floor_1": bench.floor_phase(FLOOR_SHARE * N1, 1, f"f1r{run}"),
            "paused_8": bench.stack_phase(N8, CLIENTS, f"p8r{run}"),
            "paused_1": bench.stack_phase(N1, 1, f"p1r{run}"),
        }
        bench.stack.resume_poller()
        drains = {"after_paused": round(bench.drain(), 1)}
        if "running" in modes:
            phases["running_8"] = bench.stack_phase(N8, CLIENTS, f"r8r{run}")
            drains["after_running_8"] = round(bench.drain(), 1)
            phases["running_1"] = bench.stack_phase(N1, 1, f"r1r{run}")
            drains["after_running_1"] = round(bench.drain(), 1)
        runs.append(
            {
                "phases": {k: _public(v) for k, v in phases.items()},
                "drain_seconds": drains,
                "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            }
        )
    bench.keepalive = False
    summary: dict[str, Any] = {}
    for clients in (8, 1):
        floor = [r["phases"][f"floor_{clients}"] for r in runs]
        for mode in modes:
            stack = [r["phases"][f"{mode}_{clients}"] for r in runs]
            summary[f"{mode}_{clients}_clients"] = {
                "ratio_to_floor": spread(
                    [s["per_second"] / f["per_second"] for s, f in zip(stack, floor, strict=True)]
                ),
                "per_second": spread([s["per_second"] for s in stack], 1),
                "p50_ms": spread([s["p50_ms"] for s in stack], 1),
                "p95_ms": spread([s["p95_ms"] for s in stack], 1),
            }
        summary[f"floor_{clients}_clients"] = {
            "per_second": spread([f["per_second"] for f in floor], 1),
            "p50_ms": spread([f["p50_ms"] for f in floor], 1),
            "p95_ms": spread([f["p95_ms"] for f in floor], 1),
        }
    return {
        "runs": count,
        "connections": "kept alive (requests.Session)" if keepalive else "one per request (Connection: close)",
        "results_per_stack_phase": {"8_clients": N8, "1_client": N1},
        "results_per_floor_phase": {"8_clients": FLOOR_SHARE * N8, "1_client": FLOOR_SHARE * N1},
        "targets": {"running_8_clients": 0.6, "paused_8_clients": 0.8},
        "summary": summary,
        "each_run": runs,
    }


# --- 2. CPU per result by process ---------------------------------------------------------------------------


def cpu_run(bench: Bench, tag: str) -> dict[str, Any]:
    idle = bench.idle_cpu()
    before = bench.stack.cpu()
    started = time.monotonic()
    intake = bench.stack_phase(CPU_N, CLIENTS, tag)
    bench.drain()
    drained_after = time.monotonic() - started - 1.0  # the drain check ends on one quiet second
    after = bench.stack.cpu()
    return {
        "results": CPU_N,
        "intake_per_second": intake["per_second"],
        "intake_p50_ms": intake["p50_ms"],
        "all_drained_after_s": round(drained_after, 1),
        "cpu_ms_per_result": {
            part: round((after[part] - before[part]) * 1000 / CPU_N, 1) for part in PARTS if part in after
        },
        "idle_cpu_ms_per_second": idle,
    }


def stored_results(bench: Bench) -> int:
    answer = bench.stack.client("dynamodb").describe_table(TableName=bench.stack.settings_env["RELAIS_RESULTS_TABLE"])
    return int(answer["Table"]["ItemCount"])


def seed_tables(bench: Bench, target: int) -> dict[str, Any]:
    """Copies of what the processed results left in the tables, under new keys, until ``target`` results are stored.

    The results, state (nonces, claims, counters), audit and audit chain tables are scanned once; each copy pass
    writes every item again with ``~c<pass>`` appended to its partition key (the floor's items excepted), the last
    pass only the share needed. The poller must be stopped: the streams' records of these writes are not relayed.
    """
    ddb = bench.stack.client("dynamodb")
    env = bench.stack.settings_env
    names = {part: env[f"RELAIS_{part.upper()}_TABLE"] for part in ("results", "state", "audit", "audit_chain")}
    templates: dict[str, list[dict[str, Any]]] = {}
    hash_keys: dict[str, str] = {}
    for part, table in names.items():
        schema = ddb.describe_table(TableName=table)["Table"]["KeySchema"]
        hash_keys[part] = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = ddb.scan(**kwargs)
            items.extend(i for i in page["Items"] if not i[hash_keys[part]].get("S", "").startswith("floor#"))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        templates[part] = items
    stored = len(templates["results"])
    started = time.monotonic()
    written = dict.fromkeys(names, 0)
    copy = 0
    while stored < target:
        copy += 1
        share = min(1.0, (target - stored) / len(templates["results"]))
        for part, table in names.items():
            chosen = templates[part][: round(len(templates[part]) * share)]
            key = hash_keys[part]
            requests = []
            for item in chosen:
                clone = dict(item)
                clone[key] = {"S": f"{item[key]['S']}~c{copy}"}
                requests.append({"PutRequest": {"Item": clone}})

            def write(chunk: list[dict[str, Any]], table: str = table) -> None:
                pending: dict[str, Any] = {table: chunk}
                while pending:
                    pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

            with ThreadPoolExecutor(max_workers=2) as pool:  # the client's share on the other core
                list(pool.map(write, [requests[i : i + 25] for i in range(0, len(requests), 25)]))
            written[part] += len(chosen)
        stored += round(len(templates["results"]) * share)
    return {
        "stored_results_before": len(templates["results"]),
        "template_items_per_result": {
            part: round(len(items) / max(1, len(templates["results"])), 2) for part, items in templates.items()
        },
        "items_written": written,
        "seconds": round(time.monotonic() - started, 1),
    }


def cpu_figures(bench: Bench) -> dict[str, Any]:
    bench.drain()
    first = cpu_run(bench, "cpu0")
    first["stored_results_before"] = stored_results(bench) - CPU_N
    bench.stack.stop_poller()
    seeding = seed_tables(bench, SEED)
    bench.stack.start_poller(from_latest=True)
    second = cpu_run(bench, "cpu1")
    second["stored_results_before"] = stored_results(bench) - CPU_N
    aws_first, aws_second = first["cpu_ms_per_result"]["aws"], second["cpu_ms_per_result"]["aws"]
    return {
        "first": first,
        "seeding": seeding,
        "after_seeding": second,
        "aws_cpu_after_seeding_ratio": round(aws_second / aws_first, 2),
    }


# --- 3. burst latency -------------------------------------------------------------------------------------


def burst_figures(bench: Bench) -> dict[str, Any]:
    """``BURST_RUNS`` bursts (default 1: each takes a minute or more), each from a drained stack."""
    runs = [one_burst(bench, run) for run in range(BURST_RUNS)]
    figures: dict[str, Any] = {"runs": BURST_RUNS, "results": BURST_N, "clients": CLIENTS, "target_p95_s": 5.0}
    for key in ("accepted_to_reported", "accepted_to_sms"):
        for name in ("p50_s", "p95_s"):
            figures[f"{key}_{name}"] = spread([run[key][name] for run in runs if run[key]["count"]])
    figures["each_run"] = runs
    return figures


def one_burst(bench: Bench, run: int) -> dict[str, Any]:
    bench.drain()
    started = time.monotonic()
    intake = bench.stack_phase(BURST_N, CLIENTS, f"burst{run}")
    accepted_at: dict[str, float] = intake["_accepted_at"]
    ids = list(accepted_at)
    ddb = bench.stack.client("dynamodb")
    env = bench.stack.settings_env
    reported: dict[str, float] = {}
    sms: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while (len(reported) < len(ids) or len(sms) < len(ids)) and time.monotonic() < deadline:
        time.sleep(2.0)
        missing = [rid for rid in ids if rid not in reported]
        for item in _batch_get(ddb, env["RELAIS_RESULTS_TABLE"], "id", missing):
            if "national_reported_at" in item:
                reported[item["id"]["S"]] = utc_seconds(item["national_reported_at"]["S"])
        missing_sms = {f"notify#{rid}#0": rid for rid in ids if rid not in sms}
        for item in _batch_get(ddb, env["RELAIS_STATE_TABLE"], "pk", list(missing_sms)):
            if "sms_sent_at" in item:
                sms[missing_sms[item["pk"]["S"]]] = utc_seconds(item["sms_sent_at"]["S"])
    done_s = time.monotonic() - started
    to_reported = [reported[rid] - accepted_at[rid] for rid in reported]
    to_sms = [sms[rid] - accepted_at[rid] for rid in sms]

    def latency(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "p50_s": round(statistics.median(values), 2),
            "p95_s": round(percentile(values, 0.95), 2),
            "max_s": round(max(values), 2),
        }

    return {
        "intake": _public(intake),
        "all_reported_and_sms_after_s": round(done_s, 1),
        "accepted_to_reported": latency(to_reported),
        "accepted_to_sms": latency(to_sms),
    }


def _batch_get(ddb: Any, table: str, key: str, values: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(values), 100):
        pending: dict[str, Any] = {table: {"Keys": [{key: {"S": v}} for v in values[start : start + 100]]}}
        while pending:
            answer = ddb.batch_get_item(RequestItems=pending)
            found.extend(answer["Responses"].get(table, []))
            pending = answer.get("UnprocessedKeys") or {}
    return found


# --- 4. cold process: KMS calls and cold imports -----------------------------------------------------------


def cold_figures(bench: Bench, directory: Path) -> dict[str, Any]:
    import subprocess

    from bench.ingest import _import_ms
    from tests.signing import sign

    if bench.stack.poller is not None:
        bench.stack.stop_poller()  # quiet machine for the import timings; the cold process's results stay stored
    (pharmacy,) = bench.register_pharmacies(1)
    authority = "api.relais.example"
    url = f"https://{authority}/v1/results"
    events: list[dict[str, Any]] = []
    for _ in range(COLD_N):
        raw = bench.body("cold")
        headers = sign("POST", url, key_id=pharmacy.key_id, private_key=pharmacy.private_key, body=raw)
        events.append(
            {
                "resource": "/v1/results",
                "path": "/v1/results",
                "httpMethod": "POST",
                "headers": {k.lower(): v for k, v in headers.items()},
                "multiValueQueryStringParameters": None,
                "pathParameters": None,
                "stageVariables": None,
                "requestContext": {
                    "resourcePath": "/v1/results",
                    "httpMethod": "POST",
                    "path": "/v1/results",
                    "stage": "api",
                    "requestId": f"cold-{len(events)}",
                    "identity": {"sourceIp": "127.0.0.1"},
                },
                "body": raw.decode(),
                "isBase64Encoded": False,
            }
        )
    events_file = directory / "cold-events.json"
    events_file.write_text(json.dumps(events))
    done = subprocess.run(
        [sys.executable, "-m", "bench.cold_start", str(events_file)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=bench.stack.app_env(),
        timeout=600,
    )
    cold = json.loads(done.stdout.strip().splitlines()[-1])
    kms = {k: v for k, v in cold["aws_calls"].items() if k.startswith("kms:")}
    modules = cold.pop("first_request_modules")
    together = ", ".join(["app", *[m for m in modules if "-" not in m]])
    _compile_own_modules()
    runs = 7
    app_and_first = statistics.median(_import_ms(together) for _ in range(runs))
    app_only = statistics.median(_import_ms("app") for _ in range(runs))
    boto3_ms = statistics.median(_import_ms("boto3") for _ in range(runs))
    by_package = first_request_import_ms_by_package(modules)
    return {
        "cold_process": cold,
        "kms_calls_per_1000_results": round(sum(kms.values()) * 1000 / COLD_N, 2),
        "kms_calls_by_operation": kms,
        "cold_import": {
            "modules_first_request_adds": len(modules),
            "first_request_adds": modules[:40] + (["…"] if len(modules) > 40 else []),
            "import_app_ms": round(app_only, 1),
            "import_app_and_first_request_ms": round(app_and_first, 1),
            "import_boto3_ms": round(boto3_ms, 1),
            "ratio_to_boto3": round(app_and_first / boto3_ms, 2),
            "app_alone_ratio_to_boto3": round(app_only / boto3_ms, 2),
            "first_request_adds_ms_by_package": by_package,
            "target_ratio": 2.5,
            "runs": runs,
        },
    }


def _compile_own_modules() -> None:
    """Byte-compile ``app.py`` and ``chalicelib`` (into their ``__pycache__``, ignored by git) before timing imports.

    ``import boto3`` loads bytecode pip compiled at install time; with ``PYTHONDONTWRITEBYTECODE`` set (as on the CI
    and development machines here) our own modules were compiled from source in every timed process instead, which
    compared compiling ours with loading theirs. Both are now loaded from bytecode, as on a developer's machine."""
    import compileall

    compileall.compile_file(str(REPO_ROOT / "app.py"), quiet=1)
    compileall.compile_dir(str(REPO_ROOT / "chalicelib"), quiet=1)


def first_request_import_ms_by_package(modules: list[str]) -> dict[str, float]:
    """``python -X importtime``: own import time of the modules the first request adds, by top-level package (ms)."""
    import subprocess
    from collections import Counter

    code = f"import app, importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    wanted = set(modules)
    packages: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[2].strip() in wanted and parts[0].strip().isdigit():
            packages[parts[2].strip().split(".")[0]] += int(parts[0])
    return {name: round(us / 1000, 1) for name, us in packages.most_common(8)}


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from tests.e2e.conftest import free_ports

    wanted = set(argv if argv is not None else sys.argv[1:]) or {"ratio", "cpu", "burst", "cold"}
    figures: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="relais-http-bench-") as directory:
        api, aws, national, floor = free_ports(4)
        stack = BenchStack(Path(directory), {"api": api, "aws": aws, "national": national, "floor": floor})
        try:
            stack.start()
            os.environ.update(stack.app_env())  # this process registers pharmacies and seeds tables like the app
            from chalicelib import bootstrap

            bootstrap.reset()
            stack.start_poller()
            bench = Bench(stack)
            bench.register_pharmacies(CLIENTS)
            warm = bench.stack_phase(2 * CLIENTS, CLIENTS, "warm")  # API caches, data key, first imports
            rid = next(iter(warm["_accepted_at"]))
            item = stack.client("dynamodb").get_item(
                TableName=stack.settings_env["RELAIS_RESULTS_TABLE"], Key={"id": {"S": rid}}
            )["Item"]
            blob_bytes = len(item["payload"]["B"])
            stack.start_floor(blob_bytes)
            bench.floor_phase(2 * CLIENTS, CLIENTS, "warm")
            bench.drain()
            figures["setup"] = {
                "stack_started_s": round(time.monotonic() - started, 1),
                "floor_item_bytes": blob_bytes,
                "cores": os.cpu_count(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            }
            if "ratio" in wanted:
                figures["intake_ratio"] = ratio_figures(bench, RUNS)
                if KEEPALIVE_RUNS:
                    figures["intake_ratio_keepalive"] = ratio_figures(bench, KEEPALIVE_RUNS, keepalive=True)
            if "burst" in wanted:
                figures["burst"] = burst_figures(bench)
            if "cpu" in wanted:
                figures["cpu_per_result"] = cpu_figures(bench)
            if "cold" in wanted:
                figures["cold"] = cold_figures(bench, Path(directory))
        finally:
            stack.close()
            results = REPO_ROOT / "bench" / "results"
            results.mkdir(exist_ok=True)
            shutil.copyfile(stack.log_path, results / "http_intake.stack.log")  # what every part printed
            figures["stack_log"] = stack.log_summary()
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
