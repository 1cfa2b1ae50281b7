"""`Idempotency-Key` on create calls: one key, one resource, the original response on every replay.

Postgres is the truth. `claim` inserts the key in the caller's transaction, next to the resource it
creates; the unique (user_id, key) constraint makes a concurrent request with the same key wait for
that transaction and then find the committed row and its response (or, if the first one failed and
rolled back, take the key itself). Nothing is cached in Redis, so losing Redis cannot create a
duplicate. Keys are scoped to the user and expire after `ttl_seconds`; an expired row is reused in place
and the scheduled relay purges the rest (`purge_expired`).

The stored request hash covers the operation (`scope`, e.g. "POST /tasks") and the validated body as
canonical JSON, so reformatting a body is the same request, and the same key on another operation or
with another body is a conflict. Any create route can use it: claim, create, `complete`, commit.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from chalicelib.db.models import IdempotencyKey
from chalicelib.db.session import Database, rowcount
from chalicelib.db.types import utcnow
from chalicelib.errors import IdempotencyKeyInProgressError, IdempotencyKeyReusedError, ValidationError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # MAX_KEY_LENGTH


@dataclass(frozen=True)
class IdempotentRequest:
    key: str
    scope: str
    request_hash: str


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]
    resource_id: uuid.UUID | None


def idempotent_request(key: str, scope: str, body: Any) -> IdempotentRequest:
    """Check a header value (1-255 printable ASCII characters, no spaces) and hash the request."""
    if not _KEY.fullmatch(key):
        message = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters without spaces"
        raise ValidationError("request validation failed", {"errors": [
            {"loc": ["header", HEADER], "msg": message, "type": "idempotency_key"}]})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    digest = hashlib.sha256(f"{scope}\n{canonical}".encode()).hexdigest()
    return IdempotentRequest(key=key, scope=scope, request_hash=digest)


def _insert(session: Session) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


class IdempotencyStore:
    def __init__(self, db: Database, *, ttl_seconds: int = 24 * 3600,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_seconds)
        self.clock = clock

    def claim(self, session: Session, user_id: uuid.UUID, request: IdempotentRequest) -> StoredResponse | None:
        """None: this transaction now holds the key and must `complete` it before committing. Otherwise the
        response the key already got; a different request under the key is IdempotencyKeyReusedError."""
        now = self.clock()
        fresh = {"scope": request.scope, "request_hash": request.request_hash, "resource_id": None,
                 "status_code": None, "response": None, "created_at": now, "expires_at": now + self.ttl}
        insert = _insert(session)(IdempotencyKey).values(id=uuid.uuid4(), user_id=user_id, key=request.key, **fresh)
        # Blocks while another transaction holds an uncommitted row for the key; an expired row is taken over.
        stmt = insert.on_conflict_do_update(index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
                                            set_=fresh, where=IdempotencyKey.expires_at <= now)
        if session.scalar(stmt.returning(IdempotencyKey.id)) is not None:
            return None
        row = session.scalar(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                          IdempotencyKey.key == request.key)
                             .execution_options(populate_existing=True))
        if row is None:  # purged between the two statements: a new claim is the right answer
            return self.claim(session, user_id, request)
        if row.request_hash != request.request_hash:
            raise IdempotencyKeyReusedError(f"this {HEADER} was already used with a different request",
                                            {"header": HEADER, "scope": row.scope})
        if row.response is None or row.status_code is None:
            raise IdempotencyKeyInProgressError(f"the first request with this {HEADER} is still in progress",
                                                {"header": HEADER})
        return StoredResponse(row.status_code, row.response, row.resource_id)

    def complete(self, session: Session, user_id: uuid.UUID, request: IdempotentRequest, status_code: int,
                 body: dict[str, Any], resource_id: uuid.UUID | None) -> None:
        session.execute(update(IdempotencyKey)
                        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == request.key)
                        .values(status_code=status_code, response=body, resource_id=resource_id)
                        .execution_options(synchronize_session=False))

    def purge_expired(self) -> int:
        with self.db.transaction() as session:
            return rowcount(session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= self.clock())
                                            .execution_options(synchronize_session=False)))
