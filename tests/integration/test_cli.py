"""``relais`` in-process against moto: the registry commands, the demo, ``local outbox`` and ``local national``.

Registry commands run with ``RELAIS_CLI_USE_ENV=1`` (settings straight from the ``aws`` fixture's environment).
``local outbox`` reads a real moto server (``ThreadedMotoServer``) and ``local national`` the real stand-in, both
found through a state file, as with ``make run``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from chalice.test import Client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from requests.structures import CaseInsensitiveDict

from relais_cli.identifiers import with_finess_key
from relais_cli.keys import PRIVATE_KEY_REFUSED, TEST_KEY_REFUSED
from relais_cli.main import main

REGION = "eu-west-3"


def run(capsys, *argv: str) -> tuple[int, object, str]:
    """Run ``relais --json ...``; stdout must hold exactly one JSON document."""
    code = main(["--json", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def new_finess() -> str:
    return with_finess_key(f"75{secrets.randbelow(10**6):06d}")


def key_files(tmp_path, name: str = "pharmacy") -> tuple[bytes, str]:
    """Write ``<name>.pub.pem`` and ``<name>.key.pem``; return the private PEM and the public file path."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / f"{name}.key.pem").write_bytes(private)
    (tmp_path / f"{name}.pub.pem").write_bytes(public)
    return private, str(tmp_path / f"{name}.pub.pem")


@pytest.fixture
def cli(aws, tmp_path, monkeypatch):
    """moto in-process, provisioned; the CLI in env mode, its state directory in tmp_path."""
    monkeypatch.setenv("RELAIS_CLI_USE_ENV", "1")
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path / "state"))
    return aws


def registry_items(env: dict[str, str]) -> list[dict]:
    table = boto3.client("dynamodb", region_name=REGION)
    return table.scan(TableName=env["RELAIS_REGISTRY_TABLE"])["Items"]


def add_pharmacy(capsys, tmp_path, finess: str | None = None) -> dict:
    _, public_path = key_files(tmp_path, secrets.token_hex(4))
    code, doc, _ = run(
        capsys,
        "pharmacy",
        "add",
        "--finess",
        finess or new_finess(),
        "--name",
        "Pharmacie du Port",
        "--public-key",
        public_path,
    )
    assert code == 0, doc
    return doc


# -- pharmacy commands ----------------------------------------------------------------------------------------------


def test_pharmacy_add_answers_the_contract_keys_and_stores_only_the_public_key(cli, capsys, tmp_path):
    private, public_path = key_files(tmp_path)
    finess = new_finess()
    code, doc, _ = run(
        capsys,
        "pharmacy",
        "add",
        "--finess",
        finess,
        "--name",
        "Pharmacie du Port",
        "--public-key",
        public_path,
        "--daily-quota",
        "300",
    )
    assert code == 0
    assert set(doc) == {"pharmacy_id", "key_id"}

    from chalicelib import bootstrap

    registry = bootstrap.registry()
    pharmacy = registry.get_pharmacy(doc["pharmacy_id"])
    assert (pharmacy.finess, pharmacy.name, pharmacy.status, pharmacy.daily_quota) == (
        finess,
        "Pharmacie du Port",
        "active",
        300,
    )
    key = registry.get_key(doc["key_id"])
    assert key.pharmacy_id == doc["pharmacy_id"]
    with open(public_path) as handle:
        assert key.public_key_pem == handle.read()
    everything = json.dumps(registry_items(cli))
    assert "PRIVATE" not in everything
    private_body = b"".join(private.splitlines()[1:-1]).decode()
    assert private_body not in everything


def test_the_cli_leaves_the_environment_as_it_found_it(cli, capsys, tmp_path):
    before = dict(os.environ)
    add_pharmacy(capsys, tmp_path)
    assert dict(os.environ) == before


def test_an_operator_command_s_aws_calls_are_not_sized_for_the_api_s_10_s(cli, monkeypatch):
    """The CLI is not a Lambda: a slow or twice-throttled call to a busy stack must not end an operator's command."""
    from chalicelib import bootstrap
    from chalicelib.adapters.aws import call_budget
    from relais_cli.context import OPERATOR_FUNCTION_TIMEOUT_SECONDS, Context

    monkeypatch.setenv("RELAIS_FUNCTION_TIMEOUT_SECONDS", "10")  # the target's API function
    ctx = Context.for_stage(None)
    ctx.apply()
    try:
        config = bootstrap.client("sqs").meta.config
        expected = call_budget(OPERATOR_FUNCTION_TIMEOUT_SECONDS)
        assert (expected.read_timeout, expected.max_attempts) == (5.0, 3)
        assert (config.read_timeout, config.retries["total_max_attempts"]) == (5.0, 3)
    finally:
        ctx.close()
    assert os.environ["RELAIS_FUNCTION_TIMEOUT_SECONDS"] == "10"


