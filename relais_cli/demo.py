"""``relais demo``: one signed submission through the local stack, explained step by step, in about a minute.

1. an Ed25519 key pair for a demo pharmacy in ``<state dir>/demo/`` (private key mode 0600, never printed);
2. "Pharmacie de démonstration" registered with a valid FINESS, or reused (ids kept in ``demo/demo.json``);
3. a fictitious sample result POSTed to the local API over real HTTP, signed with ``requests-http-signature``
   exactly as pharmacy software does (RFC 9421, Ed25519, nonce, Content-Digest);
   Relais answers with a receipt (a JWS), shown for ``relais receipt verify``;
4. ``GET /v1/results/{id}`` followed for up to 15 s, showing the national and patient status changes;
5. a patient without a phone or e-mail: a second sample with ``notify: ["paper"]``, and its paper slip
   (``POST /v1/results/{id}/slip``) written to ``<state dir>/demo/slip-<id>.pdf``, its path printed;
6. hints: ``relais local national``, ``relais local outbox``.

Only ids, statuses and header *names* are shown: never the sample's personal data, a header value or a key.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
from chalicelib.errors import ConflictError, NotFoundError
from relais_cli.context import Context
from relais_cli.errors import CliError
from relais_cli.identifiers import with_finess_key
from relais_cli.output import Output
from relais_cli.sample import sample_body

DEMO_NAME = "Pharmacie de démonstration"
DEMO_FINESS = with_finess_key("75099999")
PRIVATE_KEY_FILE = "pharmacy-private-key.pem"
PUBLIC_KEY_FILE = "pharmacy-public-key.pem"
IDS_FILE = "demo.json"
POLL_SECONDS = 15.0
POLL_INTERVAL = 1.0
HTTP_TIMEOUT = 10.0
#: Covered components, as ``docs/api.md``'s client example (with a body) and for body-less GETs.
BODY_COMPONENTS = ("@method", "@authority", "@path", "content-digest", "content-type")
BODYLESS_COMPONENTS = ("@method", "@authority", "@path")
_FINAL_NATIONAL = {"reported", "failed"}
_FINAL_PATIENT = {"sent", "failed", "not_requested"}


@dataclass(frozen=True)
class DemoKeys:
    """The demo pharmacy's key pair: private PEM bytes (for signing only) and public SPKI PEM text."""

    private_pem: bytes
    public_pem: str
    private_path: Path


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def demo_keys(directory: Path, *, renew: bool = False) -> DemoKeys:
    """Load the demo key pair from ``directory``, or create it there (``renew``: replace it with a new one)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / PRIVATE_KEY_FILE
    if renew:
        private_path.unlink(missing_ok=True)
    if private_path.exists():
        private_pem = private_path.read_bytes()
        key = serialization.load_pem_private_key(private_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise CliError(f"{private_path} is not an Ed25519 private key: delete it to let the demo make a new one")
        os.chmod(private_path, 0o600)
    else:
        key = Ed25519PrivateKey.generate()
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(private_path, private_pem)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    (directory / PUBLIC_KEY_FILE).write_text(public_pem, encoding="ascii")
    return DemoKeys(private_pem=private_pem, public_pem=public_pem, private_path=private_path)


def _load_ids(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _register(registry: Any, keys: DemoKeys, now: datetime, out: Output) -> dict[str, str]:
    """Register the demo pharmacy (another valid FINESS if the usual one is taken without our ids)."""
    finess = DEMO_FINESS
    for _attempt in range(5):
        pharmacy = Pharmacy(pharmacy_id=new_id(), finess=finess, name=DEMO_NAME, status="active", created_at=now)
        key = PharmacyKey(new_id(), pharmacy.pharmacy_id, keys.public_pem, created_at=now)
        try:
            registry.add_pharmacy(pharmacy, key)
        except ConflictError:
            finess = with_finess_key("75" + f"{secrets.randbelow(10**6):06d}")
            continue
        out.info(f"   registered {DEMO_NAME!r} (FINESS {finess}) with its public key")
        return {"pharmacy_id": pharmacy.pharmacy_id, "key_id": key.key_id, "finess": finess}
    raise CliError("could not find a free FINESS number for the demo pharmacy")  # pragma: no cover


def ensure_demo_pharmacy(registry: Any, directory: Path, now: datetime, out: Output) -> tuple[dict[str, str], DemoKeys]:
    """The demo pharmacy's ids and key pair, reused when still registered, active and with a live key.

    A suspended demo pharmacy is resumed; a revoked demo key is replaced by a new key pair (a key rotation:
    a revoked key is treated as compromised, never registered again).
    """
    keys = demo_keys(directory)
    ids_path = directory / IDS_FILE
    ids = _load_ids(ids_path)
    try:
        pharmacy = registry.get_pharmacy(ids["pharmacy_id"]) if ids.get("pharmacy_id") else None
    except NotFoundError:
        pharmacy = None
    if pharmacy is None:
        ids = _register(registry, keys, now, out)
    else:
        out.info(f"   reusing {DEMO_NAME!r} (FINESS {pharmacy.finess}) registered earlier")
        if pharmacy.status != "active":
            registry.set_status(pharmacy.pharmacy_id, "active")
            out.info("   it was suspended: resumed it")
        key = registry.get_key(ids.get("key_id", "")) if ids.get("key_id") else None
        usable = key is not None and key.pharmacy_id == pharmacy.pharmacy_id and key.revoked_at is None
        if not usable or key is None or key.public_key_pem.strip() != keys.public_pem.strip():
            if key is not None and key.revoked_at is not None:
                keys = demo_keys(directory, renew=True)
                out.info("   its demo key was revoked: made a new key pair (a key rotation)")
            new_key = PharmacyKey(new_id(), pharmacy.pharmacy_id, keys.public_pem, created_at=now)
            registry.add_key(new_key)
            out.info("   registered the demo public key")
            ids = {"pharmacy_id": pharmacy.pharmacy_id, "key_id": new_key.key_id, "finess": pharmacy.finess}
    ids_path.write_text(json.dumps(ids, indent=2) + "\n", encoding="utf-8")
    return ids, keys


@dataclass(frozen=True)
class SignedClient:
    """The pharmacy side of the demo: requests signed with ``requests-http-signature``, as ``docs/api.md`` shows."""

    http: Any
    api_url: str
    keys: DemoKeys
    key_id: str

    def _auth(self, components: tuple[str, ...]) -> Any:
        from requests_http_signature import HTTPSignatureAuth, algorithms

        return HTTPSignatureAuth(
            signature_algorithm=algorithms.ED25519,
            key=self.keys.private_pem,
            key_id=self.key_id,
            use_nonce=True,
            covered_component_ids=components,
        )

    def submit(self, body: bytes) -> Any:
        """``POST /v1/results`` with the JSON ``body``."""
        return self.http.post(
            f"{self.api_url}/v1/results",
            data=body,
            headers={"Content-Type": "application/json"},
            auth=self._auth(BODY_COMPONENTS),
            timeout=HTTP_TIMEOUT,
        )

    def slip(self, result_id: str) -> Any:
        """``POST /v1/results/{id}/slip`` with ``{}``: the paper slip's PDF (binary: ``Accept`` says so)."""
        return self.http.post(
            f"{self.api_url}/v1/results/{result_id}/slip",
            data=b"{}",
            headers={"Content-Type": "application/json", "Accept": "application/pdf"},
            auth=self._auth(BODY_COMPONENTS),
            timeout=HTTP_TIMEOUT,
        )

    def follow(self, result_id: str) -> Any:
        """``GET /v1/results/{id}`` (no body: ``content-type`` and ``content-digest`` are not in the list)."""
        return self.http.get(
            f"{self.api_url}/v1/results/{result_id}", auth=self._auth(BODYLESS_COMPONENTS), timeout=HTTP_TIMEOUT
        )


