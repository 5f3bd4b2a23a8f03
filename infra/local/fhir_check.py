"""Is this FHIR R4 ``Bundle`` valid? Used by the local stand-in national system (and by tests).

``fhir.resources`` 8.x models FHIR R5 by default and ships ``R4B`` (4.3.0) and ``STU3`` sub-packages, no plain R4
(4.0.1). R4B is the closest: it is R4 plus changes to resources this project does not use (medication definition,
evidence, subscriptions...); ``Bundle``, ``Patient``, ``Observation``, ``Organization``, ``Practitioner``,
``Device`` and ``OperationOutcome`` have the same elements as in R4. So this checks against R4B.

``fhir.resources`` checks structure (element names, cardinality, choice types, primitive formats such as dateTime
with offset) but not code bindings nor invariants. On top of it this module checks: the JSON rules (no ``null``,
no empty object or array), each entry's resource against its own class, the required bindings of the elements
a result bundle can use, the Bundle invariants bdl-1 to bdl-5 and bdl-7, obs-6, and that ``urn:uuid:`` /
``urn:oid:`` references resolve to an entry of the bundle (and to an allowed type, for the Observation references
we send). Problems name the path and the rule, never the offending value (it may be personal data).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

# Required bindings, per model class and element (FHIR R4 4.0.1 value sets).
_REQUIRED_BINDINGS: Final[dict[tuple[str, str], tuple[str, frozenset[str]]]] = {
    ("Bundle", "type"): (
        "bundle-type",
        frozenset(
            {
                "document",
                "message",
                "transaction",
                "transaction-response",
                "batch",
                "batch-response",
                "history",
                "searchset",
                "collection",
            }
        ),
    ),
    ("BundleEntrySearch", "mode"): ("search-entry-mode", frozenset({"match", "include", "outcome"})),
    ("BundleEntryRequest", "method"): ("http-verb", frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})),
    ("Patient", "gender"): ("administrative-gender", frozenset({"male", "female", "other", "unknown"})),
    ("PatientContact", "gender"): ("administrative-gender", frozenset({"male", "female", "other", "unknown"})),
    ("Practitioner", "gender"): ("administrative-gender", frozenset({"male", "female", "other", "unknown"})),
    ("PatientLink", "type"): ("link-type", frozenset({"replaced-by", "replaces", "refer", "seealso"})),
    ("Observation", "status"): (
        "observation-status",
        frozenset(
            {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
        ),
    ),
    ("Device", "status"): ("device-status", frozenset({"active", "inactive", "entered-in-error", "unknown"})),
    ("DeviceDeviceName", "type"): (
        "device-nametype",
        frozenset(
            {
                "udi-label-name",
                "user-friendly-name",
                "patient-reported-name",
                "manufacturer-name",
                "model-name",
                "other",
            }
        ),
    ),
    ("Identifier", "use"): ("identifier-use", frozenset({"usual", "official", "temp", "secondary", "old"})),
    ("HumanName", "use"): (
        "name-use",
        frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}),
    ),
    ("ContactPoint", "system"): (
        "contact-point-system",
        frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"}),
    ),
    ("ContactPoint", "use"): ("contact-point-use", frozenset({"home", "work", "temp", "old", "mobile"})),
    ("Address", "use"): ("address-use", frozenset({"home", "work", "temp", "old", "billing"})),
    ("Address", "type"): ("address-type", frozenset({"postal", "physical", "both"})),
    ("Narrative", "status"): ("narrative-status", frozenset({"generated", "extensions", "additional", "empty"})),
    ("Quantity", "comparator"): ("quantity-comparator", frozenset({"<", "<=", ">=", ">"})),
    ("OperationOutcomeIssue", "severity"): ("issue-severity", frozenset({"fatal", "error", "warning", "information"})),
}

# Allowed targets of the references a result bundle carries (R4 Observation).
_REFERENCE_TARGETS: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("Observation", "subject"): frozenset({"Patient", "Group", "Device", "Location"}),
    ("Observation", "performer"): frozenset(
        {"Practitioner", "PractitionerRole", "Organization", "CareTeam", "Patient", "RelatedPerson"}
    ),
    ("Observation", "device"): frozenset({"Device", "DeviceMetric"}),
}

_MAX_PROBLEMS: Final = 100
_ENTRY_PATH: Final = re.compile(r"Bundle\.entry\[\d+\]")


def validate_bundle(doc: object) -> list[str]:
    """Human-readable problems with ``doc`` as a FHIR R4 Bundle (parsed JSON); empty when it is valid."""
    if not isinstance(doc, dict):
        return ["Bundle: expected a JSON object"]
    if doc.get("resourceType") != "Bundle":
        return ["resourceType: expected 'Bundle'"]
    raw_entries = doc.get("entry", [])
    entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
    # The Bundle without its resources, then each resource against its own class: clearer paths, no duplicates.
    shell = dict(doc)
    if entries:
        shell["entry"] = [_without_resource(entry) for entry in entries]
    problems = _json_rules(doc, "Bundle")
    bundle = _parse(Bundle, shell, "Bundle", problems)
    if bundle is not None:
        problems += _bindings(bundle, "Bundle")

    full_urls: dict[str, str | None] = {}
    resources: list[tuple[str, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            continue  # already reported by the Bundle parse
        resource = entry.get("resource")
        resource_type: str | None = None
        if isinstance(resource, dict):
            resource_type = _check_resource(resource, f"{where}.resource", problems)
            if resource_type is not None:
                resources.append((f"{where}.resource", resource))
        elif "resource" in entry:
            problems.append(f"{where}.resource: expected a JSON object")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            problems += _check_full_url(full_url, where, full_urls, resource_type)
    if bundle is not None:
        problems += _bundle_invariants(doc, entries)
    for where, resource in resources:
        problems += _references(resource, where, full_urls)

    if len(problems) > _MAX_PROBLEMS:
        problems = [*problems[:_MAX_PROBLEMS], f"... and {len(problems) - _MAX_PROBLEMS} more problems"]
    return problems


def operation_outcome(problems: list[str]) -> dict[str, Any]:
    """An R4 ``OperationOutcome`` with one ``error``/``invalid`` issue per problem."""
    if not problems:
        return {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": "no problems found"}],
        }
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": problem} for problem in problems],
    }


def _without_resource(entry: Any) -> Any:
    if isinstance(entry, dict) and "resource" in entry:
        return {key: value for key, value in entry.items() if key != "resource"}
    return entry


def _check_resource(resource: dict[str, Any], where: str, problems: list[str]) -> str | None:
    """Parse one resource with its own class; its type when that is a known FHIR resource type."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        problems.append(f"{where}.resourceType: required")
        return None
    try:
        model_class = get_fhir_model_class(resource_type)
    except ValueError:
        model_class = None
    if model_class is None or not model_class.has_resource_base():
        problems.append(f"{where}.resourceType: not a FHIR resource type")
        return None
    where = f"{where}({resource_type})"
    problems += _json_rules(resource, where)
    model = _parse(model_class, resource, where, problems)
    if model is not None:
        problems += _bindings(model, where)
        if resource_type == "Observation":
            problems += _observation_invariants(resource, where)
    return resource_type


