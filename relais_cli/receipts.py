"""``relais receipt verify`` and ``relais receipt rotate-key`` (contract §6).

``verify`` checks a receipt the way any JOSE library would, against the stage's published keys: the local stack's
``GET /.well-known/jwks.json`` by default, the stage's key item with ``--stage`` (read with your AWS credentials: the
document that route serves), or any key set with ``--jwks URL|FILE``. With ``--body FILE`` it also checks that the
receipt names those exact bytes. A receipt holds opaque ids, the pharmacy's reference and times: it is printed as is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from relais_cli.context import Context
from relais_cli.errors import CliError
from relais_cli.output import Output

TIMEOUT_SECONDS = 10.0
JWKS_PATH = "/.well-known/jwks.json"


def _read_receipt(value: str) -> str:
    """The receipt itself, or ``-`` to read it from stdin."""
    text = sys.stdin.read() if value == "-" else value
    return text.strip()


def _fetch(url: str) -> Any:
    import requests

    try:
        response = requests.get(url, timeout=TIMEOUT_SECONDS)
    except requests.RequestException:
        raise CliError(f"cannot fetch the published keys at {url}: is the API up?") from None
    if response.status_code != 200:
        raise CliError(f"the published keys at {url} answered {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise CliError(f"the published keys at {url} are not JSON") from None


def _jwks(args: argparse.Namespace, ctx: Context) -> tuple[dict[str, Any], str]:
    """The key set to verify with, and where it came from."""
    if args.jwks:
        if args.jwks.startswith(("http://", "https://")):
            document, source = _fetch(args.jwks), args.jwks
        else:
            try:
                document, source = json.loads(Path(args.jwks).read_text(encoding="utf-8")), args.jwks
            except (OSError, ValueError) as exc:
                raise CliError(f"cannot read the key set {args.jwks}: {exc}") from None
    elif ctx.mode == "local":
        url = ctx.local("receipt verify").api_url + JWKS_PATH
        document, source = _fetch(url), url
    else:
        ctx.apply()
        from chalicelib import bootstrap

        document = bootstrap.receipt_keyring().published(bootstrap.settings().result_retention_days)
        source = f"the receipt keys of {ctx.target}"
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise CliError(f"{source} is not a JWKS document ({{'keys': [...]}})")
    return document, source


def verify(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais receipt verify RECEIPT [--body FILE] [--jwks URL|FILE]``: exit 1 unless it verifies."""
    from chalicelib.domain.receipts import ReceiptError, body_sha256
    from chalicelib.domain.receipts import verify as verify_receipt

    receipt = _read_receipt(args.receipt)
    body: bytes | None = None
    if args.body:
        try:
            body = Path(args.body).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the body file {args.body}: {exc.strerror}") from None
    jwks, source = _jwks(args, ctx)
    try:
        verified = verify_receipt(receipt, jwks)
    except ReceiptError as exc:
        raise CliError(f"receipt does not verify ({exc.reason}): {exc}") from None
    if body is not None and verified.payload.get("body_sha256") != body_sha256(body):
        raise CliError(
            "receipt does not match the body (body_mismatch): its body_sha256 is not the SHA-256 of "
            f"{args.body}; the receipt is for other bytes"
        )
    report = {
        "valid": True,
        "kid": verified.kid,
        "keys": source,
        "body_matches": None if body is None else True,
        "payload": verified.payload,
    }

    def human(r: dict[str, Any]) -> str:
        lines = [f"receipt verifies: signed by key {r['kid']} published in {r['keys']}"]
        if r["body_matches"]:
            lines.append(f"body_sha256 matches {args.body}")
        lines += [f"  {name}: {value}" for name, value in r["payload"].items()]
        return "\n".join(lines)

    out.result(report, human)


def rotate_key(args: argparse.Namespace, ctx: Context, out: Output) -> None:
    """``relais receipt rotate-key [--now] [--yes]``: a new signing key; the current one retires when it starts."""
    from datetime import timedelta

    from chalicelib.adapters.receipt_keys import ACTIVATION_DELAY
    from chalicelib.domain.records import utc_iso
    from chalicelib.errors import ConflictError

    delay = timedelta(0) if args.now else ACTIVATION_DELAY
    when = "at once" if args.now else f"in {int(delay.total_seconds() // 60)} minutes"
    out.confirm(f"Add a receipt signing key on {ctx.target}, signing {when}?", yes=args.yes)
    ctx.apply()
    from chalicelib import bootstrap

    try:
        key = bootstrap.receipt_keyring().rotate(delay)
    except ConflictError as exc:
        raise CliError(f"not rotated: {exc}") from None
    out.result(
        {"kid": key.kid, "active_from": utc_iso(key.active_from)},
        f"new receipt key {key.kid} published; it signs from {utc_iso(key.active_from)} "
        "(the previous key retires then and stays published)",
    )


def register(commands: Any, command: Any) -> None:
    """``relais receipt ...`` (``command`` is main's subcommand factory)."""
    group = command(commands, "receipt", "verify receipts; rotate the key that signs them", None)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = command(
        actions,
        "verify",
        "check a receipt's signature against the published keys (and a body file)",
        verify,
        'Exit 1 unless it verifies. JSON: {"valid", "kid", "keys", "body_matches", "payload"}.',
    )
    check.add_argument("receipt", metavar="RECEIPT", help="the receipt (a compact JWS), or - to read it from stdin")
    check.add_argument("--body", metavar="FILE", help="the exact request body the receipt should name")
    check.add_argument("--jwks", metavar="URL|FILE", help="verify with this key set instead of the stage's")
    rotate = command(
        actions,
        "rotate-key",
        "add a new receipt signing key (published now, signing 10 minutes later)",
        rotate_key,
        'JSON: {"kid", "active_from"}.',
    )
    rotate.add_argument("--now", action="store_true", help="sign with it at once (a compromised key: see the runbook)")
    rotate.add_argument("--yes", action="store_true", help="rotate without asking")
