"""PUT/GET/DELETE /provider-keys: your own API keys for endpoints you bring (agents' config.key)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, principal, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.provider_keys import ProviderKeyPut

bp = Blueprint(__name__)


@bp.route("/provider-keys", methods=["GET"])
@endpoint
def list_provider_keys() -> Response:
    user = principal(bp.current_request)
    return ok(get_container().provider_keys.list(user.user_id))


@bp.route("/provider-keys/{name}", methods=["PUT"])
@endpoint
def put_provider_key(name: str) -> Response:
    request = bp.current_request
    user = principal(request)
    saved, created = get_container().provider_keys.put(user.user_id, name, json_body(request, ProviderKeyPut),
                                                       request_meta(request))
    return ok(saved, status=201 if created else 200)


@bp.route("/provider-keys/{name}", methods=["DELETE"])
@endpoint
def delete_provider_key(name: str) -> Response:
    request = bp.current_request
    user = principal(request)
    get_container().provider_keys.delete(user.user_id, name, request_meta(request))
    return Response(body="", status_code=204)
