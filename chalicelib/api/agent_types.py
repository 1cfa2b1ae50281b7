from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.agents import registry
from chalicelib.api.http import endpoint, ok, principal

bp = Blueprint(__name__)


@bp.route("/agent-types", methods=["GET"])
@endpoint
def list_agent_types() -> Response:
    principal(bp.current_request)
    return ok({"items": [registry.describe(t) for t in registry.available_types()]})
