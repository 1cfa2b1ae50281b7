from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictInt, StringConstraints

from chalicelib.schemas.common import TEXT_CHARS, PublicModel, StrictModel


class FeedbackCreate(StrictModel):
    #: 1 (useless) .. 5 (excellent); strict so `true` or "5" are refused, not coerced.
    rating: Annotated[StrictInt, Field(ge=1, le=5)]
    comment: Annotated[str, StringConstraints(max_length=2000), TEXT_CHARS] | None = None


class FeedbackPublic(PublicModel):
    id: uuid.UUID
    task_id: uuid.UUID
    agent_id: uuid.UUID
    rating: int
    comment: str | None
    created_at: datetime
    #: when the rating was counted into the agent's quality estimate; null until then.
    processed_at: datetime | None


class FeedbackCreated(FeedbackPublic):
    #: the learning task created to count it (the owner's learning agent), or null: the platform sweep counts it.
    learning_task_id: uuid.UUID | None = None
