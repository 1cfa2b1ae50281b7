"""Users' own provider keys: stored encrypted, owner-only, audited, never returned, sent only to their endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from chalicelib.db.models import AuditLog, ProviderKey
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.llm_server import LLMServer, completion, openai_config

SECRET = "sk-user-own-0123456789"


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def run_llm(api: Api, config: dict[str, Any]) -> dict[str, Any]:
    r = api.call("POST", "/agents", {"name": "mine", "type": "llm", "config": config})
    assert r.status_code == 201, r.json_body
    task_id = create_task(api, r.json_body["id"], input_data={"prompt": "hi"}).json_body["id"]
    assert run([("m1", message(task_id, "llm"))], "llm") == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


def test_a_key_is_stored_encrypted_listed_by_name_and_never_returned(api: Api, db: Any) -> None:
    api.signup()
    r = api.call("PUT", "/provider-keys/ollama-box", {"api_key": SECRET})
    assert r.status_code == 201 and r.json_body["name"] == "ollama-box" and SECRET not in json.dumps(r.json_body)
    assert api.call("PUT", "/provider-keys/ollama-box", {"api_key": SECRET + "x"}).status_code == 200
    listed = api.call("GET", "/provider-keys")
    assert [k["name"] for k in listed.json_body["items"]] == ["ollama-box"]
    assert SECRET not in json.dumps(listed.json_body) and "api_key" not in json.dumps(listed.json_body)
    with db.read() as session:
        blob = session.scalar(select(ProviderKey.ciphertext))
        audits = session.scalars(select(AuditLog).where(AuditLog.event_type == "provider_key")).all()
    assert blob is not None and SECRET.encode() not in bytes(blob)
    assert [a.action for a in audits] == ["create", "update"] and SECRET not in json.dumps([a.details for a in audits])
    assert api.call("DELETE", "/provider-keys/ollama-box").status_code == 204
    assert_envelope(api.call("DELETE", "/provider-keys/ollama-box"), 404, "NOT_FOUND")
    assert api.call("GET", "/provider-keys").json_body["items"] == []


@pytest.mark.parametrize(("name", "body"), [("Bad Name", {"api_key": "k"}), ("ok", {"api_key": ""}),
                                            ("ok", {"api_key": "two words"}), ("ok", {"key": "k"})])
def test_bad_names_and_keys_are_422(api: Api, name: str, body: dict[str, Any]) -> None:
    api.signup()
    assert_envelope(api.call("PUT", f"/provider-keys/{name}", body), 422, "VALIDATION_ERROR")


def test_a_stored_key_goes_to_the_users_own_endpoint_and_nowhere_else(api: Api, server: LLMServer) -> None:
    api.signup()
    api.call("PUT", "/provider-keys/mine", {"api_key": SECRET})
    server.script(completion("hello"))
    task = run_llm(api, openai_config(server, key="mine"))
    assert task["status"] == "completed", task["error"]
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_another_users_key_name_is_the_same_error_as_an_unknown_one(api: Api, other_api: Api,
                                                                   server: LLMServer) -> None:
    api.signup()
    api.call("PUT", "/provider-keys/mine", {"api_key": SECRET})
    other_api.signup()
    assert other_api.call("GET", "/provider-keys").json_body["items"] == []
    assert_envelope(other_api.call("DELETE", "/provider-keys/mine"), 404, "NOT_FOUND")
    theirs = run_llm(other_api, openai_config(server, key="mine"))
    unknown = run_llm(other_api, openai_config(server, key="nobody-has-this"))
    assert theirs["status"] == unknown["status"] == "failed"
    assert (theirs["error"]["code"], theirs["error"]["message"]) == (unknown["error"]["code"],
                                                                     unknown["error"]["message"])
    assert theirs["error"]["code"] == "PROVIDER_NOT_CONFIGURED" and server.calls == 0
