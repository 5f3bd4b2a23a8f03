"""Nothing is lost through the local stack while the national system fails at random.

1,000 results are submitted over signed HTTP to ``chalice local``; the stand-in answers 500 at random, stalls past
the client's timeout now and then, and goes down for a while. Then: accepted = reported + dead-lettered, nothing
both, no duplicate kept by the receiver, every dead letter explained by a reason code.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests

from tests.e2e.conftest import start_stack
from tests.factories import valid_body
from tests.signing import sign

pytestmark = pytest.mark.e2e

#: The issue's 1,000, in CI too (about 100 s on 2 cores since moto's transactions stopped copying whole tables and the
#: poller consumes each queue with 4 concurrent batches); RELAIS_E2E_NOTHING_LOST_COUNT sets another size.
COUNT = int(os.environ.get("RELAIS_E2E_NOTHING_LOST_COUNT", "1000"))


def _submit(stack, key_id: str, private_key, i: int) -> str:
    body = valid_body(datetime.now(UTC))
    body["pharmacy_reference"] = f"LOST-{i:05d}"
    body["notify"] = []
    raw = json.dumps(body).encode()
    url = f"{stack.api_url}/v1/results"
    for _attempt in range(10):  # as pharmacy software would: 503 and 429 mean "nothing accepted, retry later"
        answer = requests.post(
            url, data=raw, headers=sign("POST", url, key_id=key_id, private_key=private_key, body=raw), timeout=60
        )
        if answer.status_code in (200, 201):
            return str(answer.json()["id"])
        assert answer.status_code in (503, 429), answer.text
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    raise AssertionError("still 503 or 429 after 10 tries")


def _statuses(stack) -> dict[str, str]:
    ddb = stack.client("dynamodb")
    kwargs = {"TableName": stack.env["RELAIS_RESULTS_TABLE"], "ProjectionExpression": "id, national_status"}
    statuses: dict[str, str] = {}
    while True:
        page = ddb.scan(**kwargs)
        statuses.update({i["id"]["S"]: i["national_status"]["S"] for i in page["Items"]})
        if "LastEvaluatedKey" not in page:
            return statuses
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_nothing_is_lost_through_the_local_stack(tmp_path):
    stack = start_stack(
        tmp_path,
        {
            "RELAIS_NATIONAL_MAX_ATTEMPTS": "3",  # some results must exhaust their retries and be dead-lettered
            "RELAIS_NATIONAL_TIMEOUT_SECONDS": "1",
            "RELAIS_NATIONAL_BACKOFF_CAP_SECONDS": "2",
            # The random local AWS faults are the chaos run's (make chaos); conflicts stay on.
            "RELAIS_LOCAL_FAULTS": "off",
        },
    )
    try:
        _, key_id, private_key = stack.register_pharmacy("Pharmacie du chaos")
        faults = {"error_rate": 0.3, "timeout_rate": 0.02, "timeout_seconds": 1.5, "seed": 20220110}
        assert requests.post(f"{stack.national_url}/_admin/faults", json=faults, timeout=5).ok

        def outage() -> None:  # one outage of a few seconds while results flow
            time.sleep(5)
            requests.post(f"{stack.national_url}/_admin/down", timeout=5)
            time.sleep(4)
            requests.post(f"{stack.national_url}/_admin/up", timeout=5)

        chaos = threading.Thread(target=outage)
        chaos.start()
        with ThreadPoolExecutor(max_workers=4) as pool:
            accepted = set(pool.map(lambda i: _submit(stack, key_id, private_key, i), range(COUNT)))
        chaos.join()
        assert len(accepted) == COUNT

        deadline = time.monotonic() + 900
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = _statuses(stack)
            if all(statuses.get(rid) in ("reported", "failed") for rid in accepted):
                break
            time.sleep(2)
        pending = [rid for rid in accepted if statuses.get(rid) not in ("reported", "failed")]
        assert not pending, f"{len(pending)} results still pending after 15 minutes"
        reported = {rid for rid in accepted if statuses.get(rid) == "reported"}
        failed = {rid for rid in accepted if statuses.get(rid) == "failed"}
        letters = stack.relais("dlq", "list")
        dead = {d["result_id"] for d in letters}
        received = [r["bundle"]["identifier"]["value"] for r in stack.relais("local", "national")]
    finally:
        stack.stop()
    assert reported | dead == accepted, (
        f"{len(accepted - reported - dead)} neither reported nor dead-lettered; {len(failed - dead)} failed but not "
        f"listed in the dead-letter queue"
    )
    assert not reported & dead
    assert failed == dead
    assert all(d["reason"] for d in letters)
    assert len(received) == len(set(received)), "the receiver kept a bundle twice"
    assert reported <= set(received)
    assert dead, "the faults were meant to exhaust some retries"
