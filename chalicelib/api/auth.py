from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.users import LoginRequest, RegisterRequest, UserPublic

bp = Blueprint(__name__)


@bp.route("/auth/register", methods=["POST"])
@endpoint
def register() -> Response:
    req = json_body(bp.current_request, RegisterRequest)
    user = get_container().users.register(req, request_meta(bp.current_request))
    return ok(UserPublic.model_validate(user), status=201, headers={"Location": f"/users/{user.id}"})


@bp.route("/auth/login", methods=["POST"])
@endpoint
def login() -> Response:
    req = json_body(bp.current_request, LoginRequest)
    return ok(get_container().users.login(req, request_meta(bp.current_request)))
