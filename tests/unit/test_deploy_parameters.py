"""What the deployment refuses (issue 11, item 7): production without the API's own hosts as allowed authorities.

Three places hold the rule and each is checked here: the template's ``Rules`` (CloudFormation refuses the stack
whatever tool deploys it), the ``AllowedAuthorities`` parameter's pattern (the same as the code's), and
``infra/deploy.sh`` (which fails before uploading anything).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import AUTHORITIES_PATTERN, PINNED_STAGES
from infra import template as finishing

ROOT = Path(__file__).resolve().parents[2]


def _evaluate(expression: Any, parameters: dict[str, str]) -> Any:
    """The few intrinsic functions a rule of ``infra/prod.json`` uses, evaluated as CloudFormation would."""
    if isinstance(expression, dict):
        (name, argument), *_ = expression.items()
        if name == "Ref":
            return parameters[argument]
        values = [_evaluate(a, parameters) for a in argument]
        return {"Fn::Equals": lambda: values[0] == values[1], "Fn::Not": lambda: not values[0]}[name]()
    return expression


def _refusals(stage: str, authorities: str) -> list[str]:
    """The assertion messages of the merged template's rules that fail for these parameter values."""
    parameters = {"Stage": stage, "AllowedAuthorities": authorities}
    refused = []
    for rule in finishing.merge_template(stage)["Rules"].values():
        if _evaluate(rule.get("RuleCondition", True), parameters):
            refused += [a["AssertDescription"] for a in rule["Assertions"] if not _evaluate(a["Assert"], parameters)]
    return refused


def test_the_template_refuses_production_without_allowed_authorities():
    assert _refusals("prod", "") == [
        "Stage prod needs AllowedAuthorities: the API's own host names, which pharmacies sign as '@authority' "
        "(docs/deploy.md)."
    ]
    assert _refusals("prod", "api.relais.example") == []
    assert _refusals("dev", "") == []


@pytest.mark.parametrize("stage", sorted(PINNED_STAGES))
def test_the_template_pins_every_stage_the_code_pins(stage):
    assert _refusals(stage, "")


def test_the_authorities_parameter_has_the_codes_pattern():
    parameter = finishing.merge_template("prod")["Parameters"]["AllowedAuthorities"]
    assert parameter["AllowedPattern"] == AUTHORITIES_PATTERN


def _deploy_check(stage: str, authorities: str | None) -> subprocess.CompletedProcess[str]:
    """``infra/deploy.sh`` up to its authorities check (its first AWS call is past it): no AWS CLI needed."""
    script = (ROOT / "infra" / "deploy.sh").read_text()
    start = script.index("check_authorities='")
    end = script.index("SMS_LIMIT=")
    env = {k: v for k, v in os.environ.items() if k != "ALLOWED_AUTHORITIES"}
    if authorities is not None:
        env["ALLOWED_AUTHORITIES"] = authorities
    prelude = f'set -euo pipefail\nfail() {{ echo "deploy: $*" >&2; exit 1; }}\nSTAGE={stage}\n'
    return subprocess.run(
        ["bash", "-c", prelude + script[start:end] + "echo checked"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(("stage", "authorities"), [("prod", None), ("prod", ""), ("dev", "https://api.example")])
def test_deploy_stops_before_uploading_without_valid_authorities(stage, authorities):
    run = _deploy_check(stage, authorities)
    assert run.returncode == 1
    assert "RELAIS_ALLOWED_AUTHORITIES" in run.stderr
    assert "checked" not in run.stdout


@pytest.mark.parametrize(("stage", "authorities"), [("prod", "api.relais.example"), ("dev", None)])
def test_deploy_goes_on_with_valid_authorities(stage, authorities):
    run = _deploy_check(stage, authorities)
    assert (run.returncode, run.stdout) == (0, "checked\n"), run.stderr
