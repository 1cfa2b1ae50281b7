"""Helpers for the external-agent tests: an external agent with its key, and calls as its worker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from chalicelib.db.models import User
from tests.integration.conftest import Api

SCHEMA_INPUT = {"schema": {"type": "object", "required": ["name"]}, "payload": {"name": "x"}}


@dataclass
class Worker:
    """Calls the API the way a self-hosted worker does: agent key (and id), never a user token."""

    api: Api
    agent_id: str
    key: str

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None,
             agent_id: str | None = None, token: str = "") -> Any:
        headers = {"X-Agent-Key": self.key if key is None else key,
                   "X-Agent-Id": self.agent_id if agent_id is None else agent_id}
        return self.api.call(method, path, body, token=token, headers=headers)

    def lease(self, max_tasks: int = 1, wait_seconds: float = 0, **kw: Any) -> Any:
        return self.call("POST", f"/agents/{self.agent_id}/lease",
                         {"max_tasks": max_tasks, "wait_seconds": wait_seconds}, **kw)

    def heartbeat(self, **kw: Any) -> Any:
        return self.call("POST", f"/agents/{self.agent_id}/heartbeat", **kw)

    def complete(self, task_id: str, output: dict[str, Any] | None = None, **kw: Any) -> Any:
        body = {"output_data": output or {}, "metrics": kw.pop("metrics", {})}
        if "attempt" in kw:
            body["attempt"] = kw.pop("attempt")
        return self.call("POST", f"/tasks/{task_id}/complete", body, **kw)

    def fail(self, task_id: str, code: str = "BROKEN", retryable: bool = False, **kw: Any) -> Any:
        return self.call("POST", f"/tasks/{task_id}/fail",
                         {"error": {"code": code, "message": "it broke", "details": {"why": "test"}},
                          "retryable": retryable}, **kw)


def external_agent(api: Api, agent_type: str = "validation", **fields: Any) -> tuple[dict[str, Any], Worker]:
    r = api.call("POST", "/agents", {"name": "worker", "type": agent_type, "mode": "external", **fields})
    assert r.status_code == 201, r.json_body
    return dict(r.json_body), Worker(api, r.json_body["id"], r.json_body["api_key"])


def new_task(api: Api, *, agent_id: str | None = None, agent_type: str | None = None, **fields: Any) -> Any:
    body: dict[str, Any] = {"title": "check", "input_data": SCHEMA_INPUT, **fields}
    if agent_id is not None:
        body["agent_id"] = agent_id
    if agent_type is not None:
        body["agent_type"] = agent_type
    return api.call("POST", "/tasks", body)


def user_id(db: Any, username: str) -> uuid.UUID:
    with db.read() as session:
        found = session.scalar(select(User.id).where(User.username == username))
    assert found is not None
    return found
