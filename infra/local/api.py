"""``chalice local`` for the local stack, restarting on changes to the application's sources only.

Chalice's reloader watches every file under the project directory: a write to ``.relais/`` (the stack's state,
the demo's key, the CLI's files), ``bench/results/`` or a test cache restarted the API in the middle of requests,
and its stat poller walked ``.venv`` and ``build`` (tens of thousands of files) every second. Here it watches what
``chalice local`` actually serves: ``app.py``, ``chalicelib/`` and ``.chalice/``. And it prints each application log
line once: ``chalice local`` adds a plain root handler that repeated the message of every line the Powertools logger
(``relais``) already prints as JSON. And a path no route declares gets what the deployed gateway answers (the
``MISSING_AUTHENTICATION_TOKEN`` gateway response of ``infra/template.py``: a 404 problem), not ``chalice local``'s
``403 {"message": "Missing Authentication Token"}``; and every request body reaches the app base64-encoded, as the
deployed gateway, whose binary media types are ``*/*``, hands it over.

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


#: The gateway response API Gateway gives a request no resource of the API matches (``infra/template.py``).
UNKNOWN_PATH = "MISSING_AUTHENTICATION_TOKEN"
_HEADER = "gatewayresponse.header."


def gateway_answer(response_type: str) -> dict[str, Any]:
    """What the deployed gateway answers for ``response_type``, read from the template's gateway responses
    (``infra.template.gateway_responses``): status, headers and body, as ``chalice local`` sends a response."""
    from infra.template import gateway_responses

    given = gateway_responses()[response_type]
    headers = {name.removeprefix(_HEADER): value[1:-1] for name, value in given["responseParameters"].items()}
    return {
        "statusCode": int(given["statusCode"]),
        "headers": headers,
        "multiValueHeaders": {},
        "body": given["responseTemplates"]["application/json"],
    }


def answer_unknown_paths_as_the_gateway() -> None:
    """Make ``chalice local`` answer a path that no route declares as the deployed gateway does.

    ``chalice local`` answers it ``403 {"message": "Missing Authentication Token"}`` (API Gateway's default text,
    echoing the ``Authorization`` header when there is one); the deployed stages replace that gateway response
    with a 404 problem (``infra/template.py``, ``GATEWAY_PROBLEMS``). Paths are matched as ``chalice local`` matches
    them (a trailing slash is dropped, as API Gateway does): a path it routes is left to it."""
    from chalice import local as chalice_local

    gateway = chalice_local.LocalGateway
    routed = gateway.handle_request
    if getattr(routed, "answers_unknown_paths", False):
        return

    def handle_request(self: Any, method: str, path: str, headers: dict[str, Any], body: bytes | None) -> Any:
        try:
            self.event_converter._route_matcher.match_route(path)
        except ValueError:  # chalice local's own test for "no route": it would raise its 403 here
            answer = gateway_answer(UNKNOWN_PATH)
            answer["headers"].update(
                {
                    "x-amzn-RequestId": self._generate_lambda_context().aws_request_id,
                    "x-amzn-ErrorType": "MissingAuthenticationTokenException",
                }
            )
            return answer
        return routed(self, method, path, headers, body)

    handle_request.answers_unknown_paths = True  # type: ignore[attr-defined]
    gateway.handle_request = handle_request  # type: ignore[method-assign]


def bodies_as_the_gateway_hands_them() -> None:
    """Make ``chalice local`` hand each request body to the app base64-encoded (``isBase64Encoded``), as the deployed
    gateway does with its binary media types ``*/*`` (``infra.template.GATEWAY_BINARY_MEDIA_TYPES``); ``chalice
    local`` encodes only a body whose ``Content-Type`` is exactly one of the app's own binary types."""
    from chalice import local as chalice_local

    chalice_local.LambdaEventConverter._is_binary = lambda self, headers: True  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    from chalice import local as chalice_local
    from chalice.cli import cli, reloader

    from infra.local import local_iam

    _console()
    try:
        local_iam.install_from_environment()  # the API function's calls checked against its IAM policy
    except ValueError as error:
        print(f"api: {error}", file=sys.stderr)
        return 2
    chalice_local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    # http.server writes headers and body apart: with Nagle's algorithm on, a kept-alive client waited ~40 ms for a
    # delayed ACK on every request (API Gateway has no such delay).
    chalice_local.ChaliceRequestHandler.disable_nagle_algorithm = True
    answer_unknown_paths_as_the_gateway()
    bodies_as_the_gateway_hands_them()

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
