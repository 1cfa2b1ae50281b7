"""Users: admins list and manage everyone; a user sees and edits only themself (others are 404)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, path_uuid, principal, request_meta, validate
from chalicelib.container import get_container
from chalicelib.domain import rbac
from chalicelib.domain.rbac import Permission
from chalicelib.schemas.common import Page
from chalicelib.schemas.users import PasswordChange, UserAdminUpdate, UserListQuery, UserPublic, UserSelfUpdate

bp = Blueprint(__name__)


@bp.route("/users", methods=["GET"])
@endpoint
def list_users() -> Response:
    request = bp.current_request
    actor = principal(request)
    query = validate(UserListQuery, dict(request.query_params or {}), ("query",))
    settings = get_container().settings
    limit = min(query.limit or settings.page_size_default, settings.page_size_max)
    rows, cursor = get_container().accounts.list(actor, limit, query.cursor)
    return ok(Page[UserPublic](items=[UserPublic.model_validate(u) for u in rows], next_cursor=cursor))


@bp.route("/users/{user_id}", methods=["GET"])
@endpoint
def get_user(user_id: str) -> Response:
    actor = principal(bp.current_request)
    return ok(UserPublic.model_validate(get_container().accounts.get(actor, path_uuid(user_id, "user"))))


@bp.route("/users/{user_id}", methods=["PUT"])
@endpoint
def update_user(user_id: str) -> Response:
    request = bp.current_request
    actor = principal(request)
    target = path_uuid(user_id, "user")
    # The body schema is the permission: without users:update_any, role/is_active are unknown fields (422).
    schema = UserAdminUpdate if rbac.has_permission(actor.role, Permission.USERS_UPDATE_ANY) else UserSelfUpdate
    changes = json_body(request, schema).model_dump(exclude_unset=True)
    user = get_container().accounts.update(actor, target, changes, request_meta(request))
    return ok(UserPublic.model_validate(user))


@bp.route("/users/{user_id}/password", methods=["PUT"])
@endpoint
def change_password(user_id: str) -> Response:
    request = bp.current_request
    actor = principal(request)
    target = path_uuid(user_id, "user")
    pair = get_container().accounts.change_password(actor, target, json_body(request, PasswordChange),
                                                    request_meta(request))
    return ok(pair)
