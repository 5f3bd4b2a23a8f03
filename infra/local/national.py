"""The stand-in national screening system: a small FHIR receiver for the local stack and the tests.

``python -m infra.local.national --port P --token-file F`` (or the token in ``RELAIS_NATIONAL_TOKEN``) serves:

* ``POST /fhir`` (or ``/fhir/Bundle``), ``Content-Type: application/fhir+json``, ``Authorization: Bearer <token>``:
  ``201`` for a new valid R4 ``Bundle`` (recorded), ``200`` with an informational ``OperationOutcome`` for a bundle
  whose ``Bundle.identifier.value`` was already received at this or a later version (``Bundle.meta.versionId``, 1
  when absent: dropped, not recorded again, the later version kept), ``400`` when the body is not
  a JSON object, ``422`` when it is not a valid Bundle with an identifier, ``401`` for a wrong or missing token,
  ``415`` for another media type, ``503`` (``Retry-After: 5``) while "down", and injected ``500``s / slow answers
  while faults are set. Every error body is an ``OperationOutcome`` that names paths and rules, never values.
* admin endpoints, loopback only, no authentication (what ``relais local national`` and the tests use):
  ``GET /_admin/received`` (the Bundles kept, one per identifier and version, in the order they came, each with
  its ``version`` and whether a later one ``superseded`` it), ``GET /_admin/deliveries`` (every
  arrival, duplicates included), ``GET /_admin/status``, ``POST /_admin/down``, ``POST /_admin/up``,
  ``POST /_admin/faults`` / ``GET`` / ``DELETE``, ``POST /_admin/reset``.

Bundles carry personal data: this module never prints or logs a body, only methods, paths, status codes and counts.
:func:`serve` runs the same server in a thread, for tests.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final

from infra.local.fhir_check import operation_outcome, validate_bundle

log = logging.getLogger("local.national")  # outside "relais": Powertools owns that one

FHIR_JSON: Final = "application/fhir+json"
FHIR_PATHS: Final = frozenset({"/fhir", "/fhir/", "/fhir/Bundle"})
MAX_BODY_BYTES: Final = 1024 * 1024
RETRY_AFTER_SECONDS: Final = 5
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


@dataclass
class Faults:
    """Random failures to inject into ``POST /fhir``: a slow answer, then possibly a ``500``."""

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    seed: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The configuration as set through ``POST /_admin/faults``."""
        return {
            "error_rate": self.error_rate,
            "timeout_rate": self.timeout_rate,
            "timeout_seconds": self.timeout_seconds,
            "seed": self.seed,
        }


