"""Build the deployable package of a stage: ``python -m infra.package [--stage prod] [--out build/package]``.

1. **Wheelhouse.** ``build/wheelhouse`` receives the Linux wheels of ``requirements.txt`` (``pip download
   --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --only-binary=:all:``), once per
   version of the requirements (a stamp holds their hash): later builds need no network.
2. **Staging.** ``build/stage/<stage>/project`` holds what Chalice packages: ``app.py``, ``chalicelib/``,
   ``.chalice/config.json``, an empty ``requirements.txt`` and ``vendor/``: the dependencies installed from the
   wheelhouse alone (``pip install --target --no-index --platform … --no-compile``, no machine pip configuration).
   Chalice then runs no pip of its own: the package is the same on any build machine, macOS included.
3. **Chalice.** ``chalice package --stage STAGE --merge-template <resources.json + prod.json> OUT`` with
   ``AWS_DEFAULT_REGION=eu-west-3``.
4. **Finishing.** :func:`infra.template.finalize` (pure) wires event sources, environment, roles
   (:func:`infra.iam.function_policy`, pure), log groups, alarms and API settings; the zip is rewritten with sorted
   entries, fixed timestamps and modes: the same sources give the same bytes.
5. **Bytecode.** Every module's bytecode is written beside it in the zip (``__pycache__/*.cpython-311.pyc``,
   :func:`finish_zip`). Lambda's code directory is read-only: without them each cold start compiles every module
   it imports, and throws the result away (importing all of ``chalicelib`` with its dependencies took 1.2-1.4 s
   from sources, 0.4-0.6 s from bytecode). The files are unchecked-hash ``.pyc`` (PEP 552: the timestamps of the
   zip are fixed, so a timestamp check would always fail) naming ``/var/task/…``, where Lambda unpacks the zip, in
   tracebacks; they are built by the Python that builds the package, which must be the runtime's 3.11.

``build(..., with_dependencies=False)`` skips steps 1-2's dependencies (a template in about 2 s, no network): what
``tests/unit/test_iam_policies.py`` reads. ``make iac-check`` builds the full package and lints it.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.iam import FUNCTIONS, all_policies, function_policy
from infra.template import PLACEHOLDER_POLICY_ACTION, PackagingError, finalize, merge_template

__all__ = ["FUNCTIONS", "PackagingError", "all_policies", "build", "fill_wheelhouse", "finalize", "function_policy"]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
WHEELHOUSE = BUILD / "wheelhouse"
REGION = "eu-west-3"
PYTHON_VERSION = "3.11"
PLATFORM = "manylinux2014_x86_64"  # Lambda python3.11 runs on Amazon Linux 2 (glibc 2.26), x86_64
TEMPLATE_FILE = "sam.json"
ZIP_FILE = "deployment.zip"
TASK_ROOT = "/var/task"  # where Lambda unpacks the zip: the paths the bytecode names


def _run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    started = time.monotonic()
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(list(cmd), check=True, env=dict(env) if env is not None else None, cwd=cwd)  # noqa: S603
    print(f"  ({time.monotonic() - started:.1f} s)", flush=True)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _offline_pip_env() -> dict[str, str]:
    """pip with no configuration of the machine (find-links, indexes, constraints): the wheelhouse only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_CONFIG_FILE=os.devnull)
    return env


def fill_wheelhouse(requirements: Path = ROOT / "requirements.txt", wheelhouse: Path = WHEELHOUSE) -> Path:
    """Download the Lambda (Linux x86_64, CPython 3.11) wheels of ``requirements`` once; skipped when up to date."""
    stamp = wheelhouse / ".requirements.sha256"
    digest = _digest(requirements)
    if stamp.exists() and stamp.read_text() == digest:
        return wheelhouse
    shutil.rmtree(wheelhouse, ignore_errors=True)  # no wheel of older requirements may linger and be picked
    wheelhouse.mkdir(parents=True)
    # The machine's pip configuration (index or mirror, certificates) applies to this download, and only to it.
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheelhouse), "--only-binary=:all:",
         "--platform", PLATFORM, "--python-version", PYTHON_VERSION, "--implementation", "cp",
         "-r", str(requirements)],
    )  # fmt: skip
    stamp.write_text(digest)
    return wheelhouse


def _install_vendor(vendor: Path, requirements: Path, wheelhouse: Path) -> None:
    stamp = vendor.parent / ".vendor.sha256"
    digest = _digest(requirements, *sorted(wheelhouse.glob("*.whl")))
    if vendor.is_dir() and stamp.exists() and stamp.read_text() == digest:
        return
    shutil.rmtree(vendor, ignore_errors=True)
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheelhouse),
         "--target", str(vendor), "--only-binary=:all:", "--platform", PLATFORM, "--python-version", PYTHON_VERSION,
         "--implementation", "cp", "--no-compile", "-r", str(requirements)],
        env=_offline_pip_env(),
    )  # fmt: skip
    shutil.rmtree(vendor / "bin", ignore_errors=True)
    stamp.write_text(digest)