def test_a_second_pharmacy_with_the_same_finess_is_refused(cli, capsys, tmp_path):
    finess = new_finess()
    add_pharmacy(capsys, tmp_path, finess)
    _, public_path = key_files(tmp_path, "other")
    code, doc, err = run(capsys, "pharmacy", "add", "--finess", finess, "--name", "Autre", "--public-key", public_path)
    assert code == 1
    assert doc == {"error": f"a pharmacy with FINESS {finess} is already registered on the configured environment"}
    assert err.startswith("relais: error: a pharmacy with FINESS")
    code, listing, _ = run(capsys, "pharmacy", "list")
    assert [p["finess"] for p in listing].count(finess) == 1


def test_a_private_key_file_is_refused_and_nothing_is_stored(cli, capsys, tmp_path):
    key_files(tmp_path)
    code, doc, _ = run(
        capsys,
        "pharmacy",
        "add",
        "--finess",
        new_finess(),
        "--name",
        "P",
        "--public-key",
        str(tmp_path / "pharmacy.key.pem"),
    )
    assert code == 1
    assert PRIVATE_KEY_REFUSED in doc["error"]
    assert registry_items(cli) == []


def test_the_published_test_key_is_refused_outside_the_local_stack(cli, capsys, tmp_path, monkeypatch):
    vectors = json.loads((Path(__file__).resolve().parents[2] / "docs" / "signature-test-vectors.json").read_text())
    (tmp_path / "test.pub.pem").write_text(vectors["key"]["public_key_pem"])
    add = ["pharmacy", "add", "--finess", new_finess(), "--name", "P", "--public-key", str(tmp_path / "test.pub.pem")]
    code, doc, _ = run(capsys, *add)
    assert code == 1
    assert TEST_KEY_REFUSED in doc["error"]
    assert registry_items(cli) == []
    added = add_pharmacy(capsys, tmp_path)
    code, doc, _ = run(capsys, "pharmacy", "add-key", "--pharmacy-id", added["pharmacy_id"], "--public-key", add[-1])
    assert code == 1
    assert TEST_KEY_REFUSED in doc["error"]

    monkeypatch.setenv("RELAIS_STAGE", "local")
    code, doc, _ = run(capsys, *add)
    assert code == 0, doc
    assert set(doc) == {"pharmacy_id", "key_id"}


def test_add_key_adds_a_second_key_to_the_pharmacy(cli, capsys, tmp_path):
    added = add_pharmacy(capsys, tmp_path)
    _, public_path = key_files(tmp_path, "next")
    code, doc, _ = run(
        capsys, "pharmacy", "add-key", "--pharmacy-id", added["pharmacy_id"], "--public-key", public_path
    )
    assert code == 0
    assert set(doc) == {"key_id"}
    assert doc["key_id"] != added["key_id"]
    from chalicelib import bootstrap

    assert bootstrap.registry().get_key(doc["key_id"]).pharmacy_id == added["pharmacy_id"]


def test_add_key_to_an_unknown_pharmacy_is_an_error(cli, capsys, tmp_path):
    _, public_path = key_files(tmp_path)
    code, doc, _ = run(capsys, "pharmacy", "add-key", "--pharmacy-id", "nobody", "--public-key", public_path)
    assert code == 1
    assert doc == {"error": "unknown pharmacy 'nobody' on the configured environment"}
    assert registry_items(cli) == []


def test_revoke_key_answers_the_time_and_revoking_again_keeps_the_first(cli, capsys, tmp_path, monkeypatch):
    added = add_pharmacy(capsys, tmp_path)
    from chalicelib import bootstrap

    first = datetime(2026, 11, 30, 9, 15, 0, tzinfo=UTC)
    monkeypatch.setattr(bootstrap, "utc_now", lambda: first)
    code, doc, _ = run(capsys, "pharmacy", "revoke-key", "--key-id", added["key_id"])
    assert code == 0
    assert doc == {"key_id": added["key_id"], "revoked_at": "2026-11-30T09:15:00Z"}

    monkeypatch.setattr(bootstrap, "utc_now", lambda: first + timedelta(hours=2))
    code, again, err = run(capsys, "pharmacy", "revoke-key", "--key-id", added["key_id"])
    assert code == 0
    assert again == doc
    assert "already revoked" in err


