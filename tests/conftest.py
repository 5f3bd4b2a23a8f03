"""Shared fixtures: moto in-process, provisioned from infra/resources.json like production."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# No test may reach real AWS, whatever the developer's environment holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="eu-west-3",
    AWS_REGION="eu-west-3",
    AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
)


from infra.local.moto_patches import patch_moto  # noqa: E402 - after the AWS env

# The embedded AWS as the local stack runs it: DynamoDB transactions serialized and all-or-nothing at O(items),
# SQS at O(messages returned), and the faults the environment asks for (infra/local/README.md).
patch_moto()


def pytest_report_header() -> str:
    """The local AWS's faults in force, with the seed that replays them."""
    from infra.local import faults

    return faults.current().describe()


@pytest.fixture(autouse=True)
def _faults_drawn_afresh_for_each_test() -> None:
    """Each test draws the local AWS's faults from the seed anew: a test that fails replays alone with the seed."""
    from infra.local import faults

    faults.install(faults.current())


@pytest.fixture
def aws() -> Iterator[dict[str, str]]:
    """moto started first, then the stack from the production template; settings in os.environ."""
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap
    from infra.local import local_iam
    from infra.provision import provision

    # Each function's calls checked against its IAM policy, as AWS checks them (moto authorizes everything).
    with mock_aws(), local_iam.enforced() as refused:
        env = provision(boto3.client("cloudformation", region_name="eu-west-3"), "test")
        # The in-process test client sends one key's requests far faster than a pharmacy could: the per-key rate
        # would refuse some of them at random. Tests of that rate set their own (tests/integration/test_floods.py).
        env["RELAIS_KEY_REQUESTS_PER_SECOND"] = "10000"
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        bootstrap.reset()
        try:
            yield env
        finally:
            bootstrap.reset()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        assert not refused, "calls infra/iam.py does not allow: " + "; ".join(sorted(map(str, set(refused))))


from tests.chromium import browser  # noqa: E402, F401 - the session's one Playwright, for the browser and e2e tiers
