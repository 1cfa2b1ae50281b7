"""Users' own provider keys: what may be sent (PUT) and what is ever shown (never the key)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from chalicelib.schemas.common import PublicModel, StrictModel

KEY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class ProviderKeyPut(StrictModel):
    #: printable ASCII without spaces: what API keys look like, and nothing that could split a header.
    api_key: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")] = Field(
        description="The key, sent as `Authorization: Bearer <key>` to your own endpoint only. Never returned.")


class ProviderKeyPublic(PublicModel):
    name: str
    created_at: datetime
    updated_at: datetime


class ProviderKeyList(PublicModel):
    items: list[ProviderKeyPublic]
