"""POST/GET/DELETE /producer-keys: event producers' signing keys (docs/producers.md).

The secret is shown once, at creation. Verifying an HMAC needs the secret itself (a hash would not
do), so it is stored AES-256-GCM encrypted with the provider keys' cipher, bound to its owner and
key id. Every statement filters on the owner; creation and revocation are audited (the key id, never
the secret).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from chalicelib.db.models import ProducerKey
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.providers.user_keys import KeyCipher, open_cipher
from chalicelib.schemas.ingress import ProducerKeyCreate, ProducerKeyCreated, ProducerKeyList, ProducerKeyPublic
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

#: live (unrevoked) keys per user.
MAX_KEYS_PER_USER = 20
SECRET_BYTES = 32


def _aad_name(key_id: uuid.UUID) -> str:
    return f"producer:{key_id}"


def _public(row: ProducerKey) -> ProducerKeyPublic:
    return ProducerKeyPublic(key_id=str(row.id), name=row.name, created_at=row.created_at, revoked_at=row.revoked_at)


@dataclass(frozen=True)
class ActiveKey:
    key_id: uuid.UUID
    user_id: uuid.UUID
    secret: str | None  # None: revoked, or it does not decrypt


class ProducerKeyService:
    def __init__(self, db: Database, cipher_factory: Callable[[], KeyCipher]) -> None:
        self.db = db
        self._cipher_factory = cipher_factory

    def _cipher(self) -> KeyCipher:
        return open_cipher(self._cipher_factory, "producer keys")

    def create(self, user_id: uuid.UUID, req: ProducerKeyCreate, meta: RequestMeta) -> ProducerKeyCreated:
        cipher = self._cipher()
        secret = secrets.token_hex(SECRET_BYTES)
        key_id = uuid.uuid4()
        with self.db.transaction() as session:
            live = session.scalar(select(func.count()).select_from(ProducerKey).where(
                ProducerKey.user_id == user_id, ProducerKey.revoked_at.is_(None)))
            if (live or 0) >= MAX_KEYS_PER_USER:
                raise ValidationError(f"you can have at most {MAX_KEYS_PER_USER} live producer keys; revoke one", {})
            row = ProducerKey(id=key_id, user_id=user_id, name=req.name,
                              ciphertext=cipher.encrypt(secret, user_id, _aad_name(key_id)))
            session.add(row)
            session.flush()
            audit.record(session, user_id=user_id, event_type="producer_key", action="create",
                         resource_type="producer_key", resource_id=str(key_id), details={"name": req.name}, meta=meta)
            session.flush()
            public = _public(row)
        return ProducerKeyCreated(**public.model_dump(), secret=secret)

    def list(self, user_id: uuid.UUID) -> ProducerKeyList:
        with self.db.read() as session:
            rows = session.scalars(select(ProducerKey).where(ProducerKey.user_id == user_id)
                                   .order_by(ProducerKey.created_at.desc(), ProducerKey.id)).all()
            return ProducerKeyList(items=[_public(r) for r in rows])

    def revoke(self, user_id: uuid.UUID, key_id: uuid.UUID, meta: RequestMeta) -> None:
        with self.db.transaction() as session:
            row = session.scalar(select(ProducerKey).where(ProducerKey.id == key_id, ProducerKey.user_id == user_id)
                                 .with_for_update())
            if row is None or row.revoked_at is not None:
                raise NotFoundError("producer key not found", {"key_id": str(key_id)})
            row.revoked_at = utcnow()
            audit.record(session, user_id=user_id, event_type="producer_key", action="revoke",
                         resource_type="producer_key", resource_id=str(key_id), details={"name": row.name}, meta=meta)

    def lookup(self, key_id: uuid.UUID) -> ActiveKey | None:
        """The key with its secret for verifying a signature; None when no such key exists."""
        with self.db.read() as session:
            row = session.scalar(select(ProducerKey).where(ProducerKey.id == key_id))
            if row is None:
                return None
            user_id, blob, revoked = row.user_id, bytes(row.ciphertext), row.revoked_at is not None
        if revoked:
            return ActiveKey(key_id, user_id, None)
        return ActiveKey(key_id, user_id, self._cipher().decrypt(blob, user_id, _aad_name(key_id)))
