"""``make bench``: every benchmark, one after the other, figures as JSON (also kept in bench/results/)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCHES = [
    ("ingest", [sys.executable, "-m", "bench.ingest"]),
    ("delivery", [sys.executable, "-m", "bench.delivery"]),
    ("patient", [sys.executable, "-m", "bench.patient"]),
    ("corrections", [sys.executable, "-m", "bench.corrections"]),
    ("slip", [sys.executable, "-m", "bench.slip"]),  # the paper slip: size, time, and no cost to other requests
    ("peak", [sys.executable, "-m", "bench.peak"]),
    ("validation", [sys.executable, "-m", "bench.validation"]),  # a second: the worst 16 KiB body
    ("receipts", [sys.executable, "-m", "bench.receipts"]),  # about a minute: a receipt's cost, KMS calls, imports
    ("package", [sys.executable, "-m", "bench.package_cold"]),  # cold imports from the deployment zip
    ("http", [sys.executable, "-m", "bench.http_intake"]),  # about 10 minutes: the local stack over HTTP
]


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:]) or {name for name, _ in BENCHES}
    out_dir = Path(__file__).with_name("results")
    out_dir.mkdir(exist_ok=True)
    failed = 0
    for name, command in BENCHES:
        if name not in wanted:
            continue
        print(f"== bench {name} …", file=sys.stderr, flush=True)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        # Benchmarks print one JSON document last; anything else on stdout is the app's own logging.
        text = done.stdout[done.stdout.rfind("\n{\n") + 1 :] if "\n{\n" in done.stdout else done.stdout
        try:
            figures = json.loads(text)
        except ValueError:
            failed += 1
            print(f"bench {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        (out_dir / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps({name: figures, "seconds": round(time.monotonic() - started, 1)}, indent=2), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
