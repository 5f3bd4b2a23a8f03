"""The repository is the whole product: no tracked file names a path outside it (a clone alone runs and reads)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Absolute paths of someone's machine: the build machines' shared folder, home directories (Linux, macOS, Windows).
HOST_PATH = re.compile(r"(?<![\w.:/-])(?:/work/|/home/[a-z_][\w.-]*/|/Users/\w|/root/|[A-Za-z]:\\Users\\)")
#: A relative path going up (``../x``), resolved from the file's folder.
UPWARD_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-]+")
#: The target of a relative Markdown link (``[text](target)``, anchors aside): it must exist in the repository.
MARKDOWN_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)#\s]+)")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in out.decode().split("\0") if name]


def outside_paths(path: Path, text: str) -> list[str]:
    """Every path ``text`` (the content of ``path``) names outside the repository."""
    found = [m.group(0) for m in HOST_PATH.finditer(text)]
    for match in UPWARD_PATH.finditer(text):
        target = (path.parent / match.group(0)).resolve()
        if not target.is_relative_to(ROOT):
            found.append(match.group(0))
    if path.suffix == ".md":
        for match in MARKDOWN_LINK.finditer(text):
            target = (path.parent / match.group(1)).resolve()
            if not target.is_relative_to(ROOT) or not target.exists():
                found.append(match.group(1))
    return found


def test_no_tracked_file_names_a_path_outside_the_repository():
    offenders = {}
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images: no paths to read
            continue
        if found := outside_paths(path, text):
            offenders[str(path.relative_to(ROOT))] = sorted(set(found))
    assert offenders == {}


@pytest.mark.parametrize(
    "text",
    [
        "see ../shared/design/contract.md",
        'open("/work/shared/data/eu-test-result.json")',
        "cd /home/alice/relais && make",
        "/Users/bob/relais/.venv",
        "C:\\Users\\carol\\relais",
        "[contract](../../contract.md)",
        "the [contract](contract.md#2-pharmacy-api)",
    ],
)
def test_a_path_outside_is_found(text):
    assert outside_paths(ROOT / "README.md", text) != []


@pytest.mark.parametrize(
    "text",
    [
        "[README](../README.md)",
        "https://example.org/home/x/ and https://github.com/ehn-dcc-development/eu-dcc-valuesets",
        "chalicelib/adapters/work/ (a folder of the repository)",
        "/v1/results/{id}",
        "[API](api.md#retries), [site](https://example.org/a), [top](#errors)",
    ],
)
def test_a_path_inside_or_a_url_is_not(text):
    assert outside_paths(ROOT / "docs" / "cli.md", text) == []
    assert outside_paths(ROOT / "docs" / "api.md", text) == []