def _parse(
    model_class: type[FHIRAbstractModel], data: dict[str, Any], where: str, problems: list[str]
) -> FHIRAbstractModel | None:
    try:
        return model_class.model_validate(data)
    except ValidationError as error:
        for detail in error.errors(include_input=False, include_url=False):
            path = _path(where, detail["loc"])
            message = " ".join(str(detail["msg"]).split())
            problems.append(f"{path}: {message}")
    except (ValueError, TypeError, KeyError) as error:  # fhir.resources raises some errors outside pydantic
        problems.append(f"{where}: cannot be read as {model_class.__name__} ({type(error).__name__})")
    return None


def _path(where: str, loc: tuple[int | str, ...]) -> str:
    path = where
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _bindings(model: FHIRAbstractModel, where: str) -> list[str]:
    """Codes outside the required value set of their element, anywhere in ``model``."""
    problems: list[str] = []
    class_name = type(model).__name__
    for name in type(model).model_fields:
        if name.endswith("__ext") or name == "fhir_comments":
            continue
        value = getattr(model, name, None)
        if value is None:
            continue
        binding = _REQUIRED_BINDINGS.get((class_name, name))
        if binding is not None and isinstance(value, str) and value not in binding[1]:
            allowed = ", ".join(sorted(binding[1]))
            problems.append(
                f"{where}.{name}: code not in the required value set "
                f"http://hl7.org/fhir/ValueSet/{binding[0]} (one of: {allowed})"
            )
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, FHIRAbstractModel):
                path = f"{where}.{name}[{index}]" if isinstance(value, list) else f"{where}.{name}"
                problems += _bindings(item, path)
    return problems


