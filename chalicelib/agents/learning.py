"""The `learning` agent: counts its owner's ratings into each rated agent's quality estimate.

Ratings arrive through `POST /tasks/{id}/feedback`, which creates a learning
task for the owner's learning agent naming the new feedback. The estimate is a
Beta posterior with a time decay (chalicelib.domain.quality); routing prefers
agents with a higher one. Folding is idempotent: a rating already counted (by a
redelivery of this task, or by the platform sweep) is reported as
`already_counted`, never counted twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.errors import AgentError
from chalicelib.services.learning import FOLD_LIMIT, fold_feedback

DEFAULT_HALF_LIFE_DAYS = 30.0


class FeedbackNotFoundError(AgentError):
    code = "FEEDBACK_NOT_FOUND"


class LearningInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback_ids: list[uuid.UUID] | None = Field(
        default=None, min_length=1, max_length=FOLD_LIMIT,
        description="Ratings to count (ids of task_feedback rows). Omitted: every rating of yours not counted yet.",
    )


class LearningAgent(Agent):
    type = "learning"
    Input = LearningInput
    description = ("Counts your ratings of task results (POST /tasks/{id}/feedback) into each rated agent's quality "
                   "estimate: a Beta posterior with a time decay that routing prefers higher.")
    capabilities = ("feedback", "beta-posterior", "time-decay", "quality-estimate")
    # Omitting feedback_ids counts every rating of yours not counted yet: an example that runs for anyone.
    example_input: ClassVar[dict[str, Any]] = {}

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, LearningInput)
        if ctx is None:
            raise AgentError("the learning agent needs the database (no task context)")
        from chalicelib.db.models import TaskFeedback

        settings = ctx.settings
        half_life = settings.quality_half_life_days if settings is not None else DEFAULT_HALF_LIFE_DAYS
        wanted = data.feedback_ids
        with ctx.transaction() as session:  # folding is idempotent: a rerun reports these as already counted
            if wanted is not None:
                known = set(session.scalars(select(TaskFeedback.id).where(TaskFeedback.id.in_(wanted),
                                                                          TaskFeedback.user_id == ctx.user_id)))
                missing = [str(i) for i in wanted if i not in known]
                if missing:
                    raise FeedbackNotFoundError("some feedback ids are not ratings of yours",
                                                {"feedback_ids": missing})
            report = fold_feedback(session, now=ctx.now, half_life_days=half_life, user_id=ctx.user_id,
                                   feedback_ids=wanted)
        counted = set(report.feedback_ids)
        already = [str(i) for i in wanted if i not in counted] if wanted is not None else []
        return AgentOutput(
            output={"counted": report.folded, "already_counted": already, "half_life_days": half_life,
                    "agents": report.agents},
            metrics={"feedback_counted": report.folded, "agents_updated": len(report.agents)},
        )
