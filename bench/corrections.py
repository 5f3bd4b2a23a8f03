"""Issue 14 figures: a correction's way to the national system and to the patient, on the local stack.

``BENCH_CORRECTION_N`` results (default 30) are submitted with an SMS and delivered (``reported``); then each is
corrected (``wrong_result``), one every ``BENCH_CORRECTION_PACE`` s (default 0.5). A watcher polls the stand-in
national system (``/_admin/received``) and moto's SNS model every 50 ms. Figures, median and p95:

- ``correction_202_to_national_ms``: from the correction's ``202`` to the stand-in holding version 2 (the request
  queues the new version itself, so the worker may deliver it before the client has read the ``202``: negative);
- ``correction_202_to_sms_ms``: from the ``202`` to the patient's second SMS (sent inside the request, as a resend's
  is: what remains is mostly the watcher's polling, whose resolution is its 50 ms pause plus one poll);
- ``request_to_sms_ms`` and ``correction_request_ms``: the same from the moment the request was sent, and the
  request itself.

    python -m bench.corrections
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.patient import p95

N = int(os.environ.get("BENCH_CORRECTION_N", "30"))
PACE = float(os.environ.get("BENCH_CORRECTION_PACE", "0.5"))  # seconds between two corrections


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "p95": round(p95(values), 1)} if values else {}


def figures() -> dict[str, Any]:
    import requests

    from bench.client import LIFTED_KEY_RATE, post_signed
    from tests.e2e.conftest import start_stack
    from tests.factories import valid_body

    with tempfile.TemporaryDirectory(prefix="relais-bench-") as directory:
        stack = start_stack(Path(directory), dict(LIFTED_KEY_RATE))
        try:
            _, key_id, private_key = stack.register_pharmacy("Pharmacie du Banc")

            def post(path: str, body: dict[str, Any]) -> Any:
                raw = json.dumps(body).encode()
                return post_signed(f"{stack.api_url}{path}", raw, key_id=key_id, private_key=private_key)

            phones: dict[str, str] = {}  # result id → phone
            for _ in range(N):
                phone = f"+336126{secrets.randbelow(10**5):05d}"
                body = valid_body(datetime.now(UTC))
                body["pharmacy_reference"] = f"BENCH-{secrets.token_hex(6)}"
                body["patient"]["phone"] = phone
                body["notify"] = ["sms"]
                answer = post("/v1/results", body)
                assert answer.status_code == 201, answer.text
                phones[answer.json()["id"]] = phone

            held: dict[str, float] = {}  # result id → when the stand-in was first seen holding version 2
            second_sms: dict[str, float] = {}  # phone → when its second SMS was first seen
            reported: set[str] = set()
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    try:
                        kept = requests.get(f"{stack.national_url}/_admin/received", timeout=30).json()
                        sms = requests.get(f"{stack.aws_endpoint}/moto-api/data.json", timeout=30).json()
                    except (requests.RequestException, ValueError):
                        continue
                    now = time.perf_counter()
                    for record in kept:
                        rid = record["bundle"]["identifier"]["value"]
                        reported.add(rid)
                        if record.get("version") == 2:
                            held.setdefault(rid, now)
                    counts: dict[str, int] = {}
                    for message in sms.get("sns", {}).get("SMS", []):
                        phone = str(message.get("phone_number"))
                        counts[phone] = counts.get(phone, 0) + 1
                        if counts[phone] == 2:
                            second_sms.setdefault(phone, now)
                    stop.wait(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            deadline = time.monotonic() + 120
            while not set(phones) <= reported and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # the statuses follow the receiver's answers

            sent: dict[str, float] = {}
            answered: dict[str, float] = {}
            for rid in phones:
                sent[rid] = time.perf_counter()
                answer = post(
                    f"/v1/results/{rid}/correction",
                    {"correction_reference": "BENCH-C", "reason": "wrong_result", "result": "positive"},
                )
                answered[rid] = time.perf_counter()
                assert answer.status_code == 202, answer.text
                time.sleep(PACE)  # a steady pace: this measures latency, not throughput
            deadline = time.monotonic() + 120
            while (len(held) < N or len(second_sms) < N) and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            watcher.join(timeout=5)
        finally:
            stack.stop()
    return {
        "results": N,
        "pace_s": PACE,
        "national_version_2_held": len(held),
        "second_sms_seen": len(second_sms),
        "correction_202_to_national_ms": _summary([(held[r] - answered[r]) * 1000 for r in answered if r in held]),
        "correction_202_to_sms_ms": _summary(
            [(second_sms[phones[r]] - answered[r]) * 1000 for r in answered if phones[r] in second_sms]
        ),
        "request_to_sms_ms": _summary(
            [(second_sms[phones[r]] - sent[r]) * 1000 for r in sent if phones[r] in second_sms]
        ),
        "correction_request_ms": _summary([(answered[r] - sent[r]) * 1000 for r in sent]),
    }


def main(argv: list[str] | None = None) -> int:
    del argv
    print(json.dumps(figures(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
