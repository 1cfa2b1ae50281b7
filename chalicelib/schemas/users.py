from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from chalicelib.schemas.common import PublicModel, StrictModel

#: bcrypt only looks at the first 72 bytes; longer passwords are refused, never truncated.
MAX_PASSWORD_BYTES = 72


def _password_fits_bcrypt(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")
    return value


Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", to_lower=True)
]
NewPassword = Annotated[str, Field(min_length=8, max_length=200), AfterValidator(_password_fits_bcrypt)]


class RegisterRequest(StrictModel):
    username: Username
    email: Email
    password: NewPassword


class LoginRequest(StrictModel):
    # Either the username or the email address.
    username: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    # No policy here: a login must never say more than "invalid credentials".
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class TokenPair(PublicModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_expires_in: int


class UserPublic(PublicModel):
    id: uuid.UUID
    username: str
    email: str
    role: str
    is_active: bool
    created_at: datetime
