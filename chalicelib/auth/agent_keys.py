"""API keys of external agents: shown once, stored as a sha256 digest.

A key is 256 random bits, so a fast hash is enough (nothing to brute-force, unlike
a password) and verification stays cheap on every worker call. The `ymk_` prefix
makes leaked keys easy to recognise (secret scanners, logs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ymk_"
#: Longest header value we hash: anything longer cannot be a key and is refused unread.
MAX_KEY_LENGTH = 128


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def matches(stored_hash: str | None, presented: str | None) -> bool:
    """Constant-time comparison of a presented key with the stored digest."""
    if not stored_hash or not presented or len(presented) > MAX_KEY_LENGTH:
        return False
    return hmac.compare_digest(stored_hash, hash_key(presented))
