"""API Gateway's own answers (infra/gateway_responses.py) render as the error envelope."""

from __future__ import annotations

import json

import boto3
from moto import mock_aws

from chalicelib.api.openapi import error_codes
from infra import gateway_responses as gr

CONTEXT = {"$context.requestId": "req-1", "$context.error.responseType": "MISSING_AUTHENTICATION_TOKEN",
           "$context.requestTime": "01/Dec/2026:21:33:40 +0000",
           "$context.error.messageString": '"Missing Authentication Token"'}


def render(template: str) -> dict:
    for name, value in sorted(CONTEXT.items(), key=lambda kv: -len(kv[0])):
        template = template.replace(name, value)
    return json.loads(template)


def test_every_gateway_response_is_an_envelope_with_a_documented_code() -> None:
    for kind, entry in gr.gateway_responses().items():
        body = render(entry["ResponseTemplates"]["application/json"])
        error = body["error"]
        assert set(error) == {"code", "message", "details", "timestamp"}, kind
        status = int(entry.get("StatusCode", "400" if kind == "DEFAULT_4XX" else "500"))
        if status != 413:
            assert error["code"] in error_codes(status), (kind, error["code"])
    unknown = gr.gateway_responses()["MISSING_AUTHENTICATION_TOKEN"]
    assert unknown["StatusCode"] == "404"


def test_merge_template_sets_the_generated_rest_apis_gateway_responses() -> None:
    doc = gr.merge_template()
    assert set(doc["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]) == set(gr.RESPONSES)


def test_apply_puts_every_response_on_a_deployed_api() -> None:
    with mock_aws():
        client = boto3.client("apigateway", region_name="us-east-1")
        api_id = client.create_rest_api(name="ymera")["id"]
        root = client.get_resources(restApiId=api_id)["items"][0]["id"]  # a stage needs one method to deploy
        client.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
        client.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
        assert gr.apply(client, api_id, "api") == list(gr.RESPONSES)
        got = {item["responseType"]: item for item in client.get_gateway_responses(restApiId=api_id)["items"]}
        assert got["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
        assert "NOT_FOUND" in got["MISSING_AUTHENTICATION_TOKEN"]["responseTemplates"]["application/json"]
