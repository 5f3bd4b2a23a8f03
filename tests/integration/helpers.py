"""Integration helpers: registered pharmacies, really signed requests, raw looks into the tables.

Every request goes through ``chalice.test.Client`` (the real routes, middleware and adapters on moto
in-process) and is signed by :func:`tests.signing.sign` exactly as a pharmacy client signs it, against
``http://localhost/...`` (the ``Host`` header is the one ``sign()`` sets).

Fixtures defined here are imported by ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from tests.factories import valid_body
from tests.signing import new_keypair, sign, to_signed_request

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "http://localhost"
RESULTS_PATH = "/v1/results"
REGION = "eu-west-3"

#: Personal values of :func:`distinctive_body`: none of them may ever show up in a log, key or error body.
FAMILY_NAME = "Quenouillard"
GIVEN_NAME = "Ysoline"
BIRTH_DATE = "1984-12-03"
NIR = "284127512345687"  # tests.factories.VALID_NIR, consistent with BIRTH_DATE
PHONE = "+33798765432"
EMAIL = "ysoline.quenouillard@example.org"
ADDRESS_LINE = "17 impasse des Vergeronnettes"
CITY = "Saint-Zacharie-les-Oliviers"
POSTAL_CODE = "83640"
PERSONAL_VALUES: tuple[str, ...] = (
    FAMILY_NAME,
    GIVEN_NAME,
    BIRTH_DATE,
    NIR,
    PHONE,
    EMAIL,
    ADDRESS_LINE,
    CITY,
    POSTAL_CODE,
)


def leaks(value: str, text: str) -> bool:
    """Whether ``value`` shows in ``text``; a value of digits only (postal code, NIR) must stand alone, so that the
    digits of a timestamp or a checksum in a log line (``...43.83640289...``) are not taken for it."""
    if value.isdigit():
        return re.search(rf"(?<!\d){value}(?!\d)", text) is not None
    return value in text


#: How the test result would look in a serialised submission (the bare word may occur by chance elsewhere).
RESULT_FRAGMENTS: tuple[bytes, ...] = (b'"result":"negative"', b'"result": "negative"')


def now() -> datetime:
    return datetime.now(UTC)


def distinctive_body(reference: str | None = None) -> dict[str, Any]:
    """A valid body for *now* whose personal values are improbable strings (so a leak cannot hide)."""
    body = valid_body(now())
    body["pharmacy_reference"] = reference or f"REF-{secrets.token_hex(6)}"
    patient = body["patient"]
    patient.update(
        family_name=FAMILY_NAME,
        given_name=GIVEN_NAME,
        birth_date=BIRTH_DATE,
        nir=NIR,
        phone=PHONE,
        email=EMAIL,
        address={"line": ADDRESS_LINE, "postal_code": POSTAL_CODE, "city": CITY, "country": "FR"},
    )
    return body


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


# --- pharmacies -------------------------------------------------------------------------------------------------


@dataclass
class PharmacyActor:
    """A registered pharmacy and the private key it signs with."""

    pharmacy_id: str
    key_id: str
    private_key: Any
    public_pem: str
    finess: str
    extra_keys: list[tuple[str, Any]] = field(default_factory=list)


def register_pharmacy(*, daily_quota: int | None = None, status: str = "active") -> PharmacyActor:
    """Register a pharmacy with one fresh Ed25519 key through the real registry adapter."""
    from chalicelib import bootstrap
    from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id

    private_key, pem = new_keypair()
    pharmacy_id = f"ph_{new_id(16)}"
    key_id = f"key_{new_id(16)}"
    finess = f"{secrets.randbelow(10**9):09d}"
    bootstrap.registry().add_pharmacy(
        Pharmacy(pharmacy_id, finess, "Pharmacie des Tests", status, daily_quota=daily_quota),
        PharmacyKey(key_id, pharmacy_id, pem, now()),
    )
    return PharmacyActor(pharmacy_id, key_id, private_key, pem, finess)


# --- requests ---------------------------------------------------------------------------------------------------


def signed_headers(
    actor: PharmacyActor, method: str, path: str, body: bytes | None = None, **sign_kwargs: Any
) -> dict[str, str]:
    """Headers a pharmacy client would send for this request (fresh nonce unless one is given)."""
    return sign(
        method, f"{BASE_URL}{path}", key_id=actor.key_id, private_key=actor.private_key, body=body, **sign_kwargs
    )


def post_result(client: Client, actor: PharmacyActor, body: dict[str, Any] | bytes, **sign_kwargs: Any) -> Any:
    """``POST /v1/results`` signed by ``actor``; ``sign_kwargs`` go to :func:`tests.signing.sign`."""
    raw = encode(body)
    headers = signed_headers(actor, "POST", RESULTS_PATH, raw, **sign_kwargs)
    return client.http.post(RESULTS_PATH, body=raw, headers=headers)


def get_result(client: Client, actor: PharmacyActor, result_id: str, **sign_kwargs: Any) -> Any:
    """``GET /v1/results/{id}`` signed by ``actor``."""
    path = f"{RESULTS_PATH}/{result_id}"
    return client.http.get(path, headers=signed_headers(actor, "GET", path, **sign_kwargs))


def get_statement(client: Client, actor: PharmacyActor, month: str | None, **sign_kwargs: Any) -> Any:
    """``GET /v1/statement?month=...`` signed by ``actor`` (``"@query"`` covered too)."""
    path = "/v1/statement" + (f"?month={month}" if month is not None else "")
    return client.http.get(path, headers=signed_headers(actor, "GET", path, **sign_kwargs))


def submit_direct(actor: PharmacyActor, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    """Call the ingest service as the route does, without the (non thread-safe) Chalice test client; its calls
    are checked against the API's IAM policy (``infra/local/local_iam.py``) as the route's would be."""
    from chalicelib import bootstrap
    from infra.local import local_iam

    raw = encode(body)
    url = f"{BASE_URL}{RESULTS_PATH}"
    headers = sign("POST", url, key_id=actor.key_id, private_key=actor.private_key, body=raw)
    request = to_signed_request("POST", url, headers, raw)
    with local_iam.running_as("app.app"):
        accepted = bootstrap.results_service().submit(request)
    return (201 if accepted.created else 200), accepted.view()


def problem(response: Any) -> dict[str, Any]:
    """The problem+json body of an error response (and check that it is one)."""
    assert response.headers.get("Content-Type") == "application/problem+json", response.headers
    document: dict[str, Any] = json.loads(response.body)
    assert document["status"] == response.status_code
    assert {"type", "title", "status"} <= document.keys()
    return document


# --- raw DynamoDB -----------------------------------------------------------------------------------------------

TABLE_SETTINGS = ("RELAIS_RESULTS_TABLE", "RELAIS_STATE_TABLE", "RELAIS_AUDIT_TABLE", "RELAIS_REGISTRY_TABLE")


def dynamodb() -> Any:
    """A low-level DynamoDB client of the test's moto (cached by bootstrap until the ``aws`` fixture resets it)."""
    from chalicelib import bootstrap

    return bootstrap.client("dynamodb")


