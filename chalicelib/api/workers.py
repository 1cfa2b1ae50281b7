"""External agents over HTTP: the worker API (agent key) and the owner's view of an agent (JWT).

Worker routes authenticate first, with `X-Agent-Key` only: a bearer token is ignored there,
never accepted in its place. The agent is the one in the path, or `X-Agent-Id` on task routes.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from chalice import Blueprint, Response
from chalice.app import Request
from pydantic import BaseModel

from chalicelib.api.http import endpoint, json_body, ok, path_uuid, principal, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.workers import CompleteRequest, FailRequest, LeaseRequest

bp = Blueprint(__name__)

KEY_HEADER = "x-agent-key"
AGENT_HEADER = "x-agent-id"

M = TypeVar("M", bound=BaseModel)


def _header(request: Request, name: str) -> str | None:
    return request.headers.get(name) if request.headers else None


def _worker(request: Request, agent_id: str | None) -> uuid.UUID:
    """The authenticated agent. A malformed id is a credential that does not match: 401, not 404."""
    try:
        candidate = uuid.UUID(agent_id) if agent_id else None
    except ValueError:
        candidate = None
    return get_container().workers.authenticate(candidate, _header(request, KEY_HEADER))


def _optional_body(request: Request, model: type[M]) -> M:
    """An empty body means every default (`POST /agents/{id}/lease` with nothing leases one task now)."""
    return json_body(request, model) if (request.raw_body or b"").strip() else model()


@bp.route("/agents/{agent_id}/lease", methods=["POST"])
@endpoint
def lease(agent_id: str) -> Response:
    request = bp.current_request
    agent = _worker(request, agent_id)
    return ok(get_container().workers.lease(agent, _optional_body(request, LeaseRequest)))


@bp.route("/agents/{agent_id}/heartbeat", methods=["POST"])
@endpoint
def heartbeat(agent_id: str) -> Response:
    agent = _worker(bp.current_request, agent_id)
    return ok(get_container().workers.heartbeat(agent))


@bp.route("/tasks/{task_id}/complete", methods=["POST"])
@endpoint
def complete(task_id: str) -> Response:
    request = bp.current_request
    agent = _worker(request, _header(request, AGENT_HEADER))
    body = _optional_body(request, CompleteRequest)
    return ok(get_container().workers.complete(path_uuid(task_id, "task"), agent, body))


@bp.route("/tasks/{task_id}/fail", methods=["POST"])
@endpoint
def fail(task_id: str) -> Response:
    request = bp.current_request
    agent = _worker(request, _header(request, AGENT_HEADER))
    body = json_body(request, FailRequest)
    return ok(get_container().workers.fail(path_uuid(task_id, "task"), agent, body))


@bp.route("/agents/{agent_id}/api-key", methods=["POST"])
@endpoint
def rotate_key(agent_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    return ok(get_container().workers.rotate_key(user.user_id, path_uuid(agent_id, "agent"), request_meta(request)))


@bp.route("/agents/{agent_id}/status", methods=["GET"])
@endpoint
def agent_status(agent_id: str) -> Response:
    user = principal(bp.current_request)
    return ok(get_container().workers.status(user.user_id, path_uuid(agent_id, "agent")))
