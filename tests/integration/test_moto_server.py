"""The embedded AWS's HTTP server keeps connections alive, as AWS endpoints do (``infra/local/moto_server.py``)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from infra.local.moto_server import make_server

LIST_TABLES = {
    "X-Amz-Target": "DynamoDB_20120810.ListTables",
    "Content-Type": "application/x-amz-json-1.0",
    "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/eu-west-3/dynamodb/aws4_request, "
    "SignedHeaders=host, Signature=0",
}


@pytest.fixture
def server() -> Iterator[int]:
    served = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    try:
        yield int(served.effective_port)
    finally:
        served.close()
        thread.join(5)


def test_one_connection_carries_many_calls(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    sockets = set()
    for _ in range(3):
        connection.request("POST", "/", body="{}", headers=LIST_TABLES)
        answer = connection.getresponse()
        assert answer.status == 200 and "TableNames" in json.loads(answer.read())
        assert not answer.will_close, answer.getheader("Connection")
        sockets.add(id(connection.sock))
    assert len(sockets) == 1, "every call reused the first connection"
    connection.close()


def test_the_model_dump_can_be_limited_to_the_services_asked_for(server):
    import boto3
    import requests

    endpoint = f"http://127.0.0.1:{server}"
    kwargs = {"endpoint_url": endpoint, "region_name": "eu-west-3"}
    kwargs |= {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    dynamodb = boto3.client("dynamodb", **kwargs)
    dynamodb.create_table(
        TableName="dumped",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="dumped", Item={"pk": {"S": "one"}})
    boto3.client("sns", **kwargs).publish(PhoneNumber="+33612345678", Message="dumped")

    whole = requests.get(f"{endpoint}/moto-api/data.json", timeout=30).json()
    assert whole["dynamodb"] and whole["sns"], "without a filter, moto's whole dump"
    limited = requests.get(f"{endpoint}/moto-api/data.json", params={"service": ["sns", "ses"]}, timeout=30).json()
    assert set(limited) == {"sns", "ses"} & set(whole)
    assert "+33612345678" in json.dumps(limited["sns"]), "the SMS sent is in the limited dump"
    again = requests.get(f"{endpoint}/moto-api/data.json", timeout=30).json()
    assert set(again) == set(whole), "a filtered dump leaves moto's registry whole"
