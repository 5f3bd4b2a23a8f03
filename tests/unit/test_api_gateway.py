"""What API Gateway itself answers in the deployed template: Relais' problems and 405s, never its own 403 text."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.routes.methods import HTTP_METHODS
from infra.template import INTAKE_THROTTLE


def _api(template: dict[str, Any]) -> dict[str, Any]:
    (api,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Api"]
    return api["Properties"]


def test_every_path_declares_every_method_so_a_wrong_method_reaches_relais_and_gets_405(packaged_template):
    paths = _api(packaged_template)["DefinitionBody"]["paths"]

    assert "/v1/results" in paths
    for path, operations in paths.items():
        assert {m.lower() for m in HTTP_METHODS} <= set(operations), path


def test_an_unknown_path_is_the_404_problem_not_missing_authentication_token(packaged_template):
    responses = _api(packaged_template)["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
    unknown = responses["MISSING_AUTHENTICATION_TOKEN"]

    assert unknown["statusCode"] == "404"
    assert json.loads(unknown["responseTemplates"]["application/json"]) == {
        "type": "urn:relais:problem:not-found",
        "title": "Not found",
        "status": 404,
    }
    assert unknown["responseParameters"]["gatewayresponse.header.Content-Type"] == "'application/problem+json'"


def test_every_gateway_answer_is_a_problem_document_with_static_headers(packaged_template):
    responses = _api(packaged_template)["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]

    assert {"THROTTLED", "WAF_FILTERED", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    for name, response in responses.items():
        body = json.loads(response["responseTemplates"]["application/json"])
        assert body["type"].startswith("urn:relais:problem:"), name
        if "statusCode" in response:
            assert body["status"] == int(response["statusCode"]), name
        for header, value in response["responseParameters"].items():
            assert header.startswith("gatewayresponse.header."), name
            assert value.startswith("'") and value.endswith("'") and "'" not in value[1:-1], (name, header)
    assert responses["THROTTLED"]["responseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_a_gateway_timeout_says_the_outcome_is_unknown_not_that_nothing_was_accepted(packaged_template):
    responses = _api(packaged_template)["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]

    for name in ("INTEGRATION_TIMEOUT", "DEFAULT_5XX"):
        title = json.loads(responses[name]["responseTemplates"]["application/json"])["title"]
        assert "nothing was accepted" not in title, name
        assert "same pharmacy_reference" in title, name
    assert responses["INTEGRATION_TIMEOUT"]["statusCode"] == "504"


def test_intake_is_throttled_above_the_national_peak_bursts(packaged_template):
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in _api(packaged_template)["MethodSettings"]}
    intake = settings[("/~1v1~1results", "POST")]

    assert (intake["ThrottlingRateLimit"], intake["ThrottlingBurstLimit"]) == INTAKE_THROTTLE
    assert intake["ThrottlingRateLimit"] >= 300  # several hundred per second at bursts (peak day 2022-01-10)


# -- floods hit the flooder (issue 11, item 5) ----------------------------------------------------------------------
def test_the_patient_side_is_throttled_for_the_peak_days_messages(packaged_template):
    from chalicelib.config import Settings

    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in _api(packaged_template)["MethodSettings"]}
    messages_per_second = Settings.sms_per_second + Settings.email_per_second  # patients open links as they arrive
    for key in [
        ("/~1v1~1patient~1result", "POST"),
        ("/~1r", "GET"),
        ("/~1r~1result.css", "GET"),
        ("/~1r~1result.js", "GET"),
    ]:
        assert settings[key]["ThrottlingRateLimit"] >= messages_per_second, key
        assert settings[key]["ThrottlingBurstLimit"] >= 2 * messages_per_second, key


def test_the_access_log_records_the_client_address(packaged_template):
    access_log = json.loads(_api(packaged_template)["AccessLogSetting"]["Format"])
    assert access_log["ip"] == "$context.identity.sourceIp"


def test_every_media_type_is_binary_so_the_slip_is_bytes_whatever_accept_lists_first(packaged_template):
    """API Gateway decodes a base64-encoded answer (the slip's PDF) only when the request's first ``Accept`` type is
    one of these: with ``*/*`` a pharmacy sending ``Accept: */*`` or none gets the PDF, not its base64 text."""
    assert _api(packaged_template)["DefinitionBody"]["x-amazon-apigateway-binary-media-types"] == ["*/*"]
