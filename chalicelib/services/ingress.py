"""Ingress messages -> tasks (docs/producers.md): authenticate, validate, authorize, rate-limit, create.

`handle` never raises for anything the message itself got wrong: it answers `Rejected` with a reason
(the consumer moves the message to the ingress DLQ at once and the owner gets an `ingress.rejected`
audit row), `Throttled` (delay it), or `Accepted` (created, or a duplicate of an earlier one). It
raises only for infrastructure failures (database, Redis-less limiter never raises), which SQS retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chalicelib.db.models import IngressReceipt
from chalicelib.errors import AppError, DependencyUnavailableError, RateLimitedError
from chalicelib.observability import logger
from chalicelib.ratelimit import Bucket, LimiterUnavailable
from chalicelib.schemas.ingress import SCHEMA_VERSIONS, IngressTaskV1
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.db.models import Task
    from chalicelib.db.session import Database
    from chalicelib.ratelimit import RateLimiter
    from chalicelib.services.producer_keys import ProducerKeyService
    from chalicelib.services.tasks import TaskService

KEY_ID_ATTRIBUTE = "ymera-key-id"
SIGNATURE_ATTRIBUTE = "ymera-signature"
REASON_ATTRIBUTE = "ymera-reject-reason"
#: JSON nesting a message may have (the JSON parser's recursion is not a producer's to exhaust).
MAX_DEPTH = 64


class Reason:
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    BAD_SIGNATURE = "bad_signature"
    OVERSIZED = "oversized"
    NOT_JSON = "not_json"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    INVALID = "invalid"


@dataclass(frozen=True)
class Accepted:
    task_id: uuid.UUID
    duplicate: bool


@dataclass(frozen=True)
class Rejected:
    reason: str
    owner: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Throttled:
    retry_after: int


Outcome = Accepted | Rejected | Throttled


def sign(body: str | bytes, secret: str) -> str:
    """hex HMAC-SHA256 of the exact body (what clients/python/producer.py sends)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def _depth(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


class IngressService:
    def __init__(self, db: Database, tasks: TaskService, keys: ProducerKeyService, limiter: RateLimiter | None,
                 bucket: Bucket, max_bytes: int) -> None:
        self.db = db
        self.tasks = tasks
        self.keys = keys
        self.limiter = limiter
        self.bucket = bucket
        self.max_bytes = max_bytes

    def handle(self, body: str, attributes: dict[str, str], message_id: str) -> Outcome:
        outcome = self._handle(body, attributes, message_id)
        if isinstance(outcome, Rejected):
            self._record_rejection(outcome, attributes.get(KEY_ID_ATTRIBUTE), message_id)
        return outcome

    def _handle(self, body: str, attributes: dict[str, str], message_id: str) -> Outcome:
        key_attr, signature = attributes.get(KEY_ID_ATTRIBUTE), attributes.get(SIGNATURE_ATTRIBUTE)
        if not key_attr or not signature:
            return Rejected(Reason.UNSIGNED)
        try:
            key_id = uuid.UUID(key_attr)
        except ValueError:
            return Rejected(Reason.UNKNOWN_KEY)
        key = self.keys.lookup(key_id)
        if key is None:
            return Rejected(Reason.UNKNOWN_KEY)
        if key.secret is None:
            return Rejected(Reason.REVOKED_KEY, key.user_id)
        raw = body.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(sign(raw, key.secret), signature.strip().lower()):
            return Rejected(Reason.BAD_SIGNATURE, key.user_id)
        owner = key.user_id
        if len(raw) > self.max_bytes:
            return Rejected(Reason.OVERSIZED, owner, {"bytes": len(raw), "limit": self.max_bytes})
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return Rejected(Reason.NOT_JSON, owner)
        if not isinstance(data, dict) or not _depth(data, MAX_DEPTH):
            return Rejected(Reason.NOT_JSON, owner, {"expected": "a JSON object"})
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int | float) or version not in SCHEMA_VERSIONS:
            return Rejected(Reason.UNKNOWN_SCHEMA_VERSION, owner, {"supported": list(SCHEMA_VERSIONS)})
        try:
            message = IngressTaskV1.model_validate(data)
        except PydanticValidationError as exc:
            errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:10]]
            return Rejected(Reason.INVALID, owner, {"errors": errors})
        existing = self._receipt(owner, message.idempotency_key)
        if existing is not None:
            return Accepted(existing, duplicate=True)
        retry_after = self._throttle(owner)
        if retry_after:
            return Throttled(retry_after)
        return self._create(owner, key_id, message, message_id)

    def _receipt(self, owner: uuid.UUID, idempotency_key: str) -> uuid.UUID | None:
        with self.db.read() as session:
            return session.scalar(select(IngressReceipt.task_id).where(
                IngressReceipt.user_id == owner, IngressReceipt.idempotency_key == idempotency_key))

    def _throttle(self, owner: uuid.UUID) -> int:
        if self.limiter is None:
            return 0
        try:
            decision = self.limiter.check([(self.bucket, str(owner))])
        except LimiterUnavailable:
            return 0  # fails open, as the API's general buckets do
        return 0 if decision.allowed else decision.retry_after

    def _create(self, owner: uuid.UUID, key_id: uuid.UUID, message: IngressTaskV1, message_id: str) -> Outcome:
        def receipt(session: Session, task: Task) -> None:
            session.add(IngressReceipt(user_id=owner, idempotency_key=message.idempotency_key, task_id=task.id,
                                       key_id=key_id, correlation_id=message.correlation_id))

        try:  # the message is a TaskCreate: the same path as POST /tasks (quota, routing, outbox, audit)
            task = self.tasks.create(owner, message, RequestMeta(request_id=f"sqs:{message_id}"), on_created=receipt)
        except IntegrityError:
            # A concurrent message with the same key committed first: its task is the one.
            existing = self._receipt(owner, message.idempotency_key)
            if existing is None:
                raise
            return Accepted(existing, duplicate=True)
        except DependencyUnavailableError:
            raise
        except RateLimitedError as exc:  # the daily task quota: waiting for tomorrow is not a delay SQS can hold
            return Rejected(exc.code.lower(), owner, {"message": exc.message})
        except AppError as exc:  # another user's agent (not found), inactive agent, bad input, no agent to route
            return Rejected(exc.code.lower(), owner, {"message": exc.message})
        return Accepted(task.id, duplicate=False)

    def _record_rejection(self, outcome: Rejected, key_attr: str | None, message_id: str) -> None:
        details = {"reason": outcome.reason, "message_id": message_id, **outcome.details}
        if outcome.owner is None:
            # No owner to tell: the key is unknown or the message unsigned. Operators see it in the logs.
            logger.warning("ingress message rejected without an owner",
                           extra={"reason": outcome.reason, "message_id": message_id,
                                  "key_id": (key_attr or "")[:64]})
            return
        with self.db.transaction() as session:
            audit.record(session, user_id=outcome.owner, event_type="ingress.rejected", action="reject",
                         resource_type="producer_key", resource_id=(key_attr or "")[:64] or None,
                         details=details, meta=RequestMeta(request_id=f"sqs:{message_id}"))
        logger.info("ingress message rejected", extra={"reason": outcome.reason, "message_id": message_id})
