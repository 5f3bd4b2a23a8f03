"""The local stack, in the foreground until Ctrl-C: ``python -m infra.local.stack`` (what ``make run`` calls).

Starts, each as a child process in its own process group, with its output prefixed on this console:

* ``[aws]``: moto (DynamoDB, KMS, SQS, SNS, SES, SSM, CloudFormation) served with kept-alive connections
  (:mod:`infra.local.moto_server`); the resources of
  ``infra/resources.json`` are created in it through CloudFormation, exactly as in AWS;
* ``[national]``: the stand-in national system (:mod:`infra.local.national`), with a random bearer token that is
  also stored, as Relais expects it, in an SSM ``SecureString`` encrypted with the stage's KMS key;
* ``[api]``: ``chalice local --stage local``, the real application;
* ``[poller]``: :mod:`infra.local.poller`, which drives the stream relay, queue consumers and schedules as Lambda.

Once ``GET /v1/health`` answers, it prints where everything listens and writes ``.relais/local.json`` (the
``relais`` CLI reads it). Ctrl-C or SIGTERM stops every child (SIGTERM, 5 s, SIGKILL, whole process groups) and
exits 0; a child that dies on its own stops the rest and exits 1, naming it.

Settings: ``RELAIS_API_PORT`` (8000), ``RELAIS_AWS_PORT`` (5000), ``RELAIS_NATIONAL_PORT`` (8001),
``RELAIS_STATE_DIR`` (``<repo>/.relais``), ``RELAIS_LOCAL_AUTORELOAD`` (1: ``chalice local`` restarts when
``app.py``, ``chalicelib/`` or ``.chalice/`` change, see :mod:`infra.local.api`; 0: not), ``RELAIS_START_TIMEOUT``
(60 s), ``RELAIS_LOCAL_QUEUE_CONCURRENCY`` (4 consumers per queue, 1 to 16), and the local AWS's faults
(``RELAIS_LOCAL_FAULTS``, ``RELAIS_LOCAL_TRANSACTION_CONFLICTS``... read by the moto server: infra/local/README.md;
:func:`infra.local.faults.environment` gives them), ``RELAIS_LOCAL_IAM`` (on: the API and the poller refuse a
function's AWS call that its policy in ``infra/iam.py`` does not allow, :mod:`infra.local.local_iam`; off: not).
Any ``RELAIS_*`` application setting
in the environment (say ``RELAIS_LINK_TTL_HOURS``) is passed to the application. Nothing here prints personal data;
the application logs opaque ids only, and the children's output is relayed as it is.
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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from email.utils import parseaddr
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

from infra.local import faults, local_iam

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
STAGE: Final = "local"
REGION: Final = "eu-west-3"
HOST: Final = "127.0.0.1"
STATE_FILE_NAME: Final = "local.json"
TOKEN_PARAMETER: Final = f"/relais/{STAGE}/national-token"
STOP_GRACE_SECONDS: Final = 5.0

PORT_VARIABLES: Final = {
    "api": ("RELAIS_API_PORT", 8000),
    "aws": ("RELAIS_AWS_PORT", 5000),
    "national": ("RELAIS_NATIONAL_PORT", 8001),
}

#: Environment that would send a child to real AWS or to another endpoint: never passed on.
_AWS_VARIABLES_DROPPED: Final = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)

#: Console lines dropped as pure noise (everything else is relayed as it is): botocore's and PynamoDB's start-up
#: chatter at INFO (``chalice local`` sets the root logger to INFO), and Chalice's own ``relais - LEVEL - message``
#: copy of every line the Powertools logger (same logger name) already prints as JSON.
NOISE: Final = re.compile(
    r"Found credentials in environment variables\."
    r"|Found endpoint for \S+ via: \S+"
    r"|Override settings for pynamo (not )?available.*"
    r"|Using Default settings value"
    r"|relais - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - .*"
)


#: Local-stack defaults (overridable from the environment): short retry backoff and reconciliation, so that
#: a result accepted while the stand-in national system is down is reported within 60 s of it coming back.
LOCAL_DEFAULTS: Final = {
    "RELAIS_NATIONAL_BACKOFF_BASE_SECONDS": "1",
    "RELAIS_NATIONAL_BACKOFF_CAP_SECONDS": "15",
    "RELAIS_NATIONAL_MAX_ATTEMPTS": "40",
    "RELAIS_RECONCILE_AFTER_SECONDS": "120",
}


def poller_environment(child_env: dict[str, str]) -> dict[str, str]:
    """The poller's environment: the stack's, with the AWS call budget of the shortest worker function in the
    template (the notifier's 30 s: 3 attempts, 3 s read timeouts) rather than the API's 10 s, since one poller runs
    every worker. Its clients then wait and retry as the notifier's do on AWS, and less than national delivery's
    (60 s). A ``RELAIS_FUNCTION_TIMEOUT_SECONDS`` given to the stack is kept."""
    from infra.iam import FUNCTIONS

    if "RELAIS_FUNCTION_TIMEOUT_SECONDS" in child_env:
        return dict(child_env)
    shortest = min(spec.timeout for handler, spec in FUNCTIONS.items() if handler != "app.app")
    return {**child_env, "RELAIS_FUNCTION_TIMEOUT_SECONDS": str(shortest)}


class StackError(RuntimeError):
    """The stack cannot start; the message says what to do."""


@dataclass(frozen=True)
class Ports:
    """Where the three parts listen, on ``127.0.0.1``."""

    api: int
    aws: int
    national: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Read ``RELAIS_*_PORT`` (with the contract's defaults); StackError names a bad variable."""
        values: dict[str, int] = {}
        for part, (variable, default) in PORT_VARIABLES.items():
            raw = env.get(variable, "").strip() or str(default)
            try:
                port = int(raw)
            except ValueError:
                port = -1
            if not 1 <= port <= 65535:
                raise StackError(f"{variable} must be a port number (1-65535)")
            values[part] = port
        if len(set(values.values())) != len(values):
            raise StackError("RELAIS_API_PORT, RELAIS_AWS_PORT and RELAIS_NATIONAL_PORT must be three different ports")
        return cls(**values)

    def check_free(self) -> None:
        """StackError, naming the variable to override, when something already listens on one of the ports."""
        for part, (variable, _) in PORT_VARIABLES.items():
            port: int = getattr(self, part)
            if not port_is_free(port):
                raise StackError(
                    f"port {port} on {HOST} is already in use (the {part} part wants it); "
                    f"stop what uses it or choose another port, e.g. {variable}={_suggest_port(port)} make run"
                )


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, as the servers themselves set)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _suggest_port(port: int) -> int:
    for candidate in range(port + 10, port + 1000):
        if candidate <= 65535 and port_is_free(candidate):
            return candidate
    return port + 10


