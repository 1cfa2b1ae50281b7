"""API Gateway's own answers (unknown route, throttling, oversize body, gateway 5xx) in the error envelope.

API Gateway answers these without calling the Lambda, so the app cannot shape them: an unknown path or
method gets its 403 `{"message": "Missing Authentication Token"}` unless the REST API defines a
*gateway response*. Chalice has no app-level setting for them, so they are added here, two ways:

- `chalice package`: merge `merge_template()` (`python -m infra.gateway_responses --merge-template
  infra/build/gateway-responses.json`, then `chalice package --merge-template
  infra/build/gateway-responses.json out/`): it sets `GatewayResponses` on the generated `RestAPI`.
- `chalice deploy`: after deploying, `python -m infra.gateway_responses --rest-api-id ID --stage api`
  puts them on the deployed API and redeploys the stage (idempotent: PutGatewayResponse replaces).

`timestamp` is API Gateway's `$context.requestTime` (`01/Dec/2026:21:33:40 +0000`, not ISO 8601): no mapping
variable gives ISO time. The local runtime answers the unknown route the same way
(infra/local/server.py), with an ISO timestamp.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: response type -> (status, error.code, message). None keeps the gateway's status / message.
RESPONSES: dict[str, tuple[int | None, str, str | None]] = {
    "MISSING_AUTHENTICATION_TOKEN": (404, "NOT_FOUND", "no such route"),
    "THROTTLED": (429, "RATE_LIMITED", "too many requests; retry later"),
    "REQUEST_TOO_LARGE": (413, "BAD_REQUEST", "request body is too large"),
    "DEFAULT_4XX": (None, "BAD_REQUEST", None),
    "DEFAULT_5XX": (None, "INTERNAL_ERROR", "internal error"),
}


def template(code: str, message: str | None) -> str:
    """The mapping template: the envelope, with API Gateway's request id in `details`."""
    quoted = json.dumps(message) if message is not None else "$context.error.messageString"
    details = '{"request_id": "$context.requestId", "gateway_response": "$context.error.responseType"}'
    return ('{"error": {"code": "' + code + '", "message": ' + quoted + ', "details": ' + details
            + ', "timestamp": "$context.requestTime"}}')


def gateway_responses() -> dict[str, dict[str, Any]]:
    """SAM `AWS::Serverless::Api.GatewayResponses`."""
    out: dict[str, dict[str, Any]] = {}
    for kind, (status, code, message) in RESPONSES.items():
        entry: dict[str, Any] = {
            "ResponseTemplates": {"application/json": template(code, message)},
            "ResponseParameters": {"Headers": {"Content-Type": "'application/json'"}},
        }
        if status is not None:
            entry["StatusCode"] = str(status)
        out[kind] = entry
    return out


def merge_template() -> dict[str, Any]:
    """The `chalice package --merge-template` document (the merge is deep: only this property is added)."""
    return {"Resources": {"RestAPI": {"Properties": {"GatewayResponses": gateway_responses()}}}}


def apply(client: Any, rest_api_id: str, stage: str) -> list[str]:
    """Put every gateway response on a deployed REST API and redeploy its stage; returns the types put."""
    for kind, entry in gateway_responses().items():
        kwargs: dict[str, Any] = {
            "restApiId": rest_api_id, "responseType": kind,
            "responseTemplates": entry["ResponseTemplates"],
            "responseParameters": {f"gatewayresponse.header.{name}": value
                                   for name, value in entry["ResponseParameters"]["Headers"].items()},
        }
        if "StatusCode" in entry:
            kwargs["statusCode"] = entry["StatusCode"]
        client.put_gateway_response(**kwargs)
    client.create_deployment(restApiId=rest_api_id, stageName=stage,
                             description="gateway responses in the YMERA error envelope")
    return list(RESPONSES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--merge-template", type=Path, help="write the chalice package merge document here")
    parser.add_argument("--rest-api-id", help="put the responses on this deployed REST API")
    parser.add_argument("--stage", default="api", help="the stage to redeploy (chalice's default: api)")
    args = parser.parse_args(argv)
    if args.merge_template is None and args.rest_api_id is None:
        parser.error("give --merge-template PATH and/or --rest-api-id ID")
    if args.merge_template is not None:
        args.merge_template.parent.mkdir(parents=True, exist_ok=True)
        args.merge_template.write_text(json.dumps(merge_template(), indent=2) + "\n", encoding="utf-8")
    if args.rest_api_id is not None:
        import boto3

        apply(boto3.client("apigateway"), args.rest_api_id, args.stage)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
