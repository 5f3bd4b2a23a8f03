"""Each kind of 409 has a fixed ``detail`` of its own, sent as is and documented (contract v2: problem+json)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import yaml

import chalicelib
from chalicelib.errors import ConflictError, DuplicateReferenceError
from chalicelib.routes.problems import to_problem

ROOT = Path(__file__).resolve().parents[2]
#: Conflicts a client never sees: the store's signal, which the service turns into a 200 or another 409.
INTERNAL = {DuplicateReferenceError}


def _conflict_kinds() -> list[type[ConflictError]]:
    """Every subclass of ConflictError defined in chalicelib (each module imported first)."""
    for module in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."):
        importlib.import_module(module.name)
    kinds: list[type[ConflictError]] = []
    pending = [ConflictError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("chalicelib.") and sub not in kinds:
                kinds.append(sub)
                pending.append(sub)
    return kinds


def test_every_kind_of_conflict_has_a_detail_of_its_own():
    kinds = _conflict_kinds()
    names = {kind.__name__ for kind in kinds}

    assert {
        "PharmacyReferenceConflictError",
        "CorrectionReferenceConflictError",
        "CorrectionWindowClosedError",
        "TooManyCorrectionsError",
        "ResultWithdrawnError",
        "NoChannelError",
    } <= names
    for kind in kinds:
        assert "detail" in vars(kind), f"{kind.__name__} has no detail of its own"
    details = [kind.detail for kind in (ConflictError, *kinds)]
    assert len(set(details)) == len(details), details


def test_a_409_carries_its_kinds_detail_and_never_the_errors_text():
    for kind in _conflict_kinds():
        response = to_problem(kind("ref A-2026-000123 of 1 DUPONT"))

        assert response.status_code == 409
        assert response.headers["Content-Type"] == "application/problem+json"
        body = json.loads(response.body)
        conflict = {"type": "urn:relais:problem:conflict", "title": "Conflict", "status": 409}
        assert body == {**conflict, "detail": kind.detail}
        assert "A-2026-000123" not in response.body and "DUPONT" not in response.body


def test_every_detail_a_client_can_get_is_documented():
    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    media = document["components"]["responses"]["Conflict"]["content"]["application/problem+json"]
    in_openapi = {example["value"]["detail"] for example in media["examples"].values()}
    api_md = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")

    sent = {kind.detail for kind in _conflict_kinds() if kind not in INTERNAL}

    assert in_openapi == sent
    for detail in sent:
        assert f"| `{detail}` |" in api_md, detail
