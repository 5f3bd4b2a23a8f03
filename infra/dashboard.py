"""What operators watch in CloudWatch: one dashboard of the runbook's figures and its saved Logs Insights queries.

Both are added to the template by :func:`infra.template.finalize` and linked from ``docs/operations.md``
("Where to look"). The queries read the lines the code writes (opaque ids, codes and counts only):

* ``"request"`` (``routes/middleware.py``): ``route``, ``status``, ``duration_ms``, and ``pharmacy_id`` once
  authenticated, ``result_id`` once the result is the caller's (``observability.REQUEST_KEYS``);
* ``"request refused"`` (``routes/problems.py``): ``error``, ``reason``;
* ``"<worker> message"`` (``events/batch.py``): ``result_id``, ``outcome``;
* ``"dead letter"`` (``adapters/queues.py``): ``result_id``, ``reason``, ``attempts``, ``queue``.
"""

from __future__ import annotations

import json
from typing import Any

from infra.iam import FUNCTIONS, log_group_id

#: The dashboard's name: ``relais-<stage>``.
DASHBOARD_NAME = "relais-${Stage}"

#: Saved queries: name (after ``relais-<stage>/``) → (log groups by function name, query). ``RESULT_ID`` and
#: ``PHARMACY_ID`` are for the operator to replace.
QUERIES: dict[str, tuple[tuple[str, ...], str]] = {
    "result-journey": (
        ("api", "national", "notify"),
        "fields @timestamp, @log, message, route, status, outcome, reason\n"
        '| filter result_id = "RESULT_ID"\n'
        "| sort @timestamp asc",
    ),
    "refusals-by-reason": (
        ("api",),
        'filter message = "request refused"\n| stats count(*) as refusals by error, reason\n| sort refusals desc',
    ),
    "dead-letters-by-reason": (
        ("national", "notify"),
        'filter message = "dead letter"\n| stats count(*) as letters by queue, reason\n| sort letters desc',
    ),
    "pharmacy-traffic": (
        ("api",),
        'filter message = "request" and pharmacy_id = "PHARMACY_ID"\n'
        "| stats count(*) as requests, pct(duration_ms, 95) as p95_ms by route, status, bin(1h)",
    ),
}


def _log_group_name(function: str) -> str:
    return f"/relais/${{Stage}}/{function}"


def _metric(namespace: str, name: str, *dimensions: str, stat: str = "Sum", label: str | None = None) -> list[Any]:
    return [namespace, name, *dimensions, {"stat": stat, "label": label or name}]


def _widget(title: str, metrics: list[list[Any]], x: int, y: int, *, width: int = 12) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": width,
        "height": 6,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": "timeSeries",
            "period": 300,
            "metrics": metrics,
        },
    }


def dashboard_body() -> dict[str, Any]:
    """The widgets: the figures of the runbook's alarms and of the national peak (docs/operations.md)."""
    service = ("service", "relais")
    dlq = [
        _metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", f"relais-${{Stage}}-{name}-dlq",
                stat="Maximum", label=f"{name} dead letters")
        for name in ("national", "notify")
    ]  # fmt: skip
    widgets = [
        _widget(
            "National delivery",
            [
                _metric("Relais", "NationalReported", *service),
                _metric("Relais", "NationalRetried", *service),
                _metric("Relais", "NationalDeadLettered", *service),
                _metric("Relais", "ResultCorrected", *service),  # each one is delivered again (contract v2 §8)
                _metric("Relais", "ResultWithdrawn", *service),
            ],
            0,
            0,
        ),
        _widget(
            "Accepted → reported (s)",
            [_metric("Relais", "NationalDeliveryLatency", *service, stat="p95", label="p95")],
            12,
            0,
        ),
        _widget("Dead-letter queues", dlq, 0, 6),
        _widget(
            "Refusals and errors",
            [
                _metric("Relais", "AuthenticationFailures"),
                _metric("Relais", "PatientNotFound"),
                _metric("Relais", "KmsUnavailable"),
                _metric("Relais", "UnexpectedErrors"),
            ],
            12,
            6,
        ),
        _widget(
            "API (gateway)",
            [
                _metric("AWS/ApiGateway", "Count", "ApiName", "relais"),
                _metric("AWS/ApiGateway", "4XXError", "ApiName", "relais"),
                _metric("AWS/ApiGateway", "5XXError", "ApiName", "relais"),
            ],
            0,
            12,
        ),
        _widget(
            "SMS",
            [
                _metric("AWS/SNS", "SMSMonthToDateSpentUSD", stat="Maximum", label="spend this month (USD)"),
                _metric("Relais", "SmsBudgetUsedPercent", *service, stat="Maximum", label="budget used (%)"),
            ],
            12,
            12,
        ),
        {
            "type": "text",
            "x": 0,
            "y": 18,
            "width": 24,
            "height": 2,
            "properties": {
                "markdown": "Runbook: docs/operations.md. Saved Logs Insights queries: "
                + ", ".join(f"relais-${{Stage}}/{name}" for name in QUERIES)
            },
        },
    ]
    return {"widgets": widgets}


def operator_resources() -> dict[str, Any]:
    """The dashboard and one ``AWS::Logs::QueryDefinition`` per entry of :data:`QUERIES`."""
    groups = {spec.name: log_group_id(handler) for handler, spec in FUNCTIONS.items()}
    resources: dict[str, Any] = {
        "OperatorsDashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": {"Fn::Sub": DASHBOARD_NAME},
                "DashboardBody": {"Fn::Sub": json.dumps(dashboard_body(), separators=(",", ":"))},
            },
        }
    }
    for name, (functions, query) in QUERIES.items():
        logical_id = "Query" + "".join(part.title() for part in name.split("-"))
        resources[logical_id] = {
            "Type": "AWS::Logs::QueryDefinition",
            "DependsOn": sorted(groups[f] for f in functions),
            "Properties": {
                "Name": {"Fn::Sub": f"relais-${{Stage}}/{name}"},
                "QueryString": query,
                "LogGroupNames": [{"Fn::Sub": _log_group_name(f)} for f in functions],
            },
        }
    return resources
