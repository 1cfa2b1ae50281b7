"""bcrypt hashing with the 72-byte limit made explicit (bcrypt 5 raises past it)."""

from __future__ import annotations

from functools import cache

import bcrypt

MAX_PASSWORD_BYTES = 72


class PasswordHasher:
    def __init__(self, rounds: int = 12) -> None:
        self.rounds = rounds

    def hash(self, password: str) -> str:
        raw = password.encode("utf-8")
        if len(raw) > MAX_PASSWORD_BYTES:
            raise ValueError("password longer than 72 bytes")
        return bcrypt.hashpw(raw, bcrypt.gensalt(self.rounds)).decode("ascii")

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Constant work whether or not the user exists: unknown users check a dummy hash."""
        raw = password.encode("utf-8")
        if len(raw) > MAX_PASSWORD_BYTES:
            # bcrypt would raise; spend the same time and refuse.
            raw = raw[:MAX_PASSWORD_BYTES]
            bcrypt.checkpw(raw, self._dummy_hash())
            return False
        if password_hash is None:
            bcrypt.checkpw(raw, self._dummy_hash())
            return False
        try:
            return bcrypt.checkpw(raw, password_hash.encode("ascii"))
        except ValueError:  # a corrupt stored hash is a refusal, not a 500
            return False

    def _dummy_hash(self) -> bytes:
        return _dummy_hash(self.rounds)


@cache
def _dummy_hash(rounds: int) -> bytes:
    return bcrypt.hashpw(b"ymera-timing-equaliser", bcrypt.gensalt(rounds))
