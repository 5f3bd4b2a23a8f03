from __future__ import annotations

import json

from chalice.test import Client

from tests.factories import valid_body
from tests.signing import new_keypair, sign


def test_smoke(aws):
    from datetime import UTC, datetime

    from app import app
    from chalicelib import bootstrap
    from chalicelib.domain.records import Pharmacy, PharmacyKey

    priv, pem = new_keypair()
    bootstrap.registry().add_pharmacy(
        Pharmacy("ph0000000001", "750000001", "Pharmacie Test", "active"),
        PharmacyKey("kid0000000000000001", "ph0000000001", pem, datetime.now(UTC)),
    )
    body = json.dumps(valid_body(datetime.now(UTC))).encode()
    headers = sign("POST", "http://localhost/v1/results", key_id="kid0000000000000001", private_key=priv, body=body)
    with Client(app) as client:
        r = client.http.post("/v1/results", body=body, headers=headers)
        print(r.status_code, r.body)
        assert r.status_code == 201
        rid = json.loads(r.body)["id"]
        h = sign("GET", f"http://localhost/v1/results/{rid}", key_id="kid0000000000000001", private_key=priv)
        r = client.http.get(f"/v1/results/{rid}", headers=h)
        print(r.status_code, r.body)
        assert r.status_code == 200
