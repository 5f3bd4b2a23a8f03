"""HTTP client of the national screening system: POST a FHIR Bundle, nothing else.

Bearer token from SSM Parameter Store (SecureString) and, where configured, a client
certificate from Secrets Manager (mutual TLS). Timeouts always; no retries here (the queue
retries, with backoff). Never logs the bundle.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import urllib3

from chalicelib.domain.delivery import Answer

TOKEN_TTL_SECONDS = 300.0


class NationalClient:
    def __init__(
        self,
        *,
        url: str,
        timeout_seconds: float,
        ssm: Any = None,
        token_parameter: str = "",
        secrets: Any = None,
        client_cert_secret: str = "",
    ) -> None:
        if not url:
            raise ValueError("RELAIS_NATIONAL_URL is not configured")
        self._url = url
        self._timeout = urllib3.Timeout(connect=min(2.0, timeout_seconds), read=timeout_seconds)
        self._ssm = ssm
        self._token_parameter = token_parameter
        self._token: tuple[float, str] | None = None
        pool_kwargs: dict[str, Any] = {"retries": False, "timeout": self._timeout}
        if client_cert_secret and secrets is not None:
            pool_kwargs.update(self._client_cert_files(secrets, client_cert_secret))
        self._http = urllib3.PoolManager(num_pools=4, maxsize=10, **pool_kwargs)

    @staticmethod
    def _client_cert_files(secrets: Any, secret_id: str) -> dict[str, str]:
        secret = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
        folder = tempfile.mkdtemp(prefix="relais-mtls-")
        paths = {}
        for name, field in (("cert_file", "cert_pem"), ("key_file", "key_pem")):
            path = os.path.join(folder, field)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret[field])
            paths[name] = path
        return paths

    def _bearer(self) -> str | None:
        if not self._token_parameter or self._ssm is None:
            return None
        now = time.monotonic()
        if self._token is None or now - self._token[0] > TOKEN_TTL_SECONDS:
            value = self._ssm.get_parameter(Name=self._token_parameter, WithDecryption=True)["Parameter"]["Value"]
            self._token = (now, value)
        return self._token[1]

    def post_bundle(self, bundle: dict[str, Any]) -> Answer:
        """POST one bundle; any transport failure is an Answer without status (to be retried)."""
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._http.request("POST", self._url, body=json.dumps(bundle).encode(), headers=headers)
        except urllib3.exceptions.HTTPError:
            return Answer(status=None)
        body: Any = None
        try:
            body = json.loads(response.data) if response.data else None
        except ValueError:
            body = None
        retry_after = response.headers.get("Retry-After")
        return Answer(
            status=response.status,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            body=body,
        )