def _problem(response: Any) -> str:
    """Status, title and field names of an error answer (problem bodies never echo submitted values)."""
    try:
        problem = response.json()
    except ValueError:
        return str(response.status_code)
    if not isinstance(problem, dict):
        return str(response.status_code)
    text = f"{response.status_code} {problem.get('title', '')}".strip()
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        text += " (" + "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)) + ")"
    return text


def _statuses(view: dict[str, Any]) -> tuple[str, str]:
    return str(view.get("national", {}).get("status")), str(view.get("patient", {}).get("status"))


def run(
    ctx: Context,
    out: Output,
    *,
    api_url: str | None = None,
    session: Any = None,
    poll_seconds: float = POLL_SECONDS,
    poll_interval: float = POLL_INTERVAL,
) -> dict[str, Any]:
    """Run the demo; print and return ``{"pharmacy_id", "key_id", "result_id", "status_code", "receipt", "national",
    "patient"}``.

    ``api_url`` and ``session`` default to the local stack's API and a fresh ``requests.Session`` (tests pass a
    session whose transport is the Chalice test client).
    """
    import requests

    if api_url is None:
        api_url = ctx.local("demo").api_url
    api_url = api_url.rstrip("/")
    http = session if session is not None else requests.Session()
    from chalicelib import bootstrap

    out.info(f"Relais demo on {ctx.target} (API {api_url})")
    out.info("1. the demo pharmacy and its Ed25519 key pair")
    registry = ctx.registry()
    ids, keys = ensure_demo_pharmacy(registry, ctx.state_dir / "demo", bootstrap.clock(), out)
    out.info(f"   pharmacy_id {ids['pharmacy_id']}, key_id {ids['key_id']}")
    out.info(f"   private key: {keys.private_path} (mode 0600, never leaves the pharmacy; Relais has the public key)")

    body = json.dumps(sample_body(datetime.now(UTC)), ensure_ascii=False).encode("utf-8")
    out.info("2. a sample result: fictitious patient, antigen test sampled 10 minutes ago, notify by SMS and e-mail")
    out.info("3. POST /v1/results, signed like pharmacy software does (RFC 9421 HTTP Message Signatures, Ed25519)")
    client = SignedClient(http=http, api_url=api_url, keys=keys, key_id=ids["key_id"])
    try:
        response = client.submit(body)
    except requests.RequestException:
        raise CliError(f"the local API does not answer at {api_url}: is the local stack running?") from None
    names = ", ".join(sorted(response.request.headers))
    out.info(f"   headers sent (names only): {names}")
    if response.status_code not in (200, 201):
        raise CliError(f"the API refused the sample: {_problem(response)}")
    result_id = str(response.json()["id"])
    receipt = str(response.json().get("receipt", ""))
    out.info(f"   → {response.status_code} {'Created' if response.status_code == 201 else 'OK'}, result id {result_id}")
    out.info(f"   receipt (JWS signed by Relais, verify it: relais receipt verify RECEIPT): {receipt}")

    out.info(f"4. following GET /v1/results/{{id}} (signed, no body) for up to {poll_seconds:g} s")
    view = _follow(client, result_id, out, poll_seconds=poll_seconds, poll_interval=poll_interval)
    paper_slip(client, ctx.state_dir / "demo", out)
    summary = {
        "pharmacy_id": ids["pharmacy_id"],
        "key_id": ids["key_id"],
        "result_id": result_id,
        "status_code": response.status_code,
        "receipt": receipt,
        "national": view.get("national", {}),
        "patient": view.get("patient", {}),
    }
    out.info("Next:")
    out.info("   relais local national   # the FHIR Bundle the stand-in national system received")
    out.info("   relais local outbox     # the SMS and e-mail sent to the patient, with the result link")
    out.info(f"   relais pharmacy revoke-key --key-id {ids['key_id']}   # then run the demo again: it adds a new key")
    out.result(summary, "")
    return summary


