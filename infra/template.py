"""Finish the template ``chalice package`` makes into the deployable one (pure: no I/O, no AWS).

:func:`merge_template` is what Chalice merges in (``--merge-template``): ``infra/resources.json``, the resources the
local stack also provisions in moto, plus ``infra/prod.json``, those only AWS has. :func:`finalize` then, for every
function Chalice generated:

- wires its event source to the template's queue or stream in place of the code's placeholder
  (``relais-national`` → ``relais-${Stage}-national``…), with partial batch responses and bounded concurrency;
- sets its ``RELAIS_*`` environment from the template's outputs and parameters, its timeout, memory and reserved
  concurrency;
- replaces Chalice's role policy with the least-privilege one of ``infra/iam.py``;
- gives it a log group of its own, encrypted with the stage's key, kept 90 days, with metric filters (KMS errors,
  unexpected errors; on the API: authentication failures and patient 404s) and a Lambda error alarm;

and configures the API stage (throttling, access logs). Each accepted checkov finding is attached to the resources
it concerns, from :data:`CHECKOV_SKIPS` (justified in ``infra/iac-skips.md``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from chalicelib.config import Settings
from infra.dashboard import operator_resources
from infra.iam import FUNCTIONS, FunctionSpec, function_policy, log_group_id

INFRA = Path(__file__).resolve().parent

#: The code names its queues ``relais-<x>`` and the stream of table ``relais-<x>`` (``chalicelib/events``); the
#: template's resources are named ``relais-${Stage}-<x>``.
PLACEHOLDER_PREFIX = "relais-"

#: Template outputs that are settings of the functions but not of the local stack (``infra.provision.OUTPUT_ENV``).
PROD_OUTPUT_ENV = {"SesConfigurationSet": "RELAIS_SES_CONFIGURATION_SET"}

#: Template parameters (``infra/prod.json``) → ``RELAIS_*`` settings: the deployment's own values, not resources.
PARAMETER_ENV = {
    "Stage": "RELAIS_STAGE",
    "PublicBaseUrl": "RELAIS_PUBLIC_BASE_URL",
    "AllowedAuthorities": "RELAIS_ALLOWED_AUTHORITIES",
    "NationalUrl": "RELAIS_NATIONAL_URL",
    "NationalTokenParameter": "RELAIS_NATIONAL_TOKEN_PARAMETER",
    "NationalClientCertSecretArn": "RELAIS_NATIONAL_CLIENT_CERT_SECRET",
    "EmailSender": "RELAIS_EMAIL_SENDER",
    "SmsSenderId": "RELAIS_SMS_SENDER_ID",
}

#: API Gateway stage throttling (requests per second, burst): every method; result intake, sized for the national peak
#: (26/s on average on 10 Jan 2022, bursts of several hundred per second; the API function's 100 reserved instances
#: serve ~2,000/s at ~50 ms each).
API_THROTTLE = (100, 200)
INTAKE_THROTTLE = (500, 1000)

#: The patient side, sized for the same peak (docs/capacity.md): patients open their link as the message arrives, so
#: look-ups follow the account's message rate (400 SMS + 100 e-mails a second at the burst, the defaults of
#: chalicelib/config.py), with a mistyped birth date now and then (x 1.2). Each look-up loads the page and its two
#: assets (GET, one bucket each) and posts once. These buckets are shared by everyone: the per-address limits are the
#: WAF's (prod.json) and the application's (failures per address), so that a few addresses cannot exhaust them.
PEAK_MESSAGES_PER_SECOND = Settings.sms_per_second + Settings.email_per_second
PATIENT_THROTTLE = (round(1.2 * PEAK_MESSAGES_PER_SECOND), round(2.4 * PEAK_MESSAGES_PER_SECOND))
PATIENT_PAGE_PATHS = ("/r", "/r/result.css", "/r/result.js")
#: The API's binary media types: every type, so that the gateway returns the slip's PDF whatever ``Accept`` lists
#: first (API Gateway looks at the first type only). ``infra/local/api.py`` hands bodies over as this makes it do.
GATEWAY_BINARY_MEDIA_TYPES = ("*/*",)

#: What API Gateway answers by itself, as the problem documents Relais answers with (no stack text, no echo):
#: an unknown path (MISSING_AUTHENTICATION_TOKEN, which is also an undeclared method: every path declares all of
#: them, see chalicelib/routes/methods.py), throttling, a WAF block, and anything else it refuses or fails.
_RETRY_IS_SAFE = "submitting the same result again (same pharmacy_reference, new signature) is safe"
GATEWAY_PROBLEMS: dict[str, tuple[int | None, dict[str, str], dict[str, Any] | None]] = {
    "MISSING_AUTHENTICATION_TOKEN": (404, {}, None),
    "RESOURCE_NOT_FOUND": (404, {}, None),
    "THROTTLED": (429, {"Retry-After": "1"}, None),
    "QUOTA_EXCEEDED": (429, {"Retry-After": "60"}, None),
    "WAF_FILTERED": (403, {}, None),
    "REQUEST_TOO_LARGE": (413, {}, None),
    "UNSUPPORTED_MEDIA_TYPE": (415, {}, None),
    # The function may have committed before the gateway gave up: the outcome is unknown, not "nothing accepted".
    "INTEGRATION_TIMEOUT": (
        504,
        {"Retry-After": "5"},
        {"type": "urn:relais:problem:timeout", "title": f"No answer in time: the outcome is unknown; {_RETRY_IS_SAFE}"},
    ),
    # Status kept as the gateway has it (none of these is expected: no authorizer, no validator, one integration).
    "DEFAULT_4XX": (None, {}, {"type": "urn:relais:problem:refused", "title": "The request was refused"}),
    "DEFAULT_5XX": (
        None,
        {"Retry-After": "5"},
        {"type": "urn:relais:problem:gateway-error", "title": f"The service could not answer; {_RETRY_IS_SAFE}"},
    ),
}

#: Retention of the functions' log groups (the audit log group, in resources.json, keeps 365 days).
LOG_RETENTION_DAYS = 90

#: Metric filters (namespace Relais) on every function's log group; their alarms are in prod.json.
EVERY_FUNCTION_FILTERS = {
    "KmsErrors": ('"DependencyUnavailableError" "kms"', "KmsUnavailable"),
    "UnexpectedErrors": ('{ $.message = "unexpected error" }', "UnexpectedErrors"),
}
#: Metric filters on the API's log group: the lines of routes/problems.py and routes/middleware.py.
API_FILTERS = {
    "AuthFailures": (
        '{ ($.message = "request refused") && ($.error = "AuthenticationError") }',
        "AuthenticationFailures",
    ),
    "PatientNotFound": (
        '{ ($.message = "request") && ($.route = "/v1/patient/result") && ($.status = 404) }',
        "PatientNotFound",
    ),
}

#: Accepted checkov findings, attached to the resources they concern; each is justified in infra/iac-skips.md.
CHECKOV_SKIPS: dict[str, str] = {
    "CKV_AWS_116": "No async invocation to dead-letter: API is synchronous, SQS sources have their own DLQs, "
    "stream sources retry until processed, the schedule runs again in 5 minutes",
    "CKV_AWS_117": "No VPC: the functions call public AWS endpoints and the national system over TLS; "
    "a VPC would add NAT cost and cold starts without protecting any data path",
    "CKV_AWS_173": "Environment holds resource names and URLs only (no secret); Lambda encrypts it at rest; "
    "secrets live in SSM SecureString / Secrets Manager",
    "CKV_AWS_111": "sns:Publish on * is the only way to authorise SMS to a phone number; "
    "a Deny on every SNS ARN in the same policy removes topics and endpoints",
    "CKV_AWS_73": "No X-Ray: traces would copy client IPs and URLs to a store outside the stage's key; "
    "access logs and metrics cover",
    "CKV_AWS_120": "No API cache: responses carry personal data and are Cache-Control no-store",
}


class PackagingError(RuntimeError):
    """The template cannot be completed as declared."""


def merge_template(stage: str, sources: Sequence[Path] | None = None) -> dict[str, Any]:
    """``resources.json`` + ``prod.json`` as one template to merge into Chalice's; Stage defaults to ``stage``."""
    paths = sources if sources is not None else [INFRA / "resources.json", INFRA / "prod.json"]
    merged: dict[str, Any] = {}
    for path in paths:
        for section, value in json.loads(path.read_text()).items():
            if not isinstance(value, dict):
                continue  # format version and descriptions: chalice's template has its own
            target = merged.setdefault(section, {})
            clash = sorted(set(target) & set(value))
            if clash:
                raise PackagingError(f"{path.name} redefines {section}: {', '.join(clash)}")
            target.update(value)
    merged["Parameters"]["Stage"]["Default"] = stage
    return merged


