from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StringConstraints

from chalicelib.domain.rbac import Role
from chalicelib.schemas.common import NAME_CHARS, TEXT_CHARS, UNICODE_CHARS, PublicModel, StrictModel

#: bcrypt only looks at the first 72 bytes; longer passwords are refused, never truncated.
MAX_PASSWORD_BYTES = 72


def _password_fits_bcrypt(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")
    return value


Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", to_lower=True), NAME_CHARS
]
#: any character a keyboard can type, but encodable as UTF-8 (bcrypt hashes bytes).
Password = Annotated[str, Field(min_length=1, max_length=1024), UNICODE_CHARS]
NewPassword = Annotated[str, Field(min_length=8, max_length=200), UNICODE_CHARS,
                        AfterValidator(_password_fits_bcrypt)]


class RegisterRequest(StrictModel):
    username: Username
    email: Email
    password: NewPassword


class LoginRequest(StrictModel):
    # Either the username or the email address.
    username: Annotated[str, StringConstraints(min_length=1, max_length=254), NAME_CHARS]
    # No policy here: a login must never say more than "invalid credentials".
    password: Password


#: a JWT is ~400 bytes; anything near this bound is not one of ours.
TokenString = Annotated[str, StringConstraints(min_length=1, max_length=4096), NAME_CHARS]


class RefreshRequest(StrictModel):
    refresh_token: TokenString


class LogoutRequest(StrictModel):
    # Optional: the access token already names its session's family; this also revokes the given one.
    refresh_token: TokenString | None = None


class PasswordChange(StrictModel):
    current_password: Password
    new_password: NewPassword


# Update bodies: what a caller may set is decided by which schema the endpoint picks for them (from the
# RBAC table), and `extra="forbid"` makes anything else (id, password_hash, timestamps, token_version) a 422.


class UserSelfUpdate(StrictModel):
    """What a user may change about themself."""

    email: Email | None = None


class UserAdminUpdate(UserSelfUpdate):
    """What an admin may change: a user's role and whether they can sign in (email stays the user's own)."""

    is_active: StrictBool | None = None
    role: Role | None = None


class UserListQuery(StrictModel):
    limit: int | None = Field(default=None, ge=1)
    cursor: Annotated[str, TEXT_CHARS] | None = None


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
