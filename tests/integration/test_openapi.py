"""``docs/openapi.yaml`` stays true: same routes as the app, its example is accepted, real answers fit its schemas."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from chalicelib import bootstrap
from tests.factories import set_field
from tests.integration.helpers import (
    RESULTS_PATH,
    ROOT,
    count_results,
    distinctive_body,
    encode,
    get_result,
    get_statement,
    post_result,
    signed_headers,
)

DOC_PATH = ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
    return document


#: The server's clock for the document's examples: the "now" the document names (sampled 15 minutes before).
EXAMPLE_NOW = datetime.fromisoformat(_document()["x-relais-examples-now"])


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = _document()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _errors(instance: Any, pointer: str) -> list[str]:
    """Schema errors of ``instance`` against the schema at ``pointer`` (a JSON pointer into the document)."""
    registry = Registry().with_resource(
        "urn:relais:openapi", Resource.from_contents(_document(), default_specification=DRAFT202012)
    )
    validator = jsonschema.Draft202012Validator({"$ref": f"urn:relais:openapi{pointer}"}, registry=registry)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def _operation(path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = _document()["paths"][path][method]
    return operation


def _assert_documented(response: Any, path: str, method: str) -> None:
    """The response's status, media type, required headers and body are those documented for the operation."""
    status = str(response.status_code)
    responses = _operation(path, method)["responses"]
    assert status in responses, f"{method.upper()} {path} answered an undocumented {status}"
    documented = _deref(responses[status])
    content_type = response.headers["Content-Type"].split(";")[0]
    assert content_type in documented["content"], (status, content_type)
    for name, reference in documented.get("headers", {}).items():
        header = _deref(reference)
        if header.get("required"):
            assert name in response.headers, (status, name)
            pattern = header["schema"].get("pattern")
            assert pattern is None or re.search(pattern, response.headers[name]), (name, response.headers[name])
    for name, reference in documented.get("headers", {}).items():
        constant = _deref(reference)["schema"].get("const")
        assert constant is None or response.headers.get(name) == constant, (status, name, response.headers.get(name))
    schema = documented["content"][content_type]["schema"]
    if schema == {"type": "string", "format": "binary"}:  # a file (the slip's PDF): bytes, not JSON
        assert isinstance(response.body, bytes) and response.body, status
        return
    pointer = _pointer("paths", path, method, "responses", status)
    if "$ref" in responses[status]:
        pointer = responses[status]["$ref"]
    errors = _errors(json.loads(response.body), f"{pointer}/content/{content_type.replace('/', '~1')}/schema")
    assert not errors, (status, errors)


def _request_example() -> dict[str, Any]:
    media = _operation("/v1/results", "post")["requestBody"]["content"]["application/json"]
    example: dict[str, Any] = copy.deepcopy(next(iter(media["examples"].values()))["value"])
    return example


def _at_example_time() -> int:
    bootstrap.override(clock=lambda: EXAMPLE_NOW)
    return int(EXAMPLE_NOW.timestamp())


REQUEST_SCHEMA = _pointer("components", "schemas", "Submission")


# --- the document itself ----------------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    document = _document()

    assert document["openapi"].startswith("3.1")
    validate(document)  # openapi-spec-validator (requirements-dev.txt)


def test_the_validator_refuses_a_broken_document():
    broken = copy.deepcopy(_document())
    del broken["paths"]["/v1/results"]["post"]["responses"]["201"]["description"]  # required by OpenAPI
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_route_documents_the_gateways_own_answers_as_the_gateway_gives_them():
    from infra.template import gateway_responses

    given = {int(answer["statusCode"]): answer for answer in gateway_responses().values() if "statusCode" in answer}
    for status, name in ((403, "Forbidden"), (429, "RateLimited"), (504, "GatewayTimeout")):
        documented = _document()["components"]["responses"][name]
        for path, item in _document()["paths"].items():
            for method in set(item) & set(HTTP_METHODS):
                assert item[method]["responses"].get(str(status)) == {"$ref": f"#/components/responses/{name}"}, (
                    path,
                    method,
                    status,
                )
        body = json.loads(given[status]["responseTemplates"]["application/json"])
        assert _errors(body, f"#/components/responses/{name}/content/application~1problem+json/schema") == []
        example = documented["content"]["application/problem+json"].get("example")
        assert example is None or example == body, (status, example, body)
        retry = "gatewayresponse.header.Retry-After" in given[status]["responseParameters"]
        assert retry == documented.get("headers", {}).get("Retry-After", {}).get("$ref", "").endswith("RetryAfter")