def named_resources(resources: Mapping[str, Any], rtype: str, name_property: str) -> dict[str, str]:
    """``{"<x>": logical id}`` of the resources of type ``rtype`` named ``relais-${Stage}-<x>``."""
    found = {}
    prefix = PLACEHOLDER_PREFIX + "${Stage}-"
    for logical_id, resource in resources.items():
        name = resource.get("Properties", {}).get(name_property) if resource.get("Type") == rtype else None
        if isinstance(name, dict) and isinstance(name.get("Fn::Sub"), str) and name["Fn::Sub"].startswith(prefix):
            found[name["Fn::Sub"][len(prefix) :]] = logical_id
    return found


def placeholder_suffix(name: str) -> str:
    """``relais-national`` → ``national``: the part of a code placeholder that names a template resource."""
    if not name.startswith(PLACEHOLDER_PREFIX):
        raise PackagingError(f"event source {name!r} does not name a Relais resource")
    return name[len(PLACEHOLDER_PREFIX) :]


def settings_env(template: Mapping[str, Any]) -> dict[str, Any]:
    """The ``RELAIS_*`` environment of every function: each setting of ``chalicelib.config.Settings`` the template
    provides, from its outputs (resources) and parameters (deployment values)."""
    from infra.provision import OUTPUT_ENV

    wanted = {"RELAIS_" + f.name.upper() for f in fields(Settings)}
    env: dict[str, Any] = {"RELAIS_REGION": {"Ref": "AWS::Region"}}
    for output, variable in {**OUTPUT_ENV, **PROD_OUTPUT_ENV}.items():
        if variable in wanted and output in template.get("Outputs", {}):
            env[variable] = copy.deepcopy(template["Outputs"][output]["Value"])
    for parameter, variable in PARAMETER_ENV.items():
        if variable in wanted and parameter in template.get("Parameters", {}):
            env[variable] = {"Ref": parameter}
    return env


