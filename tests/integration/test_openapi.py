"""The API description: GET /openapi.json agrees with the routes Chalice serves, is valid OpenAPI 3.1,
and every route answers with the shapes it documents (real Postgres, Redis, moto). GET /docs works offline."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from chalice import Chalice
from chalice.app import Request
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app import app
from chalicelib.api import docs
from chalicelib.api.openapi import build_document, served_routes, undocumented
from chalicelib.api.spec import ROUTES
from tests.integration.conftest import PREFIX, Api, FakeContext
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run

DOC_URI = "urn:ymera:openapi"
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def generous_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests log in dozens of users from one client IP; the buckets have their own tests."""
    for bucket in ("USER", "IP", "LOGIN_ACCOUNT", "LOGIN_IP"):
        monkeypatch.setenv(f"YMERA_RATE_LIMIT_{bucket}_CAPACITY", "100000")


def _pointer(*parts: str) -> str:
    return "".join("/" + quote(p.replace("~", "~0").replace("/", "~1"), safe="") for p in parts)


class Checker:
    """Calls the API and checks each response against the document: its status must be documented
    for that operation, its media type listed, and its body valid against the documented schema."""

    def __init__(self, api: Api, document: dict[str, Any]) -> None:
        self.api = api
        self.doc = document
        self.registry = Registry().with_resource(DOC_URI, Resource.from_contents(document, DRAFT202012))
        self.seen: set[tuple[str, str, int]] = set()

    def call(self, method: str, route: str, body: Any = None, *, raw: str | None = None, token: str | None = None,
             query: dict[str, str] | None = None, expect: int | None = None,
             headers: dict[str, str] | None = None, **params: str) -> Any:
        path = route.format(**params) + (f"?{urlencode(query)}" if query else "")
        response = self.api.call(method, path, body, raw=raw, token=token, headers=headers)
        self.verify(method, route, response)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.body[:500])
        return response

    def verify(self, method: str, route: str, response: Any) -> None:
        status = response.status_code
        operation = self.doc["paths"][route][method.lower()]
        documented = operation["responses"].get(str(status))
        assert documented is not None, (f"{method} {route} answered {status}, which the document does not list "
                                        f"({sorted(operation['responses'])}): {response.body[:300]!r}")
        location = ("paths", route, method.lower(), "responses", str(status))
        if "$ref" in documented:
            name = documented["$ref"].rsplit("/", 1)[-1]
            documented, location = self.doc["components"]["responses"][name], ("components", "responses", name)
        content = documented.get("content")
        if not content:
            assert not response.body, f"{method} {route} {status} documents no body but sent {response.body[:200]!r}"
        else:
            media = response.headers.get("Content-Type", "").split(";")[0].strip()
            listed = {m.split(";")[0]: m for m in content}
            assert media in listed, f"{method} {route} {status} sent {media!r}, documented {sorted(listed)}"
            pointer = _pointer(*location, "content", listed[media], "schema")
            body = response.json_body if media == "application/json" else response.body.decode()
            validator = Draft202012Validator({"$ref": DOC_URI + "#" + pointer}, registry=self.registry,
                                             format_checker=Draft202012Validator.FORMAT_CHECKER)
            problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
            assert not problems, f"{method} {route} {status} does not match its documented schema: {problems}"
        self.seen.add((method, route, status))


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    response = api.call("GET", "/openapi.json", token="")
    assert response.status_code == 200
    return dict(response.json_body)


@pytest.fixture
def check(api: Api, document: dict[str, Any]) -> Checker:
    return Checker(api, document)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for route, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), route, operation


# --- the document and the app agree -------------------------------------------------------------------------


def test_every_served_route_is_documented_and_nothing_else(api: Api, document: dict[str, Any]) -> None:
    documented = {(method, route) for method, route, _ in operations(document)}
    served = served_routes(app)
    missing = sorted(served - documented)
    assert not missing, (f"routes served but not in the OpenAPI document: {missing} — add an entry for each to "
                         "ROUTES in chalicelib/api/spec.py")
    stale = sorted(ROUTES.keys() - served)
    assert not stale, f"chalicelib/api/spec.py documents routes the app does not serve: {stale}"
    assert documented == served


