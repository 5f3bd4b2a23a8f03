"""``relais``: the command line (argparse). ``main(argv)`` returns the exit code.

Exit codes: 0 success, 1 failure, 2 usage error (argparse's convention) or no local stack running.
With ``--json`` (before or after the subcommand) stdout carries exactly one JSON document: the result, or
``{"error": "..."}`` on failure; human messages and progress always go to stderr then.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from relais_cli import demo, local, operations, pharmacy, receipts
from relais_cli.context import Context, stage_name
from relais_cli.errors import CliError, QuietFailure, UsageError
from relais_cli.output import Output, guard_stdout

Handler = Callable[[argparse.Namespace, Context, Output], None]

DEBUG_ENV = "RELAIS_DEBUG"

#: One example per command, shown by ``relais --help`` (a test checks that every command has one and that it parses).
EXAMPLES: dict[str, str] = {
    "pharmacy add": 'relais pharmacy add --finess 750000010 --name "Pharmacie du Port" --public-key port.pub.pem',
    "pharmacy add-key": "relais pharmacy add-key --pharmacy-id PHARMACY_ID --public-key next.pub.pem",
    "pharmacy revoke-key": "relais pharmacy revoke-key --key-id KEY_ID",
    "pharmacy suspend": "relais pharmacy suspend --pharmacy-id PHARMACY_ID",
    "pharmacy resume": "relais pharmacy resume --pharmacy-id PHARMACY_ID",
    "pharmacy list": "relais --stage prod pharmacy list",
    "local national": "relais local national --down",
    "local outbox": "relais --json local outbox",
    "local slip": "relais local slip RESULT_ID_0000000 --out slip.pdf",
    "usage": "relais --stage prod usage --month 2026-11 --csv",
    "audit": "relais --stage prod audit --since 2026-11-30 --pharmacy PHARMACY_ID",
    "audit verify": "relais --stage prod audit verify",
    "result erase": "relais --stage prod result erase --id RESULT_ID_0000000 --operator dpo --dry-run",
    "dlq list": "relais --stage prod dlq list --queue notify",
    "dlq redrive": "relais --stage prod dlq redrive --queue national --yes",
    "receipt verify": "relais receipt verify eyJhbGciOi… --body result.json",
    "receipt rotate-key": "relais --stage prod receipt rotate-key --yes",
    "demo": "relais demo",
}


def _examples() -> str:
    width = max(map(len, EXAMPLES))
    lines = [f"  {name:<{width}}  {example}" for name, example in EXAMPLES.items()]
    return "commands, one example each (relais COMMAND --help for every option):\n" + "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of exiting, so that ``--json`` errors stay JSON."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage())


def _stage_type(value: str) -> str:
    try:
        return stage_name(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a stage name is letters, digits and hyphens, starting with a letter"
        ) from None


def _common(*, top: bool) -> _Parser:
    """``--json`` and ``--stage`` for every (sub)parser; below the top, absent options do not reset the values."""
    common = _Parser(add_help=False)
    suppress = argparse.SUPPRESS
    common.add_argument(
        "--json",
        action="store_true",
        default=False if top else suppress,
        help="print exactly one JSON document on stdout (messages go to stderr)",
    )
    common.add_argument(
        "--stage",
        metavar="NAME",
        type=_stage_type,
        default=None if top else suppress,
        help="a deployed stage (CloudFormation stack relais-NAME, usual AWS credentials); default: the local stack",
    )
    return common


def _command(
    group: argparse._SubParsersAction[_Parser], name: str, text: str, handler: Handler | None, description: str = ""
) -> _Parser:
    """A subcommand taking ``--json``/``--stage`` too; ``handler`` runs it (None for command groups)."""
    parser = group.add_parser(name, help=text, description=description or None, parents=[_common(top=False)])
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def build_parser() -> _Parser:
    """The whole command line; exposed for tests and docs."""
    parser = _Parser(
        prog="relais",
        description="Relais operator and developer commands: pharmacies and keys, the local stack, a demo.",
        parents=[_common(top=True)],
        epilog=_examples(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    key_help = "Ed25519 public key file, PEM SubjectPublicKeyInfo"

    # -- pharmacy ---------------------------------------------------------------------------------------------
    group = _command(commands, "pharmacy", "onboard pharmacies, manage their keys", None)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = _command(
        actions,
        "add",
        "register a pharmacy with its first public key",
        pharmacy.add,
        'Register a pharmacy. JSON: {"pharmacy_id", "key_id"}.',
    )
    add.add_argument("--finess", required=True, type=pharmacy.finess_argument, help="FINESS number (9 characters)")
    add.add_argument("--name", required=True, type=pharmacy.name_argument, help="pharmacy name (1-200 characters)")
    add.add_argument("--public-key", required=True, metavar="FILE", help=key_help)
    add.add_argument("--daily-quota", type=pharmacy.quota_argument, metavar="N", help="submissions per day")

    add_key = _command(
        actions,
        "add-key",
        "add a public key to a pharmacy (key rotation)",
        pharmacy.add_key,
        'Add a key to a pharmacy. JSON: {"key_id"}.',
    )
    add_key.add_argument("--pharmacy-id", required=True, metavar="P")
    add_key.add_argument("--public-key", required=True, metavar="FILE", help=key_help)

    revoke = _command(
        actions,
        "revoke-key",
        "revoke a key at once",
        pharmacy.revoke_key,
        'Revoke a key; revoking again keeps the first time. JSON: {"key_id", "revoked_at"}.',
    )
    revoke.add_argument("--key-id", required=True, metavar="K")

    suspend = _command(
        actions,
        "suspend",
        "refuse every request of a pharmacy",
        pharmacy.suspend,
        'Suspend a pharmacy. JSON: {"pharmacy_id", "status"}.',
    )
    suspend.add_argument("--pharmacy-id", required=True, metavar="P")
    resume = _command(
        actions,
        "resume",
        "accept a suspended pharmacy's requests again",
        pharmacy.resume,
        'Resume a pharmacy. JSON: {"pharmacy_id", "status"}.',
    )
    resume.add_argument("--pharmacy-id", required=True, metavar="P")

    _command(
        actions,
        "list",
        "list registered pharmacies",
        pharmacy.list_pharmacies,
        'List pharmacies. JSON: [{"pharmacy_id", "finess", "name", "status"}].',
    )

    # -- local ------------------------------------------------------------------------------------------------
    group = _command(commands, "local", "look into the local stack (`make run`)", None)
    local_actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    national = _command(
        local_actions,
        "national",
        "what the stand-in national system received; --down/--up",
        local.national,
        'Without flags: [{"received_at", "bundle"}]. With --down or --up: {"up": bool}.',
    )
    switch = national.add_mutually_exclusive_group()
    switch.add_argument("--down", action="store_true", help="make the stand-in answer 503")
    switch.add_argument("--up", action="store_true", help="make the stand-in accept bundles again")
    _command(
        local_actions,
        "outbox",
        "SMS and e-mails sent to patients (SNS/SES in moto)",
        local.outbox,
        '[{"channel": "sms"|"email", "to", "subject"?, "body", "sent_at"}].',
    )

    slip = _command(
        local_actions,
        "slip",
        "write the paper slip of a result of the demo pharmacy (a new link: earlier ones are revoked)",
        local.slip,
        'Signed with the demo pharmacy\'s key (`relais demo`). JSON: {"result_id", "file", "bytes"}.',
    )
    slip.add_argument("result_id", metavar="ID", help="the result's id (one submitted by `relais demo`)")
    slip.add_argument("--out", metavar="FILE", help="where to write the PDF (default: <state dir>/demo/slip-ID.pdf)")

    operations.register(commands, _command)
    receipts.register(commands, _command)

    # -- demo -------------------------------------------------------------------------------------------------
    _command(
        commands,
        "demo",
        "one signed submission through the local stack, step by step",
        _demo,
        'JSON: {"pharmacy_id", "key_id", "result_id", "status_code", "receipt", "national", "patient"}.',
    )
    return parser


def _demo(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais demo``: see :mod:`relais_cli.demo`."""
    demo.run(ctx, out)