def _sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def _skip(resource: dict[str, Any], *check_ids: str) -> None:
    skips = resource.setdefault("Metadata", {}).setdefault("checkov", {}).setdefault("skip", [])
    skips.extend({"id": check_id, "comment": CHECKOV_SKIPS[check_id]} for check_id in check_ids)


def _metric_filter(log_group: str, pattern: str, metric: str) -> dict[str, Any]:
    transformation = {"MetricNamespace": "Relais", "MetricName": metric, "MetricValue": "1", "DefaultValue": 0}
    props = {"LogGroupName": {"Ref": log_group}, "FilterPattern": pattern, "MetricTransformations": [transformation]}
    return {"Type": "AWS::Logs::MetricFilter", "Properties": props}


def _lambda_alarm(name: str, description: str, metric: str, function: str, **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "AlarmName": _sub(f"relais-${{Stage}}-{name}"),
        "AlarmDescription": description,
        "Namespace": "AWS/Lambda",
        "MetricName": metric,
        "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
        "Statistic": "Sum",
        "Period": 300,
        "EvaluationPeriods": 1,
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": [{"Ref": "OperatorTopic"}],
        **overrides,
    }
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def _wire_events(function: dict[str, Any], resources: Mapping[str, Any], spec: FunctionSpec) -> None:
    queues = named_resources(resources, "AWS::SQS::Queue", "QueueName")
    tables = named_resources(resources, "AWS::DynamoDB::Table", "TableName")
    for event in function["Properties"].get("Events", {}).values():
        props = event["Properties"]
        if event["Type"] == "SQS":
            placeholder = str(props["Queue"].get("Fn::Sub", "") if isinstance(props["Queue"], dict) else props["Queue"])
            suffix = placeholder_suffix(placeholder.rsplit(":", 1)[-1])
            if queues.get(suffix) not in spec.access.consumes:
                raise PackagingError(f"{spec.name} reads queue {placeholder!r}: not in its Access.consumes")
            props["Queue"] = {"Fn::GetAtt": [queues[suffix], "Arn"]}
            props["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
            if spec.max_concurrency:
                props["ScalingConfig"] = {"MaximumConcurrency": spec.max_concurrency}
        elif event["Type"] == "DynamoDB":
            table_name = str(props["Stream"]).split(":table/", 1)[-1].split("/", 1)[0]
            suffix = placeholder_suffix(table_name)
            if tables.get(suffix) is None or tables[suffix] != spec.access.stream_of:
                raise PackagingError(f"{spec.name} reads the stream of {table_name!r}: not its Access.stream_of")
            props["Stream"] = {"Fn::GetAtt": [tables[suffix], "StreamArn"]}
            props["StartingPosition"] = "TRIM_HORIZON"  # records written before the mapping existed are read too
        elif event["Type"] != "Schedule":
            raise PackagingError(f"{spec.name}: event source type {event['Type']} is not handled by infra/template.py")


def _configure_api(api: dict[str, Any]) -> None:
    props = api["Properties"]

    def throttle(path: str, method: str, rate_burst: tuple[int, int]) -> dict[str, Any]:
        rate, burst = rate_burst
        return {"ResourcePath": path, "HttpMethod": method, "ThrottlingRateLimit": rate, "ThrottlingBurstLimit": burst,
                "MetricsEnabled": True, "DataTraceEnabled": False}  # fmt: skip

    props["MethodSettings"] = [
        throttle("/*", "*", API_THROTTLE),
        throttle("/~1v1~1results", "POST", INTAKE_THROTTLE),  # "/" is "~1" in a method setting's path
        throttle("/~1v1~1patient~1result", "POST", PATIENT_THROTTLE),
        *(throttle("/" + path.replace("/", "~1"), "GET", PATIENT_THROTTLE) for path in PATIENT_PAGE_PATHS),
    ]
    props["DefinitionBody"]["x-amazon-apigateway-gateway-responses"] = gateway_responses()
    # Every type binary: API Gateway decides from the first ``Accept`` type whether to return a base64-encoded answer
    # (the slip's PDF) as bytes, and pharmacy software sends ``*/*`` or several types. Answers the function does not
    # encode (JSON, HTML) are returned as text; request bodies reach the function base64-encoded (Chalice decodes).
    props["DefinitionBody"]["x-amazon-apigateway-binary-media-types"] = list(GATEWAY_BINARY_MEDIA_TYPES)
    access_log = {
        "requestId": "$context.requestId",
        "time": "$context.requestTime",
        "method": "$context.httpMethod",
        "resource": "$context.resourcePath",
        "status": "$context.status",
        "latencyMs": "$context.responseLatency",
        "wafStatus": "$context.waf.status",
        "ip": "$context.identity.sourceIp",  # security log: docs/data-lifecycle.md (90 days)
    }
    destination = {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    props["AccessLogSetting"] = {"DestinationArn": destination, "Format": json.dumps(access_log, separators=(",", ":"))}
    props["TracingEnabled"] = False
    _skip(api, "CKV_AWS_73", "CKV_AWS_120")


def gateway_responses() -> dict[str, Any]:
    """API Gateway's own answers (``GATEWAY_PROBLEMS``) as Relais problem documents, headers included."""
    from chalicelib.routes.patient import PATIENT_HEADERS
    from chalicelib.routes.problems import problem

    # A gateway header value is a quoted literal and cannot hold a quote: the CSP is left out (the body is JSON).
    security = {name: value for name, value in PATIENT_HEADERS.items() if "'" not in value}
    responses: dict[str, Any] = {}
    for response_type, (status, extra, own_body) in GATEWAY_PROBLEMS.items():
        answer = problem(status or 500, headers=extra)
        body = json.loads(answer.body) if own_body is None else own_body | ({"status": status} if status else {})
        headers = {**answer.headers, **security}
        responses[response_type] = {
            "responseParameters": {f"gatewayresponse.header.{k}": f"'{v}'" for k, v in sorted(headers.items())},
            "responseTemplates": {"application/json": json.dumps(body)},
        } | ({"statusCode": str(status)} if status else {})
    return responses


def _finish_function(resources: dict[str, Any], logical_id: str, env: Mapping[str, Any]) -> None:
    function = resources[logical_id]
    props = function["Properties"]
    handler = props["Handler"]
    spec = FUNCTIONS[handler]
    role_id = props["Role"]["Fn::GetAtt"][0] if isinstance(props.get("Role"), dict) else None
    if role_id is None or resources.get(role_id, {}).get("Type") != "AWS::IAM::Role":
        raise PackagingError(f"{logical_id} has no role of its own in chalice's template")
    log_group = log_group_id(handler)
    resources[log_group] = {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {
            "LogGroupName": _sub(f"/relais/${{Stage}}/{spec.name}"),
            "RetentionInDays": LOG_RETENTION_DAYS,
            "KmsKeyId": {"Fn::GetAtt": ["DataKey", "Arn"]},
        },
    }
    trust = {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    resources[role_id] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": _sub(f"Relais ${{Stage}} {spec.name} function: least privilege (infra/iam.py)"),
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [trust]},
            "Policies": [{"PolicyName": f"relais-{spec.name}", "PolicyDocument": function_policy(spec, log_group)}],
        },
    }
    if spec.access.sms:
        _skip(resources[role_id], "CKV_AWS_111")
    variables = {**props.get("Environment", {}).get("Variables", {}), **env}
    variables["RELAIS_FUNCTION_TIMEOUT_SECONDS"] = str(spec.timeout)  # its AWS clients' timeouts fit in it
    props["Environment"] = {"Variables": variables}
    props.update(
        Timeout=spec.timeout,
        MemorySize=spec.memory,
        ReservedConcurrentExecutions=spec.reserved_concurrency,
        LoggingConfig={"LogGroup": {"Ref": log_group}},
    )
    _skip(function, "CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173")
    _wire_events(function, resources, spec)

    base = log_group.removesuffix("LogGroup")
    filters = {**EVERY_FUNCTION_FILTERS, **(API_FILTERS if handler == "app.app" else {})}
    for suffix, (pattern, metric) in filters.items():
        resources[f"{base}{suffix}Filter"] = _metric_filter(log_group, pattern, metric)
    resources[f"{base}ErrorsAlarm"] = _lambda_alarm(
        f"{spec.name}-errors",
        f"The {spec.name} function failed (Lambda Errors > 0). Runbook: docs/operations.md#function-errors",
        "Errors",
        logical_id,
    )
    if spec.access.stream_of:
        resources[f"{base}IteratorAgeAlarm"] = _lambda_alarm(
            f"{spec.name}-behind",
            f"The {spec.name} function is more than 5 minutes behind its stream. "
            "Runbook: docs/operations.md#stream-behind",
            "IteratorAge",
            logical_id,
            Statistic="Maximum",
            Threshold=300_000,
        )


