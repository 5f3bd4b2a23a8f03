"""Every path answers the methods it does not serve with a 405 problem and an ``Allow`` header, from Relais itself
(so API Gateway, which would answer 403 for an undeclared method, never has to)."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from app import app
from chalicelib.routes.methods import HTTP_METHODS, VIEW_PREFIX


def _served() -> dict[str, set[str]]:
    return {
        path: {method for method, entry in methods.items() if not entry.view_name.startswith(VIEW_PREFIX)}
        for path, methods in app.routes.items()
    }


CASES = [
    (path, method, served)
    for path, served in sorted(_served().items())
    for method in HTTP_METHODS
    if method not in served
]


def test_every_path_declares_every_method_so_the_gateway_never_answers_for_relais():
    assert CASES
    for path, methods in app.routes.items():
        assert set(HTTP_METHODS) <= set(methods), path


@pytest.mark.parametrize(("path", "method", "served"), CASES, ids=[f"{m} {p}" for p, m, _ in CASES])
def test_an_unserved_method_is_a_405_problem_naming_the_served_ones(path, method, served):
    concrete = path.replace("{result_id}", "r3sult1d")
    with Client(app) as client:
        response = client.http.request(method, concrete, body=b"{}", headers={"Content-Type": "application/json"})

    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/problem+json"
    assert json.loads(response.body)["status"] == 405
    assert set(response.headers["Allow"].split(", ")) == served