def paper_slip(client: SignedClient, directory: Path, out: Output) -> Path:
    """Step 5: a sample for a patient without a phone or e-mail (``notify: ["paper"]``) and its slip; the PDF's path."""
    out.info('5. a patient without a phone or e-mail: a second sample with notify ["paper"], and its paper slip')
    sample = sample_body(datetime.now(UTC))
    sample["notify"] = ["paper"]
    for field in ("phone", "email"):
        del sample["patient"][field]
    response = client.submit(json.dumps(sample, ensure_ascii=False).encode("utf-8"))
    if response.status_code not in (200, 201):
        raise CliError(f"the API refused the paper sample: {_problem(response)}")
    result_id = str(response.json()["id"])
    path = save_slip(client, result_id, directory)
    out.info(f"   result id {result_id}: slip written to {path} (print it: its QR code opens the result page)")
    return path


def save_slip(client: SignedClient, result_id: str, directory: Path, path: Path | None = None) -> Path:
    """``POST /v1/results/{id}/slip`` and write the PDF to ``path`` (default ``directory/slip-<id>.pdf``); the path.

    The slip is a new link: it revokes the result's earlier links and counts toward its 3 resends a day. The file is
    the owner's alone (mode 0600), as the key is: whoever reads it holds the link."""
    import requests

    try:
        response = client.slip(result_id)
    except requests.RequestException:
        raise CliError(f"the local API does not answer at {client.api_url}: is the local stack running?") from None
    if response.status_code == 404:
        raise CliError(
            f"no result {result_id} of the demo pharmacy: the slip is signed with the demo pharmacy's key "
            "(`relais demo`), so only its results get one"
        )
    if response.status_code != 200 or response.headers.get("Content-Type") != "application/pdf":
        raise CliError(f"the slip was refused: {_problem(response)}")
    target = path if path is not None else directory / f"slip-{result_id}.pdf"
    _write_slip(target, response.content)
    return target


def _write_slip(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600 (the slip holds a live link to a result): created so, or made so when it was
    already there, before a byte of the slip is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _follow(
    client: SignedClient, result_id: str, out: Output, *, poll_seconds: float, poll_interval: float
) -> dict[str, Any]:
    """Poll the result's status until both sides settle or time runs out; print each change."""
    import requests

    started = time.monotonic()
    last: tuple[str, str] | None = None
    view: dict[str, Any] = {}
    while True:
        elapsed = time.monotonic() - started
        try:
            response = client.follow(result_id)
        except requests.RequestException:  # `chalice local` restarts when code changes: try again until the end
            if elapsed + poll_interval > poll_seconds:
                raise CliError(f"the local API stopped answering at {client.api_url}") from None
            time.sleep(poll_interval)
            continue
        if response.status_code != 200:
            raise CliError(f"following the result failed: {_problem(response)}")
        view = response.json()
        current = _statuses(view)
        if current != last:
            out.info(f"   +{elapsed:4.1f} s  national: {current[0]:<9} patient: {current[1]}")
            last = current
        if (current[0] in _FINAL_NATIONAL and current[1] in _FINAL_PATIENT) or elapsed + poll_interval > poll_seconds:
            break
        time.sleep(poll_interval)
    if last is not None and not (last[0] in _FINAL_NATIONAL and last[1] in _FINAL_PATIENT):
        out.info("   (still in progress: follow it with the same GET, or look at `relais local national`)")
    return view
