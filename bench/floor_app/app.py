"""The floor of ``bench/http_intake.py``: what any HTTP intake costs on the local stack, and nothing more.

One unauthenticated route, ``POST /floor``, that writes one plaintext ``put_item`` (the request body, padded to
``FLOOR_BLOB_BYTES``: the size of a stored result's ciphertext) into the table ``FLOOR_TABLE`` (the local stack's
state table) and answers ``201``. Served by the same ``chalice local`` as the API (``python -m infra.local.api``,
``--project-dir`` this folder) against the same moto server (``AWS_ENDPOINT_URL``): the difference between the
two is Relais' intake path, not the HTTP server or the AWS stand-in. Not deployed; no signature, no encryption.
"""

import os
import time
import uuid

import boto3
from chalice.app import Chalice, Response

app = Chalice(app_name="relais-floor", configure_logs=False)

_TABLE = os.environ["FLOOR_TABLE"]
_BLOB_BYTES = int(os.environ.get("FLOOR_BLOB_BYTES", "0"))
_DYNAMODB = boto3.client("dynamodb")  # one client per process, as a warm Lambda keeps it


@app.route("/floor", methods=["POST"], content_types=["application/json"])
def floor() -> Response:
    request = app.current_request
    assert request is not None
    raw = request.raw_body or b""
    body = raw if isinstance(raw, bytes) else raw.encode()
    item_id = uuid.uuid4().hex
    _DYNAMODB.put_item(
        TableName=_TABLE,
        Item={
            "pk": {"S": f"floor#{item_id}"},
            "expires_at": {"N": str(int(time.time()) + 3600)},
            "blob": {"B": body.ljust(_BLOB_BYTES, b" ")},
        },
    )
    return Response(status_code=201, body={"id": item_id}, headers={"Content-Type": "application/json"})
