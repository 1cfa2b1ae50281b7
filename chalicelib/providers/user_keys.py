"""Users' own provider keys: AES-256-GCM at rest, bound to their owner and name, never returned.

The encryption key is YMERA_PROVIDER_KEY_ENCRYPTION_KEY (base64, 32 bytes), or the Secrets Manager
secret YMERA_PROVIDER_KEY_ENCRYPTION_KEY_SECRET_ARN holding the same base64. Development stages
without one derive it from the JWT secret with HKDF-SHA256 (so `make run` needs no extra step);
any other stage without one refuses to store or read keys. The user id and key name are the
cipher's associated data: a row copied to another user or renamed does not decrypt.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from chalicelib.config import ConfigError
from chalicelib.db.models import ProviderKey
from chalicelib.observability import logger

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.db.session import Database

VERSION = b"\x01"
NONCE_BYTES = 12
HKDF_INFO = b"ymera provider-key encryption v1"


class KeyCipher:
    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ConfigError("the provider-key encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings, client: Any = None) -> KeyCipher:
        if settings.provider_key_encryption_key:
            return cls(base64.b64decode(settings.provider_key_encryption_key))
        if settings.provider_key_encryption_key_secret_arn:
            return cls(_fetch_key(settings, client))
        if settings.is_development and settings.jwt_secret:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
                settings.jwt_secret.encode())
            return cls(derived)
        raise ConfigError("YMERA_PROVIDER_KEY_ENCRYPTION_KEY(_SECRET_ARN) is required for users' provider keys "
                          f"(stage={settings.stage!r}; only development stages derive one from the JWT secret)")

    def encrypt(self, plaintext: str, user_id: uuid.UUID, name: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), _aad(user_id, name))

    def decrypt(self, blob: bytes, user_id: uuid.UUID, name: str) -> str | None:
        """The key, or None when the blob does not decrypt for this owner and name."""
        from cryptography.exceptions import InvalidTag

        if blob[:1] != VERSION or len(blob) < 1 + NONCE_BYTES + 16:
            return None
        nonce, data = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, data, _aad(user_id, name)).decode()
        except InvalidTag:
            return None


def open_cipher(factory: Callable[[], KeyCipher], purpose: str) -> KeyCipher:
    """The stage's cipher, or KEY_STORAGE_UNAVAILABLE (503) naming what needs it when none is configured."""
    from chalicelib.providers.errors import KeyStorageUnavailableError

    try:
        return factory()
    except ConfigError as exc:
        raise KeyStorageUnavailableError(f"{purpose} need an encryption key on this stage", {}) from exc


def _fetch_key(settings: Settings, client: Any) -> bytes:
    """The base64 key from Secrets Manager (once per container: the Container caches the cipher)."""
    import binascii

    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=settings.aws_region,
                              endpoint_url=settings.aws_endpoint_url)
    try:
        raw = client.get_secret_value(SecretId=settings.provider_key_encryption_key_secret_arn).get("SecretString")
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read the provider-key encryption key ({type(exc).__name__})") from exc
    try:
        key = base64.b64decode(str(raw or "").strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("the provider-key encryption key secret must hold base64") from exc
    return key


def _aad(user_id: uuid.UUID, name: str) -> bytes:
    return f"{user_id}:{name}".encode()


class UserKeyStore:
    """Reads a user's stored key for a model call, in its own short read (no transaction held across the call)."""

    def __init__(self, db: Database, cipher_factory: Callable[[], KeyCipher]) -> None:
        self.db = db
        self._cipher_factory = cipher_factory
        self._cipher: KeyCipher | None = None

    def cipher(self) -> KeyCipher:
        if self._cipher is None:
            self._cipher = self._cipher_factory()
        return self._cipher

    def get(self, user_id: uuid.UUID, name: str) -> str | None:
        with self.db.read() as session:
            blob = session.scalar(select(ProviderKey.ciphertext).where(ProviderKey.user_id == user_id,
                                                                       ProviderKey.name == name))
        if blob is None:
            return None
        try:
            cipher = self.cipher()
        except ConfigError:
            logger.error("a stored provider key cannot be read: no YMERA_PROVIDER_KEY_ENCRYPTION_KEY")
            return None
        plain = cipher.decrypt(bytes(blob), user_id, name)
        if plain is None:
            logger.error("a stored provider key does not decrypt (wrong encryption key?)", extra={"name": name})
        return plain