class Console:
    """Serialised, line-buffered output; every line prefixed with its source."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        """Print ``[name] line``."""
        with self._lock:
            self._stream.write(f"[{name}] {line}\n")
            self._stream.flush()

    def block(self, text: str) -> None:
        """Print ``text`` as it is (the summary)."""
        with self._lock:
            self._stream.write(text)
            self._stream.flush()


class Child:
    """One child process in its own process group, its output relayed to the console line by line."""

    def __init__(self, name: str, what: str, argv: list[str], env: Mapping[str, str], console: Console) -> None:
        self.name = name
        self.what = what
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv built here
            argv,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self._relay = threading.Thread(target=self._pump, args=(console,), name=f"relay-{name}", daemon=True)
        self._relay.start()

    def _pump(self, console: Console) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line and not NOISE.fullmatch(line):
                console.say(self.name, line)

    def running(self) -> bool:
        """Whether the child itself is still alive."""
        return self.process.poll() is None

    def _group_alive(self) -> bool:
        return group_alive(self.pid)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def terminate(self) -> None:
        """SIGTERM to the whole process group (the child and whatever it started)."""
        if self.running() or self._group_alive():
            self._signal_group(signal.SIGTERM)

    def finish(self, deadline: float) -> None:
        """Wait for the group to leave until ``deadline`` (monotonic), then SIGKILL it; reap, drain the output."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # grandchildren (chalice's reloader worker) may leave a moment after their parent
        if self.running() or self._group_alive():
            self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        self._relay.join(timeout=2)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies (exited, not yet reaped by their parent) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not (proc / "self").exists():
        return True  # no /proc (macOS): trust killpg
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False


