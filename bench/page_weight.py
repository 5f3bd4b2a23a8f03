"""Weight of the patient result page (HTML + CSS + JS, uncompressed).

Prints the byte size of each file, the total, and the gzip size for information.
Exits 1 when the uncompressed total reaches the budget (20,000 bytes), 2 when a file is missing.

    python bench/page_weight.py
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent.parent / "chalicelib" / "static"
PAGE_FILES = ("result.html", "result.css", "result.js")
BUDGET_BYTES = 20_000


def main() -> int:
    total = 0
    total_gzip = 0
    print(f"{'file':<14}{'bytes':>8}{'gzip':>8}")
    for name in PAGE_FILES:
        path = STATIC_DIR / name
        if not path.is_file():
            print(f"missing: {path}", file=sys.stderr)
            return 2
        data = path.read_bytes()
        packed = len(gzip.compress(data, compresslevel=9, mtime=0))
        total += len(data)
        total_gzip += packed
        print(f"{name:<14}{len(data):>8}{packed:>8}")
    print(f"{'total':<14}{total:>8}{total_gzip:>8}")
    verdict = "ok" if total < BUDGET_BYTES else "OVER BUDGET"
    print(f"budget        {BUDGET_BYTES:>8}  {verdict} ({BUDGET_BYTES - total:+d} bytes left)")
    return 0 if total < BUDGET_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())