def _json_rules(value: Any, where: str) -> list[str]:
    """FHIR JSON: no null (except in primitive arrays with an ``_element`` twin), no empty object or array."""
    problems: list[str] = []
    if isinstance(value, dict):
        if not value:
            problems.append(f"{where}: empty object (every element needs a value or children)")
        for key, item in value.items():
            path = f"{where}.{key}"
            if key == "resource" and _ENTRY_PATH.fullmatch(where):
                continue  # checked with the resource, under a path that names its type
            if item is None:
                problems.append(f"{path}: null is not allowed")
            elif isinstance(item, list) and any(element is None for element in item) and f"_{key}" not in value:
                problems.append(f"{path}: null in an array is only allowed next to a '_{key}' array")
                problems += _json_rules([element for element in item if element is not None], path)
            else:
                problems += _json_rules(item, path)
    elif isinstance(value, list):
        if not value:
            problems.append(f"{where}: empty array")
        for index, item in enumerate(value):
            if item is not None:
                problems += _json_rules(item, f"{where}[{index}]")
    return problems


def _check_full_url(full_url: str, where: str, seen: dict[str, str | None], resource_type: str | None) -> list[str]:
    problems: list[str] = []
    if full_url.startswith("urn:uuid:"):
        try:
            uuid.UUID(full_url.removeprefix("urn:uuid:"))
        except ValueError:
            problems.append(f"{where}.fullUrl: urn:uuid: must be followed by a UUID")
    if "/_history/" in full_url:
        problems.append(f"{where}.fullUrl: cannot be a version specific reference (bdl-8)")
    if full_url in seen:
        problems.append(f"{where}.fullUrl: must be unique in the bundle (bdl-7)")
    else:
        seen[full_url] = resource_type
    return problems


def _bundle_invariants(doc: dict[str, Any], entries: list[Any]) -> list[str]:
    problems: list[str] = []
    bundle_type = doc.get("type")
    if "total" in doc and bundle_type not in ("searchset", "history"):
        problems.append("Bundle.total: only when a search or history (bdl-1)")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        where = f"Bundle.entry[{index}]"
        if "search" in entry and bundle_type != "searchset":
            problems.append(f"{where}.search: only when a searchset (bdl-2)")
        if "request" not in entry and bundle_type in ("batch", "transaction", "history"):
            problems.append(f"{where}.request: mandatory for batch/transaction/history (bdl-3)")
        if "request" in entry and bundle_type not in ("batch", "transaction", "history"):
            problems.append(f"{where}.request: only for batch/transaction/history (bdl-3)")
        if "response" not in entry and bundle_type in ("batch-response", "transaction-response", "history"):
            problems.append(f"{where}.response: mandatory for batch-response/transaction-response/history (bdl-4)")
        if "response" in entry and bundle_type not in ("batch-response", "transaction-response", "history"):
            problems.append(f"{where}.response: only for batch-response/transaction-response/history (bdl-4)")
        if not any(key in entry for key in ("resource", "request", "response")):
            problems.append(f"{where}: must have a resource unless there's a request or response (bdl-5)")
    return problems


def _observation_invariants(resource: dict[str, Any], where: str) -> list[str]:
    has_value = any(key.startswith("value") and key[5:6].isupper() for key in resource)
    if has_value and "dataAbsentReason" in resource:
        return [f"{where}.dataAbsentReason: only when there is no value[x] (obs-6)"]
    return []


def _references(resource: dict[str, Any], where: str, full_urls: dict[str, str | None]) -> list[str]:
    """Bundle-local references (``urn:uuid:``, ``urn:oid:``) must resolve to an entry, of an allowed type."""
    problems: list[str] = []
    resource_type = str(resource.get("resourceType"))
    for path, element_name, reference in _find_references(resource, f"{where}({resource_type})", None):
        if not reference.startswith(("urn:uuid:", "urn:oid:")):
            continue
        if reference not in full_urls:
            problems.append(f"{path}.reference: does not resolve to an entry of the bundle")
            continue
        allowed = _REFERENCE_TARGETS.get((resource_type, element_name or ""))
        target = full_urls[reference]
        if allowed is not None and target is not None and target not in allowed:
            problems.append(f"{path}.reference: cannot point to a {target} (allowed: {', '.join(sorted(allowed))})")
    return problems


def _find_references(value: Any, where: str, top_element: str | None) -> list[tuple[str, str | None, str]]:
    found: list[tuple[str, str | None, str]] = []
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            found.append((where, top_element, reference))
        for key, item in value.items():
            if key in ("contained", "reference"):
                continue
            found += _find_references(item, f"{where}.{key}", top_element or key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _find_references(item, f"{where}[{index}]", top_element)
    return found
