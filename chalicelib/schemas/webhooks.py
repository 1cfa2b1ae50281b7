"""Request and response models of /webhooks (docs/webhooks.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, field_validator

from chalicelib.schemas.common import TEXT_CHARS, PublicModel, StrictModel
from chalicelib.webhooks import ALL, EVENT_TYPES

WebhookStatus = Literal["active", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "failed", "abandoned"]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[\x21-\x7e]+$")]
Description = Annotated[str, StringConstraints(max_length=500), TEXT_CHARS]
EventTypes = Annotated[list[str], Field(min_length=1, max_length=len(EVENT_TYPES), description=(
    "Exact event types (" + ", ".join(f"`{t}`" for t in EVENT_TYPES) + "), or `[\"*\"]` for all of them. "
    "`webhook.test` is sent by POST /webhooks/{webhook_id}/test whatever this says."))]


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); put a token in the path or query")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return value


def _check_types(value: list[str]) -> list[str]:
    if ALL in value:
        if value != [ALL]:
            raise ValueError('"*" stands alone: ["*"] means every event type')
        return value
    unknown = [t for t in value if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {unknown}; known: {list(EVENT_TYPES)}")
    if len(set(value)) != len(value):
        raise ValueError("lists an event type twice")
    return value


class WebhookCreate(StrictModel):
    url: Url = Field(description="Where deliveries are POSTed: https (http only on development stages); it must "
                                 "not resolve to a loopback, private, link-local or metadata address unless the "
                                 "stage allows it (checked now and on every connect).")
    event_types: EventTypes
    description: Description | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return _check_types(value)


class WebhookUpdate(StrictModel):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    status: WebhookStatus | None = Field(default=None, description="`active` re-enables a disabled subscription "
                                                                   "(its failure count starts again at 0).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_types(value)


class SecretRotation(StrictModel):
    previous_secret_valid_seconds: int | None = Field(
        default=None, ge=0, le=7 * 86_400,
        description="How long the old secret keeps signing too (a second `v1,` signature in `webhook-signature`), "
                    "so your receiver can switch without refusing a delivery. Default: the stage's setting "
                    "(24 h); 0 = the old secret stops at once.")


class WebhookPublic(PublicModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    status: WebhookStatus
    failure_count: int = Field(description="Deliveries in a row that ended failed or abandoned.")
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until when the previous secret also signs deliveries.")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret (`whsec_` + base64), shown in this answer only. Verify "
                                    "`webhook-signature` with it (docs/webhooks.md).")


class WebhookList(PublicModel):
    items: list[WebhookPublic]


class AttemptPublic(PublicModel):
    attempt: int
    started_at: datetime
    status_code: int | None = Field(description="The receiver's status; null when no answer came.")
    latency_ms: int
    error: str | None
    response_excerpt: str | None = Field(description="The start of the receiver's answer (500 characters).")
    next_retry_at: datetime | None = Field(description="When this attempt's retry was scheduled; null: none.")


class DeliveryPublic(PublicModel):
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: int | None = Field(description="The ledger's event id (GET /events); null for `webhook.test`.")
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    event: dict[str, Any] = Field(description="The body POSTed (the event as GET /events shows it).")
    attempt_log: list[AttemptPublic] = Field(description="Every attempt, oldest first.")


class DeliveryListQuery(StrictModel):
    limit: int | None = Field(default=None, ge=1)
    cursor: Annotated[str, TEXT_CHARS] | None = None
    status: DeliveryStatus | None = None

