"""Submission -> FHIR R4 Bundle (chalicelib/domain/fhir.py), checked field by field and with fhir.resources."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain import fhir_codes, model  # model.TestInfo: a bare TestInfo name would be collected by pytest
from chalicelib.domain.fhir import build_bundle
from chalicelib.domain.model import Address, Patient, Submission
from chalicelib.domain.records import Pharmacy
from infra.local.fhir_check import operation_outcome, validate_bundle

DATA = Path(__file__).resolve().parents[1] / "data"

PARIS = timezone(timedelta(hours=1))
RESULT_ID = "q8Zk3v0m-PZ_aB1cD2eF3g"
PHARMACY = Pharmacy(pharmacy_id="ph_1", finess="750012345", name="Pharmacie du Canal", status="active")
TIMESTAMP = datetime(2026, 11, 30, 8, 20, tzinfo=UTC)
DEVICE_NAME = "Abbott Rapid Diagnostics, Panbio COVID-19 Ag Rapid Test"


def make_submission(
    *,
    kind: str = "antigen",
    result: str = "negative",
    device_id: str | None = "1232",
    sampled_at: datetime = datetime(2026, 11, 30, 9, 15, tzinfo=PARIS),
    notify: tuple[str, ...] = ("sms", "email"),
    **patient: Any,
) -> Submission:
    fields: dict[str, Any] = {
        "family_name": "Martin",
        "given_name": "Claire",
        "birth_date": date(1984, 12, 3),
        "sex": "female",
        "nir": "284127512345678",
        "phone": "+33612345678",
        "email": "claire@example.org",
        "address": Address(line="3 rue X", postal_code="75011", city="Paris", country="FR"),
    }
    fields.update(patient)
    return Submission(
        pharmacy_reference="A-2026-000123",
        performer_rpps="10003879623",
        patient=Patient(**fields),
        test=model.TestInfo(kind=kind, sampled_at=sampled_at, result=result, device_id=device_id),  # type: ignore[arg-type]
        notify=notify,  # type: ignore[arg-type]
    )


def bundle_for(submission: Submission | None = None, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "result_id": RESULT_ID,
        "submission": submission or make_submission(),
        "pharmacy": PHARMACY,
        "device_name": DEVICE_NAME,
        "timestamp": TIMESTAMP,
    }
    args.update(kwargs)
    return build_bundle(**args)


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def one(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (found,) = resources(bundle, resource_type)
    return found


def full_url(bundle: dict[str, Any], resource_type: str) -> str:
    (url,) = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]
    return str(url)


def codings(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept["coding"]]


# --- Bundle ------------------------------------------------------------------------------------------------------


def test_bundle_is_a_collection_identified_by_the_result_id():
    bundle = bundle_for()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    assert bundle["identifier"] == {"system": "https://relais.sante.fr/fhir/NamingSystem/result-id", "value": RESULT_ID}
    assert bundle["timestamp"] == "2026-11-30T08:20:00+00:00"


def test_entries_have_uuid_full_urls_and_local_references_resolve():
    bundle = bundle_for()
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls) == 5
    for url in urls:
        assert url.startswith("urn:uuid:")
        uuid.UUID(url.removeprefix("urn:uuid:"))
    observation = one(bundle, "Observation")
    assert observation["subject"] == {"reference": full_url(bundle, "Patient")}
    assert observation["performer"] == [
        {"reference": full_url(bundle, "Practitioner")},
        {"reference": full_url(bundle, "Organization")},
    ]


def test_same_input_gives_the_same_bytes():
    first = json.dumps(bundle_for(make_submission()))
    second = json.dumps(bundle_for(make_submission()))
    assert first == second


def test_full_urls_depend_on_the_result_id():
    a = bundle_for(result_id="result-a")
    b = bundle_for(result_id="result-b")
    assert not {e["fullUrl"] for e in a["entry"]} & {e["fullUrl"] for e in b["entry"]}


def test_full_urls_do_not_depend_on_personal_data():
    a = bundle_for(make_submission(family_name="Martin"))
    b = bundle_for(make_submission(family_name="Durand"))
    assert [e["fullUrl"] for e in a["entry"]] == [e["fullUrl"] for e in b["entry"]]


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        bundle_for(timestamp=datetime(2026, 11, 30, 8, 20))
    with pytest.raises(ValueError, match="timezone-aware"):
        bundle_for(make_submission(sampled_at=datetime(2026, 11, 30, 9, 15)))


def test_empty_result_id_is_refused():
    with pytest.raises(ValueError, match="result_id"):
        bundle_for(result_id="")


# --- Patient -----------------------------------------------------------------------------------------------------


def test_nir_is_the_patient_identifier_when_given():
    patient = one(bundle_for(), "Patient")
    assert patient["identifier"] == [
        {"use": "official", "system": "urn:oid:1.2.250.1.213.1.4.8", "value": "284127512345678"}
    ]


def test_no_identifier_without_nir():
    patient = one(bundle_for(make_submission(nir=None)), "Patient")
    assert "identifier" not in patient


def test_names():
    patient = one(bundle_for(make_submission(family_name="Le Gall", given_name="Anne-Sophie")), "Patient")
    assert patient["name"] == [{"use": "official", "family": "Le Gall", "given": ["Anne-Sophie"]}]


def test_birth_date():
    assert one(bundle_for(), "Patient")["birthDate"] == "1984-12-03"


@pytest.mark.parametrize("sex", ["female", "male", "other", "unknown"])
def test_gender_maps_directly(sex):
    bundle = bundle_for(make_submission(sex=sex))
    assert one(bundle, "Patient")["gender"] == sex
    assert validate_bundle(bundle) == []


def test_address():
    patient = one(bundle_for(), "Patient")
    assert patient["address"] == [{"line": ["3 rue X"], "city": "Paris", "postalCode": "75011", "country": "FR"}]


def test_partial_address_omits_missing_parts():
    address = Address(line=None, postal_code=None, city="Genève", country="CH")
    bundle = bundle_for(make_submission(address=address))
    assert one(bundle, "Patient")["address"] == [{"city": "Genève", "country": "CH"}]
    assert validate_bundle(bundle) == []


def test_no_address():
    assert "address" not in one(bundle_for(make_submission(address=None)), "Patient")


def test_telecom_phone_and_email():
    patient = one(bundle_for(), "Patient")
    assert patient["telecom"] == [
        {"system": "phone", "value": "+33612345678", "use": "mobile"},
        {"system": "email", "value": "claire@example.org"},
    ]


def test_phone_not_known_to_be_mobile_has_no_use():
    patient = one(bundle_for(make_submission(phone="+33145678901", notify=("email",))), "Patient")
    assert patient["telecom"][0] == {"system": "phone", "value": "+33145678901"}


def test_phone_validated_for_sms_is_mobile():
    patient = one(bundle_for(make_submission(phone="+32470123456", notify=("sms",))), "Patient")
    assert patient["telecom"][0]["use"] == "mobile"


def test_no_telecom_without_phone_or_email():
    bundle = bundle_for(make_submission(phone=None, email=None, notify=()))
    assert "telecom" not in one(bundle, "Patient")
    assert validate_bundle(bundle) == []


# --- Observation -------------------------------------------------------------------------------------------------


def test_observation_basics():
    observation = one(bundle_for(), "Observation")
    assert observation["status"] == "final"
    assert codings(observation["category"][0]) == [
        ("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")
    ]


@pytest.mark.parametrize(
    ("kind", "loinc", "method"),
    [("antigen", "94558-4", "LP217198-3"), ("rt-pcr", "94500-6", "LP6464-4")],
)
def test_loinc_code_per_kind(kind, loinc, method):
    device_id = "1232" if kind == "antigen" else None
    observation = one(bundle_for(make_submission(kind=kind, device_id=device_id)), "Observation")
    assert codings(observation["code"]) == [("http://loinc.org", loinc)]
    assert observation["code"]["coding"][0]["display"].startswith("SARS-CoV-2 (COVID-19)")
    assert codings(observation["method"]) == [("http://loinc.org", method)]


@pytest.mark.parametrize(
    ("result", "snomed", "display"),
    [("positive", "260373001", "Detected"), ("negative", "260415000", "Not detected")],
)
def test_snomed_value_per_result(result, snomed, display):
    observation = one(bundle_for(make_submission(result=result)), "Observation")
    assert observation["valueCodeableConcept"] == {
        "coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": display}]
    }
    assert "dataAbsentReason" not in observation


def _eu_value_set(name: str) -> dict[str, Any]:
    """An EU DCC value set bundled with the tests (``tests/data/README.md``: source and licence)."""
    values: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))["valueSetValues"]
    return values


@pytest.mark.parametrize(
    ("value_set", "code"),
    [
        ("eu-test-result.json", fhir_codes.SNOMED_DETECTED),
        ("eu-test-result.json", fhir_codes.SNOMED_NOT_DETECTED),
        ("eu-test-type.json", fhir_codes.METHOD_RAPID_IMMUNOASSAY),
        ("eu-test-type.json", fhir_codes.METHOD_NAAT),
    ],
)
def test_codes_match_the_eu_value_sets(value_set, code):
    values = _eu_value_set(value_set)
    assert values[code.code]["system"] == code.system
    assert values[code.code]["display"] == code.display


def test_invalid_result_has_no_value_and_a_data_absent_reason():
    bundle = bundle_for(make_submission(result="invalid"))
    observation = one(bundle, "Observation")
    assert not any(key.startswith("value") for key in observation)
    assert observation["dataAbsentReason"] == {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error", "display": "Error"}
        ]
    }
    assert observation["status"] == "final"
    assert validate_bundle(bundle) == []


@pytest.mark.parametrize(
    ("sampled_at", "expected"),
    [
        (datetime(2026, 11, 30, 9, 15, tzinfo=PARIS), "2026-11-30T09:15:00+01:00"),
        (datetime(2026, 11, 30, 9, 15, tzinfo=timezone(timedelta(hours=-3, minutes=-30))), "2026-11-30T09:15:00-03:30"),
        (datetime(2026, 11, 30, 9, 15, 7, 250000, tzinfo=UTC), "2026-11-30T09:15:07.250000+00:00"),
    ],
)
def test_effective_time_keeps_the_offset(sampled_at, expected):
    bundle = bundle_for(make_submission(sampled_at=sampled_at))
    assert one(bundle, "Observation")["effectiveDateTime"] == expected
    assert validate_bundle(bundle) == []


def test_offset_fhir_cannot_write_is_converted_to_utc():
    odd = timezone(timedelta(minutes=9, seconds=21))  # Paris mean time
    bundle = bundle_for(make_submission(sampled_at=datetime(2026, 11, 30, 9, 15, tzinfo=odd)))
    assert one(bundle, "Observation")["effectiveDateTime"] == "2026-11-30T09:05:39+00:00"
    assert validate_bundle(bundle) == []


# --- Device ------------------------------------------------------------------------------------------------------


def test_antigen_test_references_the_eu_device():
    bundle = bundle_for()
    device = one(bundle, "Device")
    assert device["identifier"] == [
        {"system": "https://covid-19-diagnostics.jrc.ec.europa.eu/devices", "value": "1232"}
    ]
    assert device["deviceName"] == [{"name": DEVICE_NAME, "type": "user-friendly-name"}]
    assert one(bundle, "Observation")["device"] == {"reference": full_url(bundle, "Device")}


def test_device_without_known_name():
    bundle = bundle_for(device_name=None)
    assert "deviceName" not in one(bundle, "Device")
    assert validate_bundle(bundle) == []


def test_rt_pcr_has_no_device():
    bundle = bundle_for(make_submission(kind="rt-pcr", device_id=None), device_name=None)
    assert resources(bundle, "Device") == []
    assert "device" not in one(bundle, "Observation")
    assert len(bundle["entry"]) == 4


def test_rt_pcr_ignores_a_stray_device_id():
    bundle = bundle_for(make_submission(kind="rt-pcr", device_id="1232"))
    assert resources(bundle, "Device") == []
    assert "device" not in one(bundle, "Observation")


# --- Organization, Practitioner ----------------------------------------------------------------------------------


def test_pharmacy_is_the_organization_with_its_finess():
    organization = one(bundle_for(), "Organization")
    assert organization["identifier"] == [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "750012345"}]
    assert organization["name"] == "Pharmacie du Canal"


def test_pharmacist_is_the_practitioner_with_its_rpps():
    practitioner = one(bundle_for(), "Practitioner")
    assert practitioner["identifier"] == [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "10003879623"}]


# --- validity with fhir.resources --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["antigen", "rt-pcr"])
@pytest.mark.parametrize("result", ["positive", "negative", "invalid"])
@pytest.mark.parametrize("minimal", [False, True])
def test_every_bundle_is_valid_fhir(kind, result, minimal):
    submission = make_submission(kind=kind, result=result, device_id="1232" if kind == "antigen" else None)
    if minimal:
        submission = replace(
            submission,
            notify=(),
            patient=replace(submission.patient, nir=None, phone=None, email=None, address=None),
        )
    bundle = bundle_for(submission, device_name=None if minimal else DEVICE_NAME)
    assert validate_bundle(bundle) == []
    assert validate_bundle(json.loads(json.dumps(bundle))) == []


def test_every_resource_parses_with_its_own_class():
    from fhir.resources.R4B import get_fhir_model_class

    for entry in bundle_for()["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def broken(change) -> list[str]:
    bundle = copy.deepcopy(bundle_for())
    change(bundle)
    return validate_bundle(bundle)


def test_rejects_observation_without_status():
    problems = broken(lambda b: one(b, "Observation").pop("status"))
    assert any("Observation" in p and "status" in p for p in problems), problems


def test_rejects_wrong_gender_code():
    problems = broken(lambda b: one(b, "Patient").update(gender="F"))
    assert any("gender" in p and "administrative-gender" in p for p in problems), problems


def test_rejects_wrong_observation_status_code():
    problems = broken(lambda b: one(b, "Observation").update(status="done"))
    assert any("observation-status" in p for p in problems), problems


def test_rejects_date_time_without_offset():
    problems = broken(lambda b: one(b, "Observation").update(effectiveDateTime="2026-11-30T09:15:00"))
    assert any("effectiveDateTime" in p for p in problems), problems


def test_rejects_unknown_element():
    problems = broken(lambda b: one(b, "Patient").update(sex="female"))
    assert any("Patient" in p and "sex" in p for p in problems), problems


def test_rejects_unknown_resource_type():
    problems = broken(
        lambda b: b["entry"].append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Foo"}})
    )
    assert any("resourceType" in p for p in problems), problems


def test_rejects_unresolved_reference():
    problems = broken(lambda b: one(b, "Observation").update(subject={"reference": f"urn:uuid:{uuid.uuid4()}"}))
    assert any("subject" in p and "resolve" in p for p in problems), problems


def test_rejects_reference_to_wrong_type():
    problems = broken(lambda b: one(b, "Observation").update(subject={"reference": full_url(b, "Organization")}))
    assert any("subject" in p and "Organization" in p for p in problems), problems


def test_rejects_value_and_data_absent_reason_together():
    problems = broken(lambda b: one(b, "Observation").update(dataAbsentReason=fhir_codes.ABSENT_ERROR.concept()))
    assert any("obs-6" in p for p in problems), problems


def test_rejects_empty_array_null_and_duplicate_full_url():
    def change(b):
        one(b, "Patient")["name"] = []
        one(b, "Organization")["name"] = None
        b["entry"][1]["fullUrl"] = b["entry"][0]["fullUrl"]

    problems = broken(change)
    assert any("name: empty array" in p for p in problems), problems
    assert any("name: null" in p for p in problems), problems
    assert any("bdl-7" in p for p in problems), problems


def test_rejects_what_is_not_a_bundle():
    assert validate_bundle([]) != []
    assert validate_bundle({"resourceType": "Patient"}) != []
    assert validate_bundle({"resourceType": "Bundle"}) != []  # no type


def test_problems_do_not_echo_values():
    secret = "284127512345678"
    structure = broken(lambda b: one(b, "Patient").update(birthDate=secret, nickname=secret))
    codes = broken(lambda b: one(b, "Patient").update(gender=secret))
    assert len(structure) == 2
    assert len(codes) == 1
    assert not any(secret in p for p in structure + codes), structure + codes


def test_operation_outcome_is_valid_fhir():
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    problems = broken(lambda b: one(b, "Observation").pop("status"))
    outcome = operation_outcome(problems)
    OperationOutcome.model_validate(outcome)
    assert outcome["resourceType"] == "OperationOutcome"
    assert [(i["severity"], i["code"]) for i in outcome["issue"]] == [("error", "invalid")] * len(problems)
    assert [i["diagnostics"] for i in outcome["issue"]] == problems
    OperationOutcome.model_validate(operation_outcome([]))


def test_mapping_does_not_need_fhir_resources_at_runtime():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, chalicelib.domain.fhir; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fhir', 'fhir_core', 'pydantic')))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
