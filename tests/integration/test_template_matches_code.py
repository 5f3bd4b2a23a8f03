"""The local stack provisions from the definitions production deploys, and they are exactly what the code uses.

``infra/resources.json`` is created in moto by ``infra.provision`` (the ``aws`` fixture) and merged, with
``infra/prod.json``, into the packaged template. Here: every ``RELAIS_*`` setting that names a resource is an output
of the template; the tables, queues, key and streams of the stack are exactly those settings; every pynamodb model
matches its table's keys and indexes; every placeholder of the code names a resource of the template; the queues fit
their consumers (visibility, receive counts).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import MISSING, fields
from typing import Any

import boto3
import pytest

from chalicelib.config import Settings
from infra import iam
from infra import template as finishing
from infra.provision import OUTPUT_ENV, load_template, stack_name

#: Settings that name a resource of the template (the rest are tuning values or deployment parameters).
RESOURCE_SUFFIXES = ("_table", "_queue_url", "_dlq_url")
RESOURCE_FIELDS = sorted(
    {f.name for f in fields(Settings) if f.name.endswith(RESOURCE_SUFFIXES)} | {"kms_key_arn", "ses_configuration_set"}
)
#: Resources of AWS that are not in moto's CloudFormation (prod.json only): their settings stay empty locally.
PROD_ONLY_FIELDS = {"ses_configuration_set"}


def _env_name(field_name: str) -> str:
    return "RELAIS_" + field_name.upper()


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    return finishing.merge_template("test")


def _stack_resources(stage: str = "test") -> dict[str, dict[str, str]]:
    cloudformation = boto3.client("cloudformation", region_name="eu-west-3")
    answer = cloudformation.describe_stack_resources(StackName=stack_name(stage))["StackResources"]
    return {r["LogicalResourceId"]: r for r in answer}


def _placeholders(suffix: str) -> dict[str, str]:
    """Module attributes of ``chalicelib.events`` ending in ``suffix``: the names the code gives its sources."""
    import chalicelib.events

    found = {}
    for info in pkgutil.iter_modules(chalicelib.events.__path__):
        module = importlib.import_module(f"chalicelib.events.{info.name}")
        for name, value in vars(module).items():
            if name.endswith(suffix) and isinstance(value, str):
                found[f"{info.name}.{name}"] = value
    return found


# -- settings ↔ outputs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field_name", RESOURCE_FIELDS)
def test_every_resource_setting_is_an_output_of_the_template(field_name, merged):
    outputs = {env: out for out, env in {**OUTPUT_ENV, **finishing.PROD_OUTPUT_ENV}.items()}
    assert _env_name(field_name) in outputs, f"no output feeds {_env_name(field_name)}"
    assert outputs[_env_name(field_name)] in merged["Outputs"]


def test_every_function_gets_every_required_and_resource_setting(merged):
    env = finishing.settings_env(merged)
    required = {_env_name(f.name) for f in fields(Settings) if f.default is MISSING}
    assert required - set(env) == set()
    assert {_env_name(f) for f in RESOURCE_FIELDS} - set(env) == set()


# -- the provisioned stack ↔ the settings ---------------------------------------------------------------------------
def test_the_stacks_tables_are_exactly_the_table_settings(aws):
    template = load_template()["Resources"]
    physical = _stack_resources()
    tables = {physical[k]["PhysicalResourceId"] for k, v in template.items() if v["Type"] == "AWS::DynamoDB::Table"}
    settings = {aws[_env_name(f)] for f in RESOURCE_FIELDS if f.endswith("_table")}
    assert tables == settings
    existing = set(boto3.client("dynamodb").list_tables()["TableNames"])
    assert tables <= existing


def test_the_stacks_queues_are_exactly_the_queue_settings(aws):
    template = load_template()["Resources"]
    physical = _stack_resources()
    queues = {physical[k]["PhysicalResourceId"] for k, v in template.items() if v["Type"] == "AWS::SQS::Queue"}
    settings = {aws[_env_name(f)] for f in RESOURCE_FIELDS if f.endswith(("_queue_url", "_dlq_url"))}
    assert queues == settings
    sqs = boto3.client("sqs")
    for url in settings:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])["Attributes"]
        assert attributes.get("KmsMasterKeyId"), f"{url} is not encrypted with the stage's key"


def test_the_stacks_only_key_is_the_key_setting(aws):
    template = load_template()["Resources"]
    keys = [k for k, v in template.items() if v["Type"] == "AWS::KMS::Key"]
    assert keys == ["DataKey"]
    # (list_keys, not describe_key: moto cannot evaluate the policy of a key its CloudFormation created)
    listed = {k["KeyId"]: k["KeyArn"] for k in boto3.client("kms").list_keys()["Keys"]}
    assert listed == {_stack_resources()["DataKey"]["PhysicalResourceId"]: aws["RELAIS_KMS_KEY_ARN"]}


def test_prod_only_settings_stay_empty_in_the_local_stack(aws):
    assert {f for f in RESOURCE_FIELDS if _env_name(f) not in aws} == PROD_ONLY_FIELDS


# -- the code's tables ↔ the template's ------------------------------------------------------------------------------
def _models() -> list[type]:
    from pynamodb.models import Model

    seen: list[type] = []
    todo = list(Model.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("chalicelib."):
            seen.append(cls)
    return seen


def test_every_pynamodb_model_matches_the_keys_and_indexes_of_its_table(aws):
    from chalicelib import bootstrap

    for component in ("registry", "store", "link_store", "audit_chain", "national_statuses"):
        if hasattr(bootstrap, component):
            getattr(bootstrap, component)()  # binds the models of that component to the settings' tables
    dynamodb = boto3.client("dynamodb")
    stack_tables = {aws[_env_name(f)] for f in RESOURCE_FIELDS if f.endswith("_table")}
    bound = [m for m in _models() if m.Meta.table_name != "unbound"]
    assert {"ResultItem", "StateItem", "AuditItem", "PharmacyItem", "LinkItem"} <= {m.__name__ for m in bound}
    for model in bound:
        assert model.Meta.table_name in stack_tables, f"{model.__name__} uses a table the template does not declare"
        table = dynamodb.describe_table(TableName=model.Meta.table_name)["Table"]
        schema = model._get_schema()
        assert _keys(schema["key_schema"]) == _keys(table["KeySchema"]), model.__name__
        declared = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        for index in schema["global_secondary_indexes"]:
            assert index["index_name"] in declared, f"{model.__name__}: no index {index['index_name']}"
            assert _keys(index["key_schema"]) == _keys(declared[index["index_name"]]["KeySchema"])


def _keys(key_schema: list[dict[str, str]]) -> dict[str, str]:
    return {k["KeyType"]: k["AttributeName"] for k in key_schema}


# -- the code's event sources ↔ the template's -------------------------------------------------------------------------
def test_every_queue_placeholder_of_the_code_names_a_queue_of_the_template(merged):
    queues = finishing.named_resources(merged["Resources"], "AWS::SQS::Queue", "QueueName")
    placeholders = _placeholders("_QUEUE")
    assert placeholders, "no queue placeholder found in chalicelib.events"
    for where, name in placeholders.items():
        assert finishing.placeholder_suffix(name) in queues, where


def test_every_stream_placeholder_of_the_code_names_a_streaming_table(aws, merged):
    tables = finishing.named_resources(merged["Resources"], "AWS::DynamoDB::Table", "TableName")
    placeholders = _placeholders("_STREAM_ARN")
    assert placeholders, "no stream placeholder found in chalicelib.events"
    for where, arn in placeholders.items():
        suffix = finishing.placeholder_suffix(arn.split(":table/", 1)[1].split("/", 1)[0])
        assert suffix in tables, where
        assert "StreamSpecification" in merged["Resources"][tables[suffix]]["Properties"], where
    from infra.local.poller import app_wiring

    dynamodb = boto3.client("dynamodb")
    streams = {
        dynamodb.describe_table(TableName=aws[_env_name(f)])["Table"].get("LatestStreamArn")
        for f in RESOURCE_FIELDS
        if f.endswith("_table")
    }
    for variable in app_wiring().streams:  # what the local poller reads: the same streams
        assert aws.get(variable) in streams, variable


def test_queues_fit_their_consumers(merged):
    from chalicelib.services.notify import LEASE_SECONDS, NOTIFY_MAX_ATTEMPTS

    resources = merged["Resources"]
    for spec in iam.FUNCTIONS.values():
        for queue in spec.access.consumes:
            visibility = resources[queue]["Properties"]["VisibilityTimeout"]
            assert visibility >= 6 * spec.timeout, f"{queue}: visibility below six times {spec.name}'s timeout"
    notify = resources["NotifyQueue"]["Properties"]
    assert notify["RedrivePolicy"]["maxReceiveCount"] == NOTIFY_MAX_ATTEMPTS
    assert notify["VisibilityTimeout"] > LEASE_SECONDS
    national = resources["NationalQueue"]["Properties"]
    # The attempt budget is counted per result (NationalDelivery); the receive limit is only for copies that never
    # get to post (crashes, timeouts), so duplicates and "another copy is delivering" receives never reach it.
    assert national["RedrivePolicy"]["maxReceiveCount"] >= 3 * Settings.national_max_attempts


# -- the code's metrics ↔ the decryption alarm (issue 11, item 12) ---------------------------------------------------
class _RecordingMetrics:
    """Stands for ``bootstrap.metrics()``: the names the code counts."""

    def __init__(self) -> None:
        self.counted: set[str] = set()

    def count(self, name: str, value: float = 1) -> None:
        self.counted.add(name)

    def latency(self, name: str, seconds: float) -> None:
        self.counted.add(name)

    def flush(self) -> None:
        pass


def _alarm_excess(alarm: dict[str, Any], parameters: dict[str, Any], **values: float) -> float:
    """The alarm's expression evaluated on ``values`` (one number per metric id), parameters at their defaults."""
    import re

    (expression,) = [m["Expression"]["Fn::Sub"] for m in alarm["Metrics"] if "Expression" in m]
    for name, parameter in parameters.items():
        expression = expression.replace(f"${{{name}}}", str(parameter["Default"]))
    expression = re.sub(r"FILL\((\w+), 0\)", r"\1", expression)
    assert re.fullmatch(r"[\w\s.*+()-]+", expression), expression
    return float(eval(expression, {"__builtins__": {}}, values))  # the template's own arithmetic, checked above


