"""What the documentation says about the code, checked against the code where a test can."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from chalicelib.adapters import audit_chain
from chalicelib.domain.delivery import backoff_seconds
from tests.unit.test_fhir_mapping import bundle_for, make_submission

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_the_bundle_type_in_cli_md_is_the_one_the_code_builds():
    documented = re.findall(r'"resourceType": "Bundle", "type": "([a-z-]+)"', CLI)
    assert documented, "docs/cli.md shows a Bundle"
    assert set(documented) == {bundle_for(make_submission())["type"]}


class _Edges(random.Random):
    """A random source that always draws one end of the range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_national_retries_use_the_equal_jitter_the_readme_names(attempt):
    ceiling = 4 * 2 ** (attempt - 1)
    assert backoff_seconds(attempt, base=4, cap=10_000, rng=_Edges(high=False)) == ceiling // 2
    assert backoff_seconds(attempt, base=4, cap=10_000, rng=_Edges(high=True)) == ceiling
    assert "retry with exponential backoff and equal jitter" in _one_line(README)


def test_transactions_retry_with_the_full_jitter_the_readme_names():
    from chalicelib.adapters import transaction

    source = Path(transaction.__file__).read_text(encoding="utf-8")
    assert "self._jitter() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)" in source
    assert "exponential pause with full jitter (uniform between 0 and the ceiling" in _one_line(README)


def test_the_readme_names_the_one_constant_partition_key():
    assert (audit_chain.CHAIN, audit_chain.HEAD) == ("chain", "head")
    assert "no constant partition key anywhere" not in _one_line(README)
    assert "the one constant partition key is the audit chain's" in _one_line(README)


def test_the_patient_routes_are_documented_where_openapi_says():
    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    elsewhere = document["x-relais-routes-documented-elsewhere"]
    assert "docs/patient.md" in elsewhere["description"]
    patient = (ROOT / "docs" / "patient.md").read_text(encoding="utf-8")
    for route in elsewhere["routes"]:
        assert f"`{route['method'].upper()} {route['path']}`" in patient, route


def test_the_outbox_example_has_the_shape_of_the_outbox():
    example = CLI.split("$ relais --json local outbox\n", 1)[1].split("```", 1)[0]
    entries = json.loads(example)
    assert {e["channel"] for e in entries} == {"sms", "email"}
    for entry in entries:
        assert set(entry) == {"channel", "to", "body", "sent_at"} | (
            {"subject"} if entry["channel"] == "email" else set()
        )


PATIENT = (ROOT / "docs" / "patient.md").read_text(encoding="utf-8")
DOC_TOKEN = "tK4s9Qw0ZpL2mN8vB6xR1cY3hJ7fD5gA0eU9iO2pW4q"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_sms_shown_in_patient_md_is_the_one_the_code_writes(lang):
    from datetime import UTC, datetime

    from chalicelib.domain.messages import link_url, sms_text

    url = link_url("https://resultats.relais.example", DOC_TOKEN)
    expires = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    text = sms_text(pharmacy_name="Pharmacie de la Gare", url=url, expires_at=expires, ttl_hours=72, lang=lang)
    assert f"> {text}\n" in PATIENT


def test_the_outbox_example_holds_the_messages_the_code_writes():
    from datetime import datetime, timedelta

    from chalicelib.domain.messages import email_content, link_url, sms_text

    example = CLI.split("$ relais --json local outbox\n", 1)[1].split("```", 1)[0]
    sms, email = json.loads(example)
    sent = datetime.fromisoformat(sms["sent_at"])
    url = link_url("http://127.0.0.1:8000", DOC_TOKEN)
    name = "Pharmacie de démonstration"
    expected = sms_text(pharmacy_name=name, url=url, expires_at=sent + timedelta(hours=72), ttl_hours=72)
    assert sms["body"] == expected
    mail = email_content(pharmacy_name=name, url=url, expires_at=sent + timedelta(hours=72), ttl_hours=72)
    assert email["subject"] == mail.subject
    assert mail.text.startswith(email["body"].removesuffix("…"))


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 7.5, 15), (2, 15, 30), (3, 30, 60), (4, 60, 120)])
def test_notify_retries_back_off_as_docs_patient_md_says(attempt, low, high, monkeypatch):
    from chalicelib.domain import delivery
    from chalicelib.services.notify import NotifyFailedError, retry_delay

    for edge, expected in ((False, low), (True, high)):
        monkeypatch.setattr(delivery.random, "SystemRandom", lambda edge=edge: _Edges(high=edge))
        assert retry_delay(NotifyFailedError("x"), attempt) == round(expected)
    patient = _one_line((ROOT / "docs" / "patient.md").read_text(encoding="utf-8"))
    assert "(7.5 to 15 s, 15 to 30 s, 30 to 60 s, then 60 to 120 s;" in patient


API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def _readme_client() -> tuple[str, str]:
    """The README's pharmacy client example: its shell block (keys, onboarding) and its Python block (a POST)."""
    section = README.split("## Pharmacy software\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("```", 1)[0], section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_starts_with_the_two_commands_and_keeps_its_architecture_and_client_example():
    assert README.split("```sh\n", 1)[1].startswith("make run ")
    assert README.split("```sh\n", 1)[1].split("\n", 2)[1].startswith("make test ")
    assert "\n## Architecture\n" in README
    shell, python = _readme_client()
    assert "relais --json pharmacy add --finess" in shell
    assert 'requests.post(\n    "http://127.0.0.1:8000/v1/results"' in python


def test_the_readme_client_example_is_the_start_of_the_one_docs_api_md_shows():
    shell, python = _readme_client()
    api_python = API.split("```python\n", 1)[1].split("```", 1)[0]
    assert api_python.startswith(python), "README's Python block must be the start of docs/api.md's"
    assert '"receipt": ' in python.rstrip().splitlines()[-1], "the answer shown holds the receipt"
    api_keys = API.split("## Your key\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert shell.startswith(api_keys), "README makes the key pair as docs/api.md does"
    assert "--public-key pharmacy.pub.pem" in shell and 'open("pharmacy.key.pem", "rb")' in python


def test_every_finess_the_docs_show_passes_its_check_digit():
    from relais_cli.identifiers import finess_problem

    shown = {
        doc: re.findall(r"--finess ([0-9AB]{9})\b", text)
        for doc, text in (("README.md", README), ("docs/cli.md", CLI), ("docs/api.md", API))
    }
    assert shown["README.md"], "README shows an onboarding"
    assert {doc: [f for f in found if finess_problem(f)] for doc, found in shown.items()} == {doc: [] for doc in shown}


def test_the_key_rate_the_api_docs_give_is_the_code_default():
    from dataclasses import fields

    from chalicelib.config import Settings

    default = next(f.default for f in fields(Settings) if f.name == "key_requests_per_second")
    limits = API.split("## Limits\n", 1)[1]
    assert f"| signed requests per key per second | {default} (`RELAIS_KEY_REQUESTS_PER_SECOND`" in limits
    assert f"your key's rate ({default} signed requests a second by default, `Retry-After: 1`)" in API
    openapi = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    rate_limited = _one_line(openapi["components"]["responses"]["RateLimited"]["description"])
    assert f"the key's own rate on any signed request ({default} requests/s per key by default" in rate_limited
