"""The local stack over real HTTP: health, state file, a signed submission flowing to the queues or the national
stand-in, the stand-in's own behaviour, and that stopping (or breaking) the stack leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.domain.records import new_id
from infra.local.poller import app_wiring
from tests.e2e.conftest import REPO_ROOT, LocalStack, free_ports, group_alive, resend_on_503, start_stack
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e

FHIR = "application/fhir+json"

#: The personal values of ``valid_body()``: none may ever appear in the stack's console output.
PERSONAL_VALUES = ("Martin", "Claire", "284127512345687", "1984-12-03", "+33612345678", "claire@example.org", "3 rue X")


def submit(stack: LocalStack, key_id: str, private_key: Any, body: dict[str, Any]) -> requests.Response:
    """The signed submission, sent again after a 503 (nothing was accepted)."""
    raw = json.dumps(body).encode()
    url = f"{stack.api_url}/v1/results"
    return resend_on_503(
        lambda: requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=30
        )
    )


def follow(stack: LocalStack, key_id: str, private_key: Any, result_id: str) -> requests.Response:
    url = f"{stack.api_url}/v1/results/{result_id}"
    return resend_on_503(
        lambda: requests.get(url, headers=sign("GET", url, key_id=key_id, private_key=private_key), timeout=30)
    )


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def queued_result_ids(stack: LocalStack, queue_url: str) -> set[str]:
    """Result ids in the queue's visible messages (peeked: visibility 0, so they stay for their consumer)."""
    answer = stack.client("sqs").receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
    )
    ids = set()
    for message in answer.get("Messages", []):
        body = json.loads(message["Body"])
        assert set(body) == {"result_id"}, "a queue message carries the result id and nothing else"
        ids.add(body["result_id"])
    return ids


def national_received(stack: LocalStack) -> list[dict[str, Any]]:
    answer = requests.get(f"{stack.national_url}/_admin/received", timeout=5)
    assert answer.status_code == 200
    records: list[dict[str, Any]] = answer.json()
    return records


def a_bundle(result_id: str | None = None) -> dict[str, Any]:
    """A valid FHIR Bundle for a new result, as Relais builds it."""
    from chalicelib.domain.fhir import build_bundle
    from chalicelib.domain.records import Pharmacy
    from chalicelib.domain.validation import parse_submission

    now = datetime.now(UTC)
    return build_bundle(
        result_id=result_id or new_id(),
        submission=parse_submission(valid_body(now), now=now),
        pharmacy=Pharmacy("ph-e2e", "750000001", "Pharmacie e2e", "active"),
        timestamp=now,
    )


def post_bundle(base_url: str, doc: Any, token: str | None, content_type: str = FHIR, path: str = "/fhir"):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return requests.post(f"{base_url}{path}", data=data, headers=headers, timeout=30)


