"""Admin operations. POST /admin/cache/clear: {"namespaces": [...]} or no body (every namespace)."""

from __future__ import annotations

from typing import Annotated

from chalice import Blueprint, Response
from pydantic import Field, StringConstraints

from chalicelib.api.http import endpoint, json_body, ok, principal, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.common import NAME_CHARS, PublicModel, StrictModel

bp = Blueprint(__name__)


Namespace = Annotated[str, StringConstraints(max_length=64), NAME_CHARS]


class CacheClearRequest(StrictModel):
    namespaces: list[Namespace] | None = Field(default=None, max_length=20)


class CacheClearResult(PublicModel):
    cleared: list[str]


@bp.route("/admin/cache/clear", methods=["POST"])
@endpoint
def clear_cache() -> Response:
    request = bp.current_request
    actor = principal(request)
    body = json_body(request, CacheClearRequest) if (request.raw_body or b"").strip() else CacheClearRequest()
    cleared = get_container().cache_admin.clear(actor, body.namespaces, request_meta(request))
    return ok(CacheClearResult(cleared=cleared))
