from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.agents.registry import available_types
from chalicelib.api.http import endpoint, ok
from chalicelib.container import get_container

bp = Blueprint(__name__)


@bp.route("/health", methods=["GET"])
@endpoint
def health() -> Response:
    healthy, report = get_container().health.check(available_types())
    return ok(report, status=200 if healthy else 503)
