"""Which Relais the CLI talks to, and how it wires ``chalicelib`` to it.

Three modes:

* **local** (default): the local stack started by ``make run``. Its state file ``<state dir>/local.json``
  (state dir: ``$RELAIS_STATE_DIR``, else ``.relais/`` in this checkout) gives the settings, the moto endpoint,
  the API and the stand-in national system. A missing file or a dead stack process means it is not running.
* **stage** (``--stage NAME``): a deployed stage, through the usual AWS credential chain. Region from
  ``AWS_REGION``/``AWS_DEFAULT_REGION``, else ``eu-west-3``; settings from the outputs of the CloudFormation stack
  ``relais-NAME`` (``infra.provision.stack_settings``).
* **env** (``RELAIS_CLI_USE_ENV=1``, hidden, for tests): the ``RELAIS_*`` settings already in ``os.environ``,
  no state file, no endpoint override.

Settings are loaded lazily (a local-only command never asks CloudFormation), applied to ``os.environ`` as
``chalicelib.config`` expects, and the environment is restored by :meth:`Context.close`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relais_cli.errors import CliError, StackNotRunningError, UsageError

STATE_DIR_ENV = "RELAIS_STATE_DIR"
USE_ENV_ENV = "RELAIS_CLI_USE_ENV"
STATE_FILE = "local.json"
DEFAULT_REGION = "eu-west-3"
REPO_ROOT = Path(__file__).resolve().parent.parent
_STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,100}")
#: The CLI's AWS calls are sized as for a 60 s function (3 attempts, 5 s read timeouts, ``adapters/aws.py``), not as
#: for the target's 10 s API function: an operator's command has no Lambda time limit, and a call to a busy stack
#: that waits, or is throttled twice, must not end the command (a dead-letter listing long-polls for 1 s).
OPERATOR_FUNCTION_TIMEOUT_SECONDS = 60


def state_dir() -> Path:
    """Where the local stack keeps its state file (and the demo its keys)."""
    configured = os.environ.get(STATE_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / ".relais"


def stage_name(value: str) -> str:
    """argparse type of ``--stage``: a CloudFormation-friendly name (the stack is ``relais-NAME``)."""
    if not _STAGE_NAME.fullmatch(value):
        raise ValueError(value)
    return value


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that exited but was not reaped yet (Linux ``/proc``; elsewhere assume it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


@dataclass(frozen=True)
class LocalStack:
    """What the local stack's state file says about it."""

    stage: str
    region: str
    aws_endpoint: str
    api_url: str
    national_url: str
    env: dict[str, str]
    pid: int
    state_dir: Path


def read_local_stack(directory: Path | None = None) -> LocalStack:
    """The running local stack; StackNotRunningError when its state file is missing or its process is gone."""
    directory = directory if directory is not None else state_dir()
    path = directory / STATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackNotRunningError() from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the local stack's state file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CliError(f"the local stack's state file {path} is not a JSON object")
    try:
        pid = int(raw["pid"])
        stack = LocalStack(
            stage=str(raw.get("stage", "local")),
            region=str(raw.get("region") or DEFAULT_REGION),
            aws_endpoint=str(raw["aws_endpoint"]).rstrip("/"),
            api_url=str(raw["api_url"]).rstrip("/"),
            national_url=str(raw.get("national_url", "")).rstrip("/"),
            env={str(k): str(v) for k, v in dict(raw.get("env") or {}).items()},
            pid=pid,
            state_dir=directory,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"the local stack's state file {path} is incomplete ({exc})") from None
    if not pid_alive(pid):
        raise StackNotRunningError(f"stale state file {path}: process {pid} is gone")
    return stack