def test_every_time_in_the_examples_is_dated_from_the_documents_now():
    times: list[datetime] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"example", "value"}:
                    collect(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    def collect(value: Any) -> None:
        if isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                collect(item)
        elif isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", value):
            times.append(datetime.fromisoformat(value))

    walk(_document()["paths"])
    assert len(times) >= 5
    for moment in times:
        assert EXAMPLE_NOW - timedelta(hours=1) <= moment <= EXAMPLE_NOW + timedelta(days=7), moment
    assert min(times) == EXAMPLE_NOW - timedelta(minutes=15), "the example test was sampled 15 minutes before now"


def test_every_app_route_is_documented_and_every_documented_operation_exists():
    from app import app
    from chalicelib.routes.methods import VIEW_PREFIX

    def normalise(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    served = {
        (normalise(path), method.lower())
        for path, methods in app.routes.items()
        for method, entry in methods.items()
        if not entry.view_name.startswith(VIEW_PREFIX)  # the 405 answers, documented as such below
    }
    documented = {
        (normalise(path), method)
        for path, item in _document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    elsewhere = {
        (normalise(route["path"]), route["method"])
        for route in _document()["x-relais-routes-documented-elsewhere"]["routes"]
    }
    assert not documented & elsewhere
    assert served - elsewhere == documented, "a route is missing from docs/openapi.yaml, or documented but not served"
    assert elsewhere <= served, "x-relais-routes-documented-elsewhere names a route the app does not serve"


def test_every_documented_error_is_problem_json():
    for path, item in _document()["paths"].items():
        for method in set(item) & set(HTTP_METHODS):
            for status, response in item[method]["responses"].items():
                if int(status) >= 400:
                    assert list(_deref(response)["content"]) == ["application/problem+json"], (path, method, status)


def test_the_security_scheme_describes_http_message_signatures():
    scheme = _document()["components"]["securitySchemes"]["httpMessageSignature"]

    assert "RFC 9421" in scheme["description"]
    policy = scheme["x-http-message-signatures"]
    assert policy["algorithm"] == "ed25519"
    from chalicelib.config import Settings
    from chalicelib.services import authn

    assert (
        policy["parameters"]["created-window-seconds"]
        == Settings.__dataclass_fields__["signature_window_seconds"].default
    )
    assert policy["parameters"]["nonce-length"] == {"min": authn.NONCE_MIN_LENGTH, "max": authn.NONCE_MAX_LENGTH}
    assert set(policy["covered-components"]["always"]) == set(authn._BASE_COMPONENTS)
    assert set(policy["covered-components"]["with-body"]) == set(authn._BODY_COMPONENTS)


# --- the request schema agrees with the server ----------------------------------------------------------------


def test_the_request_example_fits_the_request_schema_and_an_unknown_field_does_not():
    example = _request_example()

    assert _errors(example, REQUEST_SCHEMA) == []
    assert _errors({**example, "comment": "x"}, REQUEST_SCHEMA)
    assert _errors(set_field(copy.deepcopy(example), "patient.blood_group", "O+"), REQUEST_SCHEMA)


#: Each body object of the request schema, the dataclass it becomes, and the server's set of allowed fields.
BODY_OBJECTS = {
    "Submission": ("Submission", "_TOP_LEVEL_FIELDS"),
    "Patient": ("Patient", "_PATIENT_FIELDS"),
    "Address": ("Address", "_ADDRESS_FIELDS"),
    "Test": ("TestInfo", "_TEST_FIELDS"),
}


@pytest.mark.parametrize("schema_name", BODY_OBJECTS)
def test_the_request_schema_documents_exactly_the_fields_the_server_takes(schema_name):
    from dataclasses import MISSING, fields

    from chalicelib.domain import model, validation

    class_name, allowed_name = BODY_OBJECTS[schema_name]
    schema = _document()["components"]["schemas"][schema_name]
    domain_fields = fields(getattr(model, class_name))

    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {f.name for f in domain_fields} == getattr(validation, allowed_name)
    if schema_name != "Address":  # every address field is optional on the wire (country defaults to FR)
        assert set(schema.get("required", [])) == {f.name for f in domain_fields if f.default is MISSING}


def test_the_documented_enumerations_are_the_domain_types():
    from typing import get_args

    from chalicelib.domain import model

    schemas = _document()["components"]["schemas"]

    assert schemas["Patient"]["properties"]["sex"]["enum"] == list(get_args(model.Sex))
    assert schemas["Test"]["properties"]["kind"]["enum"] == list(get_args(model.TestKind))
    assert schemas["Test"]["properties"]["result"]["enum"] == list(get_args(model.TestResult))


def test_the_documented_channels_are_those_of_the_channel_table():
    from chalicelib.domain.channels import CHANNELS, NOTIFY_VALUES

    schemas = _document()["components"]["schemas"]
    notify = schemas["Submission"]["properties"]["notify"]

    assert notify["items"]["enum"] == list(NOTIFY_VALUES)
    assert notify["maxItems"] == len(NOTIFY_VALUES)
    assert schemas["PatientDelivery"]["properties"]["channels"]["items"]["enum"] == list(NOTIFY_VALUES)
    documented_requirements = {
        rule["if"]["properties"]["notify"]["contains"]["const"]: rule["then"]["properties"]["patient"]["required"]
        for rule in schemas["Submission"]["allOf"]
    }
    assert documented_requirements == {name: [spec.address_field] for name, spec in CHANNELS.items()}


SCHEMA_AND_SERVER_REFUSE: dict[str, tuple[str, Any]] = {
    "reference with a space": ("pharmacy_reference", "A 1"),
    "reference too long": ("pharmacy_reference", "A" * 65),
    "rpps of 10 digits": ("performer_rpps", "1000387962"),
    "unknown sex": ("patient.sex", "f"),
    "birth date not ISO": ("patient.birth_date", "03/12/1984"),
    "nir with a letter": ("patient.nir", "2841275X2345687"),
    "nir of 14 characters": ("patient.nir", "28412751234568"),
    "phone without +": ("patient.phone", "0612345678"),
    "two e-mail addresses": ("patient.email", "a@example.org,b@example.org"),
    "French postal code of 4 digits": ("patient.address.postal_code", "7501"),
    "country in lower case": ("patient.address.country", "fr"),
    "unknown test kind": ("test.kind", "saliva"),
    "device id with letters": ("test.device_id", "AB12"),
    "sampled_at without offset": ("test.sampled_at", "2026-11-30T09:15:00"),
    "unknown result": ("test.result", "unclear"),
    "unknown channel": ("notify", ["sms", "pigeon"]),
    "repeated channel": ("notify", ["sms", "sms"]),
    "sms without phone": ("patient.phone", None),
    "antigen without device": ("test.device_id", None),
    "control character in a name": ("patient.family_name", "Mar\u0007tin"),
    "unknown address field": ("patient.address.floor", "2"),
}

SCHEMA_AND_SERVER_ACCEPT: dict[str, tuple[str, Any]] = {
    "nir with spaces": ("patient.nir", "2 84 12 75 123 456 87"),
    "no nir": ("patient.nir", None),
    "no address": ("patient.address", None),
    "foreign postal code": ("patient.address", {"postal_code": "SW1A 1AA", "country": "GB"}),
    "empty notify": ("notify", []),
    "phone with separators": ("patient.phone", "+33 6 12.34-56 78"),
    "sampled_at in UTC": ("test.sampled_at", "2026-11-30T08:15:00Z"),
}


@pytest.mark.parametrize("case", SCHEMA_AND_SERVER_REFUSE)
def test_a_body_the_schema_refuses_is_refused_by_the_server_too(case):
    from chalicelib.domain.validation import parse_submission
    from chalicelib.errors import ValidationError

    dotted, value = SCHEMA_AND_SERVER_REFUSE[case]
    body = set_field(_request_example(), dotted, value)

    assert _errors(body, REQUEST_SCHEMA), "the schema refuses it"
    with pytest.raises(ValidationError):
        parse_submission(body, now=EXAMPLE_NOW)


@pytest.mark.parametrize("case", SCHEMA_AND_SERVER_ACCEPT)
def test_a_body_the_server_accepts_fits_the_schema(case):
    from chalicelib.domain.validation import parse_submission

    dotted, value = SCHEMA_AND_SERVER_ACCEPT[case]
    body = set_field(_request_example(), dotted, value)
    if dotted == "notify":
        body["patient"].pop("phone")

    parse_submission(body, now=EXAMPLE_NOW)
    assert _errors(body, REQUEST_SCHEMA) == []


def test_an_rt_pcr_test_fits_the_schema_without_device_and_not_with_one():
    body = set_field(_request_example(), "test.kind", "rt-pcr")

    assert _errors(body, REQUEST_SCHEMA), "device_id is refused for rt-pcr"
    del body["test"]["device_id"]
    assert _errors(body, REQUEST_SCHEMA) == []


# --- the API answers as documented ----------------------------------------------------------------------------


def test_the_request_example_is_accepted_as_it_stands_and_answers_as_documented(client, pharmacy):
    created = _at_example_time()

    response = post_result(client, pharmacy, _request_example(), created=created)

    assert response.status_code == 201, response.body
    _assert_documented(response, "/v1/results", "post")
    assert count_results() == 1


def test_the_request_example_with_an_unknown_field_gets_400_as_documented(client, pharmacy):
    created = _at_example_time()
    body = _request_example()
    body["patient"]["blood_group"] = "O+"

    response = post_result(client, pharmacy, body, created=created)

    assert response.status_code == 400
    _assert_documented(response, "/v1/results", "post")
    assert count_results() == 0


def test_actual_answers_validate_against_the_documented_responses(client, pharmacy, other_pharmacy):
    body = distinctive_body()
    post = "/v1/results"
    follow = "/v1/results/{id}"

    created = post_result(client, pharmacy, body)
    assert created.status_code == 201
    _assert_documented(created, post, "post")
    result_id = json.loads(created.body)["id"]

    retry = post_result(client, pharmacy, body)
    assert retry.status_code == 200
    _assert_documented(retry, post, "post")

    changed = copy.deepcopy(body)
    changed["test"]["result"] = "positive"
    conflict = post_result(client, pharmacy, changed)
    assert conflict.status_code == 409
    _assert_documented(conflict, post, "post")

    invalid = set_field(copy.deepcopy(body), "patient.sex", "f")
    for response, expected in (
        (post_result(client, pharmacy, invalid), 400),
        (post_result(client, pharmacy, {**body, **{f"x{i}": 0 for i in range(30)}}), 400),  # errors truncated
        (post_result(client, pharmacy, body, created=0), 401),
        (post_result(client, pharmacy, {"padding": "x" * 17000}), 413),
        (post_result(client, pharmacy, body, content_type="text/plain"), 415),
        (client.http.put(RESULTS_PATH, body=encode(body), headers=signed_headers(pharmacy, "PUT", RESULTS_PATH)), 405),
    ):
        assert response.status_code == expected, response.body
        _assert_documented(response, post, "post")

    mine = get_result(client, pharmacy, result_id)
    assert mine.status_code == 200
    _assert_documented(mine, follow, "get")
    for response, expected in (
        (get_result(client, other_pharmacy, result_id), 404),
        (client.http.get(f"{RESULTS_PATH}/{result_id}"), 401),
    ):
        assert response.status_code == expected
        _assert_documented(response, follow, "get")

    resend = "/v1/results/{id}/resend"
    resend_path = f"{RESULTS_PATH}/{result_id}/resend"
    for actor, expected in ((pharmacy, 202), (other_pharmacy, 404)):
        headers = signed_headers(actor, "POST", resend_path, b"{}")
        response = client.http.post(resend_path, body=b"{}", headers=headers)
        assert response.status_code == expected, response.body
        _assert_documented(response, resend, "post")
    unsigned = client.http.post(resend_path, body=b"{}", headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    _assert_documented(unsigned, resend, "post")

    health = client.http.get("/v1/health")
    assert health.status_code == 200
    _assert_documented(health, "/v1/health", "get")

    month = datetime.now(UTC).strftime("%Y-%m")
    for response, expected in (
        (get_statement(client, pharmacy, month), 200),
        (get_statement(client, pharmacy, "2026-13"), 400),
        (client.http.get(f"/v1/statement?month={month}"), 401),
    ):
        assert response.status_code == expected, response.body
        _assert_documented(response, "/v1/statement", "get")
    keys = client.http.get("/.well-known/jwks.json")
    assert keys.status_code == 200
    _assert_documented(keys, "/.well-known/jwks.json", "get")


def test_the_slips_answers_validate_against_the_documented_responses(client, pharmacy, other_pharmacy):
    slip = "/v1/results/{id}/slip"
    created = post_result(client, pharmacy, distinctive_body())
    path = f"{RESULTS_PATH}/{json.loads(created.body)['id']}/slip"

    def post(actor: Any, accept: str | None = "application/pdf", body: bytes = b"{}") -> Any:
        headers = signed_headers(actor, "POST", path, body)
        return client.http.post(path, body=body, headers={**headers, "Accept": accept} if accept else headers)

    for response, expected in (
        (post(pharmacy), 200),
        (post(pharmacy, None), 200),  # no Accept: anything (the third slip of the day is the one below)
        (post(pharmacy, "application/json"), 406),
        (post(pharmacy, body=b'{"x": 1}'), 400),
        (post(other_pharmacy), 404),
        (client.http.post(path, body=b"{}", headers={"Accept": "application/pdf"}), 401),
    ):
        assert response.status_code == expected, response.body
        _assert_documented(response, slip, "post")
    pdf = post(pharmacy)
    assert pdf.headers["Content-Type"] == "application/pdf" and pdf.body.startswith(b"%PDF-")
    example = _deref(_operation(slip, "post")["responses"]["406"])["content"]["application/problem+json"]["example"]
    assert json.loads(post(pharmacy, "application/json").body) == example
