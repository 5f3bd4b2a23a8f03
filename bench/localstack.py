"""The local stack as the HTTP benchmarks drive it: started in this process, the poller under the bench's control.

:class:`BenchStack` is :class:`infra.local.stack.Stack` (same moto server, provisioning, stand-in national system,
``chalice local`` API) on free ports, its console in a log file, except that the poller (the workers) is started by
the bench: :meth:`BenchStack.start_poller`, :meth:`pause_poller` / :meth:`resume_poller` (SIGSTOP / SIGCONT to its
process group, only while it is idle), :meth:`stop_poller`. :meth:`start_floor` serves ``bench/floor_app`` with the
same ``chalice local`` against the same moto server. :func:`group_cpu_seconds` reads a process group's CPU time
from ``/proc``; :meth:`BenchStack.cpu` gives it for every part.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import requests

from bench.client import LIFTED_KEY_RATE
from infra.local.stack import HOST, Child, Console, Stack

FLOOR_DIR = Path(__file__).resolve().with_name("floor_app")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process of the process group ``pgid`` (all their threads)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """This process's CPU time (the clients: signing is done before the clock starts, so it is mostly HTTP)."""
    times = os.times()
    return times.user + times.system


class _Console(Console):
    """The stack's console into a file; remembers that a part printed a line containing some text."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._seen: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def say(self, name: str, line: str) -> None:
        super().say(name, line)
        if name in ("poller", "floor"):
            with self._changed:
                self._seen.append((name, line))
                del self._seen[:-50]
                self._changed.notify_all()

    def wait_for(self, name: str, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if any(n == name and text in line for n, line in self._seen):
                    self._seen.clear()
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)


class BenchStack(Stack):
    """The local stack, with the poller and the floor app started, paused and stopped by the bench."""

    def __init__(self, directory: Path, ports: Mapping[str, int]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
        env.update(
            RELAIS_API_PORT=str(ports["api"]),
            RELAIS_AWS_PORT=str(ports["aws"]),
            RELAIS_NATIONAL_PORT=str(ports["national"]),
            RELAIS_STATE_DIR=str(directory / "state"),
            RELAIS_LOCAL_AUTORELOAD="0",
            **LIFTED_KEY_RATE,  # each bench client stands for many pharmacies: one key's own rate is not measured
            # speed, not robustness: no random throttling, duplicates or held-back messages (reordered ones wait up
            # to 5 s, which a p95 would measure); transaction conflicts stay, as in DynamoDB. BENCH_FAULTS=on keeps
            # them (the stack's default).
            RELAIS_LOCAL_FAULTS="on" if os.environ.get("BENCH_FAULTS", "off").lower() == "on" else "off",
            PYTHONUNBUFFERED="1",
        )
        self.log_path = directory / "stack.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.bench_console = _Console(self._log)
        super().__init__(env, self.bench_console)
        self.floor_url = f"http://{HOST}:{ports['floor']}"
        self._floor_port = ports["floor"]
        self._poller_env: dict[str, str] = {}
        self.poller: Child | None = None
        self.floor: Child | None = None
        self.paused = False

    # --- the parts the bench starts itself ------------------------------------------------------------------

    def _start(self, name: str, what: str, argv: list[str], env: Mapping[str, str]) -> Child:
        if name == "poller":  # Stack.start() starts it last: the bench does, when it wants it
            self._poller_env = dict(env)
            return None  # type: ignore[return-value]
        return super()._start(name, what, argv, env)

    def start_poller(self, *, from_latest: bool = False) -> None:
        """The stack's poller (``infra.local.poller``), or ``bench.poller_latest``; returns once it polls."""
        module = "bench.poller_latest" if from_latest else "infra.local.poller"
        self.poller = super()._start("poller", "event poller", [sys.executable, "-m", module], self._poller_env)
        if not self.bench_console.wait_for("poller", "poller: driving", 60):
            raise RuntimeError(f"the poller did not start; see {self.log_path}")
        time.sleep(1.0)  # its threads' first polls

    def stop_poller(self) -> None:
        if self.poller is None:
            return
        if self.paused:
            self.resume_poller()
        self.poller.terminate()
        self.poller.finish(time.monotonic() + 10)
        self.children.remove(self.poller)
        self.poller = None

    def pause_poller(self) -> None:
        """SIGSTOP the poller (call it idle: a message it held would be invisible for the visibility timeout)."""
        assert self.poller is not None
        os.killpg(self.poller.pid, signal.SIGSTOP)
        self.paused = True
        time.sleep(1.5)  # its long polls (1 s) still open at moto end empty before anything is sent

    def resume_poller(self) -> None:
        assert self.poller is not None
        os.killpg(self.poller.pid, signal.SIGCONT)
        self.paused = False

    def start_floor(self, blob_bytes: int) -> None:
        """``bench/floor_app`` served by ``chalice local`` (as the API is), on the same moto server."""
        env = {
            **self._child_env(),
            "FLOOR_TABLE": self.settings_env["RELAIS_STATE_TABLE"],
            "FLOOR_BLOB_BYTES": str(blob_bytes),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        argv = [sys.executable, "-m", "infra.local.api", "--project-dir", str(FLOOR_DIR), "local"]
        argv += ["--no-autoreload", "--stage", "local", "--host", HOST, "--port", str(self._floor_port)]
        self.floor = self._start("floor", "floor app (chalice local)", argv, env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self.floor.running():
                raise RuntimeError(f"the floor app exited; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.floor_url}/", timeout=1)
                return
            time.sleep(0.2)
        raise RuntimeError(f"the floor app did not start; see {self.log_path}")

    # --- reading the stack ------------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """Process group of each part: aws, national, api, poller, floor (those running)."""
        return {child.name: child.pid for child in self.children}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each part's process group, and of this process (``clients``)."""
        figures = {name: group_cpu_seconds(pid) for name, pid in self.pids().items()}
        figures["clients"] = own_cpu_seconds()
        return figures

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name="eu-west-3",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # moto's dummy credentials
        )

    def app_env(self) -> dict[str, str]:
        """The environment the application runs with in this stack (for in-process work and cold processes)."""
        env = self._child_env()
        env.update(self.settings_env)
        return env

    def national_received(self) -> int:
        return int(requests.get(f"{self.national_url}/_admin/status", timeout=10).json()["received"])

    def queues_empty(self, sqs: Any) -> bool:
        for name in ("RELAIS_NATIONAL_QUEUE_URL", "RELAIS_NOTIFY_QUEUE_URL"):
            attributes = sqs.get_queue_attributes(
                QueueUrl=self.settings_env[name],
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(value) for value in attributes.values()):
                return False
        return True

    def wait_drained(self, received: int, timeout: float = 600.0, quiet_cpu: float = 0.25) -> float:
        """Until the stand-in holds ``received`` results, both queues are empty and the workers have gone quiet
        (the poller and moto together under ``quiet_cpu`` CPU seconds in one second: the audit chain has caught
        up). Seconds waited; RuntimeError after ``timeout``."""
        started = time.monotonic()
        sqs = self.client("sqs")
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.national_received() >= received and self.queues_empty(sqs):
                before = self.cpu()
                time.sleep(1.0)
                after = self.cpu()
                busy = sum(after[k] - before[k] for k in ("poller", "aws") if k in after)
                if busy < quiet_cpu and self.queues_empty(sqs):
                    return time.monotonic() - started
            else:
                time.sleep(0.5)
        raise RuntimeError(
            f"not drained after {timeout:.0f} s: the stand-in holds {self.national_received()} of {received}"
        )

    def log_summary(self) -> dict[str, int]:
        """Lines of the stack's log that tell of trouble: failed or retried batches (each retry costs CPU too)."""
        keys = ("poller_batches_failed", "poller_stream_retries", "warnings_or_errors", "iam_refused_calls")
        counts = dict.fromkeys(keys, 0)
        with self.log_path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if line.startswith("[poller]") and re.search(r"message\(s\) -> .*: \d+ done, [1-9]\d* failed", line):
                    counts["poller_batches_failed"] += 1
                elif line.startswith("[poller] stream:") and "failed on" in line:
                    counts["poller_stream_retries"] += 1
                elif "local IAM refused a call" in line:  # infra/local/local_iam.py: AWS would refuse it too
                    counts["iam_refused_calls"] += 1
                elif '"level":"WARNING"' in line or '"level":"ERROR"' in line or "Traceback" in line:
                    counts["warnings_or_errors"] += 1
        return counts

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.paused:
                self.resume_poller()
        self.stop()
        self._log.close()


def utc_seconds(text: str) -> float:
    """``2026-...Z`` (as the tables store times) → POSIX seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()
