"""What ``POST /v1/results`` stores, and what it refuses to store (contract.md §2 and §5)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.receipts import body_sha256
from chalicelib.errors import DecryptionError
from tests.integration.helpers import (
    ADDRESS_LINE,
    BIRTH_DATE,
    CITY,
    EMAIL,
    FAMILY_NAME,
    GIVEN_NAME,
    NIR,
    PERSONAL_VALUES,
    PHONE,
    POSTAL_CODE,
    REGION,
    RESULT_FRAGMENTS,
    RESULTS_PATH,
    TABLE_SETTINGS,
    attribute_strings,
    audit_events,
    count_results,
    distinctive_body,
    dynamodb,
    encode,
    get_result,
    post_result,
    problem,
    register_pharmacy,
    scan,
    signed_headers,
    state_items,
    submit_direct,
    table_name,
)


def receipt_payload(receipt: str) -> dict[str, Any]:
    from chalicelib.domain.receipts import b64url_decode

    payload: dict[str, Any] = json.loads(b64url_decode(receipt.split(".")[1]))
    return payload


def _stream_inserts() -> list[str]:
    """Result ids of the INSERT records on the results table's stream: what the outbox relay would queue."""
    import boto3

    arn = dynamodb().describe_table(TableName=table_name("RELAIS_RESULTS_TABLE"))["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams", region_name=REGION)
    ids = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in streams.get_records(ShardIterator=iterator)["Records"]:
            if record["eventName"] == "INSERT":
                ids.append(record["dynamodb"]["Keys"]["id"]["S"])
    return ids


def _result_item(result_id: str) -> dict[str, Any]:
    item: dict[str, Any] = dynamodb().get_item(
        TableName=table_name("RELAIS_RESULTS_TABLE"), Key={"id": {"S": result_id}}, ConsistentRead=True
    )["Item"]
    return item


def test_a_valid_submission_gets_201_with_location_and_the_contract_body(client, pharmacy):
    body = distinctive_body("A-2026-000123")

    response = post_result(client, pharmacy, body)

    assert response.status_code == 201, response.body
    answer = json.loads(response.body)
    assert set(answer) == {"id", "pharmacy_reference", "status", "receipt"}
    assert answer["pharmacy_reference"] == "A-2026-000123"
    assert isinstance(answer["status"], str)
    assert response.headers["Location"] == f"/v1/results/{answer['id']}"
    assert response.headers["Content-Type"] == "application/json"
    assert count_results() == 1
    assert _stream_inserts() == [answer["id"]]