def assert_outcome(answer: requests.Response, status: int, severity: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith(FHIR)
    outcome: dict[str, Any] = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert {issue["severity"] for issue in outcome["issue"]} == {severity}
    return outcome


# --- the running stack --------------------------------------------------------------------------------------------


def test_health_answers_ok(local_stack):
    answer = requests.get(f"{local_stack.api_url}/v1/health", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_the_stack_starts_with_its_first_receipt_key_published(local_stack):
    """Made at start (the console says which), before any receipt: the JWKS is never empty, so cacheable."""
    import re

    [kid] = re.findall(r"receipt signing key (\S+) published", local_stack.log_text())
    answer = resend_on_503(lambda: requests.get(f"{local_stack.api_url}/.well-known/jwks.json", timeout=5))
    assert kid in [key["kid"] for key in answer.json()["keys"]]
    assert answer.headers["Cache-Control"] == "public, max-age=300"


@pytest.mark.parametrize(("method", "path", "allow"), [("DELETE", "/v1/results", "POST"), ("POST", "/r", "GET")])
def test_a_wrong_method_over_http_is_the_405_problem_with_allow(local_stack, method, path, allow):
    answer = requests.request(method, f"{local_stack.api_url}{path}", data=b"{}", timeout=5)

    assert answer.status_code == 405
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.headers["Allow"] == allow
    assert answer.json()["status"] == 405


def test_the_state_file_describes_the_stack_for_the_cli(local_stack):
    state = json.loads(local_stack.state_file.read_text())

    assert set(state) >= {"stage", "region", "aws_endpoint", "api_url", "national_url", "env", "pid", "children"}
    assert (state["stage"], state["region"]) == ("local", "eu-west-3")
    ports = local_stack.ports
    assert state["api_url"] == f"http://127.0.0.1:{ports['api']}"
    assert state["aws_endpoint"] == f"http://127.0.0.1:{ports['aws']}"
    assert state["national_url"] == f"http://127.0.0.1:{ports['national']}"
    assert state["pid"] == local_stack.process.pid
    assert set(state["children"]) == {"aws", "national", "api", "poller"}
    assert all(group_alive(pid) for pid in state["children"].values())
    env = state["env"]
    assert all(name.startswith("RELAIS_") for name in env)
    assert env["RELAIS_STAGE"] == "local"
    assert env["RELAIS_NATIONAL_URL"] == f"{state['national_url']}/fhir"
    assert env["RELAIS_PUBLIC_BASE_URL"] == state["api_url"]
    assert env["RELAIS_NATIONAL_TOKEN_PARAMETER"] == "/relais/local/national-token"
    for name in (
        "RELAIS_KMS_KEY_ARN",
        "RELAIS_RESULTS_TABLE",
        "RELAIS_RESULTS_STREAM_ARN",
        "RELAIS_NATIONAL_QUEUE_URL",
    ):
        assert env[name]
    assert "RELAIS_NATIONAL_TOKEN" not in env
    assert stat.S_IMODE(local_stack.state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(local_stack.state_file.parent.stat().st_mode) == 0o700


def test_the_poller_s_aws_calls_are_sized_for_the_shortest_worker_not_the_api(local_stack):
    """One poller runs every worker: its clients get the notifier's 30 s budget, the API keeps its 10 s."""

    def environment(pid: int) -> dict[str, str]:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)

    assert environment(local_stack.children["poller"])["RELAIS_FUNCTION_TIMEOUT_SECONDS"] == "30"
    assert "RELAIS_FUNCTION_TIMEOUT_SECONDS" not in environment(local_stack.children["api"])


def test_the_national_token_is_a_secure_string_under_the_stack_key(local_stack):
    parameter = local_stack.client("ssm").get_parameter(Name="/relais/local/national-token")["Parameter"]
    assert parameter["Type"] == "SecureString"
    assert len(local_stack.national_token()) >= 32


def test_a_signed_result_over_http_is_accepted_and_relayed(local_stack):
    _, key_id, private_key = local_stack.register_pharmacy()
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"E2E-{new_id(16)[:20]}".replace("_", "-")

    answer = submit(local_stack, key_id, private_key, body)

    assert answer.status_code == 201, answer.text
    result_id = answer.json()["id"]
    assert answer.headers["Location"] == f"/v1/results/{result_id}"
    assert follow(local_stack, key_id, private_key, result_id).status_code == 200

    env = local_stack.env
    polled_queues = app_wiring().queues
    if "national_queue_url" in polled_queues:
        # Consumed by the poller as Lambda would: the stand-in receives the bundle for this result.
        def delivered() -> bool:
            return any(r["bundle"]["identifier"]["value"] == result_id for r in national_received(local_stack))

        wait_for("bundle received by the national stand-in", delivered, timeout=60)
    else:
        wait_for(
            "result id on the national queue",
            lambda: result_id in queued_result_ids(local_stack, env["RELAIS_NATIONAL_QUEUE_URL"]),
            timeout=10,
        )
    if "notify_queue_url" not in polled_queues:
        wait_for(
            "result id on the notification queue",
            lambda: result_id in queued_result_ids(local_stack, env["RELAIS_NOTIFY_QUEUE_URL"]),
            timeout=10,
        )


# --- the stand-in national system, in the stack ------------------------------------------------------------------


def test_the_standin_records_a_new_bundle_and_drops_its_duplicate(local_stack):
    token, base = local_stack.national_token(), local_stack.national_url
    bundle = a_bundle()
    before = requests.get(f"{base}/_admin/status", timeout=5).json()

    assert_outcome(post_bundle(base, bundle, token), 201, "information")
    assert_outcome(post_bundle(base, bundle, token, path="/fhir/Bundle"), 200, "information")

    after = requests.get(f"{base}/_admin/status", timeout=5).json()
    assert after["received"] == before["received"] + 1
    assert after["duplicates"] == before["duplicates"] + 1
    assert after["deliveries"] == before["deliveries"] + 2
    value = bundle["identifier"]["value"]
    arrivals = [d for d in requests.get(f"{base}/_admin/deliveries", timeout=5).json() if d["identifier"] == value]
    assert [d["kept"] for d in arrivals] == [True, False]
    mine = [r for r in national_received(local_stack) if r["bundle"] == bundle]
    assert len(mine) == 1
    assert mine[0]["received_at"].endswith("Z")


def test_the_standin_refuses_a_missing_or_wrong_token(local_stack):
    base = local_stack.national_url
    assert_outcome(post_bundle(base, a_bundle(), None), 401, "error")
    assert_outcome(post_bundle(base, a_bundle(), "not-the-token"), 401, "error")


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b: b.update(type="bogus"), 422),
        (lambda b: b.pop("identifier"), 422),
        (lambda b: b.update(resourceType="Patient"), 422),
        (lambda b: b["entry"][0]["resource"].update(status=None), 422),
        (lambda b: b["entry"][1]["resource"].update(gender="robot"), 422),
    ],
)
def test_the_standin_rejects_an_invalid_bundle_with_an_operation_outcome(local_stack, mutate, status):
    bundle = a_bundle()
    mutate(bundle)
    outcome = assert_outcome(
        post_bundle(local_stack.national_url, bundle, local_stack.national_token()), status, "error"
    )
    assert all(issue["code"] == "invalid" for issue in outcome["issue"])
    assert "robot" not in json.dumps(outcome)  # problems name paths and rules, never values


