"""Where the CLI writes: one JSON document on stdout with ``--json``, human text otherwise.

With ``--json`` nothing but the single result (or ``{"error": ...}``) reaches stdout: human messages and
progress go to stderr, and :func:`guard_stdout` sends any stray ``print`` of a library to stderr too.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any, TextIO

from tqdm import tqdm

from relais_cli.errors import CliError

ERROR_PREFIX = "relais: error: "
#: ``RELAIS_PROGRESS=1`` shows progress bars on stderr even when it is not a terminal (logs, tests); ``0`` hides them.
PROGRESS_ENV = "RELAIS_PROGRESS"


class Output:
    """The command's voice: results, step-by-step messages, warnings and the final error."""

    def __init__(self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self._stdout = stdout if stdout is not None else sys.stdout
        self._stderr = stderr if stderr is not None else sys.stderr
        self._document_written = False

    @property
    def stdout(self) -> TextIO:
        """The real stdout (kept even while :func:`guard_stdout` redirects ``sys.stdout``)."""
        return self._stdout

    def info(self, message: str) -> None:
        """A human message: stdout in human mode, stderr with ``--json``."""
        stream = self._stderr if self.json_mode else self._stdout
        print(message, file=stream, flush=True)

    def progress(self, message: str) -> None:
        """Progress or a side note: always stderr, so it never mixes with a result."""
        print(message, file=self._stderr, flush=True)

    @contextmanager
    def bar(self, what: str, *, unit: str, total: int | None = None) -> Iterator[Any]:
        """A progress bar on stderr (tqdm) for a long command; shown on a terminal or with ``RELAIS_PROGRESS=1``.

        ``bar.update(n)`` advances it, ``bar.total = n`` sets the total once known. Never on stdout.
        """
        forced = os.environ.get(PROGRESS_ENV)
        disable = None if forced is None else forced != "1"  # None: tqdm shows it on a terminal only
        with tqdm(total=total, desc=what, unit=unit, file=self._stderr, disable=disable, leave=True) as progress:
            yield progress

    def confirm(self, question: str, *, yes: bool) -> None:
        """Go on only if ``yes`` (``--yes``) or the operator types ``yes`` at the terminal; CliError otherwise."""
        if yes:
            return
        if not sys.stdin or not sys.stdin.isatty():
            raise CliError(f"{question} — no terminal to ask: add --yes to confirm, or --dry-run to see what it does")
        print(f"{question} Type yes to go on: ", end="", file=self._stderr, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise CliError("cancelled: nothing was changed")

    def result(self, data: Any, human: str | Callable[[Any], str] | None = None) -> None:
        """The command's result: the JSON document, or ``human`` (text or a formatter of ``data``)."""
        if self.json_mode:
            self._write_document(data)
            return
        if human is None:
            text = json.dumps(data, indent=2, ensure_ascii=False)
        elif callable(human):
            text = human(data)
        else:
            text = human
        if text:
            print(text, file=self._stdout, flush=True)

    def error(self, message: str) -> None:
        """``relais: error: ...`` on stderr; with ``--json`` also ``{"error": ...}`` on stdout (if nothing was)."""
        print(ERROR_PREFIX + message, file=self._stderr, flush=True)
        if self.json_mode and not self._document_written:
            self._write_document({"error": message})

    def _write_document(self, data: Any) -> None:
        if self._document_written:  # pragma: no cover - a command emits one result
            raise RuntimeError("a JSON document was already written")
        self._document_written = True
        self._stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._stdout.flush()


@contextmanager
def guard_stdout(output: Output) -> Iterator[None]:
    """With ``--json``, send everything printed to ``sys.stdout`` during the block to stderr instead."""
    if not output.json_mode:
        yield
        return
    with redirect_stdout(sys.stderr):
        yield
