"""Every IAM policy of the deployable template is least privilege: no wildcard, KMS only under encryption contexts.

Two sources, the same rules: the policies ``infra/iam.py`` generates (pure, milliseconds), and the template
``chalice package`` produces for the real app, finished by ``infra.template.finalize`` (``infra.package.build``
without dependencies: no wheel, no network, about 2 s). ``make iac-check`` then runs cfn-lint and checkov on the
full package.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra import iam
from infra import template as finishing

ROOT = Path(__file__).resolve().parents[2]

#: The only wildcards a policy may hold, each for a documented reason (infra/iac-skips.md):
#: SMS to a phone number has no resource ARN; DynamoDB authorises ListStreams on the table's stream pattern.
ALLOWED_WILDCARDS = {
    ("sns:Publish",): re.compile(r"^\*$"),
    ("dynamodb:ListStreams",): re.compile(r"^arn:\$\{AWS::Partition\}:dynamodb:\$\{AWS::Region\}:\$\{AWS::AccountId\}"
                                          r":table/\$\{[A-Za-z]+\}/stream/\*$"),
}  # fmt: skip

#: What each function may decrypt or encrypt with the key (envelope purposes), by function name.
EXPECTED_PURPOSES = {
    "api": ({"result", "reference-key", "receipt-key"}, {"result", "reference-key", "receipt-key"}),
    "outbox": (set(), set()),
    "national": ({"result"}, set()),
    "reconcile": (set(), set()),
    "notify": ({"result"}, set()),
    "audit-chain": (set(), {"audit-seal"}),
}


@pytest.fixture
def template(packaged_template: dict[str, Any]) -> dict[str, Any]:
    return packaged_template


def _statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The statements of a policy document, both branches of every ``Fn::If``."""
    for statement in document["Statement"]:
        if "Fn::If" in statement:
            _condition, *branches = statement["Fn::If"]
            yield from (b for b in branches if b != {"Ref": "AWS::NoValue"})
        else:
            yield statement


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _literal(resource: Any) -> str | None:
    """The text of a resource that can hold a wildcard: a string, or a ``Fn::Sub`` template."""
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return None  # Ref / Fn::GetAtt of a template resource: one named resource


def policy_problems(document: dict[str, Any]) -> list[str]:
    """Every breach of the rules in one policy document (empty: fine)."""
    problems = []
    statements = list(_statements(document))
    denies_topics = any(
        s["Effect"] == "Deny" and "sns:Publish" in _listed(s["Action"]) and _literal(_listed(s["Resource"])[0])
        for s in statements
    )
    for s in statements:
        sid = s.get("Sid", "?")
        for forbidden in ("NotAction", "NotResource", "NotPrincipal"):
            if forbidden in s:
                problems.append(f"{sid}: {forbidden}")
        if s["Effect"] != "Allow":
            continue
        actions = tuple(sorted(_listed(s["Action"])))
        problems += [f"{sid}: wildcard action {a}" for a in actions if "*" in a]
        for resource in _listed(s["Resource"]):
            text = _literal(resource)
            if text is None or "*" not in text:
                continue
            allowed = ALLOWED_WILDCARDS.get(actions)
            if allowed is None or not allowed.match(text):
                problems.append(f"{sid}: wildcard resource {text}")
            elif actions == ("sns:Publish",) and not denies_topics:
                problems.append(f"{sid}: sns:Publish on * without the deny on topics")
        if any(a.startswith("kms:") for a in actions):
            problems += _kms_problems(sid, actions, s)
    return problems


def _kms_problems(sid: str, actions: tuple[str, ...], s: dict[str, Any]) -> list[str]:
    problems = []
    if not set(actions) <= {"kms:Decrypt", "kms:GenerateDataKey"}:
        problems.append(f"{sid}: KMS actions beyond Decrypt/GenerateDataKey: {actions}")
    if _listed(s["Resource"]) != [{"Fn::GetAtt": ["DataKey", "Arn"]}]:
        problems.append(f"{sid}: KMS on something else than the stage's key")
    equals = s.get("Condition", {}).get("StringEquals", {})
    contexts = [k for k in equals if k.startswith("kms:EncryptionContext:")]
    if not contexts:
        problems.append(f"{sid}: KMS without an encryption-context condition")
    elif "kms:ViaService" not in equals and {c.rsplit(":", 1)[-1] for c in contexts} != {"purpose", "stage"}:
        problems.append(f"{sid}: envelope KMS access must be bound to both purpose and stage")
    return problems


def _purposes(document: dict[str, Any]) -> tuple[set[str], set[str]]:
    decrypts: set[str] = set()
    encrypts: set[str] = set()
    for s in _statements(document):
        equals = s.get("Condition", {}).get("StringEquals", {})
        purposes = set(_listed(equals.get("kms:EncryptionContext:purpose", [])))
        if "kms:Decrypt" in _listed(s["Action"]):
            decrypts |= purposes
        if "kms:GenerateDataKey" in _listed(s["Action"]):
            encrypts |= purposes
    return decrypts, encrypts