@dataclass
class Context:
    """The target of one CLI run; build with :meth:`for_stage`, then :meth:`close` when done."""

    stage: str | None = None
    use_env: bool = False
    _local: LocalStack | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _applied: bool = False

    @classmethod
    def for_stage(cls, stage: str | None) -> Context:
        """``--stage NAME``, or the local stack; ``RELAIS_CLI_USE_ENV=1`` selects the env mode (tests)."""
        use_env = os.environ.get(USE_ENV_ENV, "") not in ("", "0")
        return cls(stage=stage, use_env=use_env and stage is None)

    @property
    def mode(self) -> str:
        """``"stage"``, ``"env"`` or ``"local"``."""
        if self.stage is not None:
            return "stage"
        return "env" if self.use_env else "local"

    @property
    def target(self) -> str:
        """For messages: where the command acted."""
        return {"stage": f"stage {self.stage}", "env": "the configured environment", "local": "the local stack"}[
            self.mode
        ]

    @property
    def state_dir(self) -> Path:
        return self._local.state_dir if self._local is not None else state_dir()

    def local(self, command: str) -> LocalStack:
        """The local stack, for commands that only make sense there (``local ...``, ``demo``)."""
        if self.mode != "local":
            reason = "--stage" if self.mode == "stage" else f"{USE_ENV_ENV}=1"
            raise UsageError(f"`relais {command}` works with the local stack only (not with {reason})")
        return self._local_stack()

    def _local_stack(self) -> LocalStack:
        if self._local is None:
            self._local = read_local_stack()
        return self._local

    # -- chalicelib wiring ---------------------------------------------------------------------------------------
    def registry(self) -> Any:
        """``chalicelib``'s Registry bound to this target (settings applied on first use)."""
        self.apply()
        from chalicelib import bootstrap

        return bootstrap.registry()

    def apply(self) -> None:
        """Load this target's settings into ``os.environ`` and rebuild ``chalicelib.bootstrap``'s components."""
        if self._applied:
            return
        if self.mode == "stage":
            assert self.stage is not None
            self._set_env(_deployed_stage_env(self.stage))
        elif self.mode == "local":
            self._set_env(_local_env(self._local_stack()))
        self._set_env({"RELAIS_FUNCTION_TIMEOUT_SECONDS": str(OPERATOR_FUNCTION_TIMEOUT_SECONDS)})
        self._applied = True
        from chalicelib import bootstrap
        from chalicelib.config import SettingsError

        bootstrap.reset()
        try:
            bootstrap.settings()
        except SettingsError as exc:
            raise CliError(f"{self.target} is not configured: {exc}") from None

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def close(self) -> None:
        """Put ``os.environ`` back as it was and forget clients bound to this target."""
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self._applied:
            from chalicelib import bootstrap

            bootstrap.reset()
            self._applied = False


def _local_env(stack: LocalStack) -> dict[str, str]:
    """The local stack's settings plus the moto endpoint and dummy credentials when none are set."""
    values = {k: v for k, v in stack.env.items() if k.startswith("RELAIS_")}
    values.setdefault("RELAIS_REGION", stack.region)
    values.setdefault("RELAIS_STAGE", stack.stage)
    values["AWS_ENDPOINT_URL"] = stack.aws_endpoint
    values["AWS_REGION"] = stack.region
    values["AWS_DEFAULT_REGION"] = stack.region
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        values["AWS_ACCESS_KEY_ID"] = "local"
        values["AWS_SECRET_ACCESS_KEY"] = "local"  # noqa: S105 - moto's dummy credentials
    return values


def _deployed_stage_env(stage: str) -> dict[str, str]:
    """``RELAIS_*`` settings of a deployed stage, from its CloudFormation stack outputs."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    from infra.provision import stack_name, stack_settings

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    name = stack_name(stage)
    try:
        cloudformation = boto3.client("cloudformation", region_name=region)
        env = stack_settings(cloudformation, stage)
    except NoCredentialsError:
        raise CliError(
            "no AWS credentials found: configure the usual chain (AWS_PROFILE, environment variables, SSO login)"
        ) from None
    except NoRegionError:  # pragma: no cover - a region is always given
        raise CliError("no AWS region: set AWS_REGION") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if "does not exist" in str(error.get("Message", "")):
            raise CliError(f"no stage {stage!r}: CloudFormation stack {name} not found in {region}") from None
        raise CliError(f"CloudFormation refused to describe {name}: {error.get('Code', 'error')}") from None
    except BotoCoreError as exc:
        raise CliError(f"cannot reach CloudFormation in {region}: {exc}") from None
    env.setdefault("RELAIS_REGION", region)
    return env
