"""Cold imports from the deployment zip, as Lambda unpacks it: ``python -m bench.package_cold``.

``infra/package.py`` ships each module's bytecode in the zip (step 5): Lambda's code directory is read-only, so
without it every cold start compiles each module it imports from source and throws the result away. This bench
unpacks ``build/package/deployment.zip`` (built by ``python -m infra.package`` first when it is missing) twice: as
built, and with every ``__pycache__`` removed (the zip before bytecode shipped). It then times, in fresh processes
that see only the unpacked package (``python -S -B``, the package first on ``sys.path``, as ``/var/task`` is):

- ``import app`` (every function's cold start: the Chalice app and its handlers);
- ``import app`` and every ``chalicelib`` module (what a function using all of them would import, an upper bound);
- the floor: ``import boto3`` from the package with its bytecode.

``BENCH_PACKAGE_RUNS`` (default 5) processes of each, the two packages alternating; min/median/max in ms.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.figures import spread
from infra.package import BUILD, ZIP_FILE

RUNS = int(os.environ.get("BENCH_PACKAGE_RUNS", "5"))
PACKAGE = BUILD / "package" / ZIP_FILE
EVERY_MODULE = (
    "import importlib, pkgutil, chalicelib\n"
    "for found in pkgutil.walk_packages(chalicelib.__path__, 'chalicelib.'):\n"
    "    importlib.import_module(found.name)\n"
)
IMPORTS = {
    "app": "import app\n",
    "app_and_every_module": "import app\n" + EVERY_MODULE,
    "floor_boto3": "import boto3\n",
}


def _timed(root: Path, code: str) -> float:
    """Milliseconds ``code`` takes in a fresh process that sees only ``root``."""
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "started = time.perf_counter()\n"
        f"{code}"
        "print((time.perf_counter() - started) * 1000)\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "eu-west-3", "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, "-S", "-B", "-c", script], capture_output=True, text=True, check=True, cwd=root, env=env
    )
    return float(done.stdout.strip().splitlines()[-1])


def package_cold_figures(runs: int = RUNS) -> dict[str, Any]:
    if not PACKAGE.exists():
        print(f"{PACKAGE} missing: building it (python -m infra.package)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "infra.package"], check=True)
    with tempfile.TemporaryDirectory() as work:
        built, sources_only = Path(work) / "with-bytecode", Path(work) / "sources-only"
        with zipfile.ZipFile(PACKAGE) as package:
            package.extractall(built)
            package.extractall(sources_only)
        for cache in list(sources_only.rglob("__pycache__")):
            shutil.rmtree(cache)
        pyc = sum(1 for _ in built.rglob("*.pyc"))
        times: dict[str, dict[str, list[float]]] = {name: {"bytecode": [], "sources": []} for name in IMPORTS}
        for run in range(runs):
            print(f"package cold run {run + 1}/{runs}", file=sys.stderr, flush=True)
            for name, code in IMPORTS.items():
                times[name]["bytecode"].append(_timed(built, code))
                if name != "floor_boto3":
                    times[name]["sources"].append(_timed(sources_only, code))
    floor = statistics.median(times["floor_boto3"]["bytecode"])
    figures: dict[str, Any] = {
        "package": str(PACKAGE.relative_to(BUILD.parent)),
        "package_bytes": PACKAGE.stat().st_size,
        "pyc_files": pyc,
        "runs": runs,
        "floor_import_boto3_ms": spread(times["floor_boto3"]["bytecode"], 1),
    }
    for name in ("app", "app_and_every_module"):
        with_bytecode, from_sources = times[name]["bytecode"], times[name]["sources"]
        figures[name] = {
            "with_bytecode_ms": spread(with_bytecode, 1),
            "sources_only_ms": spread(from_sources, 1),
            "with_bytecode_to_floor": round(statistics.median(with_bytecode) / floor, 2),
            "sources_only_to_floor": round(statistics.median(from_sources) / floor, 2),
        }
    return figures


def main() -> int:
    print(json.dumps(package_cold_figures(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
