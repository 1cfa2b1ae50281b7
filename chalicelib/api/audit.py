"""GET /audit-logs: admins see every row (with filters), a user sees their own. Newest first, cursor pages."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, ok, principal, validate
from chalicelib.container import get_container
from chalicelib.schemas.audit import AuditLogPublic, AuditLogQuery
from chalicelib.schemas.common import Page

bp = Blueprint(__name__)


@bp.route("/audit-logs", methods=["GET"])
@endpoint
def list_audit_logs() -> Response:
    request = bp.current_request
    actor = principal(request)
    query = validate(AuditLogQuery, dict(request.query_params or {}), ("query",))
    settings = get_container().settings
    limit = min(query.limit or settings.page_size_default, settings.page_size_max)
    rows, cursor = get_container().audit_log.list(actor, query, limit)
    return ok(Page[AuditLogPublic](items=[AuditLogPublic.model_validate(r) for r in rows], next_cursor=cursor))
