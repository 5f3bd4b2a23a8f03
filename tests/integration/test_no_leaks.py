"""Contract §5: no personal value, signature or nonce in any log line, nor in any error body.

All log output is captured three ways: the Powertools logger's own JSON stream (redirected to a buffer,
since its handler holds the ``sys.stdout`` of the moment it was built), file descriptors 1 and 2
(``capfd``), and every record of the ``logging`` module down to DEBUG (``caplog``, libraries included).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.observability import logger
from tests.integration.helpers import (
    NIR,
    PERSONAL_VALUES,
    RESULTS_PATH,
    audit_events,
    count_results,
    distinctive_body,
    encode,
    get_result,
    leaks,
    post_result,
    signed_headers,
)


@pytest.fixture
def powertools_stream() -> Iterator[io.StringIO]:
    """Everything the Relais logger writes, whatever stream its handlers were built with.

    The handler's stream is swapped without ``setStream()``, which would flush the old stream: when the logger
    was built during another test, that is a capture file pytest has closed since.
    """
    buffer = io.StringIO()
    handlers = [h for h in logger().handlers if isinstance(h, logging.StreamHandler)]
    assert handlers, "the Relais logger writes through a stream handler"
    previous = []
    for handler in handlers:
        with handler.lock or contextlib.nullcontext():
            previous.append(handler.stream)
            handler.stream = buffer
    try:
        yield buffer
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            with handler.lock or contextlib.nullcontext():
                handler.stream = stream


#: Numbers every log record carries (times, thread and process ids, line numbers): the digits of a timing float
#: once matched a random 5-digit postal code. Everything else of a record (message, args, exception, extras) is kept.
_RECORD_NUMBERS = {"created", "msecs", "relativeCreated", "thread", "process", "lineno", "levelno"}


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_NUMBERS}


def _secrets_of(headers: dict[str, str]) -> list[str]:
    """The nonce and the signature bytes (base64) of a signed request."""
    nonce = headers["Signature-Input"].split('nonce="')[1].split('"')[0]
    signature = headers["Signature"].split(":")[1]
    return [nonce, signature]


def test_no_log_line_holds_personal_data_signatures_or_nonces(client, pharmacy, powertools_stream, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    body = distinctive_body()
    raw = encode(body)
    sent_secrets: list[str] = []
    statuses = []

    def send(payload: bytes, **sign_kwargs: Any) -> Any:
        headers = signed_headers(pharmacy, "POST", RESULTS_PATH, payload, **sign_kwargs)
        sent_secrets.extend(_secrets_of(headers))
        response = client.http.post(RESULTS_PATH, body=payload, headers=headers)
        statuses.append(response.status_code)
        return response

    created = send(raw)  # 201
    send(raw)  # identical retry: 200
    invalid = json.loads(raw)
    invalid["patient"]["nir"] = NIR[:-2] + "00"
    send(encode(invalid))  # 400
    send(raw, created=int(time.time()) - 3600)  # 401 (stale)
    changed = json.loads(raw)
    changed["test"]["result"] = "positive"
    send(encode(changed))  # 409
    send(raw, content_type="text/plain")  # 415
    result_id = json.loads(created.body)["id"]
    follow_headers = signed_headers(pharmacy, "GET", f"{RESULTS_PATH}/{result_id}")
    sent_secrets.extend(_secrets_of(follow_headers))
    statuses.append(client.http.get(f"{RESULTS_PATH}/{result_id}", headers=follow_headers).status_code)

    assert statuses == [201, 200, 400, 401, 409, 415, 200]
    assert count_results() == 1
    out, err = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.getMessage()} {_record_fields(r)}" for r in caplog.records)
    logs = {"powertools": powertools_stream.getvalue(), "stdout": out, "stderr": err, "logging": records}
    assert '"status":201' in logs["powertools"].replace(" ", ""), "the capture sees the access log"
    for where, text in logs.items():
        for value in (*PERSONAL_VALUES, NIR[:-2] + "00", *sent_secrets):
            assert not leaks(value, text), (where, value)
        assert '"result":"negative"' not in text.replace(" ", "")
        assert '"result":"positive"' not in text.replace(" ", "")


def test_no_error_body_echoes_a_submitted_value(client, pharmacy):
    body = distinctive_body("ECHO-REF-42")
    raw = encode(body)
    assert client.http.post(RESULTS_PATH, body=raw, headers=signed_headers(pharmacy, "POST", RESULTS_PATH, raw))

    cases: dict[str, tuple[bytes, dict[str, Any]]] = {}
    invalid = json.loads(raw)
    for name in ("family_name", "given_name"):
        invalid["patient"][name] += "\u0007"
    invalid["patient"]["birth_date"] = "1984-13-03"
    invalid["patient"]["email"] = "ysoline@exa mple.org"
    invalid["patient"]["phone"] = "+3379876543"
    invalid["patient"]["address"]["postal_code"] = "8364O"
    invalid["patient"]["extra_private_note"] = "Vergeronnettes"
    cases["400"] = (encode(invalid), {})
    cases["401"] = (raw, {"created": int(time.time()) + 3600})
    changed = json.loads(raw)
    changed["patient"]["given_name"] = "Ysolinette"
    cases["409"] = (encode(changed), {})
    oversized = json.loads(raw)
    oversized["patient"]["address"]["line"] = "Vergeronnettes " * 1200
    cases["413"] = (encode(oversized), {})
    cases["415"] = (raw, {"content_type": "text/plain"})

    for expected, (payload, sign_kwargs) in cases.items():
        headers = signed_headers(pharmacy, "POST", RESULTS_PATH, payload, **sign_kwargs)
        response = client.http.post(RESULTS_PATH, body=payload, headers=headers)
        assert str(response.status_code) == expected, (expected, response.body)
        text = response.body.decode()
        for value in (
            *PERSONAL_VALUES,
            "ECHO-REF-42",
            "Ysolinette",
            "1984-13-03",
            "exa mple",
            "+3379876543",
            "8364O",
            "Vergeronnettes",
            pharmacy.key_id,
            *_secrets_of(headers),
        ):
            assert value not in text, (expected, value)
    assert count_results() == 1


def test_a_404_echoes_neither_the_requested_id_nor_the_caller(client, pharmacy):
    response = get_result(client, pharmacy, "AskedForThisIdentifier123")

    assert response.status_code == 404
    assert "AskedForThisIdentifier123" not in response.body.decode()
    assert pharmacy.key_id not in response.body.decode()


def test_the_request_id_answered_is_the_one_in_the_audit_event_and_the_log_line(client, pharmacy, powertools_stream):
    response = post_result(client, pharmacy, distinctive_body())

    request_id = response.headers["X-Request-Id"]
    assert response.status_code == 201
    assert [e["request_id"] for e in audit_events("result.create")] == [request_id]
    lines = [json.loads(line) for line in powertools_stream.getvalue().splitlines() if line.startswith("{")]
    assert [line["status"] for line in lines if line.get("request_id") == request_id and "status" in line] == [201]


def test_log_lines_carry_the_opaque_ids_the_saved_queries_read_and_nothing_leaks_to_the_next_request(
    client, pharmacy, powertools_stream
):
    from chalicelib import bootstrap

    created = post_result(client, pharmacy, distinctive_body("LOG-1"))
    result_id = json.loads(created.body)["id"]
    assert get_result(client, pharmacy, result_id).status_code == 200
    refused = post_result(client, pharmacy, distinctive_body("LOG-2"), created=1)
    assert refused.status_code == 401
    bootstrap.national_queue().dead_letter(result_id, "http-422:invalid", 3)

    lines = [json.loads(line) for line in powertools_stream.getvalue().splitlines() if line.startswith("{")]
    requests_ = [line for line in lines if line.get("message") == "request"]
    assert [(r["status"], r.get("pharmacy_id"), r.get("result_id")) for r in requests_] == [
        (201, pharmacy.pharmacy_id, result_id),
        (200, pharmacy.pharmacy_id, result_id),
        (401, None, None),
    ]
    (letter,) = [line for line in lines if line.get("message") == "dead letter"]
    assert (letter["result_id"], letter["reason"], letter["attempts"]) == (result_id, "http-422:invalid", 3)
    assert letter["queue"].endswith("national-dlq")
