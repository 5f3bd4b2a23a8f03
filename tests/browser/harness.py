"""The real app served over HTTP in this process, on a moto server, for the browser tests and ``bench/patient.py``.

:func:`serve` starts a :class:`moto.server.ThreadedMotoServer` on a free port, provisions the stack from
``infra/resources.json`` against it (stage ``browser``, so no pynamodb connection is shared with the
in-process moto tests), and serves ``app.py`` with Chalice's own local dev server in a thread. While it runs
``os.environ`` points boto3 at the moto server; everything is restored when the context exits.

:meth:`PatientSite.new_link` seeds a result through the real services (signed submission, notifier) and
returns the token the patient would have received; messages are captured in memory instead of SNS/SES.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REGION = "eu-west-3"
STAGE = "browser"
BIRTH_DATE = "1984-12-03"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class CapturingSender:
    """Stands in for SNS/SES: keeps the messages (test only)."""

    def __init__(self) -> None:
        self.sms: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send_sms(self, phone: str, text: str) -> str:
        with self.lock:
            self.sms.append((phone, text))
        return "captured"

    def send_email(self, address: str, content: Any) -> str:
        return "captured"


@dataclass
class PatientSite:
    base_url: str
    aws_endpoint: str
    sender: CapturingSender
    pharmacy: dict[str, Any] = field(default_factory=dict)

    def new_link(
        self,
        *,
        given_name: str = "Claire",
        family_name: str = "Martin",
        result: str = "negative",
        birth_date: str = BIRTH_DATE,
    ) -> tuple[str, str]:
        """A fresh result notified by SMS: ``(result id, token)``."""
        import json

        from chalicelib import bootstrap
        from tests.factories import valid_body
        from tests.signing import sign, to_signed_request

        body = valid_body(datetime.now(UTC))
        body["pharmacy_reference"] = f"B-{secrets.token_hex(8)}"
        body["patient"].update(given_name=given_name, family_name=family_name, birth_date=birth_date)
        body["patient"].pop("nir", None)
        body["test"]["result"] = result
        body["notify"] = ["sms"]
        raw = json.dumps(body).encode()
        url = "http://localhost/v1/results"
        headers = sign("POST", url, key_id=self.pharmacy["key_id"], private_key=self.pharmacy["private_key"], body=raw)
        accepted = bootstrap.results_service().submit(to_signed_request("POST", url, headers, raw))
        assert accepted.created, accepted
        result_id = accepted.result_id
        assert bootstrap.notify_service().notify(result_id) == "sent"
        match = re.search(r"/r#([A-Za-z0-9_-]+)", self.sender.sms[-1][1])
        assert match
        return result_id, match.group(1)


@contextlib.contextmanager
def serve(extra_env: dict[str, str] | None = None) -> Iterator[PatientSite]:
    """The app on ``http://127.0.0.1:<free port>`` with its own moto server, until the context exits."""
    import boto3
    from chalice.config import Config
    from chalice.local import create_local_server
    from moto.server import ThreadedMotoServer

    from app import app
    from chalicelib import bootstrap
    from chalicelib.domain.records import Pharmacy, PharmacyKey, new_id
    from infra.provision import provision
    from tests.signing import new_keypair

    aws_port, api_port = free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=aws_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{aws_port}"
    base_url = f"http://127.0.0.1:{api_port}"
    saved_env = dict(os.environ)
    saved_class = app.__class__
    server = None
    thread = None
    try:
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
        )
        env = provision(boto3.client("cloudformation", region_name=REGION, endpoint_url=endpoint), STAGE)
        os.environ.update(env)
        os.environ.update(RELAIS_PUBLIC_BASE_URL=base_url, RELAIS_PATIENT_IP_FAILURES="100000", **(extra_env or {}))
        bootstrap.reset()
        sender = CapturingSender()
        bootstrap.override(messaging=sender)

        private_key, pem = new_keypair()
        pharmacy_id, key_id = f"ph_{new_id(16)}", f"key_{new_id(16)}"
        bootstrap.registry().add_pharmacy(
            Pharmacy(pharmacy_id, f"{secrets.randbelow(10**9):09d}", "Pharmacie de la Gare", "active"),
            PharmacyKey(key_id, pharmacy_id, pem, datetime.now(UTC)),
        )
        server = create_local_server(app, Config.create(chalice_stage=STAGE, app_name="relais"), "127.0.0.1", api_port)
        thread = threading.Thread(target=server.server.serve_forever, daemon=True)
        thread.start()
        site = PatientSite(base_url, endpoint, sender)
        site.pharmacy = {"pharmacy_id": pharmacy_id, "key_id": key_id, "private_key": private_key}
        yield site
    finally:
        if server is not None:
            server.shutdown()
            server.server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        moto.stop()
        app.__class__ = saved_class
        os.environ.clear()
        os.environ.update(saved_env)
        bootstrap.reset()