def _template_policies(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield logical_id, policy["PolicyDocument"]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield logical_id, props["PolicyDocument"]


# -- the rules themselves ----------------------------------------------------------------------------------------
def test_the_rules_catch_wildcards_and_unbound_kms_access():
    bad = {
        "Statement": [
            {"Sid": "a", "Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["T", "Arn"]}},
            {"Sid": "b", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"},
            {"Sid": "c", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Fn::GetAtt": ["DataKey", "Arn"]}},
            {
                "Sid": "d",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": {"Fn::GetAtt": ["DataKey", "Arn"]},
                "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "result"}},
            },
            {"Sid": "e", "Effect": "Allow", "Action": "sns:Publish", "Resource": "*"},
            {"Sid": "f", "Effect": "Allow", "NotAction": "iam:*", "Action": [], "Resource": []},
            {"Sid": "g", "Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "arn:aws:s3:::b/*"}},
        ]
    }
    problems = " | ".join(policy_problems(bad))
    for expected in (
        "a: wildcard action",
        "b: wildcard resource",
        "c: KMS without an encryption-context",
        "d: envelope KMS access must be bound to both",
        "e: sns:Publish on * without the deny",
        "f: NotAction",
        "g: wildcard resource",
    ):
        assert expected in problems


# -- the generated policies ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("handler", sorted(iam.FUNCTIONS))
def test_each_function_policy_has_no_wildcard_and_binds_kms_to_an_encryption_context(handler):
    assert policy_problems(iam.all_policies()[handler]) == []


@pytest.mark.parametrize("handler", sorted(iam.FUNCTIONS))
def test_each_function_may_use_the_key_only_for_the_purposes_it_needs(handler):
    spec = iam.FUNCTIONS[handler]
    assert _purposes(iam.all_policies()[handler]) == EXPECTED_PURPOSES[spec.name]


def test_every_envelope_purpose_the_code_uses_is_granted_to_some_function():
    from chalicelib.adapters.audit_chain import SEAL_CONTEXT
    from chalicelib.adapters.receipt_keys import PURPOSE as RECEIPT_KEY_PURPOSE
    from chalicelib.adapters.reference_key import PURPOSE as REFERENCE_KEY_PURPOSE
    from chalicelib.services.vault import RESULT_PURPOSE

    granted = set().union(*(d | e for d, e in map(_purposes, iam.all_policies().values())))
    assert {RESULT_PURPOSE, SEAL_CONTEXT["purpose"], REFERENCE_KEY_PURPOSE, RECEIPT_KEY_PURPOSE} <= granted


def test_the_api_updates_audit_items_under_actor_partitions_only():
    """The minute's aggregate of failed authentications is counted in place; a result's audit events stay
    write-once for the API (its plain statement on the table has PutItem alone)."""
    from chalicelib.adapters.audit import _audit_subject
    from chalicelib.domain.records import AuditEvent

    statements = {s["Sid"]: s for s in iam.all_policies()["app.app"]["Statement"]}
    assert statements["TableAuditTable"]["Action"] == ["dynamodb:PutItem"]
    on_keys = statements["TableAuditTableUpdateItemOnKeys"]
    assert on_keys["Action"] == ["dynamodb:UpdateItem"]
    assert on_keys["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["actor#*"]}}
    at = datetime.now(UTC)
    anonymous = AuditEvent(actor="anonymous", action="auth.failure", outcome="denied", at=at, event_id="e1")
    claimed = AuditEvent(actor="key:key_x", action="auth.failure", outcome="denied", at=at, event_id="e2")
    assert all(_audit_subject(e).startswith("actor#") for e in (anonymous, claimed))  # the aggregates' partitions


# -- the packaged template ----------------------------------------------------------------------------------------
def test_every_policy_of_the_packaged_template_is_least_privilege(template):
    policies = list(_template_policies(template))
    assert policies, "no IAM policy found in the template"
    problems = [f"{logical_id}: {p}" for logical_id, doc in policies for p in policy_problems(doc)]
    assert problems == []


def test_each_function_has_a_role_of_its_own_and_no_inline_policy(template):
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert {f["Properties"]["Handler"] for f in functions.values()} == set(iam.FUNCTIONS)
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()]
    assert len(set(roles)) == len(functions)
    for function in functions.values():
        assert "Policies" not in function["Properties"]
        role = template["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
        trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
        expected = iam.function_policy(
            iam.FUNCTIONS[function["Properties"]["Handler"]],
            function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"],
        )
        assert [p["PolicyDocument"] for p in role["Properties"]["Policies"]] == [expected]
    assert not [v for v in template["Resources"].values() if v["Type"] in ("AWS::IAM::User", "AWS::IAM::Group")]


def test_the_key_policy_has_no_wildcard_principal_and_binds_service_use_to_an_encryption_context(template):
    statements = template["Resources"]["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
    for s in statements:
        principal = s["Principal"]
        assert principal != "*" and principal.get("AWS") != "*"
        if "Service" in principal:
            conditions = {k for op in s["Condition"].values() for k in op}
            assert any(k.startswith("kms:EncryptionContext:") for k in conditions), s["Sid"]


def test_every_accepted_checkov_finding_is_justified_in_iac_skips(template):
    documented = (ROOT / "infra" / "iac-skips.md").read_text()
    used = {
        skip["id"]
        for resource in template["Resources"].values()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    assert used <= set(finishing.CHECKOV_SKIPS)
    assert [check for check in finishing.CHECKOV_SKIPS if f"`{check}`" not in documented] == []