def test_the_decryption_alarm_compares_metrics_the_code_emits(aws, merged, client, pharmacy):
    from chalicelib import bootstrap
    from chalicelib.adapters.metrics import EmfMetrics
    from tests.integration.helpers import distinctive_body, post_result

    recorder = _RecordingMetrics()
    bootstrap.override(metrics=recorder)
    response = post_result(client, pharmacy, distinctive_body())
    assert response.status_code == 201
    bootstrap.vault().open(bootstrap.store().get_result(response.json_body["id"]))  # as every reader does

    alarm = merged["Resources"]["DecryptionSpikeAlarm"]["Properties"]
    watched = {m["Id"]: m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert {i: m["MetricName"] for i, m in watched.items()} == {
        "decrypted": "ResultDecrypted",
        "accepted": "ResultAccepted",
    }
    assert {m["MetricName"] for m in watched.values()} <= recorder.counted
    emf = EmfMetrics()._metrics  # the namespace and dimension the code's embedded metrics carry
    for metric in watched.values():
        assert metric["Namespace"] == emf.namespace
        assert metric["Dimensions"] == [{"Name": "service", "Value": emf.service}]
    assert alarm["AlarmActions"] == [{"Ref": "OperatorTopic"}]
    assert "docs/operations.md#decryption-spike" in alarm["AlarmDescription"]


def test_the_decryption_alarm_fires_past_the_multiple_of_accepted_results(merged):
    alarm = merged["Resources"]["DecryptionSpikeAlarm"]["Properties"]
    parameters = {k: v for k, v in merged["Parameters"].items() if k.startswith("Decryption")}
    ratio, allowance = (
        parameters[k]["Default"] for k in ("DecryptionsPerAcceptedResult", "DecryptionAllowancePerHour")
    )
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert _alarm_excess(alarm, parameters, decrypted=ratio * 1000 + allowance, accepted=1000) == 0  # at the limit
    assert _alarm_excess(alarm, parameters, decrypted=ratio * 1000 + allowance + 1, accepted=1000) > 0
    assert _alarm_excess(alarm, parameters, decrypted=allowance + 1, accepted=0) > 0  # a night with nothing accepted


# -- the code's routes ↔ the WAF's per-address rules (issue 11, item 5) ---------------------------------------------
def _waf_rule_matches(rule: dict[str, Any], path: str) -> bool:
    """Whether the rule's scope-down covers ``path``, its text transformations applied in order as WAF does."""
    import re
    from urllib.parse import unquote

    match = rule["Statement"]["RateBasedStatement"]["ScopeDownStatement"]["RegexMatchStatement"]
    transform = {"URL_DECODE": unquote, "LOWERCASE": str.lower, "NONE": str}
    for step in sorted(match["TextTransformations"], key=lambda t: t["Priority"]):
        path = transform[step["Type"]](path)
    return re.search(match["RegexString"], path) is not None


def _routes(prefix: str) -> list[tuple[str, str]]:
    from app import app
    from chalicelib.routes.methods import VIEW_PREFIX

    return [
        ("/api" + path.replace("{result_id}", "r" * 22), method)
        for path, methods in app.routes.items()
        for method in methods
        if path.startswith(prefix) and not methods[method].view_name.startswith(VIEW_PREFIX)
    ]


#: Each per-address WAF rule, the code's routes it must cover, and ways of writing them that must not escape it.
WAF_RULE_ROUTES = [
    ("pharmacy-rate-limit", ("/v1/results",), ["/api/V1/Results", "/api/v1/%72esults/x", "/API/v1%2Fresults"]),
    (
        "patient-rate-limit",
        ("/r", "/v1/patient/"),
        ["/api/R", "/api/%72", "/api/V1/PATIENT/result", "/api/v1%2fpatient/"],
    ),
]


@pytest.mark.parametrize(("rule_name", "prefixes", "disguised"), WAF_RULE_ROUTES)
def test_each_per_address_rule_covers_its_routes_however_their_path_is_written(merged, rule_name, prefixes, disguised):
    rules = {r["Name"]: r for r in merged["Resources"]["WebAcl"]["Properties"]["Rules"]}
    rule = rules[rule_name]
    assert rule["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    covered = [route for prefix in prefixes for route in _routes(prefix)]
    assert covered, f"no route of the code under {prefixes}"
    for path, method in covered:
        assert _waf_rule_matches(rule, path), (method, path)
    for path in disguised:
        assert _waf_rule_matches(rule, path), path
    other_prefixes = ("/v1/health", *(p for _, ps, _ in WAF_RULE_ROUTES if ps != prefixes for p in ps))
    for path, _method in (route for prefix in other_prefixes for route in _routes(prefix)):
        assert not _waf_rule_matches(rule, path), path


def test_the_patient_page_throttles_name_the_codes_page_routes():
    page_routes = {path.removeprefix("/api") for path, method in _routes("/r") if method == "GET"}
    assert set(finishing.PATIENT_PAGE_PATHS) == page_routes
