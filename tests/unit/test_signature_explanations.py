"""Signature failures are explained on the local and sandbox stages only; production can neither start nor be
packaged with explanations on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.config import EXPLAINING_STAGES, SettingsError, settings_from_env
from infra.package import PackagingError, check_stage_config, stage_project
from tests.unit.test_config import REQUIRED

ROOT = Path(__file__).resolve().parents[2]
CHALICE_CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("stage", ["prod", "dev", "test", "Sandbox", "local-prod"])
def test_a_stage_that_may_not_explain_refuses_to_start_with_explanations_on(stage):
    with pytest.raises(SettingsError, match="EXPLAIN_AUTH_FAILURES is allowed on the local and sandbox stages only"):
        settings_from_env(REQUIRED | {"RELAIS_STAGE": stage, "RELAIS_EXPLAIN_AUTH_FAILURES": "1"})


@pytest.mark.parametrize("stage", sorted(EXPLAINING_STAGES))
def test_local_and_sandbox_may_explain(stage):
    assert settings_from_env(
        REQUIRED | {"RELAIS_STAGE": stage, "RELAIS_EXPLAIN_AUTH_FAILURES": "1"}
    ).explain_auth_failures


def test_explanations_are_off_unless_asked_and_the_switch_is_0_or_1():
    assert settings_from_env(REQUIRED | {"RELAIS_STAGE": "local"}).explain_auth_failures == 0
    with pytest.raises(SettingsError, match="between 0 and 1"):
        settings_from_env(REQUIRED | {"RELAIS_STAGE": "local", "RELAIS_EXPLAIN_AUTH_FAILURES": "2"})


def test_the_repository_explains_on_local_and_sandbox_and_nowhere_else():
    explaining = {
        name
        for name, stage in CHALICE_CONFIG["stages"].items()
        if stage.get("environment_variables", {}).get("RELAIS_EXPLAIN_AUTH_FAILURES") == "1"
    }
    assert explaining == {"local", "sandbox"}
    for name in CHALICE_CONFIG["stages"]:
        check_stage_config(CHALICE_CONFIG, name)


@pytest.mark.parametrize("stage", ["prod", "dev"])
def test_packaging_refuses_a_stage_with_explanations_on(stage):
    config = json.loads(json.dumps(CHALICE_CONFIG))
    config["stages"][stage]["environment_variables"]["RELAIS_EXPLAIN_AUTH_FAILURES"] = "1"
    with pytest.raises(PackagingError, match=f"stage '{stage}'.*local and sandbox stages only"):
        check_stage_config(config, stage)


def test_packaging_refuses_a_sandbox_renamed_to_production():
    config = json.loads(json.dumps(CHALICE_CONFIG))
    config["stages"]["sandbox"]["environment_variables"]["RELAIS_STAGE"] = "prod"
    with pytest.raises(PackagingError, match="not on 'prod'"):
        check_stage_config(config, "sandbox")


def test_make_package_checks_the_stage_before_building_anything(tmp_path, monkeypatch):
    config = json.loads(json.dumps(CHALICE_CONFIG))
    config["stages"]["prod"]["environment_variables"]["RELAIS_EXPLAIN_AUTH_FAILURES"] = "1"
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setattr("infra.package.ROOT", tmp_path)
    with pytest.raises(PackagingError):
        stage_project(tmp_path / "build", "prod", with_dependencies=False)
    assert not (tmp_path / "build").exists()
