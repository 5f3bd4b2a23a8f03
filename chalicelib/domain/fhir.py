"""Map one accepted result to the FHIR R4 ``Bundle`` delivered to the national screening system (contract section 3).

Pure: plain dicts in, plain dicts out, no I/O and no FHIR library at runtime (``fhir.resources`` is a dev/test
dependency, used by ``infra/local/fhir_check.py`` to check what this module builds).

Choices:

* ``Bundle.type`` is ``collection``: the receiver is asked to take the set of resources as one unit of information,
  not to apply create/update interactions (``transaction`` would need ``entry.request`` and server-side semantics we
  do not control).
* ``Bundle.identifier`` is the result id, system :data:`~chalicelib.domain.fhir_codes.RESULT_ID_SYSTEM`, so that the
  receiver can drop duplicates (delivery is at-least-once).
* Every ``entry.fullUrl`` is a ``urn:uuid:`` derived (UUIDv5) from the result id and the resource type, so the same
  result, submission and timestamp always give the same dict, hence the same bytes once serialised. Callers should
  pass a stable ``timestamp`` (for example when the result was received) to keep retries byte-identical.
* ``invalid`` results (the test ran, no result could be read) carry no ``value[x]``: the EU value set has no code for
  them. ``dataAbsentReason`` is ``error`` (data-absent-reason code system) to say why a final Observation has no value.
* The EU device is referenced from ``Observation.device`` for antigen tests only.
* Versions (corrections, contract v2 §8): ``Bundle.meta.versionId`` is the result's version (``"1"`` as submitted),
  and the Observation's ``status`` is ``final`` for version 1, ``corrected`` for a corrected version and
  ``entered-in-error`` for a withdrawal (:func:`observation_status`). The entry UUIDs stay those of the result:
  every version speaks of the same resources.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from chalicelib.domain import fhir_codes as codes
from chalicelib.domain.channels import required_addresses
from chalicelib.domain.model import Address, Patient, Submission, TestInfo
from chalicelib.domain.records import Pharmacy, ResultRecord

# Namespace of the entry UUIDs; never change it, or bundles for already-delivered results would change.
_ENTRY_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://relais.sante.fr/fhir/bundle-entry")

_VALUES: Final = {"positive": codes.SNOMED_DETECTED, "negative": codes.SNOMED_NOT_DETECTED}
_TEST_CODES: Final = {"antigen": codes.LOINC_ANTIGEN, "rt-pcr": codes.LOINC_RT_PCR}
_METHODS: Final = {"antigen": codes.METHOD_RAPID_IMMUNOASSAY, "rt-pcr": codes.METHOD_NAAT}
# Metropolitan French mobile numbers; the rest is only known to be mobile when a channel sends to it (validated
# as a mobile then, see validation.py).
_FR_MOBILE_PREFIXES: Final = ("+336", "+337")


ObservationStatus = Literal["final", "corrected", "entered-in-error"]


def observation_status(record: ResultRecord) -> ObservationStatus:
    """The Observation status of a result's current version: withdrawn, corrected, or as submitted."""
    if record.withdrawn:
        return "entered-in-error"
    return "corrected" if record.version > 1 else "final"


def build_bundle(
    *,
    result_id: str,
    submission: Submission,
    pharmacy: Pharmacy,
    device_name: str | None = None,
    timestamp: datetime,
    version: int = 1,
    status: ObservationStatus = "final",
) -> dict[str, Any]:
    """The FHIR R4 ``Bundle`` (type ``collection``) for one result, as a JSON-able dict.

    ``device_name`` is the EU name of ``submission.test.device_id`` when the caller knows it; ``timestamp`` becomes
    ``Bundle.timestamp`` and must be timezone-aware, like ``submission.test.sampled_at``.
    """
    if not result_id:
        raise ValueError("result_id is required")
    test = submission.test

    def full_url(resource_type: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_ENTRY_NAMESPACE, f'{result_id}/{resource_type}')}"

    patient_url = full_url("Patient")
    practitioner_url = full_url("Practitioner")
    organization_url = full_url("Organization")
    device_url = full_url("Device") if test.kind == "antigen" and test.device_id else None

    observation = _observation(
        test,
        status=status,
        patient_url=patient_url,
        performer_urls=(practitioner_url, organization_url),
        device_url=device_url,
    )
    resources: list[tuple[str, dict[str, Any]]] = [
        (full_url("Observation"), observation),
        (patient_url, _patient(submission.patient, mobile_validated="phone" in required_addresses(submission.notify))),
        (practitioner_url, _practitioner(submission.performer_rpps)),
        (organization_url, _organization(pharmacy)),
    ]
    if device_url is not None and test.device_id is not None:
        resources.append((device_url, _device(test.device_id, device_name)))

    return {
        "resourceType": "Bundle",
        "meta": {"versionId": str(version)},
        "identifier": {"system": codes.RESULT_ID_SYSTEM, "value": result_id},
        "type": "collection",
        "timestamp": _date_time(timestamp, "timestamp"),
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in resources],
    }


