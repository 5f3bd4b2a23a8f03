"""Every AWS call ends before its function does: timeouts and retries sized per function (adapters/aws.py)."""

from __future__ import annotations

import pytest

from chalicelib.adapters.aws import CallBudget, call_budget
from infra.iam import FUNCTIONS


@pytest.mark.parametrize("spec", list(FUNCTIONS.values()), ids=lambda spec: spec.name)
def test_one_aws_call_with_its_retries_fits_in_half_of_each_function_s_timeout(spec):
    budget = call_budget(spec.timeout)
    assert budget.worst_case_seconds() <= spec.timeout / 2
    assert budget.max_attempts >= 2, "a throttled or dropped call is retried at least once"
    assert budget.read_timeout >= 1.0, "long enough for a transaction or a KMS call under load"


def test_the_worst_case_counts_every_attempt_and_every_backoff():
    assert CallBudget(connect_timeout=1, read_timeout=2, max_attempts=3).worst_case_seconds() == 3 * 3 + 1 + 2


def test_every_function_in_the_template_is_told_its_timeout(packaged_template):
    functions = {
        name: r["Properties"]
        for name, r in packaged_template["Resources"].items()
        if r["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    }
    assert functions
    for name, props in functions.items():
        variables = props["Environment"]["Variables"]
        assert variables["RELAIS_FUNCTION_TIMEOUT_SECONDS"] == str(props["Timeout"]), name


@pytest.fixture
def ten_second_function(monkeypatch):
    """The bootstrap of a function with a 10 s timeout (placeholder settings), reset before and after."""
    from chalicelib import bootstrap

    monkeypatch.setenv("RELAIS_FUNCTION_TIMEOUT_SECONDS", "10")
    for name in ("STAGE", "KMS_KEY_ARN", "REGISTRY_TABLE", "RESULTS_TABLE", "STATE_TABLE", "AUDIT_TABLE"):
        monkeypatch.setenv(f"RELAIS_{name}", "x")
    monkeypatch.setenv("RELAIS_NATIONAL_QUEUE_URL", "http://q")
    monkeypatch.setenv("RELAIS_NOTIFY_QUEUE_URL", "http://q")
    bootstrap.reset()
    yield bootstrap
    bootstrap.reset()


def test_clients_use_the_standard_retry_mode_and_the_budget_s_timeouts(ten_second_function):
    bootstrap = ten_second_function
    sqs = bootstrap.client("sqs")
    kms = bootstrap.botocore_session().create_client("kms", region_name="eu-west-3")  # as the SDK makes it
    expected = call_budget(10)
    for client in (sqs, kms):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (expected.connect_timeout, expected.read_timeout)
        assert config.retries["mode"] == "standard"
        assert config.retries["total_max_attempts"] == expected.max_attempts


def test_dynamodb_connections_and_models_use_the_budget_too(monkeypatch):
    from chalicelib.adapters.tables import StateItem, TableMeta, bind_tables, connection
    from chalicelib.config import settings_from_env

    env = {f"RELAIS_{n}": "x" for n in ("STAGE", "KMS_KEY_ARN", "REGISTRY_TABLE", "RESULTS_TABLE", "STATE_TABLE")}
    env |= {"RELAIS_AUDIT_TABLE": "x", "RELAIS_NATIONAL_QUEUE_URL": "q", "RELAIS_NOTIFY_QUEUE_URL": "q"}
    for seconds in (10, 60):
        bind_tables(
            settings_from_env({**env, "RELAIS_FUNCTION_TIMEOUT_SECONDS": str(seconds), "AWS_REGION": "eu-west-3"})
        )
        budget = call_budget(seconds)
        config = connection("eu-west-3").client.meta.config
        model_config = StateItem._get_connection().connection.client.meta.config
        for c in (config, model_config):
            assert (c.connect_timeout, c.read_timeout) == (budget.connect_timeout, budget.read_timeout)
            assert c.retries["total_max_attempts"] == budget.max_attempts
        assert TableMeta.max_retry_attempts == budget.max_attempts - 1


def _settings(**extra: str):
    from chalicelib.config import settings_from_env

    env = {f"RELAIS_{n}": "x" for n in ("STAGE", "KMS_KEY_ARN", "REGISTRY_TABLE", "RESULTS_TABLE", "STATE_TABLE")}
    env |= {"RELAIS_AUDIT_TABLE": "x", "RELAIS_NATIONAL_QUEUE_URL": "q", "RELAIS_NOTIFY_QUEUE_URL": "q"}
    return settings_from_env({**env, "AWS_REGION": "eu-west-3", **extra})


class _CountingSession:
    """A botocore session that counts the clients it creates, slowly enough that racing threads overlap."""

    def __init__(self) -> None:
        import threading

        import botocore.session

        self._session = botocore.session.get_session()
        self._count_lock = threading.Lock()
        self.created = 0

    def create_client(self, *args, **kwargs):
        import time

        with self._count_lock:
            self.created += 1
        time.sleep(0.05)  # widens the window in which a second thread could start creating the same client
        return self._session.create_client(*args, **kwargs)


def test_every_dynamodb_client_comes_from_the_one_session_given_to_bind_tables(monkeypatch):
    import pynamodb.connection.base

    from chalicelib.adapters import tables

    def no_session_of_its_own():
        raise AssertionError("pynamodb created a botocore session of its own")

    monkeypatch.setattr(pynamodb.connection.base, "get_session", no_session_of_its_own)
    session = _CountingSession()
    try:
        tables.bind_tables(_settings(), session)  # type: ignore[arg-type]
        models = [tables.PharmacyItem, tables.KeyItem, tables.FinessItem, tables.StateItem]
        models += [tables.SealedKeyItem, tables.ReceiptKeysItem, tables.ResultItem, tables.AuditItem]
        assert session.created == len(models), "one client per model, created when the tables are bound"
        for model in models:
            assert model._get_connection().connection._client is not None
        tables.connection("eu-west-3")
        assert session.created == len(models) + 1
    finally:
        monkeypatch.undo()
        tables.bind_tables(_settings(RELAIS_REGISTRY_TABLE="other"))  # forget the counting session


def test_threads_racing_to_a_connection_s_first_call_create_one_client(monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pynamodb.connection import Connection

    from chalicelib.adapters import tables

    session = _CountingSession()
    monkeypatch.setattr(tables._Clients, "session", session)
    fresh = Connection(region="eu-west-3")
    start = threading.Barrier(16)

    def first_call(_: int) -> object:
        start.wait()
        return tables.open_client(fresh).client

    with ThreadPoolExecutor(16) as pool:
        clients = set(map(id, pool.map(first_call, range(16))))
    assert session.created == 1, f"{session.created} clients created for one connection"
    assert len(clients) == 1


def test_a_send_that_must_not_be_repeated_makes_one_attempt_that_waits_the_whole_budget(ten_second_function):
    """SNS Publish and SES SendEmail (``bootstrap.one_attempt_client``): botocore never repeats them, and their one
    attempt gets the read timeout the budget would otherwise share between two or three."""
    bootstrap = ten_second_function
    once = call_budget(10, attempts=1)
    assert once.worst_case_seconds() <= 10 / 2
    assert once.read_timeout > call_budget(10).read_timeout
    for service in ("sns", "ses"):
        config = bootstrap.one_attempt_client(service).meta.config
        assert config.retries["total_max_attempts"] == 1
        assert (config.connect_timeout, config.read_timeout) == (once.connect_timeout, once.read_timeout)
    assert bootstrap.client("sns").meta.config.retries["total_max_attempts"] == 2  # other clients keep retries
