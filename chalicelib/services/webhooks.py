"""/webhooks: subscriptions, their signing secrets, test events, the delivery log, redelivery (docs/webhooks.md).

Every statement filters on the owner (another user's subscription or delivery is 404). The secret is shown
once (create, rotate) and stored AES-256-GCM encrypted with the provider keys' cipher, bound to its owner and
subscription. URLs pass the outbound policy of user-chosen model endpoints now, and again on every connect.
Mutations are audited (the id, never the secret or the URL's query). Test events and redeliveries are sent
in the request (one attempt, the answer shows it); their retries go through the sender like any delivery.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.webhook_models import Webhook, WebhookAttempt, WebhookDelivery
from chalicelib.errors import (
    QuotaExceededError,
    WebhookDisabledError,
    WebhookNotFoundError,
    WebhookUrlRefusedError,
)
from chalicelib.net.outbound import OutboundPolicy, OutboundRefusedError
from chalicelib.providers.user_keys import KeyCipher, open_cipher
from chalicelib.schemas.common import Page
from chalicelib.schemas.webhooks import (
    AttemptPublic,
    DeliveryListQuery,
    DeliveryPublic,
    SecretRotation,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
    WebhookUpdate,
)
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor
from chalicelib.webhooks import TEST_EVENT, signing
from chalicelib.webhooks.sender import secret_aad

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.webhooks.sender import WebhookSender

D = WebhookDelivery


class WebhookService:
    def __init__(self, db: Database, cipher_factory: Callable[[], KeyCipher], policy: OutboundPolicy,
                 sender: Callable[[], WebhookSender], *, max_per_user: int, retry_window_seconds: int,
                 rotation_grace_seconds: int = 0, clock: Callable[[], datetime] = utcnow) -> None:
        self.rotation_grace_seconds = rotation_grace_seconds
        self.db = db
        self._cipher_factory = cipher_factory
        self.policy = policy
        self._sender = sender
        self.max_per_user = max_per_user
        self.retry_window = timedelta(seconds=retry_window_seconds)
        self.clock = clock

    def _cipher(self) -> KeyCipher:
        return open_cipher(self._cipher_factory, "webhook signing secrets")

    def _check_url(self, url: str) -> None:
        try:
            self.policy.check_destination(url)
        except OutboundRefusedError as exc:
            raise WebhookUrlRefusedError(f"this URL cannot receive webhooks: {exc.message}",
                                         {"reason": exc.details.get("reason"), "field": "url"}) from exc

    def _owned(self, session: Session, user_id: uuid.UUID, webhook_id: uuid.UUID, *, lock: bool = False) -> Webhook:
        stmt = select(Webhook).where(Webhook.id == webhook_id, Webhook.user_id == user_id)
        hook = session.scalar(stmt.with_for_update() if lock else stmt)
        if hook is None:
            raise WebhookNotFoundError("webhook not found", {"webhook_id": str(webhook_id)})
        return hook

    # --- subscriptions ----------------------------------------------------------------------------------------

    def create(self, user_id: uuid.UUID, req: WebhookCreate, meta: RequestMeta) -> WebhookCreated:
        self._check_url(req.url)
        cipher = self._cipher()
        secret = signing.new_secret()
        hook_id = uuid.uuid4()
        with self.db.transaction() as session:
            # serialises one user's creates, so two at once cannot both pass the cap
            if session.get_bind().dialect.name == "postgresql":
                session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"webhooks:{user_id}"))))
            count = session.scalar(select(func.count()).select_from(Webhook).where(Webhook.user_id == user_id)) or 0
            if count >= self.max_per_user:
                raise QuotaExceededError(f"you can have at most {self.max_per_user} webhooks; delete one",
                                         {"limit": self.max_per_user})
            hook = Webhook(id=hook_id, user_id=user_id, url=req.url, event_types=list(req.event_types),
                           description=req.description,
                           secret_ciphertext=cipher.encrypt(secret, user_id, secret_aad(hook_id)))
            session.add(hook)
            session.flush()
            audit.record(session, user_id=user_id, event_type="webhook", action="create", resource_type="webhook",
                         resource_id=hook_id, details={"event_types": list(req.event_types)}, meta=meta)
            public = WebhookPublic.model_validate(hook)
        return WebhookCreated(**public.model_dump(), secret=secret)

    def list(self, user_id: uuid.UUID) -> WebhookList:
        with self.db.read() as session:
            rows = session.scalars(select(Webhook).where(Webhook.user_id == user_id)
                                   .order_by(Webhook.created_at.desc(), Webhook.id)).all()
            return WebhookList(items=[WebhookPublic.model_validate(r) for r in rows])

    def get(self, user_id: uuid.UUID, webhook_id: uuid.UUID) -> WebhookPublic:
        with self.db.read() as session:
            return WebhookPublic.model_validate(self._owned(session, user_id, webhook_id))

    def update(self, user_id: uuid.UUID, webhook_id: uuid.UUID, req: WebhookUpdate,
               meta: RequestMeta) -> WebhookPublic:
        if req.url is not None:
            self._check_url(req.url)
        now = self.clock()
        with self.db.transaction() as session:
            hook = self._owned(session, user_id, webhook_id, lock=True)
            changed = req.model_dump(exclude_unset=True, exclude_none=True)
            if req.url is not None:
                hook.url = req.url
            if req.event_types is not None:
                hook.event_types = list(req.event_types)
            if "description" in req.model_fields_set:
                hook.description = req.description
            if req.status == "active" and hook.status != "active":
                hook.status, hook.failure_count, hook.disabled_reason = "active", 0, None
            elif req.status == "disabled" and hook.status != "disabled":
                hook.status, hook.disabled_reason = "disabled", "disabled by its owner"
                session.execute(update(D).where(D.webhook_id == hook.id, D.user_id == user_id, D.status == "pending")
                                .values(status="abandoned", next_attempt_at=None, claimed_until=None, updated_at=now,
                                        last_error="the webhook was disabled")
                                .execution_options(synchronize_session=False))
            hook.updated_at = now
            audit.record(session, user_id=user_id, event_type="webhook", action="update", resource_type="webhook",
                         resource_id=hook.id, details={"fields": sorted(changed)}, meta=meta)
            session.flush()
            return WebhookPublic.model_validate(hook)

    def delete(self, user_id: uuid.UUID, webhook_id: uuid.UUID, meta: RequestMeta) -> None:
        with self.db.transaction() as session:
            hook = self._owned(session, user_id, webhook_id, lock=True)
            session.delete(hook)  # deliveries and attempts go with it (ON DELETE CASCADE)
            audit.record(session, user_id=user_id, event_type="webhook", action="delete", resource_type="webhook",
                         resource_id=webhook_id, meta=meta)

    def rotate_secret(self, user_id: uuid.UUID, webhook_id: uuid.UUID, req: SecretRotation,
                      meta: RequestMeta) -> WebhookCreated:
        """A new secret, shown once. The old one keeps signing too (a second signature in the header) for
        `previous_secret_valid_seconds`, so a receiver can switch without refusing deliveries; 0 = at once."""
        cipher = self._cipher()
        secret = signing.new_secret()
        grace = self.rotation_grace_seconds if req.previous_secret_valid_seconds is None \
            else req.previous_secret_valid_seconds
        now = self.clock()
        with self.db.transaction() as session:
            hook = self._owned(session, user_id, webhook_id, lock=True)
            hook.previous_secret_ciphertext = hook.secret_ciphertext if grace else None
            hook.previous_secret_expires_at = now + timedelta(seconds=grace) if grace else None
            hook.secret_ciphertext = cipher.encrypt(secret, user_id, secret_aad(hook.id))
            hook.updated_at = now
            audit.record(session, user_id=user_id, event_type="webhook", action="rotate_secret",
                         resource_type="webhook", resource_id=hook.id,
                         details={"previous_secret_valid_seconds": grace}, meta=meta)
            session.flush()
            public = WebhookPublic.model_validate(hook)
        return WebhookCreated(**public.model_dump(), secret=secret)

    # --- deliveries -------------------------------------------------------------------------------------------

    def send_test(self, user_id: uuid.UUID, webhook_id: uuid.UUID, meta: RequestMeta) -> DeliveryPublic:
        now = self.clock()
        sender = self._sender()
        with self.db.transaction() as session:
            hook = self._owned(session, user_id, webhook_id)
            if hook.status != "active":
                raise WebhookDisabledError("the webhook is disabled; re-enable it (PUT status=active) first",
                                           {"webhook_id": str(webhook_id)})
            event = {"event_id": None, "type": TEST_EVENT, "resource": {"type": "webhook", "id": str(hook.id)},
                     "run_id": None, "step_id": None, "status": "test",
                     "occurred_at": now.isoformat().replace("+00:00", "Z"),
                     "payload": {"message": "a test event from POST /webhooks/{webhook_id}/test"}}
            delivery = D(webhook_id=hook.id, user_id=user_id, event_id=None, event_type=TEST_EVENT, payload=event,
                         status="pending", attempts=0, next_attempt_at=now, retry_until=now + self.retry_window)
            session.add(delivery)
            session.flush()
            delivery_id = delivery.id
            # Leased to this request as it is inserted: a looping sender cannot take the attempt the caller waits for.
            taken = sender.take(session, [delivery], now)
            audit.record(session, user_id=user_id, event_type="webhook", action="test", resource_type="webhook",
                         resource_id=hook.id, details={"delivery_id": str(delivery_id)}, meta=meta)
        sender.send_taken(taken)
        return self.delivery(user_id, webhook_id, delivery_id)

    def redeliver(self, user_id: uuid.UUID, webhook_id: uuid.UUID, delivery_id: uuid.UUID,
                  meta: RequestMeta) -> DeliveryPublic:
        """Send a delivery again now, whatever its status, with a fresh retry window (same webhook-id)."""
        now = self.clock()
        sender = self._sender()
        with self.db.transaction() as session:
            hook = self._owned(session, user_id, webhook_id, lock=True)
            if hook.status != "active":
                raise WebhookDisabledError("the webhook is disabled; re-enable it (PUT status=active) first",
                                           {"webhook_id": str(webhook_id)})
            row = session.scalar(select(D).where(D.id == delivery_id, D.webhook_id == webhook_id,
                                                 D.user_id == user_id).with_for_update())
            if row is None:
                raise WebhookNotFoundError("delivery not found", {"delivery_id": str(delivery_id)})
            row.status, row.next_attempt_at, row.claimed_until = "pending", now, None
            row.retry_until, row.updated_at = now + self.retry_window, now
            taken = sender.take(session, [row], now)  # this request's attempt, as in send_test
            audit.record(session, user_id=user_id, event_type="webhook", action="redeliver", resource_type="webhook",
                         resource_id=hook.id, details={"delivery_id": str(delivery_id)}, meta=meta)
        sender.send_taken(taken)
        return self.delivery(user_id, webhook_id, delivery_id)

    def delivery(self, user_id: uuid.UUID, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryPublic:
        with self.db.read() as session:
            row = session.scalar(select(D).where(D.id == delivery_id, D.webhook_id == webhook_id,
                                                 D.user_id == user_id))
            if row is None:
                raise WebhookNotFoundError("delivery not found", {"delivery_id": str(delivery_id)})
            return _publics(session, [row])[0]

    def deliveries(self, user_id: uuid.UUID, webhook_id: uuid.UUID, query: DeliveryListQuery,
                   limit: int) -> Page[DeliveryPublic]:
        """Newest first, keyset pages; three statements whatever the page size."""
        with self.db.read() as session:
            self._owned(session, user_id, webhook_id)
            stmt = select(D).where(D.webhook_id == webhook_id, D.user_id == user_id)
            if query.status is not None:
                stmt = stmt.where(D.status == query.status)
            if query.cursor:
                stmt = stmt.where(after_cursor(D.created_at, D.id, query.cursor))
            rows = list(session.scalars(stmt.order_by(D.created_at.desc(), D.id.desc()).limit(limit + 1)))
            last = rows[limit - 1] if len(rows) > limit else None
            return Page[DeliveryPublic](items=_publics(session, rows[:limit]),
                                        next_cursor=encode_cursor(last.created_at, last.id) if last else None)


def _publics(session: Session, rows: list[WebhookDelivery]) -> list[DeliveryPublic]:
    attempts: dict[uuid.UUID, list[AttemptPublic]] = defaultdict(list)
    if rows:
        for a in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_([r.id for r in rows]))
                                 .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt, WebhookAttempt.id)):
            attempts[a.delivery_id].append(AttemptPublic.model_validate(a))
    return [DeliveryPublic(id=r.id, webhook_id=r.webhook_id, event_id=r.event_id, event_type=r.event_type,
                           status=r.status,  # type: ignore[arg-type]
                           attempts=r.attempts, next_attempt_at=r.next_attempt_at, last_status_code=r.last_status_code,
                           last_latency_ms=r.last_latency_ms, last_error=r.last_error, created_at=r.created_at,
                           updated_at=r.updated_at, event=r.payload, attempt_log=attempts[r.id]) for r in rows]
