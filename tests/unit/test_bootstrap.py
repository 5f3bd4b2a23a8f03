"""The composition root: one registration serves reset() and override(); types are checked by mypy."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib import bootstrap

BOOTSTRAP = Path(bootstrap.__file__)


@pytest.fixture(autouse=True)
def _clean():
    bootstrap.reset()
    yield
    bootstrap.reset()


def _module_functions() -> list[ast.FunctionDef]:
    tree = ast.parse(BOOTSTRAP.read_text(encoding="utf-8"))
    return [node for node in tree.body if isinstance(node, ast.FunctionDef)]


def test_every_component_is_registered_and_has_a_real_return_type():
    decorated = {
        fn.name: fn
        for fn in _module_functions()
        if any(isinstance(d, ast.Name) and d.id == "component" for d in fn.decorator_list)
    }
    assert set(decorated) == bootstrap.components() - {"clock", "settings"}
    untyped = [name for name, fn in decorated.items() if fn.returns is None]
    assert untyped == []
    any_typed = sorted(name for name, fn in decorated.items() if ast.unparse(fn.returns) == "Any")  # type: ignore[arg-type]
    assert any_typed == [], "every component has a real type"


def test_a_component_is_built_once_and_reset_forgets_every_one(monkeypatch):
    built: list[int] = []

    def fake_registry_factory():
        built.append(1)
        return object()

    # Every registered component goes through the same cache: pharmacies() (which reset() once forgot)
    # is rebuilt after reset like any other.
    monkeypatch.setitem(bootstrap._factories, "pharmacies", fake_registry_factory)  # type: ignore[attr-defined]
    first = bootstrap.pharmacies()
    assert bootstrap.pharmacies() is first
    bootstrap.reset()
    assert bootstrap.pharmacies() is not first
    assert len(built) == 2


def test_override_serves_the_replacement_and_rebuilds_what_depends_on_it(monkeypatch):
    builds: list[object] = []

    def fake_notify_factory():
        builds.append(bootstrap.messaging())
        return builds[-1]

    monkeypatch.setitem(bootstrap._factories, "notify_service", fake_notify_factory)  # type: ignore[attr-defined]
    monkeypatch.setitem(bootstrap._factories, "messaging", lambda: "real sender")  # type: ignore[attr-defined]
    assert bootstrap.notify_service() == "real sender"
    bootstrap.override(messaging="fake sender")
    assert bootstrap.messaging() == "fake sender"
    assert bootstrap.notify_service() == "fake sender", "a dependent built before the override is rebuilt"


def test_override_of_the_clock_is_read_on_every_call():
    moment = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    bootstrap.override(clock=lambda: moment)
    assert bootstrap.clock() == moment
    bootstrap.reset()
    assert bootstrap.clock() != moment


def test_override_of_an_unknown_name_is_refused():
    with pytest.raises(TypeError, match="no such component: mesaging"):
        bootstrap.override(mesaging=object())


def test_a_name_cannot_be_registered_twice():
    def store():  # same name as the real component
        return None

    with pytest.raises(ValueError, match="registered twice"):
        bootstrap.component(store)