def _wants_json(argv: Sequence[str]) -> bool:
    """``--json`` anywhere before a ``--`` (for errors raised before or during parsing)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0, 1, or 2 for usage errors and no local stack)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    out = Output(json_mode=_wants_json(args_list))
    try:
        args = build_parser().parse_args(args_list)
    except UsageError as exc:
        out.progress(exc.usage.rstrip())
        out.error(str(exc))
        return exc.exit_code
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 2
    out = Output(json_mode=bool(args.json))
    ctx = Context.for_stage(args.stage)
    try:
        with guard_stdout(out):
            args.handler(args, ctx, out)
    except QuietFailure:
        return 1
    except CliError as exc:
        out.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except Exception as exc:
        return _unexpected(exc, out)
    finally:
        ctx.close()
    return 0


def _unexpected(exc: Exception, out: Output) -> int:
    """Known infrastructure failures as one line; anything else with its type (traceback with RELAIS_DEBUG=1)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.errors import DependencyUnavailableError

    if os.environ.get(DEBUG_ENV):
        traceback.print_exc(file=sys.stderr)
    if isinstance(exc, DependencyUnavailableError):
        out.error(f"{exc.dependency} is unavailable: is the stack up and are the credentials right?")
    elif isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        out.error(f"AWS refused the call: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": "))
    elif isinstance(exc, BotoCoreError):
        out.error(f"AWS call failed: {exc}")
    else:
        out.error(f"unexpected {type(exc).__name__} (run with {DEBUG_ENV}=1 for details)")
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