def test_a_route_without_a_spec_entry_is_named_and_left_out() -> None:
    other = Chalice(app_name="scratch")

    @other.route("/tasks/{task_id}/undocumented", methods=["PATCH"])
    def undocumented_view(task_id: str) -> dict[str, str]:
        return {}

    @other.route("/health", methods=["GET"])
    def health() -> dict[str, str]:
        return {}

    assert undocumented(other) == [("PATCH", "/tasks/{task_id}/undocumented")]
    assert set(build_document(other, "x")["paths"]) == {"/health"}


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)
    # Every $ref points at something (the validator does not follow refs into components it never reaches).
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/([^"]+)"', text)):
        assert ref[1] in document["components"][ref[0]], ref


def test_every_operation_documents_its_errors_with_the_envelope(document: dict[str, Any]) -> None:
    for method, route, op in operations(document):
        responses = op["responses"]
        assert "500" in responses, (method, route)
        if op["security"]:
            assert responses["401"] == {"$ref": "#/components/responses/Error401"}, (method, route)
        if "requestBody" in op:
            assert {"400", "422"} <= responses.keys(), (method, route)
        if "{" in route:
            assert "404" in responses, (method, route)
    envelope = document["components"]["responses"]["Error422"]["content"]["application/json"]["schema"]
    assert envelope["allOf"][0] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert envelope["allOf"][1]["properties"]["error"]["properties"]["code"] == {"enum": [
        "ENGINE_INPUT_INVALID", "FIELD_TOO_LARGE", "RUN_INPUT_INVALID", "VALIDATION_ERROR", "WEBHOOK_URL_REFUSED",
        "WORKFLOW_INVALID"]}
    # POST /engines/{name}: an unknown engine is a 404 (chalicelib.errors.EngineUnknownError)
    not_found = document["components"]["responses"]["Error404"]["content"]["application/json"]["schema"]
    assert "ENGINE_NOT_FOUND" in not_found["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["code", "message", "details", "timestamp"]


def test_bodies_and_queries_come_from_the_pydantic_models(document: dict[str, Any]) -> None:
    create = document["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/TaskCreate"}
    task_create = document["components"]["schemas"]["TaskCreate"]
    assert task_create["additionalProperties"] is False and "title" in task_create["required"]
    params = {p["name"]: p for p in document["paths"]["/tasks"]["get"]["parameters"]}
    assert params["status"]["schema"] == {"$ref": "#/components/schemas/TaskStatus"}
    assert params["limit"]["schema"]["minimum"] == 1 and not params["limit"]["required"]
    get_task = document["paths"]["/tasks/{task_id}"]["get"]
    assert get_task["parameters"][0] == {"name": "task_id", "in": "path", "required": True,
                                         "schema": {"type": "string", "format": "uuid"}}
    assert get_task["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/auth/login"]["post"]["security"] == []


# --- every route answers with the documented shapes -----------------------------------------------------------


def test_main_flows_answer_with_documented_shapes(api: Api, check: Checker) -> None:
    # GIVEN a user (register + login through the checker) and an admin
    name = f"u{uuid.uuid4().hex[:8]}"
    user = check.call("POST", "/auth/register", {"username": name, "email": f"{name}@example.com",
                                                 "password": PASSWORD}, expect=201).json_body
    check.call("POST", "/auth/register", {"username": name, "email": f"{name}@example.com", "password": PASSWORD},
               expect=409)
    check.call("POST", "/auth/register", {"username": "x", "email": "nope", "password": "short"}, expect=422)
    check.call("POST", "/auth/register", raw='{"username": ', expect=400)
    check.call("POST", "/auth/login", {"username": name, "password": "wrong password"}, expect=401)
    pair = check.call("POST", "/auth/login", {"username": name, "password": PASSWORD}, expect=200).json_body
    api.token = pair["access_token"]
    admin = _admin_token(api)

    # agents
    check.call("GET", "/agent-types", expect=200)
    check.call("GET", "/agent-types", token="not-a-jwt", expect=401)
    agent = check.call("POST", "/agents", {"name": "validator", "type": "validation"}, expect=201).json_body
    check.call("POST", "/agents", {"name": "x", "type": "no-such-type"}, expect=422)
    check.call("GET", "/agents", query={"limit": "5"}, expect=200)
    check.call("GET", "/agents/{agent_id}", agent_id=agent["id"], expect=200)
    check.call("GET", "/agents/{agent_id}", agent_id=str(uuid.uuid4()), expect=404)
    check.call("PUT", "/agents/{agent_id}", {"metadata": {"team": "docs"}}, agent_id=agent["id"], expect=200)
    spare = check.call("POST", "/agents", {"name": "spare", "type": "validation"}, expect=201).json_body
    check.call("DELETE", "/agents/{agent_id}", agent_id=spare["id"], expect=204)

    # tasks: one completed by the real consumer (so GET returns a result), one cancelled
    task = check.call("POST", "/tasks", {"agent_id": agent["id"], "title": "check",
                                         "input_data": {"schema": {"type": "object"}, "payload": {}}},
                      expect=202).json_body
    check.call("POST", "/tasks", {"agent_id": str(uuid.uuid4()), "title": "t"}, expect=404)
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    done = check.call("GET", "/tasks/{task_id}", task_id=task["id"], expect=200).json_body
    assert done["status"] == "completed" and done["result"] is not None
    check.call("GET", "/tasks/{task_id}", task_id=task["id"], query={"wait": "5"}, expect=200)  # finished: at once
    check.call("GET", "/tasks/{task_id}", task_id=task["id"], query={"wait": "0"}, expect=422)
    check.call("POST", "/tasks/{task_id}/cancel", task_id=task["id"], expect=409)
    pending = create_task(api, agent["id"]).json_body
    check.call("POST", "/tasks/{task_id}/cancel", task_id=pending["id"], expect=200)
    check.call("GET", "/tasks", query={"status": "completed", "limit": "10"}, expect=200)
    check.call("GET", "/tasks", query={"status": "bogus"}, expect=422)

    # the event ledger: the tasks above, in order; a bad cursor or limit is 422
    events = check.call("GET", "/events", query={"after": "0", "limit": "2"}, expect=200).json_body
    assert [e["event_id"] for e in events["items"]] == [1, 2] and events["has_more"] is True
    check.call("GET", "/events", query={"after": "-1"}, expect=422)

    # feedback on the completed task; a message delivered by a communication agent, read from the inbox
    check.call("POST", "/tasks/{task_id}/feedback", {"rating": 4, "comment": "useful"}, task_id=task["id"],
               expect=201)
    check.call("POST", "/tasks/{task_id}/feedback", {"rating": 5}, task_id=task["id"], expect=409)
    check.call("GET", "/tasks/{task_id}/feedback", task_id=task["id"], expect=200)
    courier = check.call("POST", "/agents", {"name": "courier", "type": "communication"}, expect=201).json_body
    note = check.call("POST", "/tasks", {"agent_id": courier["id"], "title": "note", "input_data": {
        "to_agent_id": agent["id"], "body": "schema changed"}}, expect=202).json_body
    assert run([("m2", message(note["id"], "communication"))], "communication") == {"batchItemFailures": []}
    inbox = check.call("GET", "/agents/{agent_id}/messages", agent_id=agent["id"], query={"unread": "true"},
                       expect=200).json_body
    check.call("POST", "/agents/{agent_id}/messages/{message_id}/read", agent_id=agent["id"],
               message_id=inbox["items"][0]["id"], expect=200)

    # an external agent: its key once, then the worker API (agent key only), the owner's status view
    ext = check.call("POST", "/agents", {"name": "worker", "type": "validation", "mode": "external"},
                     expect=201).json_body
    worker = {"X-Agent-Key": ext["api_key"], "X-Agent-Id": ext["id"]}
    for _ in range(2):
        create_task(api, ext["id"])
    check.call("POST", "/tasks", {"agent_type": "security", "title": "routed", "input_data": {}}, expect=409)
    leased = check.call("POST", "/agents/{agent_id}/lease", {"max_tasks": 2}, agent_id=ext["id"], token="",
                        headers=worker, expect=200).json_body["tasks"]
    check.call("POST", "/agents/{agent_id}/lease", {}, agent_id=ext["id"], expect=401)  # a JWT is not a key
    check.call("POST", "/agents/{agent_id}/heartbeat", agent_id=ext["id"], token="", headers=worker, expect=200)
    check.call("POST", "/tasks/{task_id}/complete", {"output_data": {"ok": True}}, task_id=leased[0]["id"],
               token="", headers=worker, expect=200)
    check.call("POST", "/tasks/{task_id}/complete", {}, task_id=leased[0]["id"], token="", headers=worker,
               expect=409)
    check.call("POST", "/tasks/{task_id}/fail", {"error": {"code": "BROKEN", "message": "no"}},
               task_id=leased[1]["id"], token="", headers=worker, expect=200)
    check.call("GET", "/agents/{agent_id}/status", agent_id=ext["id"], expect=200)
    check.call("POST", "/agents/{agent_id}/api-key", agent_id=ext["id"], expect=200)
    check.call("POST", "/agents/{agent_id}/api-key", agent_id=agent["id"], expect=409)

    # the user's own provider keys (names only, ever)
    check.call("PUT", "/provider-keys/{name}", {"api_key": "sk-own"}, name="own", expect=201)
    check.call("PUT", "/provider-keys/{name}", {"api_key": "sk-own-2"}, name="own", expect=200)
    check.call("PUT", "/provider-keys/{name}", {"api_key": ""}, name="own", expect=422)
    check.call("GET", "/provider-keys", expect=200)
    check.call("DELETE", "/provider-keys/{name}", name="own", expect=204)
    check.call("DELETE", "/provider-keys/{name}", name="own", expect=404)

    # event producers' signing keys (the secret once, never listed)
    made = check.call("POST", "/producer-keys", {"name": "orders"}, expect=201)
    check.call("POST", "/producer-keys", {"name": ""}, expect=422)
    check.call("GET", "/producer-keys", expect=200)
    check.call("DELETE", "/producer-keys/{key_id}", key_id=made.json_body["key_id"], expect=204)
    check.call("DELETE", "/producer-keys/{key_id}", key_id=made.json_body["key_id"], expect=404)

    # webhooks (docs/webhooks.md): a receiver on loopback (allowed on the test stage)
    from tests.integration.webhook_support import Answer, receiving

    with receiving() as receiver:
        hook = check.call("POST", "/webhooks", {"url": receiver.url, "event_types": ["*"]}, expect=201).json_body
        check.call("POST", "/webhooks", {"url": "ftp://example.com/", "event_types": ["*"]}, expect=422)
        check.call("GET", "/webhooks", expect=200)
        check.call("GET", "/webhooks/{webhook_id}", webhook_id=hook["id"], expect=200)
        check.call("GET", "/webhooks/{webhook_id}", webhook_id=str(uuid.uuid4()), expect=404)
        check.call("PUT", "/webhooks/{webhook_id}", {"description": "ci"}, webhook_id=hook["id"], expect=200)
        check.call("POST", "/webhooks/{webhook_id}/rotate-secret", webhook_id=hook["id"], expect=200)
        check.call("POST", "/webhooks/{webhook_id}/rotate-secret", {"previous_secret_valid_seconds": 0},
                   webhook_id=hook["id"], expect=200)
        receiver.script = [Answer(500)]
        sent = check.call("POST", "/webhooks/{webhook_id}/test", webhook_id=hook["id"], expect=200).json_body
        check.call("GET", "/webhooks/{webhook_id}/deliveries", webhook_id=hook["id"], query={"limit": "5"},
                   expect=200)
        check.call("GET", "/webhooks/{webhook_id}/deliveries", webhook_id=hook["id"], query={"status": "x"},
                   expect=422)
        check.call("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", webhook_id=hook["id"],
                   delivery_id=sent["id"], expect=200)
        check.call("PUT", "/webhooks/{webhook_id}", {"status": "disabled"}, webhook_id=hook["id"], expect=200)
        check.call("POST", "/webhooks/{webhook_id}/test", webhook_id=hook["id"], expect=409)
        check.call("DELETE", "/webhooks/{webhook_id}", webhook_id=hook["id"], expect=204)

    # workflows and runs (docs/workflows-api.md): Step Functions is moto's (no execution here)
    import boto3

    from chalicelib.container import get_container

    boto3.client("sqs", region_name="us-east-1").create_queue(QueueName=f"{PREFIX}-workflow-control")
    get_container().runs.launcher.role_arn = "arn:aws:iam::123456789012:role/ymera-test-workflow"
    steps = [{"step_id": "check", "agent_type": "validation", "input_data": {"schema": {}, "payload": {}}},
             {"step_id": "gate", "type": "approval", "depends_on": ["check"]}]
    wf = check.call("POST", "/workflows", {"name": "wf", "steps": steps}, expect=201).json_body
    check.call("POST", "/workflows", {"name": "wf", "steps": [{"step_id": "a"}]}, expect=422)
    check.call("GET", "/workflows", expect=200)
    check.call("GET", "/workflows/{workflow_id}", workflow_id=wf["id"], expect=200)
    check.call("PUT", "/workflows/{workflow_id}", {"name": "wf2", "steps": steps}, workflow_id=wf["id"], expect=200)
    started = check.call("POST", "/workflows/{workflow_id}/runs", {"input": {}}, workflow_id=wf["id"],
                     headers={"Idempotency-Key": "run-1"}, expect=202).json_body
    check.call("GET", "/workflows/{workflow_id}/runs", workflow_id=wf["id"], query={"status": "running"}, expect=200)
    check.call("GET", "/runs/{run_id}", run_id=started["id"], expect=200)
    check.call("GET", "/runs/{run_id}", run_id=started["id"], query={"wait": "21"}, expect=422)
    check.call("POST", "/runs/{run_id}/steps/{step_id}/decision", {"approve": True}, run_id=started["id"],
               step_id="gate", expect=409)
    check.call("POST", "/runs/{run_id}/redrive", run_id=started["id"], expect=409)
    check.call("POST", "/runs/{run_id}/cancel", run_id=started["id"], expect=200)
    check.call("POST", "/runs/{run_id}/cancel", run_id=started["id"], expect=409)
    check.call("DELETE", "/workflows/{workflow_id}", workflow_id=wf["id"], expect=204)

    # engines
    check.call("GET", "/engines", expect=200)
    check.call("POST", "/engines/{name}", {"bucket": "hour"}, name="analytics", expect=200)
    check.call("POST", "/engines/{name}", {"bucket": "week"}, name="analytics", expect=422)
    check.call("POST", "/engines/{name}", name="nope", expect=404)
    check.call("POST", "/engines/{name}", name="performance", token=admin, expect=200)

    # users, audit, admin, platform
    check.call("GET", "/users/{user_id}", user_id=user["id"], expect=200)
    check.call("PUT", "/users/{user_id}", {"role": "admin"}, user_id=user["id"], expect=422)
    check.call("GET", "/users", expect=403)
    check.call("GET", "/users", token=admin, expect=200)
    check.call("GET", "/audit-logs", expect=200)
    check.call("GET", "/audit-logs", token=admin, query={"event_type": "auth.login"}, expect=200)
    check.call("POST", "/admin/cache/clear", expect=403)
    check.call("POST", "/admin/cache/clear", token=admin, expect=200)
    check.call("GET", "/admin/dlq", expect=403)
    check.call("GET", "/admin/dlq", token=admin, query={"sample": "2"}, expect=200)
    check.call("POST", "/admin/dlq/{queue}/redrive", queue="nonexistent", token=admin, expect=404)
    check.call("POST", "/admin/dlq/{queue}/redrive", {"limit": 5}, queue="validation", token=admin, expect=200)
    check.call("GET", "/status", expect=200)
    check.call("GET", "/status", token=admin, expect=200)
    check.call("GET", "/metrics", expect=403)
    check.call("GET", "/metrics", token=admin, expect=200)
    check.call("GET", "/health", expect=200)
    check.call("GET", "/health/ready", expect=200)
    check.call("GET", "/openapi.json", token="", expect=200)

    # sessions last: refresh rotates, logout ends the session
    rotated = check.call("POST", "/auth/refresh", {"refresh_token": pair["refresh_token"]}, expect=200).json_body
    check.call("PUT", "/users/{user_id}/password", {"current_password": PASSWORD, "new_password": PASSWORD + "!"},
               user_id=user["id"], token=rotated["access_token"], expect=200)
    check.call("POST", "/auth/logout", token=admin, expect=204)
    check.call("GET", "/agents", token=admin, expect=401)

    static = {("GET", "/docs"), ("GET", "/docs/assets/{name}"), ("GET", "/console"), ("GET", "/console/assets/{name}")}
    assert {(m, r) for m, r, _ in check.seen} == served_routes(app) - static, \
        "a route added since this test was written: drive it above (test_docs_* and test_console_* cover pages)"


def test_probing_every_documented_operation_gets_documented_answers(api: Api, check: Checker,
                                                                   document: dict[str, Any]) -> None:
    """Whatever route exists — including ones added after this test — anonymous calls, unknown ids,
    empty and malformed bodies all get answers the document lists, in the documented shapes."""
    for method, route, op in operations(document):
        params = {p["name"]: ("nope" if p["name"] == "name" else str(uuid.uuid4()))
                  for p in op.get("parameters", []) if p["in"] == "path"}
        if op["security"]:
            check.call(method, route, token="", expect=401, **params)
        token = api.signup()["access_token"]  # a fresh user per operation: logout and friends end sessions
        check.call(method, route, {} if "requestBody" in op else None, token=token, **params)
        if "requestBody" in op:
            check.call(method, route, raw="{not json", token=token, **params)
    probed = {(m, r) for m, r, _ in check.seen}
    assert probed == {(m, r) for m, r, _ in operations(document)}


def _admin_token(api: Api) -> str:
    from chalicelib.admin import create_admin

    name = f"admin{uuid.uuid4().hex[:6]}"
    create_admin(name, f"{name}@example.com", PASSWORD)
    response = api.call("POST", "/auth/login", {"username": name, "password": PASSWORD}, token="")
    assert response.status_code == 200, response.json_body
    return str(response.json_body["access_token"])


# --- the docs page works offline ---------------------------------------------------------------------------


def test_docs_page_loads_only_local_assets_and_they_are_served(api: Api, check: Checker) -> None:
    page = check.call("GET", "/docs", token="", expect=200)
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
    html = page.body.decode()
    urls = re.findall(r'(?:src|href|data-spec-url)="([^"]*)"', html)
    assert len(urls) == 4, urls
    assert not re.search(r"https?://|//[a-z]", html, re.I), "the page names another host"
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    expected_types = {".js": "application/javascript", ".css": "text/css"}
    for url in urls:
        if url == "/openapi.json":
            continue
        name = url.removeprefix("/docs/assets/")
        asset = check.call("GET", "/docs/assets/{name}", token="", expect=200, name=name)
        assert asset.headers["Content-Type"].startswith(expected_types[name[name.rfind("."):]])
        assert len(asset.body) > 200
    bundle = check.call("GET", "/docs/assets/{name}", token="", expect=200, name="swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.body
    assert b"Apache License" in check.call("GET", "/docs/assets/{name}", token="", expect=200, name="LICENSE").body


@pytest.mark.parametrize("name", ["index.html", "..%2Fconfig.py", "swagger-ui.css.map", "README.md"])
def test_docs_assets_outside_the_whitelist_are_404(api: Api, check: Checker, name: str) -> None:
    assert_envelope(check.call("GET", "/docs/assets/{name}", token="", name=name), 404, "NOT_FOUND")


def _gateway_event(resource: str, stage: str) -> dict[str, Any]:
    """A Lambda proxy event as API Gateway sends it: requestContext.path carries the stage, resourcePath not."""
    return {"resource": resource, "path": resource, "httpMethod": "GET", "headers": {"Host": "api.example"},
            "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
            "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
            "requestContext": {"resourcePath": resource, "path": f"/{stage}{resource}", "httpMethod": "GET",
                               "stage": stage, "requestId": "req-1", "identity": {"sourceIp": "10.0.0.1"}}}


def test_docs_urls_carry_the_api_gateway_stage_prefix(api: Api) -> None:
    page = app(_gateway_event("/docs", "api"), FakeContext())
    assert page["statusCode"] == 200
    urls = re.findall(r'(?:src|href|data-spec-url)="([^"]*)"', page["body"])
    assert sorted(urls) == ["/api/docs/assets/swagger-ui-bundle.js", "/api/docs/assets/swagger-ui.css",
                            "/api/docs/assets/ymera-docs.js", "/api/openapi.json"]
    spec = app(_gateway_event("/openapi.json", "api"), FakeContext())
    assert json.loads(spec["body"])["servers"] == [{"url": "/api"}]
    assert docs.base_path(Request({**_gateway_event("/docs", "api"), "requestContext": {
        "resourcePath": "/docs", "path": "/docs", "httpMethod": "GET"}})) == ""
    # a prefix that would need escaping in HTML is dropped, never echoed into the page
    hostile = _gateway_event("/docs", "api")
    hostile["requestContext"]["path"] = '/"><script>alert(1)</script>/docs'
    page = app(hostile, FakeContext())
    assert "<script>alert" not in page["body"] and 'href="/docs/assets/swagger-ui.css"' in page["body"]
