"""``chalice local`` in the local stack (infra/local/api.py): it restarts on the application's sources only, and
answers an unknown path as the deployed gateway does."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

from infra.local.api import source_files


def test_only_the_sources_the_api_is_built_from_are_watched(tmp_path: Path) -> None:
    files = [
        "app.py",
        "chalicelib/config.py",
        "chalicelib/static/result.js",
        "chalicelib/__pycache__/config.cpython-311.pyc",
        ".chalice/config.json",
        ".relais/local.json",
        ".relais/demo/pharmacy-private-key.pem",
        ".venv/lib/python3.11/site-packages/boto3/__init__.py",
        "build/package/sam.json",
        "bench/results/ingest.json",
        "tests/unit/test_x.py",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    watched = sorted(str(Path(p).relative_to(tmp_path)) for p in source_files(str(tmp_path)))

    assert watched == [".chalice/config.json", "app.py", "chalicelib/config.py", "chalicelib/static/result.js"]


def test_the_real_project_sources_include_the_app_and_its_package() -> None:
    root = Path(__file__).resolve().parents[2]
    watched = {str(Path(p).relative_to(root)) for p in source_files(str(root))}

    assert {"app.py", "chalicelib/bootstrap.py", ".chalice/config.json"} <= watched
    assert not any(p.startswith((".venv", ".relais", "build", "tests")) for p in watched)


def test_the_local_api_accepts_a_burst_of_connections_as_a_gateway_would(monkeypatch):
    from chalice import local as chalice_local
    from chalice.cli import cli, reloader

    from infra.local import api

    monkeypatch.setattr(chalice_local.ThreadedHTTPServer, "request_queue_size", 5)
    monkeypatch.setattr(chalice_local.ChaliceRequestHandler, "disable_nagle_algorithm", False)
    monkeypatch.setattr(chalice_local.LocalGateway, "handle_request", chalice_local.LocalGateway.handle_request)
    converter = chalice_local.LambdaEventConverter
    monkeypatch.setattr(converter, "_is_binary", converter._is_binary)  # restored: other tests post text bodies
    monkeypatch.setattr(reloader, "run_with_reloader", reloader.run_with_reloader)  # restored after the test
    monkeypatch.setattr(api, "_console", lambda: None)  # no handler added to this process's root logger
    monkeypatch.setattr(cli, "main", lambda **kwargs: None)
    monkeypatch.setattr("sys.argv", ["x"])
    api.main(["local"])
    assert chalice_local.ThreadedHTTPServer.request_queue_size == api.LISTEN_BACKLOG >= 128
    assert chalice_local.ChaliceRequestHandler.disable_nagle_algorithm is True
    assert getattr(chalice_local.LocalGateway.handle_request, "answers_unknown_paths", False)  # the 404 problem
    assert converter._is_binary(converter(route_matcher=None), {"content-type": "application/json"}) is True  # base64


def test_the_national_stand_in_answers_without_waiting_for_a_delayed_ack():
    from infra.local.national import _Handler

    assert _Handler.disable_nagle_algorithm is True


def _serve(app: Any) -> tuple[Any, int]:
    """``chalice local``'s own server and handler for ``app`` on a free port, in a thread (stop with shutdown())."""
    from chalice.config import Config
    from chalice.local import LocalDevServer

    server = LocalDevServer(app, Config(), "127.0.0.1", 0)
    threading.Thread(target=server.server.serve_forever, daemon=True).start()
    return server, server.server.server_address[1]


def _call(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_an_unknown_path_gets_the_deployed_gateways_404_problem_not_chalice_locals_403(monkeypatch):
    from chalice.local import LocalGateway

    from app import app
    from infra.local import api
    from infra.template import gateway_responses

    monkeypatch.setattr(LocalGateway, "handle_request", LocalGateway.handle_request)  # restored after the test
    api.answer_unknown_paths_as_the_gateway()
    api.answer_unknown_paths_as_the_gateway()  # main() runs again in the reloader's worker: patched once
    deployed = gateway_responses()["MISSING_AUTHENTICATION_TOKEN"]
    deployed_headers = {
        name.removeprefix("gatewayresponse.header."): value.strip("'")
        for name, value in deployed["responseParameters"].items()
    }
    assert {"Content-Type", "Cache-Control", "X-Content-Type-Options", "Referrer-Policy"} <= deployed_headers.keys()
    server, port = _serve(app)
    try:
        for method, path, headers in (
            ("GET", "/v1/nope", None),
            ("GET", "/r/anything", None),
            ("GET", "/", None),
            ("OPTIONS", "/v1/nope", None),
            ("GET", "/v1/nope?x=1", {"Authorization": "Bearer secret-token-value"}),
        ):
            status, answered, body = _call(port, method, path, headers)

            assert status == int(deployed["statusCode"]) == 404, (method, path, status, body)
            assert json.loads(body) == json.loads(deployed["responseTemplates"]["application/json"])
            assert json.loads(body) == {"type": "urn:relais:problem:not-found", "title": "Not found", "status": 404}
            for name, value in deployed_headers.items():
                assert answered[name] == value, (path, name)
            assert answered["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
            assert b"secret-token-value" not in body
        status, answered, body = _call(port, "GET", "/r/")  # a routed path (trailing slash dropped) reaches the app
        assert status == 200 and answered["Content-Type"].startswith("text/html"), (status, body[:200])
    finally:
        server.shutdown()
