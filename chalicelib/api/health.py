"""GET /health (liveness: no I/O, no auth, never rate limited) and GET /health/ready (dependencies,
cached per container for YMERA_READINESS_CACHE_SECONDS; see chalicelib.services.health)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.agents.registry import available_types
from chalicelib.api.http import endpoint, ok
from chalicelib.container import get_container

bp = Blueprint(__name__)


@bp.route("/health", methods=["GET"])
@endpoint
def health() -> Response:
    return ok(get_container().health.live())


@bp.route("/health/ready", methods=["GET"])
@endpoint
def ready() -> Response:
    healthy, report = get_container().health.ready(available_types())
    return ok(report, status=200 if healthy else 503)
