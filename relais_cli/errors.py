"""The CLI's own errors: a message for the operator and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """A failure to report as ``relais: error: <message>``; exit code 1."""

    exit_code = 1


class QuietFailure(CliError):
    """The command already printed its (failing) result; exit code 1 without a second document."""


class UsageError(CliError):
    """The command line itself is wrong (argparse's convention: exit code 2); ``usage`` goes to stderr."""

    exit_code = 2

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class StackNotRunningError(CliError):
    """No local stack to talk to (exit code 2: nothing was attempted)."""

    exit_code = 2

    def __init__(self, detail: str | None = None) -> None:
        message = "the local stack is not running: start it with `make run`"
        super().__init__(f"{message} ({detail})" if detail else message)
