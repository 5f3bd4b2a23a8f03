"""``relais pharmacy ...``: onboard pharmacies and manage their keys in the registry.

JSON outputs are those of ``docs/cli.md``; ``list`` is an extra for operators.
"""

from __future__ import annotations

import argparse
from typing import Any

from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id, utc_iso
from chalicelib.errors import ConflictError, NotFoundError
from relais_cli.context import Context
from relais_cli.errors import CliError
from relais_cli.identifiers import finess_problem, normalise_finess
from relais_cli.keys import read_public_key_file, refuse_test_key
from relais_cli.output import Output

NAME_MAX_LENGTH = 200
QUOTA_MAX = 1_000_000


def finess_argument(value: str) -> str:
    """argparse type of ``--finess``: a valid FINESS number, normalised."""
    problem = finess_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return normalise_finess(value)


def name_argument(value: str) -> str:
    """argparse type of ``--name``: 1-200 printable characters (surrounding spaces dropped)."""
    name = value.strip()
    if not name:
        raise argparse.ArgumentTypeError("the name is empty")
    if len(name) > NAME_MAX_LENGTH:
        raise argparse.ArgumentTypeError(f"the name has more than {NAME_MAX_LENGTH} characters")
    if not name.isprintable():
        raise argparse.ArgumentTypeError("the name contains control or non-printable characters")
    return name


def quota_argument(value: str) -> int:
    """argparse type of ``--daily-quota``: a whole number of submissions per day, at least 1."""
    try:
        quota = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("the daily quota is a whole number") from None
    if not 1 <= quota <= QUOTA_MAX:
        raise argparse.ArgumentTypeError(f"the daily quota is between 1 and {QUOTA_MAX}")
    return quota


def _now(ctx: Context) -> Any:
    from chalicelib import bootstrap

    ctx.apply()
    return bootstrap.clock()


def _public_key(path: str, ctx: Context) -> str:
    """The key file's public key, refused when it is the published test key and the stage is not local."""
    from chalicelib import bootstrap

    public_key_pem = read_public_key_file(path)
    ctx.apply()
    refuse_test_key(public_key_pem, bootstrap.settings().stage)
    return public_key_pem


def add(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Register a pharmacy with its first public key → ``{"pharmacy_id", "key_id"}``."""
    public_key_pem = _public_key(args.public_key, ctx)
    registry = ctx.registry()
    now = _now(ctx)
    pharmacy = Pharmacy(
        pharmacy_id=new_id(),
        finess=args.finess,
        name=args.name,
        status="active",
        daily_quota=args.daily_quota,
        created_at=now,
    )
    key = PharmacyKey(key_id=new_id(), pharmacy_id=pharmacy.pharmacy_id, public_key_pem=public_key_pem, created_at=now)
    try:
        registry.add_pharmacy(pharmacy, key)
    except ConflictError:
        raise CliError(f"a pharmacy with FINESS {args.finess} is already registered on {ctx.target}") from None
    result = {"pharmacy_id": pharmacy.pharmacy_id, "key_id": key.key_id}
    out.result(
        result,
        f"registered pharmacy {pharmacy.pharmacy_id} (FINESS {pharmacy.finess}) on {ctx.target}\n"
        f"key id: {key.key_id}  (configure it, with the private key, in the pharmacy software)",
    )


def add_key(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Add a public key to an existing pharmacy (first step of a rotation) → ``{"key_id"}``."""
    public_key_pem = _public_key(args.public_key, ctx)
    registry = ctx.registry()
    key = PharmacyKey(
        key_id=new_id(), pharmacy_id=args.pharmacy_id, public_key_pem=public_key_pem, created_at=_now(ctx)
    )
    try:
        registry.add_key(key)
    except NotFoundError:
        raise CliError(f"unknown pharmacy {args.pharmacy_id!r} on {ctx.target}") from None
    out.result(
        {"key_id": key.key_id},
        f"added key {key.key_id} to pharmacy {args.pharmacy_id}; once the pharmacy software uses it, "
        "revoke the old key with `relais pharmacy revoke-key --key-id OLD`",
    )


def revoke_key(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Revoke a key at once (idempotent: the first revocation time stays) → ``{"key_id", "revoked_at"}``."""
    registry = ctx.registry()
    existing = registry.get_key(args.key_id)
    if existing is None:
        raise CliError(f"unknown key {args.key_id!r} on {ctx.target}")
    try:
        revoked_at = registry.revoke_key(args.key_id)
    except NotFoundError:  # pragma: no cover - deleted between the two calls
        raise CliError(f"unknown key {args.key_id!r} on {ctx.target}") from None
    when = utc_iso(revoked_at)
    if existing.revoked_at is not None:
        out.progress(f"key {args.key_id} was already revoked; keeping the first revocation time")
    out.result({"key_id": args.key_id, "revoked_at": when}, f"key {args.key_id} revoked at {when}")


def _set_status(args: argparse.Namespace, ctx: Context, out: Output, status: str) -> None:
    registry = ctx.registry()
    try:
        pharmacy = registry.set_status(args.pharmacy_id, status)
    except NotFoundError:
        raise CliError(f"unknown pharmacy {args.pharmacy_id!r} on {ctx.target}") from None
    out.result(
        {"pharmacy_id": pharmacy.pharmacy_id, "status": pharmacy.status},
        f"pharmacy {pharmacy.pharmacy_id} is now {pharmacy.status}",
    )


def suspend(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Refuse every request of a pharmacy at once → ``{"pharmacy_id", "status": "suspended"}``."""
    _set_status(args, ctx, out, "suspended")


def resume(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Accept a suspended pharmacy's requests again → ``{"pharmacy_id", "status": "active"}``."""
    _set_status(args, ctx, out, "active")


def list_pharmacies(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """Every registered pharmacy → ``[{"pharmacy_id", "finess", "name", "status"}]``."""
    pharmacies = sorted(ctx.registry().list_pharmacies(), key=lambda p: (p.finess, p.pharmacy_id))
    rows = [{"pharmacy_id": p.pharmacy_id, "finess": p.finess, "name": p.name, "status": p.status} for p in pharmacies]

    def table(data: list[dict[str, str]]) -> str:
        if not data:
            return f"no pharmacy registered on {ctx.target}"
        return "\n".join(f"{r['pharmacy_id']}  {r['finess']}  {r['status']:<9}  {r['name']}" for r in data)

    out.result(rows, table)
