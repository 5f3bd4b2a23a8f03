"""The ``relais`` command line without any stack: parsing, identifiers, key files, errors, moto dump reading."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.domain.validation import parse_submission
from relais_cli.errors import CliError
from relais_cli.identifiers import finess_check_digit, finess_problem, normalise_finess, with_finess_key
from relais_cli.keys import PRIVATE_KEY_REFUSED, public_key_pem_from_bytes, read_public_key_file
from relais_cli.main import build_parser, main
from relais_cli.outbox import SeenLedger, messages_from_data, stamp
from relais_cli.sample import SAMPLE_NIR, SAMPLE_RPPS, sample_body

NOT_RUNNING = "the local stack is not running: start it with `make run`"


@pytest.fixture
def no_stack(tmp_path, monkeypatch):
    """An empty state directory: no local stack is running."""
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RELAIS_CLI_USE_ENV", raising=False)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_document(stdout: str):
    """stdout holds exactly one JSON document (json.loads refuses trailing data)."""
    return json.loads(stdout)


# -- argument parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "pharmacy", "list"],
        ["pharmacy", "--json", "list"],
        ["pharmacy", "list", "--json"],
    ],
)
def test_json_is_accepted_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.json is True
    assert args.stage is None


def test_json_defaults_to_human_output():
    args = build_parser().parse_args(["pharmacy", "list"])
    assert args.json is False


@pytest.mark.parametrize(
    "argv",
    [["--stage", "dev", "pharmacy", "list"], ["pharmacy", "list", "--stage", "dev"]],
)
def test_stage_is_accepted_before_and_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).stage == "dev"


def test_pharmacy_add_parses_every_option():
    argv = ["pharmacy", "add", "--finess", "75 000 001 0", "--name", "  Pharmacie du Port ", "--public-key", "k.pem"]
    args = build_parser().parse_args([*argv, "--daily-quota", "500", "--json"])
    assert (args.finess, args.name, args.public_key, args.daily_quota, args.json) == (
        "750000010",
        "Pharmacie du Port",
        "k.pem",
        500,
        True,
    )


def test_pharmacy_add_quota_defaults_to_the_stage_default():
    args = build_parser().parse_args(["pharmacy", "add", "--finess", "750000010", "--name", "P", "--public-key", "k"])
    assert args.daily_quota is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pharmacy", "add-key", "--pharmacy-id", "P1", "--public-key", "f"], ("add_key", {"pharmacy_id": "P1"})),
        (["pharmacy", "revoke-key", "--key-id", "K1"], ("revoke_key", {"key_id": "K1"})),
        (["pharmacy", "suspend", "--pharmacy-id", "P1"], ("suspend", {"pharmacy_id": "P1"})),
        (["pharmacy", "resume", "--pharmacy-id", "P1"], ("resume", {"pharmacy_id": "P1"})),
        (["local", "outbox"], ("outbox", {})),
        (["local", "national"], ("national", {"down": False, "up": False})),
        (["local", "national", "--down"], ("national", {"down": True, "up": False})),
        (["local", "national", "--up"], ("national", {"down": False, "up": True})),
        (["demo"], ("_demo", {})),
    ],
)
def test_each_command_reaches_its_handler(argv, expected):
    args = build_parser().parse_args(argv)
    handler, values = expected
    assert args.handler.__name__ == handler
    for name, value in values.items():
        assert getattr(args, name) == value


def test_down_and_up_together_are_a_usage_error(capsys, no_stack):
    code, out, err = run(capsys, "--json", "local", "national", "--down", "--up")
    assert code == 2
    assert "not allowed with argument" in one_document(out)["error"]
    assert "relais: error: " in err


@pytest.mark.parametrize(
    "argv",
    [
        ["pharmacy"],
        ["pharmacy", "add", "--name", "P", "--public-key", "k"],
        ["nonsense"],
        ["pharmacy", "list", "--stage", "bad name!"],
    ],
)
def test_usage_errors_exit_2_with_one_json_error(capsys, no_stack, argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2
    document = one_document(out)
    assert set(document) == {"error"}
    assert "usage: relais" in err
    assert "relais: error: " + document["error"] in err


def test_usage_errors_without_json_print_nothing_on_stdout(capsys, no_stack):
    code, out, err = run(capsys, "pharmacy", "revoke-key")
    assert (code, out) == (2, "")
    assert "relais: error: the following arguments are required: --key-id" in err


# -- FINESS ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("finess", ["750000010", "750999997", "2A0000016", "2b0000016", " 75 000 001 0 "])
def test_valid_finess_numbers_pass(finess):
    assert finess_problem(finess) is None


@pytest.mark.parametrize(
    ("finess", "reason"),
    [
        ("750000011", "Luhn"),
        ("750000001", "Luhn"),
        ("75000001", "9 characters"),
        ("7500000100", "9 characters"),
        ("2C0000016", "2A or 2B"),
        ("75000A010", "2A or 2B"),
        ("", "9 characters"),
    ],
)
def test_invalid_finess_numbers_are_refused_with_the_reason(finess, reason):
    problem = finess_problem(finess)
    assert problem is not None
    assert reason in problem


def test_finess_key_is_luhn_with_corsica_counted_as_20():
    assert finess_check_digit("75000001") == "0"
    assert finess_check_digit("2A000001") == finess_check_digit("20000001") == finess_check_digit("2B000001")
    assert with_finess_key("2a000001") == "2A0000016"
    assert normalise_finess("2a 000 001 6") == "2A0000016"


def test_an_invalid_finess_on_the_command_line_is_a_usage_error(capsys, no_stack):
    code, out, _ = run(capsys, "pharmacy", "add", "--finess", "750000011", "--name", "P", "--public-key", "k", "--json")
    assert code == 2
    assert one_document(out) == {"error": "argument --finess: the FINESS check digit (Luhn key) is wrong"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [("   ", "empty"), ("x" * 201, "200"), ("Pharmacie\nInjectée", "non-printable"), ("Pharma\x07", "control")],
)
def test_pharmacy_names_are_1_to_200_printable_characters(capsys, no_stack, name, reason):
    code, out, _ = run(
        capsys, "pharmacy", "add", "--finess", "750000010", "--name", name, "--public-key", "k", "--json"
    )
    assert code == 2
    assert reason in one_document(out)["error"]


@pytest.mark.parametrize("quota", ["0", "-3", "many", "1000001"])
def test_daily_quota_is_a_positive_whole_number(capsys, no_stack, quota):
    argv = ["pharmacy", "add", "--finess", "750000010", "--name", "P", "--public-key", "k", "--daily-quota", quota]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 2
    assert "daily quota" in one_document(out)["error"]


# -- public key files -----------------------------------------------------------------------------------------------


def _ed25519_pems() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_an_ed25519_public_key_file_is_read_as_its_canonical_pem(tmp_path):
    _, public = _ed25519_pems()
    path = tmp_path / "pharmacy.pub.pem"
    path.write_bytes(b"# the key of Pharmacie du Port\n" + public)
    assert read_public_key_file(path) == public.decode()


def test_a_pkcs8_private_key_is_refused_with_the_specific_message(tmp_path):
    private, _ = _ed25519_pems()
    path = tmp_path / "oops.pem"
    path.write_bytes(private)
    with pytest.raises(CliError) as caught:
        read_public_key_file(path)
    assert PRIVATE_KEY_REFUSED in str(caught.value)
    assert "never leaves the pharmacy" in str(caught.value)


@pytest.mark.parametrize(
    "block",
    [
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGb\n-----END ENCRYPTED PRIVATE KEY-----\n",
        b"-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n",
    ],
)
def test_any_private_key_block_is_refused_even_next_to_a_public_key(block):
    _, public = _ed25519_pems()
    with pytest.raises(CliError, match="this is a private key"):
        public_key_pem_from_bytes(public + block)


def test_a_private_key_handed_to_the_cli_is_refused_before_any_stack_is_needed(capsys, no_stack, tmp_path):
    private, _ = _ed25519_pems()
    path = tmp_path / "private.pem"
    path.write_bytes(private)
    argv = ["pharmacy", "add", "--finess", "750000010", "--name", "P", "--public-key", str(path), "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert PRIVATE_KEY_REFUSED in one_document(out)["error"]
    assert "BEGIN" not in out + err


def test_other_key_types_and_formats_are_refused():
    ec_public = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(CliError, match="Ed25519"):
        public_key_pem_from_bytes(ec_public)
    with pytest.raises(CliError, match="ssh-keygen"):
        public_key_pem_from_bytes(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB pharmacist@host\n")
    with pytest.raises(CliError, match="BEGIN PUBLIC KEY"):
        public_key_pem_from_bytes(b"hello")
    with pytest.raises(CliError, match="not a PEM file"):
        public_key_pem_from_bytes(b"\xff\xfe")


def test_a_missing_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(CliError, match="cannot read the public key file"):
        read_public_key_file(tmp_path / "absent.pem")


# -- no local stack ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["pharmacy", "list"],
        ["local", "outbox"],
        ["local", "national"],
        ["demo"],
        ["pharmacy", "resume", "--pharmacy-id", "P"],
    ],
)
def test_without_a_state_file_the_local_stack_is_not_running(capsys, no_stack, argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2
    assert one_document(out) == {"error": NOT_RUNNING}
    assert err.strip() == "relais: error: " + NOT_RUNNING


def test_without_json_the_error_goes_to_stderr_only(capsys, no_stack):
    code, out, err = run(capsys, "pharmacy", "list")
    assert (code, out) == (2, "")
    assert err == f"relais: error: {NOT_RUNNING}\n"


def test_a_state_file_of_a_dead_process_means_not_running(capsys, no_stack):
    (no_stack / "local.json").write_text(
        json.dumps({"aws_endpoint": "http://127.0.0.1:5000", "api_url": "http://127.0.0.1:8000", "pid": 2**22 + 12345})
    )
    code, out, _ = run(capsys, "local", "outbox", "--json")
    assert code == 2
    assert one_document(out)["error"].startswith(NOT_RUNNING)


def test_local_commands_refuse_a_deployed_stage_without_calling_aws(capsys, no_stack):
    code, out, _ = run(capsys, "--stage", "dev", "local", "outbox", "--json")
    assert code == 2
    assert one_document(out) == {"error": "`relais local outbox` works with the local stack only (not with --stage)"}


def test_the_environment_is_left_as_it_was(capsys, no_stack):
    before = dict(os.environ)
    run(capsys, "pharmacy", "list")
    assert dict(os.environ) == before


# -- the demo's sample ---------------------------------------------------------------------------------------------


def test_the_demo_sample_is_a_valid_submission_with_correct_check_digits():
    now = datetime.now(UTC)
    body = sample_body(now)
    submission = parse_submission(body, now=now)
    assert submission is not None
    assert SAMPLE_RPPS == "10003879623"
    assert SAMPLE_NIR == "284127512345687"
    sampled_at = datetime.fromisoformat(body["test"]["sampled_at"])
    assert timedelta(minutes=9) < now - sampled_at <= timedelta(minutes=10, seconds=1)
    assert body["notify"] == ["sms", "email"]
    assert sample_body(now)["pharmacy_reference"] != body["pharmacy_reference"]


# -- reading moto's dump (local outbox) ----------------------------------------------------------------------------

MOTO_DUMP = {
    "sns": {
        "SMS": [{"message_id": "m-1", "phone_number": "+33612345678", "message": "Votre résultat est prêt"}],
        "Topic": [{"name": "unrelated"}],
    },
    "ses": {
        "Message": [
            {
                "id": "e-1",
                "source": "resultats@relais.example",
                "subject": "Votre résultat",
                "body": "Bonjour",
                "destinations": {"ToAddresses": ["Camille <demo@example.org>"], "CcAddresses": [], "BccAddresses": []},
            }
        ],
        "RawMessage": [
            {
                "id": "e-2",
                "source": "resultats@relais.example",
                "destinations": ["demo@example.org"],
                "raw_data": "From: resultats@relais.example\nTo: demo@example.org\n"
                "Subject: =?utf-8?q?R=C3=A9sultat?=\nDate: Mon, 30 Nov 2026 09:15:00 +0100\nMIME-Version: 1.0\n"
                'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 8bit\n\nprêt\n',
            }
        ],
    },
    "dynamodb": {"Table": [{"name": "relais-local-results"}]},
}


def test_outbox_entries_come_from_sns_sms_and_ses_messages(tmp_path):
    now = datetime(2026, 11, 30, 9, 0, 5, tzinfo=UTC)
    entries = stamp(messages_from_data(MOTO_DUMP), SeenLedger(tmp_path / "seen.json"), now)
    raw, sms, mail = entries
    assert raw == {
        "channel": "email",
        "to": "demo@example.org",
        "subject": "Résultat",
        "body": "prêt",
        "sent_at": "2026-11-30T08:15:00Z",  # the raw e-mail's Date header
    }
    assert sms == {
        "channel": "sms",
        "to": "+33612345678",
        "body": "Votre résultat est prêt",
        "sent_at": "2026-11-30T09:00:05Z",  # first seen
    }
    assert mail == {
        "channel": "email",
        "to": "demo@example.org",
        "subject": "Votre résultat",
        "body": "Bonjour",
        "sent_at": "2026-11-30T09:00:05Z",
    }


def test_outbox_first_seen_times_stay_put_and_forget_vanished_messages(tmp_path):
    ledger = SeenLedger(tmp_path / "seen.json")
    first = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)
    stamp(messages_from_data(MOTO_DUMP), ledger, first)
    later = stamp(messages_from_data(MOTO_DUMP), ledger, first + timedelta(minutes=5))
    assert {e["sent_at"] for e in later if e["channel"] == "sms"} == {"2026-11-30T09:00:00Z"}
    stamp(messages_from_data({}), ledger, first)
    assert ledger.load() == {}
    assert "Votre" not in (tmp_path / "seen.json").read_text()


def test_an_exited_but_unreaped_stack_process_counts_as_gone():
    import subprocess
    import sys
    import time

    from relais_cli.context import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert pid_alive(os.getpid())


def _leaf_commands() -> dict[str, object]:
    """Every runnable command of the parser (``"pharmacy add"``…) and its handler."""
    import argparse

    found: dict[str, object] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        handler = parser.get_default("handler")
        if handler is not None:
            found[" ".join(path)] = handler
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, (*path, name))

    walk(build_parser(), ())
    return found


def test_help_lists_every_command_with_an_example_that_parses(capsys):
    import shlex

    from relais_cli.main import EXAMPLES

    leaves = _leaf_commands()
    assert set(EXAMPLES) == set(leaves), "every command has exactly one example in relais --help"
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for name, example in EXAMPLES.items():
        assert example in help_text
        words = shlex.split(example)
        assert words[0] == "relais"
        assert build_parser().parse_args(words[1:]).handler is leaves[name], example


@pytest.mark.parametrize(
    "argv",
    [
        ["result", "erase", "--id", "x" * 24, "--yes", "--dry-run"],
        ["dlq", "redrive", "--yes", "--dry-run"],
    ],
)
def test_erase_and_redrive_take_yes_and_dry_run(argv):
    args = build_parser().parse_args(argv)
    assert (args.yes, args.dry_run) == (True, True)
    assert build_parser().parse_args(argv[:-2]).yes is False
