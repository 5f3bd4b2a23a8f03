"""Day-to-day operator commands: billing usage, the audit trail, erasure, dead letters.

None of them prints personal data: audit events, usage and dead letters hold opaque ids only.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import re
from datetime import UTC, datetime
from typing import Any

from chalicelib.domain.records import AuditEvent, utc_iso
from chalicelib.errors import NotFoundError
from relais_cli.context import Context
from relais_cli.errors import CliError, QuietFailure
from relais_cli.output import Output

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def month_argument(value: str) -> str:
    """argparse type of ``--month``: ``YYYY-MM``."""
    if not _MONTH.match(value):
        raise argparse.ArgumentTypeError("the month is YYYY-MM, e.g. 2026-11")
    return value


def time_argument(value: str) -> datetime:
    """argparse type of ``--since``: ISO 8601 date or date-time (UTC when no offset is given)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError("the time is ISO 8601, e.g. 2026-11-30 or 2026-11-30T08:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def id_argument(value: str) -> str:
    """argparse type of result ids: the opaque id Relais returned."""
    if not _ID.match(value):
        raise argparse.ArgumentTypeError("not a Relais id (16-64 characters of A-Z a-z 0-9 _ -)")
    return value


def _bootstrap(ctx: Context) -> Any:
    ctx.apply()
    from chalicelib import bootstrap

    return bootstrap


def usage(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais usage --month YYYY-MM [--csv]`` → ``[{"pharmacy_id", "finess", "results", "withdrawn_same_day"}]``:
    billable results, and the results withdrawn on the day they were received (not billed, so not in ``results``)."""
    registry = _bootstrap(ctx).registry()
    with out.bar(f"usage {args.month}", unit="counter") as bar:
        rows = registry.usage(args.month, progress=_advance(bar))
    if args.csv and not args.json:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["pharmacy_id", "finess", "results", "withdrawn_same_day"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        out.stdout.write(buffer.getvalue())
        return
    total = sum(r["results"] for r in rows)
    unbilled = sum(r["withdrawn_same_day"] for r in rows)

    def line(r: dict[str, Any]) -> str:
        withdrawn = r["withdrawn_same_day"]
        note = f"  ({withdrawn} withdrawn the day received: not billed)" if withdrawn else ""
        return f"{r['finess']}  {r['pharmacy_id']}  {r['results']}{note}"

    out.result(
        rows,
        lambda data: "\n".join(
            [
                *(line(r) for r in data),
                f"total billable results in {args.month}: {total}"
                + (f" ({unbilled} withdrawn on the day received, not billed)" if unbilled else ""),
            ]
        ),
    )


def audit(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais audit --result-id ID`` or ``--since TIME [--pharmacy P]``: who did what, when."""
    store = _bootstrap(ctx).store()
    if args.result_id:
        events = store.audit_events(args.result_id)
    elif args.since:
        events = store.audit_since(args.since, pharmacy_id=args.pharmacy)
    else:
        raise CliError("give --result-id ID, or --since TIME [--pharmacy P]")
    out.result(
        events,
        lambda data: (
            "\n".join(
                f"{e['at']}  {e['actor']:<28} {e['action']:<16} {e['outcome']:<10} {e['record'] or '-'}"
                + (f"  ({e['reason']})" if e.get("reason") else "")
                for e in data
            )
            or "no audit event"
        ),
    )


def audit_verify(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais audit verify``: links, seals and events of the audit chain; exit 1 when anything is wrong."""
    bootstrap = _bootstrap(ctx)
    with out.bar("audit chain", unit="event") as bar:
        report = bootstrap.audit_chain().verify(now=bootstrap.clock(), progress=_advance(bar))
    out.result(
        report,
        lambda r: (
            f"audit chain: {r['events']} events, "
            + (
                "intact"
                if r["ok"]
                else f"{len(r['problems'])} problem(s): "
                + "; ".join(f"{p['kind']} at {p['seq']}" for p in r["problems"][:20])
            )
        ),
    )
    if not report["ok"]:
        raise QuietFailure("the audit chain does not verify")


def _advance(bar: Any) -> Any:
    """A ``progress(done, total)`` callback for the adapters that moves ``bar``."""

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done)

    return progress


def erase(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais result erase --id ID [--dry-run] [--yes]``: a patient's erasure request; unreadable at once."""
    bootstrap = _bootstrap(ctx)
    if (args.dry_run or not args.yes) and bootstrap.store().get_result(args.id) is None:
        raise CliError(f"no result {args.id} on {ctx.target}")  # before asking about a result that is not there
    if args.dry_run:
        out.result(
            {"id": args.id, "erased_at": None, "dry_run": True},
            f"dry run: result {args.id} on {ctx.target} would be erased (nothing changed)",
        )
        return
    out.confirm(f"Erase result {args.id} on {ctx.target}? This cannot be undone.", yes=args.yes)
    operator = args.operator or getpass.getuser()
    event = AuditEvent(
        actor=f"operator:{operator}",
        action="result.erase",
        outcome="success",
        record=args.id,
        at=bootstrap.clock(),
        reason="erasure-request",
    )
    try:
        erased_at = bootstrap.store().erase(args.id, event)
    except NotFoundError:
        raise CliError(f"no result {args.id} on {ctx.target}") from None
    out.result({"id": args.id, "erased_at": utc_iso(erased_at)}, f"result {args.id} erased at {utc_iso(erased_at)}")


def _queue(ctx: Context, name: str) -> Any:
    """The queue named and what a redrive does to each of its results before queueing it again (status pending)."""
    bootstrap = _bootstrap(ctx)
    if name == "national":
        statuses = bootstrap.national_statuses()
        return bootstrap.national_queue(), lambda result_id, _generation: statuses.mark_pending(result_id)
    settings = bootstrap.settings()
    from chalicelib.adapters.queues import WorkQueue

    links = bootstrap.link_store()
    return WorkQueue(
        bootstrap.client("sqs"), queue_url=settings.notify_queue_url, dlq_url=settings.notify_dlq_url
    ), links.reopen


def _reported(ctx: Context) -> Any:
    """Whether a result is reported nationally now (its national dead letters are then moot)."""
    store = _bootstrap(ctx).store()

    def reported(result_id: str) -> bool:
        record = store.get_result(result_id)
        return record is not None and record.national_status == "reported"

    return reported


def dlq_list(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais dlq list [--queue national|notify]`` → ``[{"result_id", "reason", "attempts", "version",
    "age_seconds"}]``."""
    queue, _ = _queue(ctx, args.queue)
    letters = queue.dead_letters(is_moot=_reported(ctx) if args.queue == "national" else None)
    out.result(
        letters,
        lambda data: (
            "\n".join(
                f"{d['result_id']}  {d['reason'] or 'no reason (moved by SQS after its receive limit)'}"
                f"  attempts={d['attempts']}  version={d['version']}  age={d['age_seconds']}s"
                for d in data
            )
            or f"no dead letter in the {args.queue} queue"
        ),
    )


def dlq_redrive(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais dlq redrive [--id ID] [--queue …] [--dry-run] [--yes]``: back to the work queue (status pending
    again). Every dead letter at once (no ``--id``) asks for confirmation unless ``--yes``."""
    queue, on_redrive = _queue(ctx, args.queue)
    if args.dry_run:
        waiting = [d["result_id"] for d in queue.dead_letters() if args.id is None or d["result_id"] == args.id]
        out.result(
            {"redriven": [], "would_redrive": waiting, "dry_run": True},
            f"dry run: {len(waiting)} result(s) would be sent back to the {args.queue} queue (nothing changed)",
        )
        return
    if args.id is None:
        out.confirm(f"Send every dead letter of the {args.queue} queue on {ctx.target} back to work?", yes=args.yes)
    with out.bar(f"redrive {args.queue}", unit="letter") as bar:

        def redriven(result_id: str, generation: int) -> None:
            on_redrive(result_id, generation)
            bar.update(1)

        moved = queue.redrive(result_id=args.id, on_redrive=redriven)
    if args.id and not moved:
        raise CliError(f"no dead letter for result {args.id} in the {args.queue} queue")
    out.result({"redriven": moved}, f"{len(moved)} result(s) sent back to the {args.queue} queue")


def register(commands: Any, command: Any) -> None:
    """Add the operator commands to the top-level parser (``command`` is main's subcommand factory)."""
    use = command(
        commands,
        "usage",
        "billable results per pharmacy for a month",
        usage,
        'JSON: [{"pharmacy_id", "finess", "results", "withdrawn_same_day"}]. --csv prints CSV instead.',
    )
    use.add_argument("--month", required=True, type=month_argument, metavar="YYYY-MM")
    use.add_argument("--csv", action="store_true", help="CSV on stdout (ignored with --json)")

    aud = command(
        commands,
        "audit",
        "the audit trail: who read or changed what, when",
        audit,
        "relais audit --result-id ID | --since TIME [--pharmacy P]; relais audit verify",
    )
    aud.add_argument("--result-id", type=id_argument, metavar="ID")
    aud.add_argument("--since", type=time_argument, metavar="TIME")
    aud.add_argument("--pharmacy", metavar="P")
    verbs = aud.add_subparsers(dest="verb", metavar="verify")
    command(verbs, "verify", "check the audit chain (links, seals, events)", audit_verify)

    res = command(commands, "result", "operations on one result", None)
    res_actions = res.add_subparsers(dest="action", metavar="ACTION", required=True)
    er = command(
        res_actions,
        "erase",
        "erase a result's personal data at once (erasure request)",
        erase,
        'JSON: {"id", "erased_at"}.',
    )
    er.add_argument("--id", required=True, type=id_argument, metavar="ID")
    er.add_argument("--operator", metavar="NAME", help="who asks (default: your user name); recorded in the audit")
    _careful(er, "erase")

    dlq = command(commands, "dlq", "dead letters of national delivery or notification", None)
    dlq_actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = command(dlq_actions, "list", "list dead letters (ids, reason, attempts, age)", dlq_list)
    rd = command(dlq_actions, "redrive", "send dead letters back to their queue", dlq_redrive)
    rd.add_argument("--id", type=id_argument, metavar="RESULT_ID", help="only this result")
    _careful(rd, "redrive every dead letter")
    for parser in (ls, rd):
        parser.add_argument("--queue", choices=("national", "notify"), default="national")


def _careful(parser: Any, what: str) -> None:
    """``--yes`` and ``--dry-run`` for a command that changes data for good."""
    parser.add_argument("--yes", action="store_true", help=f"{what} without asking")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