def test_revoking_an_unknown_key_is_an_error(cli, capsys):
    code, doc, err = run(capsys, "pharmacy", "revoke-key", "--key-id", "no-such-key")
    assert code == 1
    assert doc == {"error": "unknown key 'no-such-key' on the configured environment"}
    assert err == "relais: error: unknown key 'no-such-key' on the configured environment\n"


def test_suspend_and_resume_answer_the_status(cli, capsys, tmp_path):
    pharmacy_id = add_pharmacy(capsys, tmp_path)["pharmacy_id"]
    code, doc, _ = run(capsys, "pharmacy", "suspend", "--pharmacy-id", pharmacy_id)
    assert (code, doc) == (0, {"pharmacy_id": pharmacy_id, "status": "suspended"})
    code, doc, _ = run(capsys, "pharmacy", "resume", "--pharmacy-id", pharmacy_id)
    assert (code, doc) == (0, {"pharmacy_id": pharmacy_id, "status": "active"})
    code, doc, _ = run(capsys, "pharmacy", "suspend", "--pharmacy-id", "nobody")
    assert (code, doc) == (1, {"error": "unknown pharmacy 'nobody' on the configured environment"})


def test_pharmacy_list_shows_every_pharmacy(cli, capsys, tmp_path):
    first, second = add_pharmacy(capsys, tmp_path), add_pharmacy(capsys, tmp_path)
    code, doc, _ = run(capsys, "pharmacy", "list")
    assert code == 0
    assert {p["pharmacy_id"] for p in doc} == {first["pharmacy_id"], second["pharmacy_id"]}
    assert all(set(p) == {"pharmacy_id", "finess", "name", "status"} for p in doc)


def test_human_output_goes_to_stdout_without_json(cli, capsys, tmp_path):
    _, public_path = key_files(tmp_path)
    code = main(["pharmacy", "add", "--finess", new_finess(), "--name", "P", "--public-key", public_path])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.startswith("registered pharmacy ")
    assert captured.err == ""


# -- demo ------------------------------------------------------------------------------------------------------------


