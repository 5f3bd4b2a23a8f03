"""The local stack (``python -m infra.local.stack``) as a fixture: real processes, real HTTP, free random ports.

``local_stack`` (session-scoped) starts one stack for every e2e test and stops it with SIGINT at the end,
checking that every process it started is gone. Everything the stack prints goes to ``local_stack.log_path``,
which privacy tests scan for leaked personal data. :func:`start_stack` starts more stacks for tests that stop
or break one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
CHILDREN = ("aws", "national", "api", "poller")


def resend_on_503(send: Callable[[], requests.Response], attempts: int = 4) -> requests.Response:
    """``send()``, called again (``attempts`` calls at most) while it answers 503; the last answer.

    The local AWS throttles at random, as AWS does (``infra/local/faults.py``), and the API then answers 503 with
    ``Retry-After`` once its own retries are spent: a correct answer, not the one under test. Every 503 must say when
    to try again; the next call waits that long (2 s at most). ``send`` makes the whole request each time, its
    signature included (a fresh nonce: a signed request is never sent twice). Not for a test about 503s or 429s
    themselves, nor where a request sent again would change what the test counts.
    """
    answer = send()
    for _ in range(attempts - 1):
        if answer.status_code != 503:
            return answer
        assert answer.headers.get("Retry-After"), "a 503 says when to try again"
        time.sleep(min(float(answer.headers["Retry-After"]), 2.0))
        answer = send()
    assert answer.status_code != 503 or answer.headers.get("Retry-After"), "a 503 says when to try again"
    return answer


def show_result_in_page(page: Any, birth_date: str, attempts: int = 3) -> None:
    """Give the birth date on an open result page and wait for ``#result``; submit again (``attempts`` in all) while
    the page shows its network error instead, as it tells the patient to (a 503 from a throttled local AWS: the page
    does not retry by itself)."""
    script = (REPO_ROOT / "chalicelib" / "static" / "result.js").read_text(encoding="utf-8")
    found = re.search(r'errNetwork: "([^"]+)"', script)  # the first is French, the page's first language
    assert found, "errNetwork not found in chalicelib/static/result.js"
    network_error = found.group(1)
    for _ in range(attempts):
        page.fill("#birth-date", birth_date)
        page.click("#submit")  # the submit handler clears #error and disables the button before it asks
        page.wait_for_function(
            "() => !document.getElementById('result').hidden"
            " || (!document.getElementById('submit').disabled && document.getElementById('error').textContent !== '')",
            timeout=25_000,
        )
        if page.is_visible("#result") or page.text_content("#error") != network_error:
            break
        page.wait_for_timeout(1_000)  # as a patient would, before trying again
    assert page.is_visible("#result"), f"no result shown; the page says: {page.text_content('#error')!r}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nobody listens on right now (held together while choosing)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting to be reaped count as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return not Path("/proc/self").exists()


@dataclass
class LocalStack:
    """A running local stack, as its state file describes it."""

    process: subprocess.Popen[bytes]
    log_path: Path
    state_file: Path
    ports: dict[str, int]
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return str(self.state["api_url"])

    @property
    def aws_endpoint(self) -> str:
        return str(self.state["aws_endpoint"])

    @property
    def national_url(self) -> str:
        """The stand-in's base URL (``/fhir``, ``/_admin/...`` below it)."""
        return str(self.state["national_url"])

    @property
    def env(self) -> dict[str, str]:
        """The ``RELAIS_*`` settings the stack gave the application."""
        return dict(self.state["env"])

    @property
    def children(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in self.state["children"].items()}

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def refused_calls(self) -> list[str]:
        """The calls the local IAM check refused (``infra/local/local_iam.py``): a function's code needs an action
        its policy in ``infra/iam.py`` lacks — AWS would refuse it too."""
        return [line for line in self.log_text().splitlines() if "local IAM refused a call" in line]

    def client(self, service: str) -> Any:
        """A boto3 client on the stack's moto server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name=self.state["region"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def relais(self, *args: str) -> Any:
        """``relais --json ARGS`` against this stack (a separate process, as an operator runs it); its document."""
        done = subprocess.run(
            [sys.executable, "-m", "relais_cli.main", "--json", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "RELAIS_STATE_DIR": str(self.state_file.parent)},
        )
        assert done.returncode == 0, f"relais {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
        return json.loads(done.stdout)

    def national_token(self) -> str:
        """The stand-in's bearer token, read where Relais reads it: the SSM SecureString."""
        answer = self.client("ssm").get_parameter(Name=self.env["RELAIS_NATIONAL_TOKEN_PARAMETER"], WithDecryption=True)
        return str(answer["Parameter"]["Value"])

    @contextlib.contextmanager
    def app_environment(self) -> Iterator[None]:
        """Run application code in this process against the stack (its settings, its moto), then restore. The test
        acts as an operator (registering a pharmacy, as ``relais pharmacy add`` does): its AWS calls get the CLI's
        budget, not the API function's, so that two throttles in a row (2 % each, on at random) do not end it."""
        from chalicelib import bootstrap
        from relais_cli.context import OPERATOR_FUNCTION_TIMEOUT_SECONDS

        overrides = {
            **self.env,
            "RELAIS_FUNCTION_TIMEOUT_SECONDS": str(OPERATOR_FUNCTION_TIMEOUT_SECONDS),
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": self.state["region"],
            "AWS_REGION": self.state["region"],
        }
        saved = {name: os.environ.get(name) for name in overrides}
        os.environ.update(overrides)
        bootstrap.reset()
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            bootstrap.reset()

    def register_pharmacy(self, name: str = "Pharmacie e2e") -> tuple[str, str, Any]:
        """A new active pharmacy with a fresh Ed25519 key in the registry: (pharmacy_id, key_id, private key)."""
        from chalicelib import bootstrap
        from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
        from tests.signing import new_keypair

        private_key, public_pem = new_keypair()
        pharmacy_id, key_id = new_id(), new_id()
        finess = f"{secrets.randbelow(10**9):09d}"
        with self.app_environment():
            bootstrap.registry().add_pharmacy(
                Pharmacy(pharmacy_id, finess, name, "active"),
                PharmacyKey(key_id, pharmacy_id, public_pem, datetime.now(UTC)),
            )
        return pharmacy_id, key_id, private_key

    def stop(self, signum: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``signum`` to the runner and wait for it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def assert_everything_stopped(self, within: float = 10.0) -> None:
        """Every child's process group gone, every port free, the state file removed."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            alive = [name for name, pid in self.children.items() if group_alive(pid)]
            busy = [port for port in self.ports.values() if not port_is_free(port)]
            if not alive and not busy:
                break
            time.sleep(0.1)
        assert not alive, f"still running after the stack stopped: {alive}"
        assert not busy, f"ports still taken after the stack stopped: {busy}"
        assert not self.state_file.exists()

    def kill_everything(self) -> None:
        """Last resort for a broken test: SIGKILL the runner and every child group."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        for pid in self.children.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def start_stack(directory: Path, extra_env: dict[str, str] | None = None) -> LocalStack:
    """Start ``python -m infra.local.stack`` on free ports with its state in ``directory``; wait until healthy."""
    api, aws, national = free_ports(3)
    ports = {"api": api, "aws": aws, "national": national}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env.update(
        RELAIS_API_PORT=str(api),
        RELAIS_AWS_PORT=str(aws),
        RELAIS_NATIONAL_PORT=str(national),
        RELAIS_STATE_DIR=str(directory / "state"),
        RELAIS_LOCAL_AUTORELOAD="0",  # others edit the code while tests run: no restarts mid-test
        PYTHONUNBUFFERED="1",
        **(extra_env or {}),
    )
    log_path = directory / "stack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.stack"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = LocalStack(process, log_path, directory / "state" / "local.json", ports)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local stack exited with {process.returncode}:\n{stack.log_text()[-4000:]}")
        if stack.state_file.exists():
            with contextlib.suppress(ValueError, OSError):
                stack.state = json.loads(stack.state_file.read_text())
                answer = requests.get(f"{stack.api_url}/v1/health", timeout=2)
                if answer.status_code == 200:
                    return stack
        time.sleep(0.2)
    stack.kill_everything()
    raise RuntimeError(f"the local stack was not healthy within {START_TIMEOUT:.0f} s:\n{stack.log_text()[-4000:]}")


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One local stack for the session; at the end SIGINT must stop every process it started."""
    stack = start_stack(tmp_path_factory.mktemp("local-stack"))
    try:
        yield stack
    except BaseException:
        stack.kill_everything()
        raise
    try:
        assert stack.stop() == 0, stack.log_text()[-4000:]
        stack.assert_everything_stopped()
        assert stack.refused_calls() == []
    finally:
        stack.kill_everything()
