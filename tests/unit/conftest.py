"""Fixtures of the unit tier."""

from __future__ import annotations

from typing import Any

import pytest

from infra import package


@pytest.fixture(scope="session")
def packaged_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real app packaged by chalice and finished by infra/package.py, without dependencies (about 2 s)."""
    tmp = tmp_path_factory.mktemp("package")
    return package.build("prod", tmp / "out", with_dependencies=False, work=tmp / "work")