def test_result_ids_carry_at_least_128_random_bits_and_are_unique(client, pharmacy):
    ids = [json.loads(post_result(client, pharmacy, distinctive_body()).body)["id"] for _ in range(5)]

    assert len(set(ids)) == 5
    for result_id in ids:
        assert len(result_id) >= 22  # base64url: 22 characters hold 132 bits
        assert set(result_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert count_results() == 5


def test_an_identical_retry_freshly_signed_gets_200_with_the_same_body_and_no_second_record(client, pharmacy):
    from chalicelib.events.dispatch import dispatch_results

    body = distinctive_body()
    first = post_result(client, pharmacy, body)
    retry = post_result(client, pharmacy, body)

    assert first.status_code == 201, first.body
    assert retry.status_code == 200, retry.body
    assert json.loads(retry.body) == json.loads(first.body)
    assert retry.headers["Location"] == first.headers["Location"]
    assert count_results() == 1
    inserts = _stream_inserts()
    assert inserts == [json.loads(first.body)["id"]], "one record, so one item for the queues"
    dispatch_results({"Records": [{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": i}}}} for i in inserts]})
    sqs = bootstrap.client("sqs")
    queued = sqs.receive_message(QueueUrl=bootstrap.settings().national_queue_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"]) for m in queued["Messages"]] == [{"result_id": inserts[0]}]
    assert sorted(e["outcome"] for e in audit_events("result.create")) == ["duplicate", "success"]


def test_an_identical_retry_after_the_sample_aged_past_its_limit_is_still_200_with_the_same_result(client, pharmacy):
    from datetime import UTC, datetime, timedelta

    body = distinctive_body()
    first = post_result(client, pharmacy, body)
    assert first.status_code == 201, first.body
    later = datetime.now(UTC) + timedelta(days=8)  # sampled_at is now more than 7 days old: a new body would be 400
    bootstrap.override(clock=lambda: later)

    retry = post_result(client, pharmacy, body, created=int(later.timestamp()))
    changed = json.loads(json.dumps(body))
    changed["test"]["result"] = "positive" if body["test"]["result"] != "positive" else "negative"
    different = post_result(client, pharmacy, changed, created=int(later.timestamp()))

    assert retry.status_code == 200, retry.body
    assert json.loads(retry.body) == json.loads(first.body)
    assert different.status_code == 400, different.body
    assert any(e["field"] == "test.sampled_at" for e in json.loads(different.body)["errors"])
    assert count_results() == 1
    assert sorted(e["outcome"] for e in audit_events("result.create")) == ["duplicate", "rejected", "success"]


def test_the_same_reference_with_a_different_body_gets_409_and_stores_nothing_new(client, pharmacy):
    body = distinctive_body()
    first = post_result(client, pharmacy, body)
    changed = json.loads(json.dumps(body))
    changed["test"]["result"] = "positive"

    response = post_result(client, pharmacy, changed)

    assert first.status_code == 201, first.body
    assert response.status_code == 409
    document = problem(response)
    for value in (*PERSONAL_VALUES, "positive", body["pharmacy_reference"]):
        assert value not in json.dumps(document)
    assert count_results() == 1
    assert len(state_items("ref")) == 1
    assert sorted(e["outcome"] for e in audit_events("result.create")) == ["conflict", "success"]


def test_identity_of_a_retry_is_semantic_so_key_order_and_whitespace_do_not_matter(client, pharmacy):
    """Documented choice: a retry is "identical" when it is the same JSON document, not the same bytes."""
    body = distinctive_body()
    first = post_result(client, pharmacy, json.dumps(body).encode())
    reordered = {key: body[key] for key in reversed(list(body))}
    reordered["patient"] = {key: body["patient"][key] for key in reversed(list(body["patient"]))}
    spaced = json.dumps(reordered, indent=4, separators=(" ,  ", " :  ")).encode()

    retry = post_result(client, pharmacy, spaced)

    assert first.status_code == 201, first.body
    assert retry.status_code == 200, retry.body
    first_answer, retry_answer = json.loads(first.body), json.loads(retry.body)
    assert {**retry_answer, "receipt": ""} == {**first_answer, "receipt": ""}
    # the receipt names the bytes each request sent (contract §6), and the same first acceptance
    assert receipt_payload(retry_answer["receipt"])["body_sha256"] == body_sha256(spaced)
    assert (
        receipt_payload(retry_answer["receipt"])["accepted_at"]
        == receipt_payload(first_answer["receipt"])["accepted_at"]
    )
    assert count_results() == 1


def test_the_same_reference_from_two_pharmacies_makes_two_records(client, pharmacy, other_pharmacy):
    body = distinctive_body("SHARED-REF-1")

    mine = post_result(client, pharmacy, body)
    theirs = post_result(client, other_pharmacy, body)

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert json.loads(mine.body)["id"] != json.loads(theirs.body)["id"]
    assert count_results() == 2


def test_ten_concurrent_identical_submissions_make_one_201_nine_200_and_one_record(aws, pharmacy):
    # chalice.test.Client keeps the current request on the app object (not thread-safe): call the service.
    # The local AWS conflicts as DynamoDB does: the ten transactions share the reference item, the losers retry.
    body = distinctive_body()
    bootstrap.results_service()  # build the shared service once, before the threads

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: submit_direct(pharmacy, body), range(10)))

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 9 + [201]
    assert len({answer["id"] for _, answer in answers}) == 1
    assert count_results() == 1
    assert len(_stream_inserts()) == 1
    assert len(state_items("nonce")) == 10
    assert sorted(e["outcome"] for e in audit_events("result.create")) == ["duplicate"] * 9 + ["success"]


def test_past_the_daily_quota_a_submission_gets_429_with_retry_after_and_nothing_stored(client):
    limited = register_pharmacy(daily_quota=2)
    for _ in range(2):
        assert post_result(client, limited, distinctive_body()).status_code == 201

    response = post_result(client, limited, distinctive_body())

    assert response.status_code == 429
    problem(response)
    assert 0 < int(response.headers["Retry-After"]) <= 86400
    assert count_results() == 2
    assert len(state_items("ref")) == 2


def test_the_daily_quota_429_spends_the_nonce_and_is_audited(client):
    limited = register_pharmacy(daily_quota=1)
    assert post_result(client, limited, distinctive_body()).status_code == 201
    raw = encode(distinctive_body())
    headers = signed_headers(limited, "POST", RESULTS_PATH, raw)

    assert client.http.post(RESULTS_PATH, body=raw, headers=headers).status_code == 429
    replayed = client.http.post(RESULTS_PATH, body=raw, headers=headers)

    assert replayed.status_code == 401
    assert len(state_items("nonce")) == 2
    (refused,) = audit_events("result.create", "rate_limited")
    assert refused["reason"] == "daily_quota" and refused["pharmacy_id"] == limited.pharmacy_id
    assert "record" not in refused
    assert [e["reason"] for e in audit_events("auth.failure")] == ["result.create:replayed_nonce"]


def test_a_retry_past_the_quota_still_gets_its_200(client):
    limited = register_pharmacy(daily_quota=1)
    body = distinctive_body()
    assert post_result(client, limited, body).status_code == 201

    assert post_result(client, limited, body).status_code == 200


@pytest.mark.parametrize("quota", [1, 5, 16, 37])
def test_the_daily_quota_holds_exactly_across_its_counter_shards(client, quota):
    limited = register_pharmacy(daily_quota=quota)
    answers = [post_result(client, limited, distinctive_body()).status_code for _ in range(quota + 3)]

    assert answers == [201] * quota + [429] * 3
    assert count_results() == quota
    shards = state_items("quota")
    assert sum(int(item["n"]["N"]) for item in shards) == quota
    assert len(shards) > 1 or quota == 1, "counted over several shards, not one item"


def _transactions(monkeypatch: Any) -> list[list[dict[str, Any]]]:
    """Every TransactWriteItems sent from now on: the list of its items."""
    from botocore.client import BaseClient

    real_call = BaseClient._make_api_call
    sent: list[list[dict[str, Any]]] = []

    def recording(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "TransactWriteItems":
            sent.append(params["TransactItems"])
        return real_call(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return sent


def _item_keys(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    keys = set()
    for item in items:
        (operation,) = item.values()
        key = operation.get("Key") or {k: v for k, v in operation["Item"].items() if k in ("pk", "id", "subject", "sk")}
        keys.add((operation["TableName"], json.dumps(key, sort_keys=True)))
    return keys


def test_a_pharmacy_s_submissions_share_no_item_but_by_chance_a_counter_shard(client, pharmacy, monkeypatch):
    """DynamoDB cancels a transaction holding an item another one holds: concurrent requests of one pharmacy must
    not all hold the same key, pharmacy, quota or usage item (they would conflict with one another)."""
    sent = _transactions(monkeypatch)
    for _ in range(6):
        assert post_result(client, pharmacy, distinctive_body()).status_code == 201

    per_request = [_item_keys(items) for items in sent]
    assert len(per_request) == 6
    registry = table_name("RELAIS_REGISTRY_TABLE")
    assert not any(table == registry for keys in per_request for table, _ in keys), "no key or pharmacy check"
    shared: set[tuple[str, str]] = set()
    for i, keys in enumerate(per_request):
        for other in per_request[i + 1 :]:
            shared |= keys & other
    assert all('"quota#' in key or '"usage#' in key for _, key in shared), shared


def test_a_key_revoked_after_it_was_cached_is_refused_at_commit_by_a_consistent_read(client, pharmacy):
    assert post_result(client, pharmacy, distinctive_body()).status_code == 201  # key now in the process cache
    bootstrap.registry().revoke_key(pharmacy.key_id)

    response = post_result(client, pharmacy, distinctive_body())

    assert response.status_code == 401
    assert count_results() == 1


def _refuse_kms_calls_for_disabled_keys(session: Any) -> None:
    """Make in-process moto answer like KMS does for a disabled key (moto 5.2 ignores the key state)."""
    from botocore.awsrequest import AWSResponse
    from moto.kms.models import kms_backends

    def check(model: Any, params: Any, **_: Any) -> Any:
        arn = bootstrap.settings().kms_key_arn
        account, key_id = arn.split(":")[4], arn.rsplit("/", 1)[1]
        if kms_backends[account][REGION].keys[key_id].key_state == "Enabled":
            return None
        error = {"Code": "DisabledException", "Message": "key is disabled"}
        return AWSResponse(params["url"], 400, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    session.register("before-call.kms", check)


def _assert_503_with_retry_after_and_nothing_stored(response: Any) -> None:
    """A dependency failed: 503 problem with Retry-After, and no result, reference, quota count, nonce or audit."""
    assert response.status_code == 503
    problem(response)
    assert int(response.headers["Retry-After"]) > 0
    assert count_results() == 0
    assert state_items("ref") == []
    assert state_items("quota") == []
    assert state_items("nonce") == []
    assert audit_events("result.create") == []


def test_a_disabled_kms_key_gets_503_with_retry_after_and_nothing_stored(client, pharmacy):
    import boto3

    _refuse_kms_calls_for_disabled_keys(bootstrap.botocore_session())  # before any KMS client or data key exists
    key_id = bootstrap.settings().kms_key_arn.rsplit("/", 1)[1]
    boto3.client("kms", region_name=REGION).disable_key(KeyId=key_id)

    response = post_result(client, pharmacy, distinctive_body())

    _assert_503_with_retry_after_and_nothing_stored(response)


def test_an_unreachable_kms_gets_503_with_retry_after_and_nothing_stored(client, pharmacy):
    from botocore.exceptions import EndpointConnectionError

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://kms.eu-west-3.amazonaws.com")

    bootstrap.botocore_session().register("before-call.kms", unreachable)  # before any KMS client or data key exists

    response = post_result(client, pharmacy, distinctive_body())

    _assert_503_with_retry_after_and_nothing_stored(response)


def _conflicting_transactions(monkeypatch: Any, times: int) -> list[int]:
    """The next ``times`` TransactWriteItems are cancelled for a TransactionConflict, as DynamoDB does when
    another transaction holds one of their items; returns the list of attempts seen."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call
    attempts: list[int] = []

    def conflicted(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        if operation_name == "TransactWriteItems":
            attempts.append(1)
            if len(attempts) <= times:
                reasons = [{"Code": "None"}] * len(params["TransactItems"])
                reasons[-1] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
                error = {"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"}}
                raise ClientError({**error, "CancellationReasons": reasons}, operation_name)
        return real_call(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", conflicted)
    return attempts


def test_a_transaction_conflict_is_retried_and_the_result_accepted_once(client, pharmacy, monkeypatch):
    attempts = _conflicting_transactions(monkeypatch, times=2)

    response = post_result(client, pharmacy, distinctive_body())

    assert response.status_code == 201, response.body
    assert len(attempts) == 3
    assert count_results() == 1
    assert [e["outcome"] for e in audit_events("result.create")] == ["success"]


def test_a_conflict_that_persists_gets_503_with_retry_after_and_nothing_stored(client, pharmacy, monkeypatch):
    from chalicelib.adapters.transaction import ATTEMPTS

    attempts = _conflicting_transactions(monkeypatch, times=100)

    response = post_result(client, pharmacy, distinctive_body())

    assert len(attempts) == ATTEMPTS
    _assert_503_with_retry_after_and_nothing_stored(response)


def test_a_dynamodb_outage_gets_503_with_retry_after_and_nothing_stored(client, pharmacy, monkeypatch):
    from botocore.exceptions import EndpointConnectionError
    from pynamodb.connection.base import Connection

    real_call = Connection._make_api_call

    def unreachable_for_transactions(self: Any, operation_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        if operation_name == "TransactWriteItems":
            raise EndpointConnectionError(endpoint_url=f"https://dynamodb.{REGION}.amazonaws.com")
        result: dict[str, Any] = real_call(self, operation_name, kwargs)
        return result

    monkeypatch.setattr(Connection, "_make_api_call", unreachable_for_transactions)

    response = post_result(client, pharmacy, distinctive_body())

    monkeypatch.undo()  # the checks read DynamoDB
    _assert_503_with_retry_after_and_nothing_stored(response)


def test_raw_items_of_every_table_hold_no_personal_data_in_clear(client, pharmacy):
    body = distinctive_body()
    response = post_result(client, pharmacy, body)
    assert response.status_code == 201, response.body
    post_result(client, pharmacy, {**body, "performer_rpps": "10003879624"})  # a 400
    post_result(client, pharmacy, body, content_type="text/plain")  # a 415
    result_id = json.loads(response.body)["id"]

    everything = {setting: scan(setting) for setting in TABLE_SETTINGS}

    assert all(everything.values()), "every table holds something to look at"
    for setting, items in everything.items():
        for item in items:
            raw = "\n".join(attribute_strings(item))
            for value in PERSONAL_VALUES:
                assert value not in raw, (setting, value)
            for fragment in RESULT_FRAGMENTS:
                assert fragment.decode() not in raw, setting
    record = bootstrap.store().get_result(result_id)
    submission = bootstrap.vault().open_submission(record)
    assert submission.test.result == "negative"
    assert submission.patient.nir == NIR
    assert (submission.patient.family_name, submission.patient.given_name) == (FAMILY_NAME, GIVEN_NAME)
    assert submission.patient.birth_date.isoformat() == BIRTH_DATE
    assert (submission.patient.phone, submission.patient.email) == (PHONE, EMAIL)
    assert submission.patient.address is not None
    assert (submission.patient.address.line, submission.patient.address.city) == (ADDRESS_LINE, CITY)
    assert submission.patient.address.postal_code == POSTAL_CODE


def test_keys_of_dynamodb_items_hold_opaque_ids_only(client, pharmacy):
    body = distinctive_body()
    assert post_result(client, pharmacy, body).status_code == 201
    client_ddb = dynamodb()

    for setting in TABLE_SETTINGS:
        description = client_ddb.describe_table(TableName=table_name(setting))["Table"]
        key_names = {k["AttributeName"] for k in description["KeySchema"]}
        for index in description.get("GlobalSecondaryIndexes", []):
            key_names |= {k["AttributeName"] for k in index["KeySchema"]}
        for item in scan(setting):
            for name in key_names & item.keys():
                value = "".join(attribute_strings(item[name]))
                for personal in PERSONAL_VALUES:
                    assert personal not in value, (setting, name)
                assert "negative" not in value


def test_ciphertext_moved_to_another_record_does_not_decrypt_there(client, pharmacy):
    body_a = distinctive_body()
    body_b = distinctive_body()
    body_b["patient"]["family_name"] = "Autrepersonne"
    id_a = json.loads(post_result(client, pharmacy, body_a).body)["id"]
    id_b = json.loads(post_result(client, pharmacy, body_b).body)["id"]

    dynamodb().update_item(
        TableName=table_name("RELAIS_RESULTS_TABLE"),
        Key={"id": {"S": id_b}},
        UpdateExpression="SET payload = :p",
        ExpressionAttributeValues={":p": _result_item(id_a)["payload"]},
    )

    vault = bootstrap.vault()
    with pytest.raises(DecryptionError):
        vault.open_submission(bootstrap.store().get_result(id_b))
    original = vault.open_submission(bootstrap.store().get_result(id_a))
    assert original.pharmacy_reference == body_a["pharmacy_reference"]
    assert original.patient.family_name == FAMILY_NAME
    assert original.patient.nir == NIR
    assert original.test.result == "negative"


def test_ciphertext_moved_to_another_pharmacy_s_record_does_not_decrypt_there(client, pharmacy, other_pharmacy):
    id_a = json.loads(post_result(client, pharmacy, distinctive_body()).body)["id"]
    stolen = bootstrap.store().get_result(id_a)
    stolen.pharmacy_id = other_pharmacy.pharmacy_id

    with pytest.raises(DecryptionError):
        bootstrap.vault().open_submission(stolen)


def test_a_stored_result_keeps_only_opaque_ids_and_statuses_in_clear(client, pharmacy):
    response = post_result(client, pharmacy, distinctive_body("REF-CLEAR-1"))
    item = _result_item(json.loads(response.body)["id"])

    clear = {name for name, value in item.items() if "B" not in value}
    assert "payload" in item and "B" in item["payload"]
    assert clear <= {
        "id",
        "pharmacy_id",
        "reference_digest",
        "key_id",
        "received_at",
        "expires_at",
        "channels",
        "national_status",
        "pending_national",
        "national_attempts",
        "national_version",
        "version",
        "patient_status",
    }
    assert len(item["reference_digest"]["S"]) == 64 and "REF-CLEAR-1" not in "".join(attribute_strings(item))
    assert response.headers["Location"].endswith(item["id"]["S"])
    assert RESULTS_PATH in response.headers["Location"]


# -- the pharmacy reference: a keyed hash only -------------------------------------------------------------------
#: References a pharmacy's software could make of its patient: the NIR, the phone number, the name.
PERSONAL_REFERENCES = (NIR, PHONE.lstrip("+"), f"{FAMILY_NAME}.{GIVEN_NAME}")


def _every_stored_string() -> str:
    return "\n".join(s for setting in TABLE_SETTINGS for item in scan(setting) for s in attribute_strings(item))


def test_a_reference_holding_personal_data_is_in_no_table_and_no_log_yet_stays_idempotent(client, pharmacy, capfd):
    answers = []
    for reference in PERSONAL_REFERENCES:
        body = distinctive_body(reference)
        answers.append(post_result(client, pharmacy, body))
        answers.append(post_result(client, pharmacy, body))  # the same again: the first answer
        changed = json.loads(json.dumps(body))
        changed["test"]["result"] = "positive"
        answers.append(post_result(client, pharmacy, changed))  # another body: a conflict
        followed = get_result(client, pharmacy, json.loads(answers[-3].body)["id"])
        assert json.loads(followed.body)["pharmacy_reference"] == reference  # read back from the ciphertext

    assert [a.status_code for a in answers] == [201, 200, 409] * len(PERSONAL_REFERENCES)
    assert count_results() == len(PERSONAL_REFERENCES)
    stored, out = _every_stored_string(), capfd.readouterr()
    for reference in PERSONAL_REFERENCES:
        assert reference not in stored
        assert reference not in out.out + out.err
    refs = state_items("ref")
    assert len(refs) == len(PERSONAL_REFERENCES)
    assert all(len(item["pk"]["S"].rsplit("#", 1)[1]) == 64 for item in refs)


def test_the_same_reference_of_two_pharmacies_has_unrelated_digests(client, pharmacy, other_pharmacy):
    for actor in (pharmacy, other_pharmacy):
        assert post_result(client, actor, distinctive_body("SHARED-1")).status_code == 201

    digests = {item["pk"]["S"].rsplit("#", 1)[1] for item in state_items("ref")}
    assert len(digests) == 2


def test_the_reference_key_is_sealed_once_per_stage_and_opened_once_per_cold_process(client, pharmacy):
    from chalicelib.adapters.reference_key import ITEM_KEY

    class KmsCalls:
        def __init__(self) -> None:
            self.operations: list[str] = []

        def __call__(self, model: Any, **_: Any) -> None:
            self.operations.append(model.name)

    assert post_result(client, pharmacy, distinctive_body()).status_code == 201  # the first process seals it
    (sealed,) = [item for item in scan("RELAIS_STATE_TABLE") if item["pk"]["S"] == ITEM_KEY]
    assert "B" in sealed["sealed"] and "expires_at" not in sealed

    bootstrap.override()  # a cold process: every component, client and cache is built anew
    calls = KmsCalls()
    bootstrap.botocore_session().register("before-call.kms.*", calls)
    bodies = [distinctive_body(f"COLD-{i}") for i in range(50)]
    for body in bodies:
        assert post_result(client, pharmacy, body).status_code == 201
    # the sealed reference key and the sealed receipt key opened once each, one data key for the results
    assert sorted(calls.operations) == ["Decrypt", "Decrypt", "GenerateDataKey"]
    assert post_result(client, pharmacy, bodies[0]).status_code == 200


def test_following_a_result_opens_its_reference_alone_never_its_submission(client, pharmacy, monkeypatch):
    from chalicelib.services.vault import ResultVault

    rid = json.loads(post_result(client, pharmacy, distinctive_body("FOLLOW-ALONE-1")).body)["id"]

    def refuse(self: Any, record: Any) -> Any:
        raise AssertionError("the submission was opened")

    monkeypatch.setattr(ResultVault, "open", refuse)
    followed = get_result(client, pharmacy, rid)
    assert followed.status_code == 200 and json.loads(followed.body)["pharmacy_reference"] == "FOLLOW-ALONE-1"
    item = _result_item(rid)
    assert "B" in item["reference_sealed"] and b"FOLLOW-ALONE-1" not in item["reference_sealed"]["B"]
