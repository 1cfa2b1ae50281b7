from __future__ import annotations

from typing import Annotated

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, path_uuid, principal, request_meta, validate
from chalicelib.container import get_container
from chalicelib.schemas.agents import AgentCreate, AgentPublic, AgentUpdate
from chalicelib.schemas.common import TEXT_CHARS, Page, StrictModel
from chalicelib.schemas.workers import AgentCreated

bp = Blueprint(__name__)


class AgentListQuery(StrictModel):
    limit: int | None = None
    cursor: Annotated[str, TEXT_CHARS] | None = None


@bp.route("/agents", methods=["POST"])
@endpoint
def create_agent() -> Response:
    request = bp.current_request
    user = principal(request)
    agent, api_key = get_container().agents.create_with_key(user.user_id, json_body(request, AgentCreate),
                                                            request_meta(request))
    # An external agent's key is in this response only; managed agents have none (no `api_key` field).
    body = AgentCreated.model_validate(agent).model_copy(update={"api_key": api_key})
    return ok(body.model_dump(mode="json", exclude={"api_key"} if api_key is None else None), status=201,
              headers={"Location": f"/agents/{agent.id}"})


@bp.route("/agents", methods=["GET"])
@endpoint
def list_agents() -> Response:
    request = bp.current_request
    user = principal(request)
    query = validate(AgentListQuery, dict(request.query_params or {}), ("query",))
    settings = get_container().settings
    limit = min(query.limit or settings.page_size_default, settings.page_size_max)
    rows, cursor = get_container().agents.list(user.user_id, max(limit, 1), query.cursor)
    return ok(Page[AgentPublic](items=[AgentPublic.model_validate(a) for a in rows], next_cursor=cursor))


@bp.route("/agents/{agent_id}", methods=["GET"])
@endpoint
def get_agent(agent_id: str) -> Response:
    user = principal(bp.current_request)
    agent = get_container().agents.get(user.user_id, path_uuid(agent_id, "agent"))
    return ok(AgentPublic.model_validate(agent))


@bp.route("/agents/{agent_id}", methods=["PUT"])
@endpoint
def update_agent(agent_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    agent_uuid = path_uuid(agent_id, "agent")
    agent = get_container().agents.update(user.user_id, agent_uuid, json_body(request, AgentUpdate),
                                          request_meta(request))
    return ok(AgentPublic.model_validate(agent))


@bp.route("/agents/{agent_id}", methods=["DELETE"])
@endpoint
def delete_agent(agent_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    get_container().agents.delete(user.user_id, path_uuid(agent_id, "agent"), request_meta(request))
    return Response(body="", status_code=204)