def state_dir(env: Mapping[str, str]) -> Path:
    """Where ``local.json`` lives: ``RELAIS_STATE_DIR`` or ``<repo>/.relais``."""
    raw = env.get("RELAIS_STATE_DIR", "").strip()
    return Path(raw).expanduser().resolve() if raw else REPO_ROOT / ".relais"


def _pid_is_stack(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            return b"infra.local.stack" in cmdline.read_bytes()
    return True


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write the state file atomically, readable by its owner only (directory 0700, file 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(state, out, indent=2)
        out.write("\n")
    os.replace(temporary, path)


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - http://127.0.0.1 only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - loopback
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), b""


def application_settings_env(env: Mapping[str, str]) -> dict[str, str]:
    """The ``RELAIS_*`` variables of ``env`` that are application settings (``chalicelib.config.Settings``)."""
    from chalicelib.config import Settings

    names = {"RELAIS_" + f.name.upper() for f in fields(Settings)}
    return {name: value for name, value in env.items() if name in names}


class Stack:
    """Starts the children, provisions, watches, and stops everything."""

    def __init__(self, env: Mapping[str, str], console: Console) -> None:
        self.env = dict(env)
        self.console = console
        self.ports = Ports.from_env(self.env)
        self.aws_endpoint = f"http://{HOST}:{self.ports.aws}"
        self.api_url = f"http://{HOST}:{self.ports.api}"
        self.national_url = f"http://{HOST}:{self.ports.national}"
        self.state_file = state_dir(self.env) / STATE_FILE_NAME
        try:
            self.iam_checked = local_iam.enabled(self.env)
        except ValueError as error:
            raise StackError(str(error)) from None
        self.start_timeout = float(self.env.get("RELAIS_START_TIMEOUT", "") or 60)
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self._signals = 0
        self._wrote_state = False

    # --- signals ------------------------------------------------------------------------------------------------

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """First SIGINT/SIGTERM: stop gracefully. A second one while stopping: no more waiting."""
        self._signals += 1
        if self._signals == 1:
            self.console.say("stack", f"{signal.Signals(signum).name}: stopping every process…")
        self.stopping.set()

    # --- start ------------------------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if not k.startswith("AWS_ENDPOINT_URL_")}
        for name in (*_AWS_VARIABLES_DROPPED, "RELAIS_NATIONAL_TOKEN"):
            env.pop(name, None)
        env.update(
            AWS_ENDPOINT_URL=self.aws_endpoint,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 - moto's dummy credentials
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
            PYTHONUNBUFFERED="1",
        )
        return env

    def _start(self, name: str, what: str, argv: list[str], env: Mapping[str, str]) -> Child:
        child = Child(name, what, argv, env, self.console)
        self.children.append(child)
        return child

    def _wait_until(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Poll ``ready`` until true; StackError if a child dies or time runs out (returns early when stopping)."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while not self.stopping.is_set():
            for watched in self.children:
                if not watched.running():
                    raise StackError(
                        f"{watched.name} ({watched.what}) exited with code {watched.process.returncode} while starting"
                    )
            with contextlib.suppress(OSError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{what} did not become ready within {timeout or self.start_timeout:.0f} s")
            self.stopping.wait(0.2)

    def _listening(self, port: int) -> bool:
        with socket.create_connection((HOST, port), timeout=1):
            return True

    def _healthy(self) -> bool:
        status, body = _http_get(f"{self.api_url}/v1/health")
        return status == 200 and json.loads(body or b"{}") == {"status": "ok"}

    def _first_receipt_key(self, env: dict[str, str]) -> None:
        """The stage's first receipt key, so that its JWKS is never empty (a deployed stage gets it from its first
        receipt, or ``relais receipt rotate-key``); made by a child with the app's settings, as the API would."""
        code = "from chalicelib import bootstrap; print(bootstrap.receipt_keyring().ensure_key())"
        done = subprocess.run(  # noqa: S603 - fixed argv built here
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(f"the first receipt key could not be made: {done.stderr.strip()[-400:]}")
        self.console.say("stack", f"receipt signing key {done.stdout.strip()} published at /.well-known/jwks.json")

    def _provision(self) -> dict[str, str]:
        import boto3

        from chalicelib.config import settings_from_env
        from infra.provision import provision

        session = boto3.session.Session(
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - moto's dummy credentials
            region_name=REGION,
        )

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=self.aws_endpoint)

        outputs = provision(client("cloudformation"), STAGE)
        settings_env = {
            **LOCAL_DEFAULTS,
            **application_settings_env(self.env),
            **outputs,
            "RELAIS_STAGE": STAGE,
            "RELAIS_REGION": REGION,
            "RELAIS_NATIONAL_URL": f"{self.national_url}/fhir",
            "RELAIS_NATIONAL_TOKEN_PARAMETER": TOKEN_PARAMETER,
            "RELAIS_PUBLIC_BASE_URL": self.api_url,
        }
        settings = settings_from_env(settings_env)  # fails here, clearly, rather than in every child
        self.national_token = secrets.token_urlsafe(32)
        client("ssm").put_parameter(
            Name=TOKEN_PARAMETER,
            Description="Bearer token of the stand-in national system (local stack)",
            Value=self.national_token,
            Type="SecureString",
            KeyId=settings.kms_key_arn,
            Overwrite=True,
        )
        sender = parseaddr(settings.email_sender)[1] or settings.email_sender
        ses = client("ses")
        ses.verify_email_identity(EmailAddress=sender)  # moto's SES refuses unverified senders
        if settings.ses_configuration_set:  # and unknown configuration sets
            with contextlib.suppress(ses.exceptions.ConfigurationSetAlreadyExistsException):
                ses.create_configuration_set(ConfigurationSet={"Name": settings.ses_configuration_set})
        return settings_env

    def start(self) -> None:
        """Everything up and healthy, the state file written; StackError otherwise."""
        self.ports.check_free()
        if self.state_file.exists():
            with contextlib.suppress(OSError, ValueError, TypeError):
                other = int(json.loads(self.state_file.read_text())["pid"])
                if other != os.getpid() and _pid_is_stack(other):
                    raise StackError(f"a local stack already runs (pid {other}, {self.state_file}); stop it first")
        started = time.monotonic()
        base_env = self._child_env()

        self.console.say("stack", f"starting the AWS stand-in (moto server) on {self.aws_endpoint}")
        aws_env = dict(base_env)
        if faults.SWITCH not in aws_env:  # on by default, as AWS has them; RELAIS_LOCAL_FAULTS=off for debugging
            aws_env.update(faults.environment(None if faults.SEED not in aws_env else int(aws_env[faults.SEED])))
        self.console.say(
            "stack",
            f"local AWS faults {aws_env.get(faults.SWITCH)} (seed {aws_env.get(faults.SEED, '-')}; "
            "replay: RELAIS_LOCAL_FAULTS_SEED=<seed>; off: RELAIS_LOCAL_FAULTS=off; see infra/local/README.md)",
        )
        self.console.say(
            "stack",
            "each function's AWS calls checked against its IAM policy (infra/iam.py; off: RELAIS_LOCAL_IAM=off)"
            if self.iam_checked
            else "RELAIS_LOCAL_IAM=off: functions' AWS calls are not checked against their IAM policies (unlike AWS)",
        )
        self._start(
            "aws",
            "moto server",
            [sys.executable, "-m", "infra.local.moto_server", "--host", HOST, "--port", str(self.ports.aws)],
            aws_env,
        )
        self._wait_until("moto server", lambda: _http_get(f"{self.aws_endpoint}/moto-api/")[0] > 0, timeout=30)
        if self.stopping.is_set():
            return
        self.console.say("stack", "provisioning infra/resources.json through CloudFormation (stage 'local')")
        self.settings_env = self._provision()
        child_env = {**base_env, **self.settings_env}
        self._first_receipt_key(child_env)

        self._start(
            "national",
            "stand-in national system",
            [sys.executable, "-m", "infra.local.national", "--host", HOST, "--port", str(self.ports.national)],
            {**child_env, "RELAIS_NATIONAL_TOKEN": self.national_token},
        )
        api = [sys.executable, "-m", "infra.local.api"]  # chalice local, reloading on source changes only
        api_argv = [*api, "local", "--stage", STAGE, "--host", HOST, "--port", str(self.ports.api)]
        if self.env.get("RELAIS_LOCAL_AUTORELOAD", "1").strip().lower() in ("0", "false", "no", "off"):
            api_argv.append("--no-autoreload")
        self._start("api", "chalice local", api_argv, child_env)
        self._start(
            "poller", "event poller", [sys.executable, "-m", "infra.local.poller"], poller_environment(child_env)
        )

        self._wait_until("the national stand-in", lambda: self._listening(self.ports.national))
        self._wait_until("GET /v1/health", self._healthy)
        if self.stopping.is_set():
            return
        self.healthy_after = time.monotonic() - started
        write_state(self.state_file, self.state())
        self._wrote_state = True
        self.console.block(self.summary())

    def state(self) -> dict[str, Any]:
        """What ``.relais/local.json`` holds (read by the ``relais`` CLI and the e2e tests)."""
        return {
            "stage": STAGE,
            "region": REGION,
            "aws_endpoint": self.aws_endpoint,
            "api_url": self.api_url,
            "national_url": self.national_url,
            "env": dict(sorted(self.settings_env.items())),
            "pid": os.getpid(),
            "children": {child.name: child.pid for child in self.children},
        }

    def summary(self) -> str:
        """The friendly "it is up" message."""
        try:
            where = self.state_file.relative_to(Path.cwd())
        except ValueError:
            where = self.state_file
        return (
            f"\nRelais local stack is up (healthy after {self.healthy_after:.1f} s).\n\n"
            f"  API (pharmacy + patient)   {self.api_url}        try: curl {self.api_url}/v1/health\n"
            f"  AWS stand-in (moto)        {self.aws_endpoint}        DynamoDB, KMS, SQS, SNS, SES, SSM\n"
            f"  national stand-in (FHIR)   {self.national_url}/fhir\n\n"
            "  Next, from another terminal in this checkout:\n"
            "    .venv/bin/relais demo                    a sample result, end to end\n"
            "    .venv/bin/relais pharmacy add --finess F --name N --public-key FILE\n"
            "    .venv/bin/relais local national          what the national system received\n"
            "    .venv/bin/relais local outbox            the SMS and e-mails sent to patients\n"
            "    make test                                the whole test suite\n\n"
            f"  State: {where}. Ctrl-C stops everything.\n\n"
        )

    # --- run and stop ----------------------------------------------------------------------------------------

    def watch(self) -> int:
        """Until a signal (0) or a child's death (1)."""
        while not self.stopping.wait(0.25):
            for child in self.children:
                if not child.running():
                    self.console.say(
                        "stack",
                        f"{child.name} ({child.what}) exited unexpectedly with code {child.process.returncode}; "
                        "stopping the others",
                    )
                    return 1
        return 0

    def stop(self) -> None:
        """Stop every child (SIGTERM to all, up to 5 s, then SIGKILL) and remove the state file."""
        newest_first = list(reversed(self.children))  # the poller first: it need not see the AWS stand-in go
        for child in newest_first:
            child.terminate()
        deadline = time.monotonic() + (0.0 if self._signals > 1 else STOP_GRACE_SECONDS)
        for child in newest_first:
            child.finish(deadline)
        if self._wrote_state:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if json.loads(self.state_file.read_text())["pid"] == os.getpid():
                    self.state_file.unlink()


def main() -> int:
    """Run the local stack in the foreground; the exit status is 0 after Ctrl-C/SIGTERM, 1 on any failure."""
    console = Console(sys.stdout)
    try:
        stack = Stack(os.environ, console)
    except StackError as error:
        console.say("stack", f"cannot start: {error}")
        return 1
    signal.signal(signal.SIGINT, stack.on_signal)
    signal.signal(signal.SIGTERM, stack.on_signal)
    code = 1
    try:
        stack.start()
        code = stack.watch()
    except StackError as error:
        console.say("stack", f"cannot start: {error}")
    except Exception as error:
        console.say("stack", f"failed: {type(error).__name__}: {error}")
    finally:
        stack.stop()
    if code == 0:
        console.say("stack", "stopped.")
    return code


if __name__ == "__main__":
    sys.exit(main())