def check_stage_config(config: Mapping[str, Any], stage: str) -> None:
    """PackagingError when ``.chalice/config.json`` has no ``stage``, or gives it settings it must never deploy with
    (signature failures explained outside the local and sandbox stages: ``chalicelib.config.check_explanations``)."""
    from chalicelib.config import SettingsError, check_explanations

    if stage not in config.get("stages", {}):
        raise PackagingError(f"no stage {stage!r} in .chalice/config.json")
    env = {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}
    try:
        check_explanations(env.get("RELAIS_STAGE", stage), int(env.get("RELAIS_EXPLAIN_AUTH_FAILURES", "0")))
        check_explanations(stage, int(env.get("RELAIS_EXPLAIN_AUTH_FAILURES", "0")))
    except (SettingsError, ValueError) as exc:
        raise PackagingError(f"stage {stage!r} in .chalice/config.json: {exc}") from None


def stage_project(stage_dir: Path, stage: str, *, with_dependencies: bool) -> Path:
    """Copy what Chalice packages into ``stage_dir``; dependencies in ``vendor/`` from the wheelhouse."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    check_stage_config(config, stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "chalicelib", ".chalice"):
        target = stage_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    shutil.copy2(ROOT / "app.py", stage_dir / "app.py")
    shutil.copytree(
        ROOT / "chalicelib", stage_dir / "chalicelib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (stage_dir / ".chalice").mkdir()
    shutil.copy2(ROOT / ".chalice" / "config.json", stage_dir / ".chalice" / "config.json")
    policy_file = config["stages"][stage].get("iam_policy_file") or config.get("iam_policy_file")
    if policy_file:
        # Chalice wants the file; finalize() replaces every role's policy and fails if this placeholder survives.
        deny = {"Effect": "Deny", "Action": PLACEHOLDER_POLICY_ACTION, "Resource": "*"}
        placeholder = {"Version": "2012-10-17", "Statement": [deny]}
        (stage_dir / ".chalice" / policy_file).write_text(json.dumps(placeholder))
    (stage_dir / "requirements.txt").write_text("# dependencies are in vendor/, installed from build/wheelhouse\n")
    vendor = stage_dir / "vendor"
    if with_dependencies:
        _install_vendor(vendor, ROOT / "requirements.txt", fill_wheelhouse())
    else:
        shutil.rmtree(vendor, ignore_errors=True)
        (stage_dir / ".vendor.sha256").unlink(missing_ok=True)
    return stage_dir


def _chalice() -> str:
    beside = Path(sys.executable).with_name("chalice")
    found = str(beside) if beside.exists() else shutil.which("chalice")
    if not found:
        raise PackagingError("chalice is not installed (make install)")
    return found


def compile_bytecode(root: Path) -> None:
    """Write the bytecode of every module under ``root`` beside it, as Lambda's Python reads it (see step 5)."""
    runtime = tuple(int(part) for part in PYTHON_VERSION.split("."))
    if sys.version_info[:2] != runtime:
        raise PackagingError(
            f"the package's bytecode is for Lambda's Python {PYTHON_VERSION}: build it with Python {PYTHON_VERSION} "
            f"(this is {sys.version_info.major}.{sys.version_info.minor})"
        )
    compiled = compileall.compile_dir(
        root,
        quiet=1,  # errors only
        force=True,  # whatever the zip held already
        stripdir=str(root),
        prependdir=TASK_ROOT,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        workers=0,  # one process per core
    )
    if not compiled:
        raise PackagingError("a module of the package does not compile (see above)")


def finish_zip(path: Path) -> None:
    """Add each module's bytecode to ``path``, and rewrite it with sorted entries, fixed timestamps and modes: same
    inputs, same bytes."""
    tmp = path.with_suffix(".tmp")
    with tempfile.TemporaryDirectory() as unpacked:
        root = Path(unpacked)
        with zipfile.ZipFile(path) as src:
            src.extractall(root)
        compile_bytecode(root)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for name in files:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(info, (root / name).read_bytes())
    tmp.replace(path)


def build(stage: str, out: Path, *, with_dependencies: bool = True, work: Path | None = None) -> dict[str, Any]:
    """Package ``stage`` into ``out`` (``sam.json`` + ``deployment.zip``); the finished template."""
    work = work or BUILD / "stage" / stage
    project = stage_project(work / "project", stage, with_dependencies=with_dependencies)
    merge_file = work / "merge-template.json"
    merge_file.write_text(json.dumps(merge_template(stage), indent=2))
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION}
    _run([_chalice(), "package", "--stage", stage, "--merge-template", str(merge_file), str(out.resolve())],
         env=env, cwd=project)  # fmt: skip
    template = finalize(json.loads((out / TEMPLATE_FILE).read_text()))
    (out / TEMPLATE_FILE).write_text(json.dumps(template, indent=2, sort_keys=True) + "\n")
    finish_zip(out / ZIP_FILE)
    return template


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--out", type=Path, default=BUILD / "package")
    parser.add_argument("--wheelhouse-only", action="store_true", help="only fill build/wheelhouse")
    args = parser.parse_args(argv)
    if args.wheelhouse_only:
        fill_wheelhouse()
        return 0
    try:
        template = build(args.stage, args.out)
    except (PackagingError, subprocess.CalledProcessError) as exc:
        print(f"packaging failed: {exc}", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for resource in template["Resources"].values():
        counts[resource["Type"]] = counts.get(resource["Type"], 0) + 1
    size = (args.out / ZIP_FILE).stat().st_size
    sha = hashlib.sha256((args.out / ZIP_FILE).read_bytes()).hexdigest()[:16]
    print(f"packaged {args.stage} into {args.out}: {ZIP_FILE} {size / 1e6:.1f} MB (sha256 {sha}…)")
    for rtype, n in sorted(counts.items()):
        print(f"  {n:3d} {rtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
