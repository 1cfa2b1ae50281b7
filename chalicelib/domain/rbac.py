"""Role-based access control: one table of who may do what. Pure, no I/O.

Resource ownership is enforced separately, in every query (another user's
resource is 404); these permissions decide which endpoints a role may call.
"""

from __future__ import annotations

from enum import StrEnum

from chalicelib.errors import AuthorizationError


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class Permission(StrEnum):
    USERS_LIST = "users:list"  # list every user
    USERS_READ_ANY = "users:read_any"  # read another user's profile
    USERS_UPDATE_ANY = "users:update_any"  # deactivate / change role of another user
    AUDIT_READ_ANY = "audit:read_any"  # read every user's audit rows
    CACHE_CLEAR = "cache:clear"
    AGENTS_MANAGE = "agents:manage"  # own agents
    TASKS_MANAGE = "tasks:manage"  # own tasks
    AUDIT_READ_OWN = "audit:read_own"
    METRICS_READ = "metrics:read"  # GET /metrics with a user token (scrapers use the static token)
    DLQ_MANAGE = "dlq:manage"  # look into and redrive the agent queues' dead-letter queues


_USER = frozenset({Permission.AGENTS_MANAGE, Permission.TASKS_MANAGE, Permission.AUDIT_READ_OWN})

PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.USER: _USER,
    Role.ADMIN: _USER
    | {Permission.USERS_LIST, Permission.USERS_READ_ANY, Permission.USERS_UPDATE_ANY, Permission.AUDIT_READ_ANY,
       Permission.CACHE_CLEAR, Permission.METRICS_READ, Permission.DLQ_MANAGE},
}


def has_permission(role: str, permission: Permission) -> bool:
    return permission in PERMISSIONS.get(role, frozenset())


def require(role: str, permission: Permission) -> None:
    if not has_permission(role, permission):
        raise AuthorizationError("you do not have permission to do this", {"permission": permission.value})