def finalize(template: Mapping[str, Any]) -> dict[str, Any]:
    """The deployable template from the one ``chalice package`` wrote with :func:`merge_template` merged in."""
    out = copy.deepcopy(dict(template))
    resources: dict[str, Any] = out["Resources"]
    functions = sorted(k for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function")
    unknown = sorted({resources[f]["Properties"]["Handler"] for f in functions} - set(FUNCTIONS))
    if unknown:
        raise PackagingError("functions without an entry in infra/iam.py FUNCTIONS: " + ", ".join(unknown))
    env = settings_env(out)
    for logical_id in functions:
        _finish_function(resources, logical_id, env)
    for api in [v for v in resources.values() if v["Type"] == "AWS::Serverless::Api"]:
        _configure_api(api)
    resources.update(operator_resources())  # the dashboard and saved queries of docs/operations.md
    _check_no_placeholder(out)
    return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


#: What chalice's template holds before finishing and must not hold after (see infra/package.py's staging).
PLACEHOLDER_POLICY_ACTION = "logs:CreateLogGroup"


def _check_no_placeholder(template: Mapping[str, Any]) -> None:
    for text in _strings(template["Resources"]):
        if text.endswith("/stream/packaged") or text == PLACEHOLDER_POLICY_ACTION:
            raise PackagingError(f"a placeholder survived packaging: {text}")
