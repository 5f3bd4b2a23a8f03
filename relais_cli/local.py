"""``relais local ...``: look into the local stack (what the stand-in national system received, what was sent)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from relais_cli.context import Context
from relais_cli.errors import CliError
from relais_cli.outbox import read_outbox
from relais_cli.output import Output

TIMEOUT_SECONDS = 10.0


def _national_call(base_url: str, method: str, path: str) -> Any:
    import requests

    url = base_url + path
    try:
        response = requests.request(method, url, timeout=TIMEOUT_SECONDS)
    except requests.RequestException:
        raise CliError(
            f"the stand-in national system does not answer at {base_url}: is the local stack running?"
        ) from None
    if response.status_code >= 400:
        raise CliError(f"the stand-in national system answered {response.status_code} to {method} {path}")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CliError(f"the stand-in national system's answer to {method} {path} is not JSON") from None


def national(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Without flags: ``[{"received_at", "bundle"}]``; ``--down``/``--up``: ``{"up": bool}``."""
    stack = ctx.local("local national")
    if not stack.national_url:
        raise CliError("the local stack's state file names no stand-in national system (national_url)")
    if args.down or args.up:
        answer = _national_call(stack.national_url, "POST", "/_admin/down" if args.down else "/_admin/up")
        up = bool(answer["up"]) if isinstance(answer, dict) and "up" in answer else bool(args.up)
        human = (
            "the stand-in national system is up again: pending results are delivered on the next retry"
            if up
            else "the stand-in national system now answers 503 (down) until `relais local national --up`"
        )
        out.result({"up": up}, human)
        return
    received = _national_call(stack.national_url, "GET", "/_admin/received")
    if not isinstance(received, list):
        raise CliError("the stand-in national system's /_admin/received is not a JSON list")

    def received_text(items: list[Any]) -> str:
        if not items:
            return "the stand-in national system has received nothing yet"
        return json.dumps(items, indent=2, ensure_ascii=False)

    out.result(received, received_text)


def outbox(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``[{"channel", "to", "subject"?, "body", "sent_at"}]``: SMS (SNS) and e-mails (SES) the stack sent."""
    stack = ctx.local("local outbox")
    messages = read_outbox(stack.aws_endpoint, stack.state_dir)

    def human(items: list[dict[str, Any]]) -> str:
        if not items:
            return "nothing sent yet"
        blocks = []
        for m in items:
            head = f"[{m['sent_at']}] {m['channel']} to {m['to']}"
            if m.get("subject"):
                head += f"\nsubject: {m['subject']}"
            blocks.append(f"{head}\n{m['body']}")
        return "\n\n".join(blocks)

    out.result(messages, human)


def slip(
    args: argparse.Namespace, ctx: Context, out: Output, *, api_url: str | None = None, session: Any = None
) -> None:
    """``{"result_id", "file", "bytes"}``: the paper slip of one of the demo pharmacy's results, written to a file.

    The request is signed with the demo pharmacy's key (``relais demo`` keeps it in ``<state dir>/demo``): the CLI
    holds no other pharmacy's private key, so only that pharmacy's results get a slip (any other is a 404).
    Each slip is a new link that revokes the result's earlier ones and counts toward its 3 resends a day.
    ``api_url`` and ``session`` default to the local stack's API and a fresh ``requests.Session`` (for tests).
    """
    from pathlib import Path

    from chalicelib.domain.records import is_plausible_id
    from relais_cli.demo import IDS_FILE, PRIVATE_KEY_FILE, SignedClient, demo_keys, save_slip

    if not is_plausible_id(args.result_id):
        raise CliError(f"{args.result_id!r} is not a result id (16-64 characters of A-Z a-z 0-9 - _)")
    if api_url is None:
        api_url = ctx.local("local slip").api_url
    directory = ctx.state_dir / "demo"
    try:
        ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
        key_id = str(ids["key_id"])
    except (OSError, ValueError, KeyError, TypeError):
        ids = None
    if ids is None or not (directory / PRIVATE_KEY_FILE).exists():
        raise CliError("no demo pharmacy key yet: run `relais demo` first (the slip is signed with its key)")
    import requests

    client = SignedClient(
        http=session if session is not None else requests.Session(),
        api_url=api_url,
        keys=demo_keys(directory),
        key_id=key_id,
    )
    path = save_slip(client, args.result_id, directory, Path(args.out) if args.out else None)
    size = path.stat().st_size
    out.result(
        {"result_id": args.result_id, "file": str(path), "bytes": size},
        f"slip of {args.result_id} written to {path} ({size} bytes); it revoked the result's earlier links",
    )
