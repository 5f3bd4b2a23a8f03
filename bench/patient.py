"""Issue 4 figures: the patient side.

- page weight: bytes of HTML + CSS + JS of the result page (target < 20 KB uncompressed), as ``page_weight.py``;
- in headless Chromium against the app served over HTTP (moto server + Chalice's local server, in process:
  ``tests/browser/harness.py``): time from navigation to a usable form, and from submit to the shown result
  (median and p95 of ``BENCH_PAGE_RUNS``, default 10);
- latency from acceptance (the ``201``) to the SMS in the local stack's outbox (moto's SNS), median and p95
  over ``BENCH_SMS_N`` results (default 50), one every ``BENCH_SMS_PACE`` s (default 0.5): the real local
  stack (``python -m infra.local.stack``: stream relay, queue, poller, notifier); moto's model dump is polled
  every 50 ms (its own duration, ``outbox_poll_ms``, bounds the resolution).

    python -m bench.patient            # everything
    python -m bench.patient weight     # or: weight, page, sms
"""

from __future__ import annotations

import gzip
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

from bench.client import LIFTED_KEY_RATE
from bench.page_weight import BUDGET_BYTES, PAGE_FILES, STATIC_DIR

PAGE_RUNS = int(os.environ.get("BENCH_PAGE_RUNS", "10"))
SMS_N = int(os.environ.get("BENCH_SMS_N", "50"))
SMS_PACE = float(os.environ.get("BENCH_SMS_PACE", "0.5"))  # seconds between two submissions
CHROMIUM = "/usr/bin/chromium"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(0.95 * len(ordered)) - 1))]


def weight_figures() -> dict[str, Any]:
    sizes = {name: len((STATIC_DIR / name).read_bytes()) for name in PAGE_FILES}
    total = sum(sizes.values())
    packed = sum(len(gzip.compress((STATIC_DIR / n).read_bytes(), compresslevel=9, mtime=0)) for n in PAGE_FILES)
    return {
        "bytes": sizes,
        "total_bytes": total,
        "total_gzip_bytes": packed,
        "budget_bytes": BUDGET_BYTES,
        "within_budget": total < BUDGET_BYTES,
    }


def page_figures() -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} missing"}
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    from playwright.sync_api import sync_playwright

    from tests.browser.harness import serve
    from tests.chromium import CHROMIUM_ARGS

    usable: list[float] = []
    shown: list[float] = []
    with serve() as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for run in range(PAGE_RUNS + 1):  # the first run warms the server's caches and is dropped
                _, token = site.new_link()
                context = browser.new_context(viewport={"width": 390, "height": 800})
                page = context.new_page()
                started = time.perf_counter()
                page.goto(f"{site.base_url}/r#{token}")
                page.wait_for_selector("#birth-date", state="visible")
                ready = time.perf_counter()
                page.fill("#birth-date", "03/12/1984")
                clicked = time.perf_counter()
                page.click("#submit")
                page.wait_for_selector("#result", state="visible")
                done = time.perf_counter()
                context.close()
                if run:
                    usable.append((ready - started) * 1000)
                    shown.append((done - clicked) * 1000)
        finally:
            browser.close()
    return {
        "runs": PAGE_RUNS,
        "load_to_usable_form_ms": {"median": round(statistics.median(usable), 1), "p95": round(p95(usable), 1)},
        "submit_to_result_ms": {"median": round(statistics.median(shown), 1), "p95": round(p95(shown), 1)},
    }


def sms_figures() -> dict[str, Any]:
    import requests

    from tests.e2e.conftest import start_stack
    from tests.factories import valid_body
    from tests.signing import sign

    with tempfile.TemporaryDirectory(prefix="relais-bench-") as directory:
        stack = start_stack(Path(directory), dict(LIFTED_KEY_RATE))
        try:
            _, key_id, private_key = stack.register_pharmacy("Pharmacie du Banc")
            seen: dict[str, float] = {}
            fetches: list[float] = []
            stop = threading.Event()

            def watch() -> None:
                url = f"{stack.aws_endpoint}/moto-api/data.json"
                while not stop.is_set():
                    asked = time.perf_counter()
                    try:
                        data = requests.get(url, timeout=30).json()
                    except (requests.RequestException, ValueError):
                        continue
                    now = time.perf_counter()
                    fetches.append((now - asked) * 1000)
                    for sms in data.get("sns", {}).get("SMS", []):
                        seen.setdefault(str(sms.get("phone_number")), now)
                    stop.wait(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            accepted: dict[str, float] = {}
            for _ in range(SMS_N):
                phone = f"+336123{secrets.randbelow(10**5):05d}"
                body = valid_body(datetime.now(UTC))
                body["pharmacy_reference"] = f"BENCH-{secrets.token_hex(6)}"
                body["patient"]["phone"] = phone
                body["notify"] = ["sms"]
                raw = json.dumps(body).encode()
                url = f"{stack.api_url}/v1/results"
                answer = requests.post(
                    url,
                    data=raw,
                    timeout=30,
                    headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw),
                )
                assert answer.status_code == 201, answer.text
                accepted[phone] = time.perf_counter()
                time.sleep(SMS_PACE)  # a steady pace, not a burst: this measures latency, not throughput
            deadline = time.monotonic() + 120
            while len([p for p in accepted if p in seen]) < SMS_N and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            watcher.join(timeout=5)
            latencies = [(seen[p] - accepted[p]) * 1000 for p in accepted if p in seen]
        finally:
            stack.stop()
    if not latencies:
        return {"results": SMS_N, "delivered": 0}
    return {
        "results": SMS_N,
        "pace_s": SMS_PACE,
        "delivered": len(latencies),
        "acceptance_to_sms_ms": {"median": round(statistics.median(latencies), 1), "p95": round(p95(latencies), 1)},
        "outbox_poll_ms": {"median": round(statistics.median(fetches), 1), "max": round(max(fetches), 1)},
    }


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:]) or {"weight", "page", "sms"}
    figures: dict[str, Any] = {}
    if "weight" in wanted:
        figures["page_weight"] = weight_figures()
    if "page" in wanted:
        figures["page_in_chromium"] = page_figures()
    if "sms" in wanted:
        figures["sms_latency_local_stack"] = sms_figures()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
