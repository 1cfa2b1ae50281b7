"""POST/GET/DELETE /producer-keys: signing keys for event producers (docs/producers.md)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, path_uuid, principal, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.ingress import ProducerKeyCreate

bp = Blueprint(__name__)


@bp.route("/producer-keys", methods=["POST"])
@endpoint
def create_producer_key() -> Response:
    request = bp.current_request
    user = principal(request)
    body = json_body(request, ProducerKeyCreate) if (request.raw_body or b"").strip() else ProducerKeyCreate()
    created = get_container().producer_keys.create(user.user_id, body, request_meta(request))
    return ok(created, status=201)


@bp.route("/producer-keys", methods=["GET"])
@endpoint
def list_producer_keys() -> Response:
    user = principal(bp.current_request)
    return ok(get_container().producer_keys.list(user.user_id))


@bp.route("/producer-keys/{key_id}", methods=["DELETE"])
@endpoint
def revoke_producer_key(key_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    get_container().producer_keys.revoke(user.user_id, path_uuid(key_id, "producer key"), request_meta(request))
    return Response(body="", status_code=204)
