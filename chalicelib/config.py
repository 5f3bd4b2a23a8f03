"""Settings, read from the environment once, at first use (never at import).

In AWS the Lambda environment carries them (set from the CloudFormation outputs of
``infra/resources.json``); in the local stack ``infra/local/stack.py`` sets them from the
same outputs, as provisioned in moto.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from functools import cache


class SettingsError(RuntimeError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    stage: str
    region: str
    kms_key_arn: str
    registry_table: str
    results_table: str
    state_table: str
    audit_table: str
    national_queue_url: str
    notify_queue_url: str
    audit_chain_table: str = ""
    national_dlq_url: str = ""
    notify_dlq_url: str = ""
    daily_quota_default: int = 2000
    key_requests_per_second: int = 20  # per pharmacy key, after its signature verified (then 429 + Retry-After)
    signature_window_seconds: int = 300
    max_body_bytes: int = 16 * 1024
    result_retention_days: int = 90
    audit_retention_days: int = 366
    data_key_max_age_seconds: int = 300
    data_key_max_messages: int = 10_000
    public_base_url: str = "http://127.0.0.1:8000"
    allowed_authorities: str = ""  # comma-separated Host values accepted for "@authority"; empty: any (not in prod)
    # 1: a 401 tells the vendor why (docs/api.md, "Debugging a 401"); allowed on EXPLAINING_STAGES only
    explain_auth_failures: int = 0
    # national delivery
    national_url: str = ""  # FHIR endpoint receiving Bundles (POST)
    national_token_parameter: str = ""  # SSM SecureString parameter name holding the bearer token
    national_timeout_seconds: int = 5
    national_max_attempts: int = 8
    national_client_cert_secret: str = ""  # Secrets Manager secret {"cert_pem", "key_pem"} for mutual TLS
    national_backoff_base_seconds: int = 2
    national_backoff_cap_seconds: int = 900
    reconcile_after_seconds: int = 1800  # a result still pending this long is queued again
    # patient notification and result page
    link_ttl_hours: int = 72
    sms_sender_id: str = "Relais"
    # where an SMS may go: France (metropolitan and overseas, domain/validation.py) plus these ISO 3166-1 alpha-2
    # regions, comma-separated (a stage that must reach patients abroad; each SMS abroad costs up to ten times more)
    sms_extra_regions: str = ""
    email_sender: str = "resultats@relais.example"
    ses_configuration_set: str = ""
    patient_lock_attempts: int = 5
    patient_ip_failures: int = 20
    patient_ip_window_seconds: int = 600
    resend_per_day: int = 3
    # account-wide pacing of patient messages (adapters/pacing.py); budgets in messages per month, 0: none.
    # The rates are the peak day's (docs/capacity.md): the account's SNS SMS and SES sending quotas must be raised
    # to them (AWS starts accounts at 20 SMS/s and 14 e-mails/s).
    sms_per_second: int = 400
    sms_monthly_budget: int = 3_000_000
    # SMS per pharmacy and UTC day (all its keys): past it no SMS is sent for that pharmacy until midnight UTC. At
    # most a tenth of the monthly budget over 31 days (checked at start): one key never spends the account's budget.
    sms_per_pharmacy_per_day: int = 2000
    email_per_second: int = 100
    email_monthly_budget: int = 0
    # the function's own timeout (set per function by the template): AWS clients' timeouts fit in it
    function_timeout_seconds: int = 10

    def pinned_authorities(self) -> frozenset[str]:
        """The Host values a pharmacy may sign for (``"@authority"``); SettingsError in a stage of
        :data:`PINNED_STAGES` without them, so that its pharmacy API refuses to serve."""
        return check_authorities(self.stage, self.allowed_authorities)

    @property
    def sms_extra_region_codes(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.sms_extra_regions.split(",") if r.strip())


#: Stages whose pharmacy API refuses to run without ``allowed_authorities`` (the template's ``Rules`` refuse to
#: deploy them without it too: ``infra/prod.json``).
PINNED_STAGES = frozenset({"prod"})

#: One ``allowed_authorities`` value: a comma-separated list of lower-case host names, each with an optional port
#: (no scheme, path or wildcard). ``infra/prod.json`` holds the same pattern for the ``AllowedAuthorities``
#: parameter (a test compares them).
AUTHORITIES_PATTERN = r"([a-z0-9.-]+(:[0-9]{1,5})?(,[a-z0-9.-]+(:[0-9]{1,5})?)*)?"

_ENV_PREFIX = "RELAIS_"
#: The stages where a 401 may say why a signature failed: the local stack and a sandbox given to vendors. Never
#: production: there, every failure is the same 401 (an attacker learns nothing from it).
EXPLAINING_STAGES = frozenset({"local", "sandbox"})


def check_explanations(stage: str, explain_auth_failures: int) -> None:
    """SettingsError when signature failures would be explained on a stage that must not explain them."""
    if explain_auth_failures and stage not in EXPLAINING_STAGES:
        allowed = " and ".join(sorted(EXPLAINING_STAGES))
        raise SettingsError(
            f"{_ENV_PREFIX}EXPLAIN_AUTH_FAILURES is allowed on the {allowed} stages only, not on {stage!r}"
        )


def check_authorities(stage: str, allowed_authorities: str) -> frozenset[str]:
    """The allowed authorities of ``stage``, checked: host names (``host`` or ``host:port``) separated by commas,
    and at least one in a stage of :data:`PINNED_STAGES`. SettingsError otherwise. ``infra/deploy.sh`` runs the
    same check before deploying."""
    if not re.fullmatch(AUTHORITIES_PATTERN, allowed_authorities.replace(" ", "").lower()):
        raise SettingsError(f"{_ENV_PREFIX}ALLOWED_AUTHORITIES must be host names (host or host:port), comma-separated")
    authorities = frozenset(a.strip().lower() for a in allowed_authorities.split(",") if a.strip())
    if stage in PINNED_STAGES and not authorities:
        raise SettingsError(
            f"{_ENV_PREFIX}ALLOWED_AUTHORITIES is required in stage {stage}: the API's own hosts, which pharmacies sign"
        )
    return authorities


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from ``RELAIS_*`` variables; missing required ones raise SettingsError."""
    values: dict[str, object] = {}
    missing: list[str] = []
    for f in fields(Settings):
        name = _ENV_PREFIX + f.name.upper()
        if f.name == "region":
            raw = env.get(name) or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        else:
            raw = env.get(name)
        if raw is None or raw == "":
            if f.default is MISSING:  # no default: required
                missing.append(name)
            continue
        try:
            values[f.name] = int(raw) if f.type in ("int", int) else raw
        except ValueError as exc:
            raise SettingsError(f"{name} must be an integer") from exc
    if missing:
        raise SettingsError("missing settings: " + ", ".join(sorted(missing)))
    settings = Settings(**values)  # type: ignore[arg-type]
    check_authorities("", settings.allowed_authorities)  # the shape now; whether the stage needs them: at use
    for name, (low, high) in _BOUNDS.items():
        if not low <= getattr(settings, name) <= high:
            raise SettingsError(f"{_ENV_PREFIX}{name.upper()} must be between {low} and {high}")
    check_explanations(settings.stage, settings.explain_auth_failures)
    _check_sms_link(settings.public_base_url)
    if settings.sms_monthly_budget > 0 and settings.sms_per_pharmacy_per_day * 31 * 10 > settings.sms_monthly_budget:
        raise SettingsError(
            f"{_ENV_PREFIX}SMS_PER_PHARMACY_PER_DAY over 31 days must be at most a tenth of "
            f"{_ENV_PREFIX}SMS_MONTHLY_BUDGET (one pharmacy's key must not be able to spend the account's SMS budget)"
        )
    if not all(_REGION.fullmatch(code) for code in settings.sms_extra_region_codes):
        raise SettingsError(
            f"{_ENV_PREFIX}SMS_EXTRA_REGIONS must list ISO 3166-1 alpha-2 codes in upper case, comma-separated (BE,CH)"
        )
    return settings