def test_the_standin_wants_fhir_json(local_stack):
    token, base = local_stack.national_token(), local_stack.national_url
    assert_outcome(post_bundle(base, b"{not json", token), 400, "error")
    assert_outcome(post_bundle(base, a_bundle(), token, content_type="application/json"), 415, "error")


def test_the_standin_answers_503_while_down_then_accepts_again(local_stack):
    token, base = local_stack.national_token(), local_stack.national_url
    assert requests.post(f"{base}/_admin/down", timeout=5).json()["up"] is False
    try:
        down = post_bundle(base, a_bundle(), token)
        assert_outcome(down, 503, "error")
        assert down.headers["Retry-After"] == "5"
        assert requests.get(f"{base}/_admin/status", timeout=5).json()["up"] is False
    finally:
        assert requests.post(f"{base}/_admin/up", timeout=5).json()["up"] is True
    assert_outcome(post_bundle(base, a_bundle(), token), 201, "information")


# --- the stand-in national system, in process ------------------------------------------------------------------


@pytest.fixture
def standin():
    from infra.local.national import serve

    server, thread = serve(0, "secret-token")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_injected_faults_are_reproducible_and_clearable(standin):
    base, _ = standin
    answer = requests.post(f"{base}/_admin/faults", json={"error_rate": 0.5, "seed": 7}, timeout=5)
    assert answer.status_code == 200

    first = [post_bundle(base, a_bundle(), "secret-token").status_code for _ in range(12)]
    requests.post(f"{base}/_admin/faults", json={"error_rate": 0.5, "seed": 7}, timeout=5)
    second = [post_bundle(base, a_bundle(), "secret-token").status_code for _ in range(12)]

    assert first == second
    assert set(first) == {201, 500}
    status = requests.get(f"{base}/_admin/status", timeout=5).json()
    assert status["received"] == 2 * first.count(201)
    assert requests.delete(f"{base}/_admin/faults", timeout=5).json()["faults"] is None
    assert all(post_bundle(base, a_bundle(), "secret-token").status_code == 201 for _ in range(5))


def test_injected_timeouts_answer_late_but_still_record(standin):
    base, _ = standin
    requests.post(f"{base}/_admin/faults", json={"timeout_rate": 1, "timeout_seconds": 0.6}, timeout=5)
    bundle = a_bundle()

    with pytest.raises(requests.Timeout):
        requests.post(
            f"{base}/fhir",
            data=json.dumps(bundle),
            headers={"Content-Type": FHIR, "Authorization": "Bearer secret-token"},
            timeout=0.2,
        )
    wait_for("late bundle recorded", lambda: requests.get(f"{base}/_admin/status", timeout=5).json()["received"], 5)
    requests.delete(f"{base}/_admin/faults", timeout=5)
    assert post_bundle(base, bundle, "secret-token").status_code == 200  # the retry is a duplicate


