"""``405`` for every method a path does not serve, answered by Relais itself rather than by the gateway.

API Gateway answers a method no route declares with ``403 {"message": "Missing Authentication Token"}``
before any code runs, while ``chalice local`` answers ``405``. Declaring the other methods of each path and
answering them here gives the contract's ``405`` problem with an ``Allow`` header in both places (unknown
paths are the gateway's: ``infra/template.py`` ``GATEWAY_PROBLEMS`` maps its answer to the ``404`` problem).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice.app import Blueprint, Chalice, Response

from chalicelib.routes.problems import problem

#: Methods a client may try; HEAD and OPTIONS are left to the gateway.
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
VIEW_PREFIX = "method_not_allowed"


def _answer(allow: str) -> Callable[..., Response]:
    def method_not_allowed(**_path_parameters: str) -> Response:
        return problem(405, headers={"Allow": allow})

    return method_not_allowed


def answer_other_methods(app: Chalice) -> None:
    """Register a 405 answer for each method a path does not serve (call after every blueprint)."""
    for number, (path, served) in enumerate(sorted(app.routes.items())):
        if any(entry.view_name.startswith(VIEW_PREFIX) for entry in served.values()):
            continue
        others = [method for method in HTTP_METHODS if method not in served]
        if others:
            view = _answer(", ".join(sorted(served)))
            app.route(path, methods=others, content_types=["*/*"], name=f"{VIEW_PREFIX}_{number}")(view)


class _OtherMethods(Blueprint):
    """Registered last (``app.register_blueprint(other_methods)``): adds the 405 answers to every route so far."""

    def register(self, app: Chalice, options: dict[str, Any]) -> None:
        answer_other_methods(app)


other_methods = _OtherMethods(__name__)
