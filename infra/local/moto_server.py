"""The embedded AWS's HTTP server: moto's application, patched (:mod:`infra.local.moto_patches`), served by waitress.

``python -m infra.local.moto_server --host 127.0.0.1 --port 5000`` (what ``make run`` starts).

moto's own server (werkzeug's development server) closes the connection after every answer, where AWS endpoints
keep it open: every AWS call of the local stack then paid a new TCP connection, a name lookup and, in moto, a new
thread — more than most calls cost — and the local stack measured a cost Lambda does not pay. waitress keeps
connections alive (HTTP/1.1), handles each request on a pool of threads, and serves the same WSGI application.

The pool is sized for long polls: a ``ReceiveMessage`` with ``WaitTimeSeconds`` holds its thread while it waits
(the poller, the CLI's dead-letter reads), so the pool has room for every poller thread and the API's requests.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Final

#: Request threads: long polls hold one each (poller batches, CLI reads), the API's requests need the rest.
THREADS: Final = 64
#: Open client connections (kept alive) before waitress stops accepting more.
CONNECTION_LIMIT: Final = 1000


def make_server(host: str, port: int) -> Any:
    """moto's application, patched, behind a waitress server listening on ``host:port`` (``port`` 0: any free one);
    ``.run()`` serves until ``.close()``."""
    from infra.local.moto_patches import patch_moto

    patch_moto()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress import create_server

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" notes under bursts
    return create_server(
        DomainDispatcherApplication(create_backend_app),
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=120,  # idle kept-alive connections: longer than a long poll
        ident="moto",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.moto_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    print(f"moto (waitress, keep-alive) on http://{args.host}:{args.port}", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