@pytest.mark.parametrize(
    "faults",
    [{"error_rate": 2}, {"timeout_rate": -0.1}, {"timeout_seconds": "soon"}, {"seed": 1.5}, {"surprise": 1}, []],
)
def test_bad_fault_settings_are_refused(standin, faults):
    base, _ = standin
    assert requests.post(f"{base}/_admin/faults", json=faults, timeout=5).status_code == 400


def test_reset_forgets_everything(standin):
    base, _ = standin
    post_bundle(base, a_bundle(), "secret-token")
    requests.post(f"{base}/_admin/down", timeout=5)
    status = requests.post(f"{base}/_admin/reset", timeout=5).json()
    assert status == {"up": True, "received": 0, "deliveries": 0, "duplicates": 0, "rejected": 0}
    assert requests.get(f"{base}/_admin/received", timeout=5).json() == []


def test_the_standin_never_logs_a_bundle(standin, caplog):
    base, _ = standin
    caplog.set_level("DEBUG")
    bundle = a_bundle()
    post_bundle(base, bundle, "secret-token")
    post_bundle(base, bundle, "secret-token")
    bad = a_bundle()
    bad["type"] = "bogus"
    post_bundle(base, bad, "secret-token")
    text = caplog.text
    assert text  # it does log, but counts and statuses only
    for value in PERSONAL_VALUES:
        assert value not in text


# --- starting and stopping ------------------------------------------------------------------------------------------


def run_stack_expecting_failure(tmp_path, **ports: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env.update(ports, RELAIS_STATE_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "infra.local.stack"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_port_in_use_is_named_with_the_variable_to_override(tmp_path):
    api, aws, national = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", aws))
        taken.listen()
        done = run_stack_expecting_failure(
            tmp_path, RELAIS_API_PORT=str(api), RELAIS_AWS_PORT=str(aws), RELAIS_NATIONAL_PORT=str(national)
        )
    assert done.returncode == 1
    assert "RELAIS_AWS_PORT" in done.stdout
    assert str(aws) in done.stdout
    assert not (tmp_path / "local.json").exists()


def test_a_bad_port_setting_is_named(tmp_path):
    done = run_stack_expecting_failure(tmp_path, RELAIS_NATIONAL_PORT="eighty")
    assert done.returncode == 1
    assert "RELAIS_NATIONAL_PORT" in done.stdout


def test_a_bad_local_iam_switch_is_named(tmp_path):
    done = run_stack_expecting_failure(tmp_path, RELAIS_LOCAL_IAM="maybe")
    assert done.returncode == 1
    assert "cannot start: RELAIS_LOCAL_IAM must be on or off, not 'maybe'" in done.stdout


def test_sigint_stops_every_process_the_stack_started(tmp_path):
    stack = start_stack(tmp_path)
    try:
        assert set(stack.children) == {"aws", "national", "api", "poller"}
        started = time.monotonic()
        assert stack.stop(signal.SIGINT) == 0
        assert time.monotonic() - started < 15
        stack.assert_everything_stopped(within=10)
        assert "stopped." in stack.log_text()
    finally:
        stack.kill_everything()


def test_a_child_dying_stops_the_others_and_fails_naming_it(tmp_path):
    stack = start_stack(tmp_path)
    try:
        os.killpg(stack.children["national"], signal.SIGKILL)
        assert stack.process.wait(timeout=30) != 0
        stack.assert_everything_stopped(within=10)
        assert "national (stand-in national system) exited unexpectedly" in stack.log_text()
    finally:
        stack.kill_everything()


# --- last: nothing personal on the console --------------------------------------------------------------------------


def test_nothing_personal_reached_the_stack_console(local_stack):
    """Runs after the tests above have submitted results and bundles carrying ``valid_body()``'s personal data."""
    text = local_stack.log_text()
    assert "[api]" in text
    assert "[poller]" in text
    leaked = [value for value in PERSONAL_VALUES if value in text]
    assert not leaked, f"personal data on the local stack console: {len(leaked)} value(s)"
