"""``chalice local`` in the local stack restarts on the application's sources only (infra/local/api.py)."""

from __future__ import annotations

from pathlib import Path

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
    monkeypatch.setattr(reloader, "run_with_reloader", reloader.run_with_reloader)  # restored after the test
    monkeypatch.setattr(api, "_console", lambda: None)  # no handler added to this process's root logger
    monkeypatch.setattr(cli, "main", lambda **kwargs: None)
    monkeypatch.setattr("sys.argv", ["x"])
    api.main(["local"])
    assert chalice_local.ThreadedHTTPServer.request_queue_size == api.LISTEN_BACKLOG >= 128
    assert chalice_local.ChaliceRequestHandler.disable_nagle_algorithm is True


def test_the_national_stand_in_answers_without_waiting_for_a_delayed_ack():
    from infra.local.national import _Handler

    assert _Handler.disable_nagle_algorithm is True
