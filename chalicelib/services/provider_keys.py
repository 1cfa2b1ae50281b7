"""PUT/GET/DELETE /provider-keys: a user's own API keys for endpoints they bring (config.base_url + config.key).

Stored AES-GCM encrypted (chalicelib.providers.user_keys), owner-filtered on every statement, audited
(the name, never the key), and never returned: GET lists names and dates only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError

from chalicelib.db.models import ProviderKey
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.providers.user_keys import KeyCipher, open_cipher
from chalicelib.schemas.provider_keys import KEY_NAME_PATTERN, ProviderKeyList, ProviderKeyPublic, ProviderKeyPut
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

#: keys per user: names are for telling endpoints apart, not a storage service.
MAX_KEYS_PER_USER = 50


def check_name(name: str) -> str:
    if not re.match(KEY_NAME_PATTERN, name):
        raise ValidationError("a key name is 1-64 lower-case letters, digits, '-' or '_'",
                              {"errors": [{"loc": ["path", "name"], "msg": f"must match {KEY_NAME_PATTERN}"}]})
    return name


class ProviderKeyService:
    def __init__(self, db: Database, cipher_factory: Callable[[], KeyCipher]) -> None:
        self.db = db
        self._cipher_factory = cipher_factory

    def _cipher(self) -> KeyCipher:
        return open_cipher(self._cipher_factory, "users' provider keys")

    def put(self, user_id: uuid.UUID, name: str, req: ProviderKeyPut, meta: RequestMeta) -> tuple[ProviderKeyPublic,
                                                                                                   bool]:
        check_name(name)
        blob = self._cipher().encrypt(req.api_key, user_id, name)
        with self.db.transaction() as session:
            row = session.scalar(select(ProviderKey).where(ProviderKey.user_id == user_id, ProviderKey.name == name)
                                 .with_for_update())
            created = row is None
            if row is None:
                count = len(session.scalars(select(ProviderKey.id).where(ProviderKey.user_id == user_id)).all())
                if count >= MAX_KEYS_PER_USER:
                    raise ValidationError(f"you can store at most {MAX_KEYS_PER_USER} provider keys", {})
                row = ProviderKey(user_id=user_id, name=name, ciphertext=blob)
                session.add(row)
                try:
                    with session.begin_nested():  # a concurrent PUT of the same name loses on the constraint
                        session.flush()
                except IntegrityError as exc:
                    raise ValidationError("a key with this name was stored at the same time; retry", {}) from exc
            else:
                row.ciphertext = blob
                row.updated_at = utcnow()
            audit.record(session, user_id=user_id, event_type="provider_key", action="create" if created else "update",
                         resource_type="provider_key", resource_id=name, details={"name": name}, meta=meta)
            session.flush()
            return ProviderKeyPublic.model_validate(row), created

    def list(self, user_id: uuid.UUID) -> ProviderKeyList:
        with self.db.read() as session:
            rows = session.scalars(select(ProviderKey).where(ProviderKey.user_id == user_id)
                                   .order_by(ProviderKey.name)).all()
            return ProviderKeyList(items=[ProviderKeyPublic.model_validate(r) for r in rows])

    def delete(self, user_id: uuid.UUID, name: str, meta: RequestMeta) -> None:
        with self.db.transaction() as session:
            result = cast(CursorResult[Any], session.execute(
                delete(ProviderKey).where(ProviderKey.user_id == user_id, ProviderKey.name == name)))
            gone = result.rowcount
            if not gone:
                raise NotFoundError("no provider key with this name", {"name": name})
            audit.record(session, user_id=user_id, event_type="provider_key", action="delete",
                         resource_type="provider_key", resource_id=name, details={"name": name}, meta=meta)
