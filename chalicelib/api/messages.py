"""An agent's inbox: GET /agents/{agent_id}/messages and POST /agents/{agent_id}/messages/{message_id}/read."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, ok, path_uuid, principal, validate
from chalicelib.container import get_container
from chalicelib.schemas.common import Page
from chalicelib.schemas.messages import MessageListQuery, MessagePublic

bp = Blueprint(__name__)


@bp.route("/agents/{agent_id}/messages", methods=["GET"])
@endpoint
def list_messages(agent_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    query = validate(MessageListQuery, dict(request.query_params or {}), ("query",))
    settings = get_container().settings
    limit = min(query.limit or settings.page_size_default, settings.page_size_max)
    items, cursor = get_container().messages.inbox(user.user_id, path_uuid(agent_id, "agent"), query, limit)
    return ok(Page[MessagePublic](items=items, next_cursor=cursor))


@bp.route("/agents/{agent_id}/messages/{message_id}/read", methods=["POST"])
@endpoint
def mark_read(agent_id: str, message_id: str) -> Response:
    user = principal(bp.current_request)
    message = get_container().messages.mark_read(user.user_id, path_uuid(agent_id, "agent"),
                                                 path_uuid(message_id, "message"))
    return ok(message)