def parse_faults(doc: object) -> Faults:
    """Validate a ``POST /_admin/faults`` body; ``ValueError`` names the first bad field."""
    if not isinstance(doc, dict):
        raise ValueError("body: expected a JSON object")
    unknown = set(doc) - {"error_rate", "timeout_rate", "timeout_seconds", "seed"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    faults = Faults()
    for name in ("error_rate", "timeout_rate"):
        value = doc.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: expected a number from 0 to 1")
        setattr(faults, name, float(value))
    seconds = doc.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0.0 <= seconds <= 300.0:
        raise ValueError("timeout_seconds: expected a number of seconds from 0 to 300")
    faults.timeout_seconds = float(seconds)
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("seed: expected an integer or null")
    faults.seed = seed
    return faults


@dataclass
class NationalState:
    """What the stand-in has received, and how it is told to behave. Thread-safe through ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    records: list[dict[str, Any]] = field(default_factory=list)
    #: The latest version held of each identifier.
    identifiers: dict[str, int] = field(default_factory=dict)
    #: Every Bundle that arrived, duplicates included, in order: ``{"identifier", "version", "received_at", "kept"}``.
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    rejected: int = 0
    up: bool = True
    faults: Faults | None = None
    injected_errors: int = 0
    injected_timeouts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def reset(self) -> None:
        """Forget everything received and every fault; back up."""
        with self.lock:
            self.records.clear()
            self.identifiers.clear()
            self.deliveries.clear()
            self.duplicates = self.rejected = self.injected_errors = self.injected_timeouts = 0
            self.up = True
            self.faults = None
            self.rng = random.Random()  # noqa: S311 - fault injection, not security

    def set_faults(self, faults: Faults | None) -> None:
        """Start (or, with ``None``, stop) injecting faults; a seed makes the sequence reproducible."""
        with self.lock:
            self.faults = faults
            self.rng = random.Random(faults.seed if faults else None)  # noqa: S311 - not security

    def draw_faults(self) -> tuple[float, bool]:
        """For one request: how long to stall (0: not at all) and whether to answer ``500``."""
        with self.lock:
            faults = self.faults
            if faults is None:
                return 0.0, False
            stall = faults.timeout_seconds if self.rng.random() < faults.timeout_rate else 0.0
            error = self.rng.random() < faults.error_rate
            self.injected_timeouts += 1 if stall else 0
            self.injected_errors += 1 if error else 0
            return stall, error

    def status(self) -> dict[str, Any]:
        """``GET /_admin/status``."""
        with self.lock:
            return {
                "up": self.up,
                "received": len(self.records),
                "deliveries": len(self.deliveries),
                "duplicates": self.duplicates,
                "rejected": self.rejected,
            }


class NationalServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` carrying the expected token and the shared :class:`NationalState`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], token: str, state: NationalState | None = None) -> None:
        if not token:
            raise ValueError("the national stand-in needs a non-empty bearer token")
        self.token = token
        self.state = state or NationalState()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that broke (usually a client that gave up): one line, no traceback (it may hold data)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.info("client went away before the answer (%s)", type(error).__name__)
        else:
            log.warning("request failed: %s", type(error).__name__)


class _Handler(BaseHTTPRequestHandler):
    server: NationalServer
    server_version = "relais-national-standin/1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go apart: no ~40 ms delayed-ACK wait on kept-alive connections

    # --- dispatch -------------------------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = self._path()
        if path in FHIR_PATHS:
            self._receive_bundle()
        elif path.startswith("/_admin/"):
            self._admin("POST", path)
        else:
            self._drain()
            self._outcome(HTTPStatus.NOT_FOUND, "not-found", "no such endpoint")

    def do_GET(self) -> None:
        path = self._path()
        if path.startswith("/_admin/"):
            self._admin("GET", path)
        elif path in FHIR_PATHS:
            self._outcome(HTTPStatus.METHOD_NOT_ALLOWED, "not-supported", "only POST", {"Allow": "POST"})
        else:
            self._outcome(HTTPStatus.NOT_FOUND, "not-found", "no such endpoint")

    def do_DELETE(self) -> None:
        path = self._path()
        if path.startswith("/_admin/"):
            self._admin("DELETE", path)
        else:
            self._outcome(HTTPStatus.METHOD_NOT_ALLOWED, "not-supported", "method not allowed", {"Allow": "POST"})

    def do_PUT(self) -> None:
        self._drain()
        self._outcome(HTTPStatus.METHOD_NOT_ALLOWED, "not-supported", "method not allowed", {"Allow": "POST"})

    do_PATCH = do_PUT

    # --- FHIR ----------------------------------------------------------------------------------------------

    def _receive_bundle(self) -> None:
        state = self.server.state
        body = self._drain()
        if body is None:
            return
        if not state.status()["up"]:
            self._outcome(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "transient",
                "the national system is down (stand-in)",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            return
        if not self._authorized():
            self._outcome(
                HTTPStatus.UNAUTHORIZED, "login", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )
            return
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != FHIR_JSON:
            self._outcome(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "not-supported", f"Content-Type must be {FHIR_JSON}")
            return
        stall, error = state.draw_faults()
        if stall:
            time.sleep(stall)
        if error:
            self._outcome(HTTPStatus.INTERNAL_SERVER_ERROR, "exception", "injected fault (stand-in)")
            return
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self._reject(HTTPStatus.BAD_REQUEST, ["body: not valid JSON"])
            return
        if not isinstance(doc, dict):
            self._reject(HTTPStatus.BAD_REQUEST, ["body: expected a JSON object"])
            return
        problems = validate_bundle(doc)
        identifier = doc.get("identifier")
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if not isinstance(value, str) or not value.strip():
            problems.append("Bundle.identifier.value: required (the receiver drops duplicates by it)")
        if problems:
            self._reject(HTTPStatus.UNPROCESSABLE_ENTITY, problems)
            return
        assert isinstance(value, str)
        version = bundle_version(doc)
        with state.lock:
            duplicate = state.identifiers.get(value, 0) >= version  # this version or a later one is held: keep it
            now = _utc_now()
            state.deliveries.append(
                {"identifier": value, "version": version, "received_at": now, "kept": not duplicate}
            )
            if duplicate:
                state.duplicates += 1
            else:
                for earlier in state.records:
                    if earlier["bundle"]["identifier"]["value"] == value:
                        earlier["superseded"] = True
                state.identifiers[value] = version
                state.records.append({"received_at": now, "bundle": doc, "version": version, "superseded": False})
            received = len(state.records)
        if duplicate:
            self._outcome(
                HTTPStatus.OK,
                "informational",
                "this or a later version of the bundle was already received, not recorded",
            )
        else:
            self._outcome(
                HTTPStatus.CREATED,
                "informational",
                "bundle received",
                {"Location": f"/fhir/Bundle/{uuid.uuid4()}"},
                severity="information",
            )
        log.info("bundle %s (%d received)", "duplicate" if duplicate else "recorded", received)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.server.token.encode())

    def _reject(self, status: HTTPStatus, problems: list[str]) -> None:
        with self.server.state.lock:
            self.server.state.rejected += 1
        self._send_json(status, operation_outcome(problems), FHIR_JSON)
        log.info("bundle rejected: %d problem(s)", len(problems))

    # --- admin ---------------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> None:
        body = self._drain() if method != "GET" else b""
        if body is None:
            return
        if self.client_address[0] not in _LOOPBACK:
            self._send_json(HTTPStatus.FORBIDDEN, {"error": "admin endpoints answer loopback clients only"})
            return
        state = self.server.state
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_admin/received"):
            with state.lock:
                records = list(state.records)
            self._send_json(HTTPStatus.OK, records)
        elif route == ("GET", "/_admin/deliveries"):
            with state.lock:
                deliveries = list(state.deliveries)
            self._send_json(HTTPStatus.OK, deliveries)
        elif route == ("GET", "/_admin/status"):
            self._send_json(HTTPStatus.OK, state.status())
        elif route in (("POST", "/_admin/down"), ("POST", "/_admin/up")):
            with state.lock:
                state.up = path.rstrip("/").endswith("/up")
            log.info("now %s", "up" if route[1].endswith("/up") else "down (every POST /fhir answers 503)")
            self._send_json(HTTPStatus.OK, state.status())
        elif route == ("POST", "/_admin/faults"):
            try:
                faults = parse_faults(json.loads(body or b"{}"))
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                message = str(error) if not isinstance(error, json.JSONDecodeError) else "body: not valid JSON"
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": message})
                return
            state.set_faults(faults)
            log.info(
                "faults set: error_rate=%s timeout_rate=%s timeout_seconds=%s",
                faults.error_rate,
                faults.timeout_rate,
                faults.timeout_seconds,
            )
            self._send_json(HTTPStatus.OK, self._faults_json())
        elif route == ("GET", "/_admin/faults"):
            self._send_json(HTTPStatus.OK, self._faults_json())
        elif route == ("DELETE", "/_admin/faults"):
            state.set_faults(None)
            log.info("faults cleared")
            self._send_json(HTTPStatus.OK, self._faults_json())
        elif route == ("POST", "/_admin/reset"):
            state.reset()
            log.info("reset: nothing received, up, no faults")
            self._send_json(HTTPStatus.OK, state.status())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "no such admin endpoint"})

    def _faults_json(self) -> dict[str, Any]:
        state = self.server.state
        with state.lock:
            return {
                "faults": state.faults.as_json() if state.faults else None,
                "injected_errors": state.injected_errors,
                "injected_timeouts": state.injected_timeouts,
            }

    # --- plumbing ------------------------------------------------------------------------------------------

    def _path(self) -> str:
        return self.path.split("?", 1)[0].split("#", 1)[0]

    def _drain(self) -> bytes | None:
        """The request body (``b""`` if none); ``None`` after answering 411/413 itself."""
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
                self.close_connection = True
                self._outcome(HTTPStatus.LENGTH_REQUIRED, "structure", "Content-Length required")
                return None
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._outcome(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-costly", "body too large or bad Content-Length")
            return None
        return self.rfile.read(length)

    def _outcome(
        self,
        status: HTTPStatus,
        code: str,
        diagnostics: str,
        headers: dict[str, str] | None = None,
        *,
        severity: str | None = None,
    ) -> None:
        level = severity or ("information" if status < 400 else "error")
        body = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": level, "code": code, "diagnostics": diagnostics}],
        }
        self._send_json(status, body, FHIR_JSON, headers)

    def _send_json(
        self,
        status: HTTPStatus,
        body: object,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per FHIR request (method, path, status); admin reads stay silent. Never a body."""
        path = self._path()
        if path.startswith("/_admin/") and self.command == "GET":
            return
        log.info("%s %s -> %s", self.command, path if path in FHIR_PATHS or path.startswith("/_admin/") else "?", code)

    def log_error(self, format: str, *args: Any) -> None:
        """Protocol errors: the status only (the default would echo the request line)."""
        log.warning("malformed request rejected")


def bundle_version(doc: dict[str, Any]) -> int:
    """``Bundle.meta.versionId`` as a number (1 when absent or not a positive integer)."""
    meta = doc.get("meta")
    text = meta.get("versionId") if isinstance(meta, dict) else None
    return int(text) if isinstance(text, str) and text.isdigit() and int(text) > 0 else 1


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def serve(port: int, token: str, host: str = "127.0.0.1") -> tuple[NationalServer, threading.Thread]:
    """Start the stand-in in a daemon thread (``port`` 0: any free port); stop it with ``server.shutdown()``."""
    server = NationalServer((host, port), token)
    thread = threading.Thread(target=server.serve_forever, name="national-standin", daemon=True)
    thread.start()
    return server, thread


def _read_token(token_file: str | None) -> str:
    if token_file:
        return Path(token_file).read_text(encoding="utf-8").strip()
    return os.environ.get("RELAIS_NATIONAL_TOKEN", "").strip()


def _log_to_stdout() -> None:
    """Our own lines on stdout, plainly; libraries log only from WARNING (Python's last-resort handler)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m infra.local.national", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RELAIS_NATIONAL_PORT", "8001")))
    parser.add_argument("--token-file", help="file holding the bearer token (default: $RELAIS_NATIONAL_TOKEN)")
    args = parser.parse_args(argv)
    _log_to_stdout()
    token = _read_token(args.token_file)
    if not token:
        print("national stand-in: no token (use --token-file or RELAIS_NATIONAL_TOKEN)", file=sys.stderr)
        return 2
    try:
        server = NationalServer((args.host, args.port), token)
    except OSError as error:
        print(f"national stand-in: cannot listen on {args.host}:{args.port} ({error.strerror})", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("national stand-in listening on http://%s:%d/fhir", args.host, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
