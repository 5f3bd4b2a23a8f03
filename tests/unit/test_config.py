from __future__ import annotations

import pytest

from chalicelib.config import SettingsError, settings_from_env

REQUIRED = {
    "RELAIS_STAGE": "test",
    "RELAIS_REGION": "eu-west-3",
    "RELAIS_KMS_KEY_ARN": "arn:aws:kms:eu-west-3:123456789012:key/abc",
    "RELAIS_REGISTRY_TABLE": "r",
    "RELAIS_RESULTS_TABLE": "r",
    "RELAIS_STATE_TABLE": "s",
    "RELAIS_AUDIT_TABLE": "a",
    "RELAIS_NATIONAL_QUEUE_URL": "q",
    "RELAIS_NOTIFY_QUEUE_URL": "q",
}


def test_settings_name_every_missing_variable():
    with pytest.raises(SettingsError) as error:
        settings_from_env({})
    for name in REQUIRED:
        assert name in str(error.value)


def test_defaults_follow_the_contract():
    settings = settings_from_env(REQUIRED)
    assert settings.daily_quota_default == 2000
    assert settings.signature_window_seconds == 300
    assert settings.max_body_bytes == 16 * 1024
    assert settings.link_ttl_hours == 72
    assert settings.patient_lock_attempts == 5
    assert settings.patient_ip_failures == 20
    assert settings.patient_ip_window_seconds == 600
    assert settings.resend_per_day == 3
    assert settings.result_retention_days <= 92


@pytest.mark.parametrize(
    ("name", "value"),
    [("RELAIS_LINK_TTL_HOURS", "169"), ("RELAIS_LINK_TTL_HOURS", "0"), ("RELAIS_RESULT_RETENTION_DAYS", "365")],
)
def test_out_of_range_settings_fail_at_start(name, value):
    with pytest.raises(SettingsError, match=name):
        settings_from_env({**REQUIRED, name: value})


def test_a_non_integer_setting_is_named():
    with pytest.raises(SettingsError, match="RELAIS_DAILY_QUOTA_DEFAULT must be an integer"):
        settings_from_env({**REQUIRED, "RELAIS_DAILY_QUOTA_DEFAULT": "many"})


def test_sms_go_to_france_only_unless_a_stage_adds_regions():
    assert settings_from_env(REQUIRED).sms_extra_region_codes == frozenset()
    widened = settings_from_env({**REQUIRED, "RELAIS_SMS_EXTRA_REGIONS": "BE, CH"})
    assert widened.sms_extra_region_codes == frozenset({"BE", "CH"})


@pytest.mark.parametrize("value", ["be", "Belgium", "BE;CH", "B"])
def test_extra_sms_regions_must_be_region_codes(value):
    with pytest.raises(SettingsError, match="RELAIS_SMS_EXTRA_REGIONS must list ISO 3166-1 alpha-2 codes"):
        settings_from_env({**REQUIRED, "RELAIS_SMS_EXTRA_REGIONS": value})


def test_one_pharmacy_s_sms_cap_can_spend_at_most_a_tenth_of_the_monthly_budget():
    assert settings_from_env(REQUIRED).sms_per_pharmacy_per_day * 31 * 10 <= 3_000_000
    fits = {"RELAIS_SMS_MONTHLY_BUDGET": "31000", "RELAIS_SMS_PER_PHARMACY_PER_DAY": "100"}
    assert settings_from_env({**REQUIRED, **fits}).sms_per_pharmacy_per_day == 100
    with pytest.raises(SettingsError, match="RELAIS_SMS_PER_PHARMACY_PER_DAY over 31 days must be at most a tenth"):
        settings_from_env({**REQUIRED, **fits, "RELAIS_SMS_PER_PHARMACY_PER_DAY": "101"})
    no_budget = {"RELAIS_SMS_MONTHLY_BUDGET": "0", "RELAIS_SMS_PER_PHARMACY_PER_DAY": "50000"}
    assert settings_from_env({**REQUIRED, **no_budget}).sms_per_pharmacy_per_day == 50_000


# -- allowed authorities (issue 11, item 7) --------------------------------------------------------------------
@pytest.mark.parametrize("value", ["https://api.relais.example", "api.relais.example/v1", "*.relais.example", "a,,b"])
def test_allowed_authorities_must_be_host_names(value):
    with pytest.raises(SettingsError, match="RELAIS_ALLOWED_AUTHORITIES must be host names"):
        settings_from_env({**REQUIRED, "RELAIS_ALLOWED_AUTHORITIES": value})


def test_allowed_authorities_are_lower_cased_hosts_with_optional_ports():
    settings = settings_from_env({**REQUIRED, "RELAIS_ALLOWED_AUTHORITIES": "API.relais.example, 127.0.0.1:8000"})
    assert settings.pinned_authorities() == {"api.relais.example", "127.0.0.1:8000"}


def test_production_refuses_to_serve_pharmacies_without_allowed_authorities():
    settings = settings_from_env({**REQUIRED, "RELAIS_STAGE": "prod"})  # the CLI reads such settings: no error yet
    with pytest.raises(SettingsError, match="RELAIS_ALLOWED_AUTHORITIES is required in stage prod"):
        settings.pinned_authorities()
    pinned = settings_from_env({**REQUIRED, "RELAIS_STAGE": "prod", "RELAIS_ALLOWED_AUTHORITIES": "api.relais.example"})
    assert pinned.pinned_authorities() == {"api.relais.example"}


def test_other_stages_may_leave_the_authorities_open():
    assert settings_from_env(REQUIRED).pinned_authorities() == frozenset()
