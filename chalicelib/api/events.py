"""GET /events: the caller's event ledger after a cursor (docs/events.md)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, ok, principal, validate
from chalicelib.container import get_container
from chalicelib.schemas.events import EventListQuery

bp = Blueprint(__name__)


@bp.route("/events", methods=["GET"])
@endpoint
def list_events() -> Response:
    request = bp.current_request
    user = principal(request)
    query = validate(EventListQuery, dict(request.query_params or {}), ("query",))
    return ok(get_container().events.page(user.user_id, query.after, query.limit))