def _observation(
    test: TestInfo,
    *,
    status: ObservationStatus,
    patient_url: str,
    performer_urls: tuple[str, ...],
    device_url: str | None,
) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "category": [codes.CATEGORY_LABORATORY.concept()],
        "code": _TEST_CODES[test.kind].concept(),
        "subject": {"reference": patient_url},
        "effectiveDateTime": _date_time(test.sampled_at, "test.sampled_at"),
        "performer": [{"reference": url} for url in performer_urls],
    }
    value = _VALUES.get(test.result)
    if value is not None:
        observation["valueCodeableConcept"] = value.concept()
    else:  # invalid: the test ran but gave no readable result
        observation["dataAbsentReason"] = codes.ABSENT_ERROR.concept()
    observation["method"] = _METHODS[test.kind].concept()
    if device_url is not None:
        observation["device"] = {"reference": device_url}
    return observation


def _patient(patient: Patient, *, mobile_validated: bool) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient"}
    if nir := _text(patient.nir):
        resource["identifier"] = [{"use": "official", "system": codes.NIR_SYSTEM, "value": nir}]
    name: dict[str, Any] = {"use": "official"}
    if family := _text(patient.family_name):
        name["family"] = family
    if given := _text(patient.given_name):
        name["given"] = [given]
    if len(name) > 1:
        resource["name"] = [name]
    telecom: list[dict[str, str]] = []
    if phone := _text(patient.phone):
        contact = {"system": "phone", "value": phone}
        if mobile_validated or phone.startswith(_FR_MOBILE_PREFIXES):
            contact["use"] = "mobile"
        telecom.append(contact)
    if email := _text(patient.email):
        telecom.append({"system": "email", "value": email})
    if telecom:
        resource["telecom"] = telecom
    resource["gender"] = patient.sex  # the domain values are FHIR administrative-gender codes
    resource["birthDate"] = patient.birth_date.isoformat()
    if patient.address is not None and (address := _address(patient.address)):
        resource["address"] = [address]
    return resource


def _address(address: Address) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if line := _text(address.line):
        out["line"] = [line]
    if city := _text(address.city):
        out["city"] = city
    if postal_code := _text(address.postal_code):
        out["postalCode"] = postal_code
    if country := _text(address.country):
        out["country"] = country
    return out


def _practitioner(rpps: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "identifier": [{"system": codes.RPPS_SYSTEM, "value": rpps}]}


def _organization(pharmacy: Pharmacy) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "identifier": [{"system": codes.FINESS_SYSTEM, "value": pharmacy.finess}],
    }
    if name := _text(pharmacy.name):
        resource["name"] = name
    return resource


def _device(device_id: str, device_name: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": [{"system": codes.EU_DEVICE_SYSTEM, "value": device_id}],
    }
    if name := _text(device_name):
        # The EU name is "<manufacturer>, <commercial name>": a label for people, not a model or UDI name.
        resource["deviceName"] = [{"name": name, "type": "user-friendly-name"}]
    return resource


def _date_time(value: datetime, what: str) -> str:
    """FHIR ``dateTime``/``instant`` text with the offset given (in UTC if FHIR cannot write that offset)."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{what} must be timezone-aware")
    if offset % timedelta(minutes=1) or abs(offset) > timedelta(hours=14):
        value = value.astimezone(UTC)
    return value.isoformat()


def _text(value: str | None) -> str | None:
    """FHIR strings may not be empty and should not carry surrounding white space."""
    if value is None:
        return None
    return value.strip() or None
