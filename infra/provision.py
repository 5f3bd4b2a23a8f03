"""Create the Relais resources of ``infra/resources.json`` through CloudFormation.

The local stack (moto server) and the integration tests (moto in-process) provision with this,
from the very template production deploys, and read the settings from the stack's outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).with_name("resources.json")

#: Stack output → ``RELAIS_*`` environment variable read by ``chalicelib.config``.
OUTPUT_ENV = {
    "KmsKeyArn": "RELAIS_KMS_KEY_ARN",
    "RegistryTable": "RELAIS_REGISTRY_TABLE",
    "ResultsTable": "RELAIS_RESULTS_TABLE",
    "StateTable": "RELAIS_STATE_TABLE",
    "AuditTable": "RELAIS_AUDIT_TABLE",
    "NationalQueueUrl": "RELAIS_NATIONAL_QUEUE_URL",
    "NationalDeadLetterQueueUrl": "RELAIS_NATIONAL_DLQ_URL",
    "NotifyQueueUrl": "RELAIS_NOTIFY_QUEUE_URL",
    "NotifyDeadLetterQueueUrl": "RELAIS_NOTIFY_DLQ_URL",
    "ResultsStreamArn": "RELAIS_RESULTS_STREAM_ARN",
    "AuditStreamArn": "RELAIS_AUDIT_STREAM_ARN",
    "AuditChainTable": "RELAIS_AUDIT_CHAIN_TABLE",
}


def stack_name(stage: str) -> str:
    return f"relais-{stage}"


def load_template() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return result


def provision(cloudformation: Any, stage: str) -> dict[str, str]:
    """Create (or find) the stage's stack and return its outputs as ``RELAIS_*`` variables."""
    name = stack_name(stage)
    try:
        cloudformation.describe_stacks(StackName=name)
    except cloudformation.exceptions.ClientError:
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": "Stage", "ParameterValue": stage}],
        )
        cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    return stack_settings(cloudformation, stage)


def stack_settings(cloudformation: Any, stage: str) -> dict[str, str]:
    """The stage's settings from its stack outputs (also how the CLI finds a deployed stage)."""
    stack = cloudformation.describe_stacks(StackName=stack_name(stage))["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    env = {OUTPUT_ENV[k]: v for k, v in outputs.items() if k in OUTPUT_ENV}
    env["RELAIS_STAGE"] = stage
    return env
