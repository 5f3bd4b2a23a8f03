"""``chalice local`` for the local stack, restarting on changes to the application's sources only.

Chalice's reloader watches every file under the project directory: a write to ``.relais/`` (the stack's state,
the demo's key, the CLI's files), ``bench/results/`` or a test cache restarted the API in the middle of requests,
and its stat poller walked ``.venv`` and ``build`` (tens of thousands of files) every second. Here it watches what
``chalice local`` actually serves: ``app.py``, ``chalicelib/`` and ``.chalice/``. And it prints each application log
line once: ``chalice local`` adds a plain root handler that repeated the message of every line the Powertools logger
(``relais``) already prints as JSON.

``python -m infra.local.api local --stage local --host H --port P`` takes the arguments of ``chalice``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

#: What the API is built from, relative to the project directory.
SOURCES = ("app.py", "chalicelib", ".chalice")


def source_files(root_dir: str) -> Iterator[str]:
    """Every file of ``SOURCES`` under ``root_dir`` (bytecode caches excluded)."""
    for name in SOURCES:
        path = os.path.join(root_dir, name)
        if os.path.isfile(path):
            yield path
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = [d for d in subfolders if d != "__pycache__"]
            for file in files:
                yield os.path.join(folder, file)


def _source_watching_worker() -> Any:
    from chalice.cli.filewatch.stat import StatFileWatcher, StatWorkerProcess

    class SourceFileWatcher(StatFileWatcher):  # type: ignore[misc]
        def _seed_mtime_cache(self, root_dir: str) -> None:
            for path in source_files(root_dir):
                self._mtime_cache[path] = self._osutils.mtime(path)

        def _recursive_walk_files(self, root_dir: str) -> Iterator[str]:
            return source_files(root_dir)

    class SourceWatchingWorker(StatWorkerProcess):  # type: ignore[misc]
        def _start_file_watcher(self, project_dir: str) -> None:
            SourceFileWatcher().watch_for_file_changes(project_dir, self._on_file_change)

    return SourceWatchingWorker


class _NotTheApplication(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("relais")


def _console() -> None:
    """The root handler ``chalice local`` would add (stdout, message only), minus the application's own lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_NotTheApplication())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # chalice's own basicConfig() then finds a handler and changes nothing


#: Connections waiting to be accepted. ``http.server`` keeps 5, so a burst from many pharmacy connections was reset
#: before reaching the app (API Gateway accepts them); the local API takes what a busy gateway would hand over.
LISTEN_BACKLOG = 256


def main(argv: list[str]) -> int:
    from chalice import local as chalice_local
    from chalice.cli import cli, reloader

    _console()
    chalice_local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    # http.server writes headers and body apart: with Nagle's algorithm on, a kept-alive client waited ~40 ms for a
    # delayed ACK on every request (API Gateway has no such delay).
    chalice_local.ChaliceRequestHandler.disable_nagle_algorithm = True

    run_with_reloader = reloader.run_with_reloader

    def run_watching_sources(server_factory: Any, env: Any, root_dir: str, worker_process_cls: Any = None) -> int:
        return int(run_with_reloader(server_factory, env, root_dir, _source_watching_worker()))

    reloader.run_with_reloader = run_watching_sources
    # Chalice's reloader re-runs ``sys.argv`` as its worker process: this module again, with the same arguments.
    sys.argv = [sys.executable, "-m", "infra.local.api", *argv]
    cli.main(args=argv, obj={}, prog_name="chalice")  # exits with the command's status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
