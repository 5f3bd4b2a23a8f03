"""The deployment zip carries each module's bytecode (``infra/package.py`` step 5): read by Lambda's Python as it
is, never compiled again on a cold start, and the same bytes from the same sources."""

from __future__ import annotations

import importlib.util
import marshal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra import package
from infra.template import PackagingError

SOURCES = {
    "app.py": "from pkg.mod import VALUE\n",
    "pkg/__init__.py": "",
    "pkg/mod.py": "VALUE = 41 + 1\n",
    "pkg/data.json": "{}\n",
}


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        for name, text in files.items():
            out.writestr(name, text)
    return path


def test_every_module_gets_unchecked_hash_bytecode_naming_the_lambda_path(tmp_path):
    built = _zip(tmp_path / "deployment.zip", SOURCES)
    package.finish_zip(built)

    with zipfile.ZipFile(built) as done:
        names = done.namelist()
        pyc = done.read("pkg/__pycache__/mod.cpython-311.pyc")
    assert names == sorted(names)
    assert {n for n in names if n.endswith(".pyc")} == {
        "__pycache__/app.cpython-311.pyc",
        "pkg/__pycache__/__init__.cpython-311.pyc",
        "pkg/__pycache__/mod.cpython-311.pyc",
    }
    # PEP 552: magic, flags (bit 0: hash-based, bit 1: check the source: not set), the source's hash, the code
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01
    assert pyc[8:16] == importlib.util.source_hash(SOURCES["pkg/mod.py"].encode())
    assert marshal.loads(pyc[16:]).co_filename == "/var/task/pkg/mod.py"


def test_python_imports_the_bytecode_without_reading_the_source(tmp_path):
    built = _zip(tmp_path / "deployment.zip", SOURCES)
    package.finish_zip(built)
    task = tmp_path / "task"
    with zipfile.ZipFile(built) as done:
        done.extractall(task)
    (task / "pkg" / "mod.py").write_text("raise SystemExit('the source was compiled again')\n")

    run = subprocess.run(
        [sys.executable, "-S", "-B", "-c", "import app; print(app.VALUE)"],
        cwd=task,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout.strip()) == (0, "42"), run.stderr


def test_the_same_sources_give_the_same_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder in (first, second):
        package.finish_zip(_zip(folder / "deployment.zip", SOURCES))
    assert (first / "deployment.zip").read_bytes() == (second / "deployment.zip").read_bytes()


def test_a_module_that_does_not_compile_fails_the_build_and_leaves_the_zip(tmp_path):
    built = _zip(tmp_path / "deployment.zip", {**SOURCES, "pkg/broken.py": "def broken(:\n"})
    before = built.read_bytes()
    with pytest.raises(PackagingError, match="does not compile"):
        package.finish_zip(built)
    assert built.read_bytes() == before
    assert not built.with_suffix(".tmp").exists()


def test_bytecode_is_built_only_by_the_runtime_s_python(tmp_path, monkeypatch):
    monkeypatch.setattr(package, "PYTHON_VERSION", "3.12")
    built = _zip(tmp_path / "deployment.zip", SOURCES)
    with pytest.raises(PackagingError, match=r"build it with Python 3\.12 \(this is 3\.11\)"):
        package.finish_zip(built)
