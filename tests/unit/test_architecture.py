"""The house rules that code review keeps forgetting, checked on the source (architecture.md)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHALICELIB = ROOT / "chalicelib"

#: SDKs and frameworks that only adapters, routes, events and bootstrap may touch.
INFRASTRUCTURE = ("chalice", "boto3", "botocore", "pynamodb", "aws_encryption_sdk")
#: Relais layers that domain and services must not reach into (dependencies point inwards).
OUTER_LAYERS = ("chalicelib.adapters", "chalicelib.routes", "chalicelib.events", "chalicelib.bootstrap")
#: Tools that must never be deployed to Lambda.
TEST_TOOLS = ("pytest", "moto", "hypothesis", "ruff", "mypy", "chalice", "playwright")


def _python_files(package: str) -> list[Path]:
    files = sorted((CHALICELIB / package).rglob("*.py"))
    assert files, f"chalicelib/{package} has Python files"
    return files


def _imported_modules(path: Path) -> Iterator[str]:
    """Every module an ``import`` names anywhere in the file (top level, functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def _is_within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


@pytest.mark.parametrize("package", ["domain", "services"])
def test_domain_and_services_import_no_sdk_or_framework(package):
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in _python_files(package)
        for module in _imported_modules(path)
        if _is_within(module, INFRASTRUCTURE)
    }
    assert not offenders, sorted(offenders)


@pytest.mark.parametrize("package", ["domain", "services"])
def test_domain_and_services_do_not_depend_on_outer_layers(package):
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in _python_files(package)
        for module in _imported_modules(path)
        if _is_within(module, OUTER_LAYERS)
    }
    assert not offenders, sorted(offenders)


def test_the_domain_does_not_depend_on_services():
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in _python_files("domain")
        for module in _imported_modules(path)
        if _is_within(module, ("chalicelib.services",))
    }
    assert not offenders, sorted(offenders)


def test_the_import_scanner_sees_nested_and_dynamic_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "def f():\n"
        "    import boto3.session\n"
        "    from pynamodb.models import Model\n"
        "    importlib.import_module('aws_encryption_sdk')\n"
    )
    found = set(_imported_modules(sample))
    assert {"os", "boto3.session", "pynamodb.models", "aws_encryption_sdk"} <= found


def _is_wiring(statement: ast.stmt) -> bool:
    """Imports, ``app = Chalice(...)``, ``app.<setting> = constant``, ``app.register_*(...)`` calls and
    ``app.api.binary_types.append(constant)`` (a media type the API answers in binary)."""
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return True  # docstring
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target, value = statement.targets[0], statement.value
        if isinstance(target, ast.Name) and target.id == "app":
            return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Chalice"
        return (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "app"
            and isinstance(value, ast.Constant)
        )
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        func = statement.value.func
        if ast.unparse(func) == "app.api.binary_types.append":
            return all(isinstance(arg, ast.Constant) for arg in statement.value.args)
        return (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "app"
            and func.attr.startswith("register_")
        )
    return False


def test_app_py_only_wires_blueprints_and_middleware():
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))

    definitions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    assert not definitions, "app.py defines no view, handler or class: they live in chalicelib/"
    others = [ast.unparse(s) for s in tree.body if not _is_wiring(s)]
    assert not others, others
    registrations = [ast.unparse(s) for s in tree.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)]
    assert any("register_blueprint" in r for r in registrations)


def test_app_debug_is_off():
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    debug = [
        s.value.value
        for s in tree.body
        if isinstance(s, ast.Assign)
        and isinstance(s.targets[0], ast.Attribute)
        and s.targets[0].attr == "debug"
        and isinstance(s.value, ast.Constant)
    ]
    assert debug in ([], [False])
    from app import app

    assert app.debug is False


def test_the_app_leaves_the_relais_logger_to_powertools():
    """Chalice's ``debug`` setter sets the logger named after the app ("relais", also Powertools' logger) to ERROR:
    had it run after the Powertools logger was built, every INFO line (access log, metrics context) would vanish."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from chalicelib.observability import logger\n"
        "logger()\n"
        "import app\n"
        "print(logging.getLogger('relais').isEnabledFor(logging.INFO))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert done.stdout.strip() == "True"


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_runtime_requirements_are_pinned_exactly():
    lines = _requirement_lines(ROOT / "requirements.txt")

    assert lines
    unpinned = [
        line
        for line in lines
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+", line)
    ]
    assert not unpinned, unpinned


def test_runtime_requirements_hold_no_test_or_developer_tool():
    names = {
        re.split(r"[\[=<>!~ ;]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in _requirement_lines(ROOT / "requirements.txt")
    }

    assert not names & set(TEST_TOOLS), sorted(names & set(TEST_TOOLS))
    assert not any(name.startswith(("pytest-", "types-", "moto-")) for name in names)
