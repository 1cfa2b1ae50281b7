from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, principal, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.users import LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest, UserPublic

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


@bp.route("/auth/refresh", methods=["POST"])
@endpoint
def refresh() -> Response:
    req = json_body(bp.current_request, RefreshRequest)
    return ok(get_container().users.refresh(req.refresh_token, request_meta(bp.current_request)))


@bp.route("/auth/logout", methods=["POST"])
@endpoint
def logout() -> Response:
    request = bp.current_request
    claims = principal(request)
    # The body is optional: the access token already names its session.
    body = json_body(request, LogoutRequest) if (request.raw_body or b"").strip() else LogoutRequest()
    get_container().users.logout(claims, body.refresh_token, request_meta(request))
    return Response(body="", status_code=204)
