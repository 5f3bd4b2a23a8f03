"""The paper slip (contract v2 §7): its size and the time to make one, and what its libraries cost other requests.

In one warm process on moto (patched as the local stack runs it), ``BENCH_SLIP_RUNS`` (default 10, at least 3) of
each, min/median/max in ms:

- ``slip_request_ms``: ``POST /v1/results/{id}/slip`` through ``SlipService`` (signature, ownership, the PDF, the
  one transaction), each on a fresh result;
- floors: ``follow_request_ms``, a trivial signed request (``GET /v1/results/{id}``: one read, one commit);
  ``resend_request_ms``, the resend's transaction (the same as the slip's but the link) plus its SMS to moto;
- ``render_ms``: the PDF alone (text, QR code, fpdf2's output), against ``empty_pdf_ms``, fpdf2 writing one empty
  A6 page (the floor of any PDF made with it), and ``qr_encode_ms``, segno encoding the link;
- ``slip_bytes``: the PDF's size (the contract's bound: under 50 KB).

Cold start, in fresh processes (3 runs each): ``import_app_ms``; ``slip_libraries_imported_without_a_slip``, the PDF
and QR modules in ``sys.modules`` after importing ``app`` and every other module of ``chalicelib`` (target: none, so
no other request pays anything for them); ``first_slip_import_ms``, what the first slip of a cold process adds by
importing ``adapters/slip_pdf.py`` (fpdf2 with Pillow and fontTools, and segno).

    python -m bench.slip
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import spread
from bench.ingest import moto_with_one_pharmacy

ROOT = Path(__file__).resolve().parents[1]
RUNS = max(3, int(os.environ.get("BENCH_SLIP_RUNS", "10")))
COLD_RUNS = 3
SLIP_LIBRARIES = ("fpdf", "segno", "PIL", "fontTools", "defusedxml")


def _ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def warm_figures() -> dict[str, Any]:
    import boto3

    from chalicelib import bootstrap
    from chalicelib.adapters.slip_pdf import PAGE_HEIGHT, PAGE_WIDTH, render_slip
    from chalicelib.domain.links import new_token
    from chalicelib.domain.messages import link_url, slip_text
    from chalicelib.domain.records import new_id
    from tests.factories import valid_body
    from tests.signing import sign, to_signed_request

    with moto_with_one_pharmacy("Pharmacie du Banc d'Essai", 10_000) as (_, key_id, private_key):
        boto3.client("ses").verify_email_identity(EmailAddress=bootstrap.settings().email_sender)
        base = "https://api.relais.example"

        def submit(notify: list[str]) -> str:
            body = valid_body(datetime.now(UTC))
            body["pharmacy_reference"] = f"BENCH-SLIP-{new_id(16)}"
            body["notify"] = notify
            raw = json.dumps(body).encode()
            url = f"{base}/v1/results"
            headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
            return bootstrap.results_service().submit(to_signed_request("POST", url, headers, raw)).result_id

        def signed(method: str, path: str, body: bytes | None) -> Any:
            url = f"{base}{path}"
            headers = sign(method, url, key_id=key_id, private_key=private_key, body=body)
            return to_signed_request(method, url, headers, body or b"")

        paper = [submit(["paper"]) for _ in range(RUNS + 1)]
        texted = [submit(["sms"]) for _ in range(RUNS + 1)]
        slips = bootstrap.slip_service()
        resends = bootstrap.resend_service()
        results = bootstrap.results_service()
        # Warm up every path once (caches, lazy imports, the first data key).
        slips.slip(signed("POST", f"/v1/results/{paper[0]}/slip", b"{}"), paper[0])
        resends.resend(signed("POST", f"/v1/results/{texted[0]}/resend", b"{}"), texted[0])
        results.follow(signed("GET", f"/v1/results/{paper[0]}", None), paper[0])
        slip_ms: list[float] = []
        sizes: list[float] = []
        resend_ms: list[float] = []
        follow_ms: list[float] = []
        for rid, sms_rid in zip(paper[1:], texted[1:], strict=True):
            slip_request = signed("POST", f"/v1/results/{rid}/slip", b"{}")
            started = time.perf_counter()
            pdf = slips.slip(slip_request, rid)
            slip_ms.append((time.perf_counter() - started) * 1000)
            sizes.append(float(len(pdf)))
            resend_request = signed("POST", f"/v1/results/{sms_rid}/resend", b"{}")
            started = time.perf_counter()
            resends.resend(resend_request, sms_rid)
            resend_ms.append((time.perf_counter() - started) * 1000)
            follow_request = signed("GET", f"/v1/results/{rid}", None)
            started = time.perf_counter()
            results.follow(follow_request, rid)
            follow_ms.append((time.perf_counter() - started) * 1000)

    import segno
    from fpdf import FPDF

    def empty_pdf() -> bytes:
        pdf = FPDF(unit="mm", format=(PAGE_WIDTH, PAGE_HEIGHT))
        pdf.add_page()
        return bytes(pdf.output())

    expires = datetime.now(UTC)
    texts = [
        slip_text(
            pharmacy_name="Pharmacie du Banc d'Essai",
            url=link_url("https://resultats.relais.example", new_token()),
            expires_at=expires,
            ttl_hours=72,
        )
        for _ in range(RUNS)
    ]
    render_ms = [_ms(functools.partial(render_slip, text)) for text in texts]
    empty_ms = [_ms(empty_pdf) for _ in range(RUNS)]
    qr_ms = [_ms(functools.partial(segno.make_qr, text.url, error="m")) for text in texts]
    return {
        "runs": RUNS,
        "slip_request_ms": spread(slip_ms),
        "floor_follow_request_ms": spread(follow_ms),
        "floor_resend_request_ms": spread(resend_ms),
        "slip_to_follow_median_ratio": round(statistics.median(slip_ms) / statistics.median(follow_ms), 2),
        "slip_to_resend_median_ratio": round(statistics.median(slip_ms) / statistics.median(resend_ms), 2),
        "render_ms": spread(render_ms),
        "floor_empty_pdf_ms": spread(empty_ms),
        "qr_encode_ms": spread(qr_ms),
        "slip_bytes": spread(sizes, 0),
        "slip_bytes_limit": 50 * 1024,
    }


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return done.stdout.strip()


def cold_figures() -> dict[str, Any]:
    others = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "chalicelib").rglob("*.py")
        if path.name != "slip_pdf.py"
    )
    leaked = _python(
        "import importlib, json, sys\nimport app\n"
        f"for name in {others!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {SLIP_LIBRARIES!r})))\n"
    )
    timing = (
        "import time\nstarted = time.perf_counter()\nimport app\nmiddle = time.perf_counter()\n"
        "import chalicelib.adapters.slip_pdf\nend = time.perf_counter()\n"
        "print((middle - started) * 1000, (end - middle) * 1000)\n"
    )
    app_ms, slip_ms = [], []
    for _ in range(COLD_RUNS):
        first, second = map(float, _python(timing).split())
        app_ms.append(first)
        slip_ms.append(second)
    return {
        "runs": COLD_RUNS,
        "import_app_ms": spread(app_ms, 1),
        "slip_libraries_imported_without_a_slip": json.loads(leaked),
        "modules_imported_besides_slip_pdf": len(others),
        "first_slip_import_ms": spread(slip_ms, 1),
    }


def main() -> int:
    print(json.dumps({"warm": warm_figures(), "cold": cold_figures()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
