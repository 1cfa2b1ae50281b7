"""/webhooks: signed event deliveries to your URL, with a delivery log (docs/webhooks.md)."""

from __future__ import annotations

import uuid

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, path_uuid, principal, request_meta, validate
from chalicelib.container import get_container
from chalicelib.errors import NotFoundError, WebhookNotFoundError
from chalicelib.schemas.webhooks import DeliveryListQuery, SecretRotation, WebhookCreate, WebhookUpdate

bp = Blueprint(__name__)


def _id(value: str, what: str = "webhook") -> uuid.UUID:
    """A malformed id names nothing: 404 with the same code as an unknown one."""
    try:
        return path_uuid(value, what)
    except NotFoundError as exc:
        raise WebhookNotFoundError(exc.message, exc.details) from None


@bp.route("/webhooks", methods=["POST"])
@endpoint
def create_webhook() -> Response:
    request = bp.current_request
    user = principal(request)
    created = get_container().webhooks.create(user.user_id, json_body(request, WebhookCreate), request_meta(request))
    return ok(created, status=201, headers={"Location": f"/webhooks/{created.id}"})


@bp.route("/webhooks", methods=["GET"])
@endpoint
def list_webhooks() -> Response:
    user = principal(bp.current_request)
    return ok(get_container().webhooks.list(user.user_id))


@bp.route("/webhooks/{webhook_id}", methods=["GET"])
@endpoint
def get_webhook(webhook_id: str) -> Response:
    user = principal(bp.current_request)
    return ok(get_container().webhooks.get(user.user_id, _id(webhook_id)))


@bp.route("/webhooks/{webhook_id}", methods=["PUT"])
@endpoint
def update_webhook(webhook_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    hook = _id(webhook_id)
    return ok(get_container().webhooks.update(user.user_id, hook, json_body(request, WebhookUpdate),
                                              request_meta(request)))


@bp.route("/webhooks/{webhook_id}", methods=["DELETE"])
@endpoint
def delete_webhook(webhook_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    get_container().webhooks.delete(user.user_id, _id(webhook_id), request_meta(request))
    return Response(body="", status_code=204)


@bp.route("/webhooks/{webhook_id}/rotate-secret", methods=["POST"])
@endpoint
def rotate_webhook_secret(webhook_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    hook = _id(webhook_id)
    body = json_body(request, SecretRotation) if (request.raw_body or b"").strip() else SecretRotation()
    return ok(get_container().webhooks.rotate_secret(user.user_id, hook, body, request_meta(request)))


@bp.route("/webhooks/{webhook_id}/test", methods=["POST"])
@endpoint
def test_webhook(webhook_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    return ok(get_container().webhooks.send_test(user.user_id, _id(webhook_id), request_meta(request)))


@bp.route("/webhooks/{webhook_id}/deliveries", methods=["GET"])
@endpoint
def list_webhook_deliveries(webhook_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    hook = _id(webhook_id)
    query = validate(DeliveryListQuery, dict(request.query_params or {}), ("query",))
    settings = get_container().settings
    limit = min(query.limit or settings.page_size_default, settings.page_size_max)
    return ok(get_container().webhooks.deliveries(user.user_id, hook, query, limit))


@bp.route("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", methods=["POST"])
@endpoint
def redeliver_webhook_delivery(webhook_id: str, delivery_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    hook, delivery = _id(webhook_id), _id(delivery_id, "delivery")
    return ok(get_container().webhooks.redeliver(user.user_id, hook, delivery, request_meta(request)))