def _check_sms_link(public_base_url: str) -> None:
    """Every SMS is one segment: the link must leave room for the pharmacy's name (``domain/messages.py``)."""
    from chalicelib.domain.links import TOKEN_BYTES
    from chalicelib.domain.messages import check_sms_link

    token_length = len(base64.urlsafe_b64encode(bytes(TOKEN_BYTES)).rstrip(b"="))  # as links.new_token() writes it
    try:
        check_sms_link(public_base_url, token_length)
    except ValueError as exc:
        raise SettingsError(f"{_ENV_PREFIX}PUBLIC_BASE_URL {exc}") from None


_REGION = re.compile(r"[A-Z]{2}")


#: Limits of numeric settings, checked at start-up rather than at first use (contract §2, §4).
_BOUNDS: dict[str, tuple[int, int]] = {
    "link_ttl_hours": (1, 7 * 24),
    "signature_window_seconds": (30, 900),
    "daily_quota_default": (1, 1_000_000),
    "key_requests_per_second": (1, 10_000),
    "max_body_bytes": (1024, 16 * 1024),
    "result_retention_days": (1, 92),
    "patient_lock_attempts": (1, 20),
    "resend_per_day": (1, 20),
    "national_max_attempts": (1, 100),
    "function_timeout_seconds": (4, 900),
    "sms_per_second": (1, 10_000),
    "sms_per_pharmacy_per_day": (1, 1_000_000),
    "email_per_second": (1, 10_000),
    "explain_auth_failures": (0, 1),
}


@cache
def get_settings() -> Settings:
    """The process-wide settings (cached for warm starts; ``get_settings.cache_clear()`` in tests)."""
    return settings_from_env(os.environ)
