"""Every ``409`` says which conflict it is: one fixed ``detail`` per cause, never a submitted value (contract v2).

Through the Chalice test client on the real app and moto, as the neighbouring route tests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import bootstrap
from tests.integration.helpers import PERSONAL_VALUES, distinctive_body, post_result, problem, signed_headers
from tests.integration.patient_support import new_result, patient_env

__all__ = ["patient_env"]


def correct(client: Any, actor: Any, result_id: str, body: dict[str, Any], **sign_kwargs: Any) -> Any:
    path = f"/v1/results/{result_id}/correction"
    raw = json.dumps(body).encode()
    return client.http.post(path, body=raw, headers=signed_headers(actor, "POST", path, raw, **sign_kwargs))


def resend(client: Any, actor: Any, result_id: str) -> Any:
    path = f"/v1/results/{result_id}/resend"
    return client.http.post(path, body=b"{}", headers=signed_headers(actor, "POST", path, b"{}"))


def slip(client: Any, actor: Any, result_id: str) -> Any:
    path = f"/v1/results/{result_id}/slip"
    headers = {**signed_headers(actor, "POST", path, b"{}"), "Accept": "application/pdf"}
    return client.http.post(path, body=b"{}", headers=headers)


def positive(reference: str) -> dict[str, Any]:
    return {"correction_reference": reference, "reason": "wrong_result", "result": "positive"}


def conflict_detail(response: Any, *submitted: str) -> str:
    """The ``detail`` of a 409 problem document, checked to hold none of ``submitted``."""
    assert response.status_code == 409, response.body
    document = problem(response)
    assert document["type"] == "urn:relais:problem:conflict" and document["title"] == "Conflict"
    for value in submitted:
        assert value not in json.dumps(document), value
    detail: str = document["detail"]
    return detail


def withdrawn_result(client: Any, actor: Any, *, notify: tuple[str, ...] = ("sms",)) -> str:
    result_id = new_result(actor, notify=notify)
    withdrawal = {"correction_reference": "W-1", "reason": "entered_in_error"}
    assert correct(client, actor, result_id, withdrawal).status_code == 202
    return result_id


def test_a_pharmacy_reference_used_for_another_result(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    body = distinctive_body()
    assert post_result(client, actor, body).status_code == 201
    changed = json.loads(json.dumps(body))
    changed["test"]["result"] = "positive" if body["test"]["result"] != "positive" else "negative"

    detail = conflict_detail(post_result(client, actor, changed), body["pharmacy_reference"], *PERSONAL_VALUES)

    assert detail == "this pharmacy_reference was already used for a different result"


def test_a_correction_reference_used_for_another_correction(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    result_id = new_result(actor, notify=())
    assert correct(client, actor, result_id, positive("CORR-77")).status_code == 202
    other = {"correction_reference": "CORR-77", "reason": "wrong_result", "result": "invalid"}

    detail = conflict_detail(correct(client, actor, result_id, other), "CORR-77", "invalid")

    assert detail == "this correction_reference was already used on this result for a different correction"


def test_a_correction_after_the_30_day_window(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    result_id = new_result(actor, notify=())
    later = datetime.now(UTC) + timedelta(days=31)  # the sample was taken minutes before it was submitted
    bootstrap.override(clock=lambda: later)

    response = correct(client, actor, result_id, positive("C-LATE"), created=int(later.timestamp()))

    assert conflict_detail(response, "C-LATE") == (
        "this result can no longer be corrected: its correction window (30 days after test.sampled_at) has closed"
    )


def test_a_correction_past_the_most_a_result_may_have(patient_env):
    from chalicelib.services.corrections import MAX_CORRECTIONS

    client, actor = patient_env["client"], patient_env["pharmacy"]
    result_id = new_result(actor, notify=())
    for n in range(MAX_CORRECTIONS):
        result = "positive" if n % 2 == 0 else "negative"
        body = {"correction_reference": f"C-{n}", "reason": "wrong_result", "result": result}
        assert correct(client, actor, result_id, body).status_code == 202, n

    detail = conflict_detail(correct(client, actor, result_id, positive("C-MORE")), "C-MORE")

    assert detail == "this result already has 20 corrections, the most a result may have"


WITHDRAWN = "this result was withdrawn (entered_in_error): it takes no further correction, resend or slip"


def test_a_correction_of_a_withdrawn_result(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    result_id = withdrawn_result(client, actor)

    assert conflict_detail(correct(client, actor, result_id, positive("C-AFTER")), "C-AFTER") == WITHDRAWN


def test_a_resend_of_a_withdrawn_result(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    result_id = withdrawn_result(client, actor)

    assert conflict_detail(resend(client, actor, result_id)) == WITHDRAWN


def test_a_slip_of_a_withdrawn_result(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    result_id = withdrawn_result(client, actor, notify=("paper",))

    assert conflict_detail(slip(client, actor, result_id)) == WITHDRAWN


def test_a_resend_of_a_result_with_no_message_channel(patient_env):
    client, actor = patient_env["client"], patient_env["pharmacy"]
    expected = "the patient asked for no message: there is nothing to resend (a paper slip is made with /slip)"
    for notify in ((), ("paper",)):
        result_id = new_result(actor, notify=notify)

        assert conflict_detail(resend(client, actor, result_id)) == expected, notify
