"""Code systems, codes and identifier systems used in the FHIR R4 bundle sent to the national system.

The SNOMED CT result codes and the LOINC test-type part codes (and their displays) come from the EU Digital COVID
Certificate value sets, ehn-dcc-development/eu-dcc-valuesets (``test-result.json``, ``test-type.json``;
Apache-2.0), bundled in ``tests/data`` where a test checks them. The LOINC observation codes are the ones the API
names for ``test.kind`` (``docs/api.md``), with their LOINC long common names as displays.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Code(NamedTuple):
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self) -> dict[str, list[dict[str, str]]]:
        return {"coding": [self.coding()]}


LOINC: Final = "http://loinc.org"
SNOMED_CT: Final = "http://snomed.info/sct"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

# --- identifier systems ---------------------------------------------------------------------------------------
# Ours: the result id is opaque (base64url, not a UUID), so it gets its own naming system rather than urn:ietf:rfc:3986.
RESULT_ID_SYSTEM: Final = "https://relais.sante.fr/fhir/NamingSystem/result-id"
NIR_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.4.8"  # INS-NIR
FINESS_SYSTEM: Final = "urn:oid:1.2.250.1.71.4.2.2"
RPPS_SYSTEM: Final = "urn:oid:1.2.250.1.71.4.2.1"
EU_DEVICE_SYSTEM: Final = "https://covid-19-diagnostics.jrc.ec.europa.eu/devices"

# --- Observation.code: what was measured, per test kind (docs/api.md, test.kind) --------------------------------
LOINC_ANTIGEN: Final = Code(
    LOINC, "94558-4", "SARS-CoV-2 (COVID-19) Ag [Presence] in Respiratory specimen by Rapid immunoassay"
)
LOINC_RT_PCR: Final = Code(
    LOINC, "94500-6", "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory specimen by NAA with probe detection"
)

# --- Observation.method: EU DCC test type (value set covid-19-lab-test-type) --------------------------------
METHOD_RAPID_IMMUNOASSAY: Final = Code(LOINC, "LP217198-3", "Rapid immunoassay")
METHOD_NAAT: Final = Code(LOINC, "LP6464-4", "Nucleic acid amplification with probe detection")

# --- Observation.valueCodeableConcept: EU DCC test result (value set covid-19-lab-result) -------------------
SNOMED_DETECTED: Final = Code(SNOMED_CT, "260373001", "Detected")
SNOMED_NOT_DETECTED: Final = Code(SNOMED_CT, "260415000", "Not detected")

# --- an ``invalid`` test has no value: Observation.dataAbsentReason instead ---------------------------------
ABSENT_ERROR: Final = Code(DATA_ABSENT_REASON, "error", "Error")

CATEGORY_LABORATORY: Final = Code(OBSERVATION_CATEGORY, "laboratory", "Laboratory")
