"""GET /metrics (Prometheus) and GET /status (admins: platform-wide; users: their own agents).

The service module (SQLAlchemy, SQS) is imported on first use through the
container, not here: this blueprint is part of the API's cold start."""

from __future__ import annotations

import hmac

from chalice import Blueprint, Response
from chalice.app import Request

from chalicelib.api.http import endpoint, ok, principal
from chalicelib.container import get_container
from chalicelib.domain.rbac import Permission, has_permission, require

bp = Blueprint(__name__)

#: Prometheus text exposition format 0.0.4 (what MonitoringService.prometheus writes).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _authorize_scrape(request: Request) -> None:
    """An admin's access token, or the static scrape token (Prometheus cannot log in)."""
    expected = get_container().settings.metrics_token
    scheme, _, presented = str(request.headers.get("authorization") or "").partition(" ")
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return
    require(principal(request).role, Permission.METRICS_READ)


@bp.route("/metrics", methods=["GET"])
@endpoint
def metrics() -> Response:
    _authorize_scrape(bp.current_request)
    return Response(body=get_container().monitoring.prometheus(), status_code=200,
                    headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


@bp.route("/status", methods=["GET"])
@endpoint
def status() -> Response:
    claims = principal(bp.current_request)
    platform = has_permission(claims.role, Permission.METRICS_READ)  # admins: every agent and queue
    return ok(get_container().monitoring.status(None if platform else claims.user_id))
