"""GET /engines (what each engine takes, answers and an example) and POST /engines/{name} (run one, now).

Synchronous and owner-scoped: an engine sees the caller's data only (admins' engines may cover everyone's
and say so). Rate limited by the general per-user bucket like every authenticated route
(chalicelib.ratelimit). The engines themselves are imported on first use (chalicelib.engines.registry)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, ok, parse_json, principal
from chalicelib.container import get_container
from chalicelib.errors import BadRequestError

bp = Blueprint(__name__)


@bp.route("/engines", methods=["GET"])
@endpoint
def list_engines() -> Response:
    principal(bp.current_request)
    return ok({"items": get_container().engines.describe_all()})


@bp.route("/engines/{name}", methods=["POST"])
@endpoint
def run_engine(name: str) -> Response:
    request = bp.current_request
    user = principal(request)
    raw = request.raw_body or b""
    if len(raw) > get_container().settings.max_body_bytes:
        raise BadRequestError("request body is too large")
    data = parse_json(raw) if raw.strip() else {}  # an empty body is an empty input (every default)
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object")
    return ok(get_container().engines.run(user.user_id, name, data))