def table_name(setting: str) -> str:
    return os.environ[setting]


def scan(setting: str) -> list[dict[str, Any]]:
    """Every raw item of a table (``RELAIS_*_TABLE`` setting name), as the low-level client returns it."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table_name(setting), "ConsistentRead": True}
    while True:
        page = dynamodb().scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def count_results() -> int:
    return len(scan("RELAIS_RESULTS_TABLE"))


def state_items(kind: str) -> list[dict[str, Any]]:
    """State items of one kind: ``ref``, ``quota``, ``nonce``…"""
    return [item for item in scan("RELAIS_STATE_TABLE") if item["pk"]["S"].startswith(f"{kind}#")]


def audit_events(action: str | None = None, outcome: str | None = None) -> list[dict[str, Any]]:
    """Audit events as plain dicts (strings only), filtered by action and outcome."""
    events = [{k: next(iter(v.values())) for k, v in item.items()} for item in scan("RELAIS_AUDIT_TABLE")]
    return [
        e
        for e in events
        if (action is None or e.get("action") == action) and (outcome is None or e.get("outcome") == outcome)
    ]


def attribute_strings(value: Any) -> Iterator[str]:
    """Every string inside a raw DynamoDB attribute value; binaries decoded as latin-1 (byte for byte)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from attribute_strings(inner)
    elif isinstance(value, list | tuple | set):
        for inner in value:
            yield from attribute_strings(inner)
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).decode("latin-1")
    elif value is not None:
        yield str(value)


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def client(aws: dict[str, str]) -> Iterator[Client]:
    """The Chalice test client on the real app (stage ``test``, as provisioned by the ``aws`` fixture)."""
    from app import app

    with Client(app, stage_name="test", project_dir=str(ROOT)) as test_client:
        yield test_client


@pytest.fixture
def pharmacy(aws: dict[str, str]) -> PharmacyActor:
    """An active pharmacy with one registered key (default quota)."""
    return register_pharmacy()


@pytest.fixture
def other_pharmacy(aws: dict[str, str]) -> PharmacyActor:
    """A second, unrelated active pharmacy."""
    return register_pharmacy()


def without_action(monkeypatch: pytest.MonkeyPatch, handler: str, table: str, action: str) -> None:
    """``handler``'s function loses ``action`` on ``table`` in ``infra/iam.py`` for the test: what its policy would
    be had the action been forgotten (the local IAM check then refuses the call)."""
    from dataclasses import replace

    from infra import iam

    spec = iam.FUNCTIONS[handler]
    actions = tuple(a for a in spec.access.tables[table] if a != action)
    access = replace(spec.access, tables={**spec.access.tables, table: actions})
    monkeypatch.setitem(iam.FUNCTIONS, handler, replace(spec, access=access))
