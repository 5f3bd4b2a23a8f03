"""The operators' dashboard and saved Logs Insights queries: in the template, reading what the code writes, linked
from the runbook."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.dashboard import DASHBOARD_NAME, QUERIES

ROOT = Path(__file__).resolve().parents[2]
CODE = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "chalicelib").rglob("*.py"))
RUNBOOK = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def _subbed(value: Any) -> str:
    text = value["Fn::Sub"]
    assert isinstance(text, str)
    return text.replace("${Stage}", "prod").replace("${AWS::Region}", "eu-west-3")


def test_the_template_has_the_dashboard_and_every_saved_query(packaged_template):
    resources = packaged_template["Resources"]
    dashboard = resources["OperatorsDashboard"]
    assert _subbed(dashboard["Properties"]["DashboardName"]) == "relais-prod"
    body = json.loads(_subbed(dashboard["Properties"]["DashboardBody"]))
    assert len([w for w in body["widgets"] if w["type"] == "metric"]) >= 6
    log_groups = {
        _subbed(r["Properties"]["LogGroupName"]) for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"
    }
    saved = {
        _subbed(r["Properties"]["Name"]): r for r in resources.values() if r["Type"] == "AWS::Logs::QueryDefinition"
    }
    assert set(saved) == {f"relais-prod/{name}" for name in QUERIES}
    for query in saved.values():
        names = [_subbed(g) for g in query["Properties"]["LogGroupNames"]]
        assert names and set(names) <= log_groups
        assert all(resources[d]["Type"] == "AWS::Logs::LogGroup" for d in query["DependsOn"])


def _dashboard_metrics() -> list[tuple[str, str]]:
    from infra.dashboard import dashboard_body

    return [
        (m[0], m[1]) for w in dashboard_body()["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]
    ]


@pytest.mark.parametrize(("namespace", "name"), _dashboard_metrics())
def test_every_relais_figure_of_the_dashboard_is_one_the_code_or_an_alarm_has(namespace, name):
    if namespace == "Relais":
        infra = (ROOT / "infra" / "prod.json").read_text() + (ROOT / "infra" / "template.py").read_text()
        assert f'"{name}"' in CODE or f'"{name}"' in infra


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_every_saved_query_reads_lines_the_code_writes_and_the_runbook_links_it(name):
    _, query = QUERIES[name]
    for message in re.findall(r'message = "([^"]+)"', query):
        assert f'"{message}"' in CODE, message
    for field in re.findall(r"\b(result_id|pharmacy_id|reason|outcome|queue|error|duration_ms)\b", query):
        assert f'"{field}"' in CODE, field
    assert f"`relais-<stage>/{name}`" in RUNBOOK


def test_the_runbook_names_the_dashboard():
    assert DASHBOARD_NAME.replace("${Stage}", "<stage>") in RUNBOOK


def test_only_opaque_ids_can_be_added_to_the_request_log_lines():
    from chalicelib.observability import REQUEST_KEYS, log_request_keys

    assert set(REQUEST_KEYS) == {"pharmacy_id", "result_id"}
    with pytest.raises(ValueError, match="not a request log key: phone"):
        log_request_keys(phone="+33612345678")
