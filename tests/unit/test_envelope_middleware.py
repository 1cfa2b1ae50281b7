"""The outermost middleware: whatever happens outside a view still answers in the error envelope."""

from __future__ import annotations

import json
from typing import Any

from chalice import Response
from chalice.app import Request

from chalicelib.api.http import envelope_middleware


def request(method: str = "POST", headers: dict[str, str] | None = None) -> Request:
    event = {"multiValueQueryStringParameters": None, "headers": headers or {}, "pathParameters": None,
             "requestContext": {"httpMethod": method, "resourcePath": "/agents"}, "body": None,
             "stageVariables": None, "isBase64Encoded": False}
    return Request(event)


def body(response: Response) -> dict[str, Any]:
    raw = response.to_dict()["body"]
    return dict(json.loads(raw))


def test_an_exception_raised_by_a_middleware_is_a_500_envelope_not_chalices_raw_body() -> None:
    def boom(_: Request) -> Response:
        raise RecursionError("maximum recursion depth exceeded")

    r = envelope_middleware(request(), boom)
    assert r.status_code == 500 and body(r)["error"]["code"] == "INTERNAL_ERROR"


def test_chalices_405_becomes_method_not_allowed_with_the_allowed_methods() -> None:
    def chalice_405(_: Request) -> Response:
        return Response(body={"Code": "MethodNotAllowedError", "Message": "Unsupported method: PATCH"},
                        status_code=405, headers={"Allow": "GET, POST"})

    r = envelope_middleware(request("PATCH"), chalice_405)
    error = body(r)["error"]
    assert r.status_code == 405 and error["code"] == "METHOD_NOT_ALLOWED"
    assert error["details"] == {"method": "PATCH", "allowed": ["GET", "POST"]}
    assert r.headers["Allow"] == "GET, POST"


def test_chalices_415_and_generic_500_become_envelopes() -> None:
    def chalice(status: int, code: str) -> Any:
        return lambda _: Response(body={"Code": code, "Message": "x"}, status_code=status)

    r = envelope_middleware(request(headers={"content-type": "text/plain"}), chalice(415, "UnsupportedMediaType"))
    assert body(r)["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert body(r)["error"]["details"]["content_type"] == "text/plain"
    r = envelope_middleware(request(), chalice(500, "InternalServerError"))
    assert r.status_code == 500 and body(r)["error"]["code"] == "INTERNAL_ERROR"


def test_our_own_answers_pass_through_untouched() -> None:
    ok = Response(body={"Code": "x"}, status_code=200)
    assert envelope_middleware(request(), lambda _: ok) is ok