class ChaliceAdapter(requests.adapters.BaseAdapter):
    """A requests transport that hands each prepared request to ``chalice.test.Client`` (the real app, in-process)."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        headers = dict(request.headers)
        headers.setdefault("Host", parts.netloc)
        body = request.body or b""
        answer = self.client.http.request(
            request.method,
            parts.path + (f"?{parts.query}" if parts.query else ""),
            headers=headers,
            body=body.encode() if isinstance(body, str) else body,
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.body
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def chalice_session(cli) -> Iterator[requests.Session]:
    from app import app

    with Client(app) as client:
        session = requests.Session()
        session.mount("http://localhost", ChaliceAdapter(client))
        yield session


def run_demo(session: requests.Session) -> dict:
    """``demo.run`` in env mode against the Chalice app, stdout guarded as ``main`` does (the app logs to stdout)."""
    from relais_cli import demo
    from relais_cli.context import Context
    from relais_cli.output import Output, guard_stdout

    ctx = Context.for_stage(None)
    out = Output(json_mode=True)
    try:
        with guard_stdout(out):
            return demo.run(ctx, out, api_url="http://localhost", session=session, poll_seconds=0)
    finally:
        ctx.close()


def test_demo_registers_signs_submits_and_follows_without_printing_personal_data(
    cli, capsys, tmp_path, chalice_session
):
    from relais_cli.sample import SAMPLE_BIRTH_DATE, SAMPLE_EMAIL, SAMPLE_NIR, SAMPLE_PHONE

    summary = run_demo(chalice_session)
    captured = capsys.readouterr()
    assert json.loads(captured.out) == summary
    assert set(summary) == {"pharmacy_id", "key_id", "result_id", "status_code", "receipt", "national", "patient"}
    assert summary["receipt"] in captured.err  # shown, to be verified with `relais receipt verify`
    code, verified, _ = run(capsys, "receipt", "verify", summary["receipt"])
    assert code == 0 and verified["payload"]["result_id"] == summary["result_id"]
    assert summary["status_code"] == 201
    assert summary["national"]["status"] == "pending"
    assert summary["patient"]["channels"] == ["sms", "email"]
    assert "Signature-Input" in captured.err
    assert "Content-Digest" in captured.err
    for value in ("Exemple", "Camille", SAMPLE_BIRTH_DATE, SAMPLE_NIR, SAMPLE_PHONE, SAMPLE_EMAIL, "negative", "sig1="):
        assert value not in captured.out + captured.err

    demo_dir = tmp_path / "state" / "demo"
    assert stat.S_IMODE((demo_dir / "pharmacy-private-key.pem").stat().st_mode) == 0o600
    assert json.loads((demo_dir / "demo.json").read_text())["pharmacy_id"] == summary["pharmacy_id"]
    assert "PRIVATE" not in json.dumps(registry_items(cli))

    # A second run reuses the pharmacy and its key, with a fresh pharmacy reference.
    again = run_demo(chalice_session)
    capsys.readouterr()
    assert (again["pharmacy_id"], again["key_id"], again["status_code"]) == (
        summary["pharmacy_id"],
        summary["key_id"],
        201,
    )
    assert again["result_id"] != summary["result_id"]


def test_demo_rotates_its_key_after_a_revocation(cli, capsys, tmp_path, chalice_session):
    def once() -> dict:
        summary = run_demo(chalice_session)
        capsys.readouterr()
        return summary

    first = once()
    private_before = (tmp_path / "state" / "demo" / "pharmacy-private-key.pem").read_bytes()
    assert run(capsys, "pharmacy", "revoke-key", "--key-id", first["key_id"])[0] == 0
    assert run(capsys, "pharmacy", "suspend", "--pharmacy-id", first["pharmacy_id"])[0] == 0
    second = once()
    assert second["pharmacy_id"] == first["pharmacy_id"]
    assert second["key_id"] != first["key_id"]
    assert second["status_code"] == 201
    assert (tmp_path / "state" / "demo" / "pharmacy-private-key.pem").read_bytes() != private_before


# -- local outbox / local national ----------------------------------------------------------------------------------


@pytest.fixture
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def write_state(state_dir, **values) -> None:
    state = {
        "stage": "local",
        "region": REGION,
        "aws_endpoint": "http://127.0.0.1:9",
        "api_url": "http://127.0.0.1:9",
        "national_url": "http://127.0.0.1:9",
        "env": {},
        "pid": os.getpid(),
        "children": [],
        **values,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "local.json").write_text(json.dumps(state))


def test_local_outbox_lists_the_sms_and_emails_moto_recorded(moto_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RELAIS_CLI_USE_ENV", raising=False)
    write_state(tmp_path, aws_endpoint=moto_server)
    marker = secrets.token_hex(6)
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_server)
    sns.publish(PhoneNumber="+33612345678", Message=f"Votre résultat est prêt {marker}")
    ses = boto3.client("ses", region_name=REGION, endpoint_url=moto_server)
    ses.verify_email_identity(EmailAddress="resultats@relais.example")
    ses.send_email(
        Source="resultats@relais.example",
        Destination={"ToAddresses": ["demo@example.org"]},
        Message={"Subject": {"Data": f"Résultat {marker}"}, "Body": {"Text": {"Data": f"Bonjour {marker}"}}},
    )
    raw = EmailMessage()
    raw["From"] = "resultats@relais.example"
    raw["To"] = "camille@example.org"
    raw["Subject"] = f"Brut {marker}"
    raw["Date"] = format_datetime(datetime(2026, 11, 30, 9, 15, tzinfo=UTC))
    raw.set_content(f"Votre résultat est prêt {marker} é")
    raw.add_alternative(f"<p>{marker}</p>", subtype="html")
    ses.send_raw_email(RawMessage={"Data": raw.as_bytes()})

    code, messages, _ = run(capsys, "local", "outbox")
    assert code == 0
    mine = [m for m in messages if marker in m["body"]]
    assert len(mine) == 3
    by_channel = {(m["channel"], m["to"]): m for m in mine}
    sms = by_channel[("sms", "+33612345678")]
    assert set(sms) == {"channel", "to", "body", "sent_at"}
    assert sms["body"] == f"Votre résultat est prêt {marker}"
    mail = by_channel[("email", "demo@example.org")]
    assert (mail["subject"], mail["body"]) == (f"Résultat {marker}", f"Bonjour {marker}")
    raw_mail = by_channel[("email", "camille@example.org")]
    assert (raw_mail["subject"], raw_mail["body"]) == (f"Brut {marker}", f"Votre résultat est prêt {marker} é")
    assert raw_mail["sent_at"] == "2026-11-30T09:15:00Z"
    for message in mine:
        assert datetime.strptime(message["sent_at"], "%Y-%m-%dT%H:%M:%SZ")

    code, again, _ = run(capsys, "local", "outbox")
    assert code == 0
    assert [m for m in again if marker in m["body"]] == mine  # first-seen times are stable


def test_local_outbox_when_moto_does_not_answer(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RELAIS_CLI_USE_ENV", raising=False)
    write_state(tmp_path, aws_endpoint="http://127.0.0.1:9")
    code, doc, _ = run(capsys, "local", "outbox")
    assert code == 1
    assert doc["error"].startswith("the moto server does not answer at http://127.0.0.1:9")


def test_local_national_lists_and_switches_the_stand_in(tmp_path, monkeypatch, capsys):
    from infra.local.national import serve

    server, thread = serve(0, "token")
    try:
        monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path))
        monkeypatch.delenv("RELAIS_CLI_USE_ENV", raising=False)
        write_state(tmp_path, national_url=f"http://127.0.0.1:{server.server_address[1]}")
        assert run(capsys, "local", "national")[:2] == (0, [])
        assert run(capsys, "local", "national", "--down")[:2] == (0, {"up": False})
        assert server.state.status()["up"] is False
        assert run(capsys, "local", "national", "--up")[:2] == (0, {"up": True})
        assert server.state.status()["up"] is True
    finally:
        server.shutdown()
        thread.join(timeout=5)


# -- --stage --------------------------------------------------------------------------------------------------------


def test_stage_finds_a_deployed_stage_through_its_cloudformation_stack(aws, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RELAIS_CLI_USE_ENV", raising=False)
    for name in [n for n in os.environ if n.startswith("RELAIS_")]:
        monkeypatch.delenv(name)
    _, public_path = key_files(tmp_path)
    finess = new_finess()
    code, doc, _ = run(
        capsys, "--stage", "test", "pharmacy", "add", "--finess", finess, "--name", "P", "--public-key", public_path
    )
    assert code == 0, doc
    code, listing, _ = run(capsys, "pharmacy", "list", "--stage", "test")
    assert code == 0
    assert [p["finess"] for p in listing] == [finess]
    assert not [n for n in os.environ if n.startswith("RELAIS_")]


def test_an_unknown_stage_is_a_clear_error(aws, capsys, monkeypatch):
    monkeypatch.delenv("RELAIS_CLI_USE_ENV", raising=False)
    code, doc, _ = run(capsys, "--stage", "nowhere", "pharmacy", "list")
    assert code == 1
    assert doc == {"error": "no stage 'nowhere': CloudFormation stack relais-nowhere not found in eu-west-3"}


# -- paper slips -----------------------------------------------------------------------------------------------------


def run_local_slip(session: requests.Session, *argv: str) -> tuple[int, dict]:
    """``relais local slip`` in env mode against the Chalice app (its API is given: env mode has no local stack)."""
    import argparse

    from relais_cli import local
    from relais_cli.context import Context
    from relais_cli.errors import CliError
    from relais_cli.main import build_parser
    from relais_cli.output import Output, guard_stdout

    args = build_parser().parse_args(["local", "slip", *argv])
    assert isinstance(args, argparse.Namespace)
    ctx = Context.for_stage(None)
    out = Output(json_mode=True)
    try:
        with guard_stdout(out):
            local.slip(args, ctx, out, api_url="http://localhost", session=session)
    except CliError as exc:
        return 1, {"error": str(exc)}
    finally:
        ctx.close()
    return 0, {}


def test_the_demo_writes_a_paper_slip_and_local_slip_writes_another(cli, capsys, tmp_path, chalice_session):
    from tests.pdf_reading import read_slip

    summary = run_demo(chalice_session)
    err = capsys.readouterr().err
    demo_dir = tmp_path / "state" / "demo"
    (written,) = demo_dir.glob("slip-*.pdf")
    assert str(written) in err
    paper_id = written.stem.removeprefix("slip-")
    assert paper_id != summary["result_id"]
    first = read_slip(written.read_bytes())
    assert first.pages == 1 and len(first.qr_codes) == 1
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # it holds a live link

    target = tmp_path / "again.pdf"
    target.write_bytes(b"an older file, readable by all")
    target.chmod(0o644)
    code, _ = run_local_slip(chalice_session, paper_id, "--out", str(target))
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc == {"result_id": paper_id, "file": str(target), "bytes": target.stat().st_size}
    again = read_slip(target.read_bytes())
    assert again.qr_codes != first.qr_codes  # a new link each time
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # an existing file is made private before the slip is written


def test_local_slip_of_a_result_the_demo_pharmacy_does_not_own_is_a_clear_error(cli, capsys, tmp_path, chalice_session):
    code, doc = run_local_slip(chalice_session, "A" * 22)
    assert code == 1 and "run `relais demo` first" in doc["error"]

    run_demo(chalice_session)
    capsys.readouterr()
    code, doc = run_local_slip(chalice_session, "A" * 22)
    assert code == 1 and "demo pharmacy" in doc["error"] and "404" not in doc["error"]
    code, doc = run_local_slip(chalice_session, "../etc")
    assert code == 1 and "not a result id" in doc["error"]
