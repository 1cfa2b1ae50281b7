"""Folding user feedback into each agent's quality posterior (chalicelib.domain.quality).

Feedback rows are the queue: a row with `processed_at` NULL has not been
counted yet. Folding claims rows with FOR UPDATE SKIP LOCKED, updates the
rated agents (locked in id order, so concurrent folders never deadlock) and
stamps `processed_at` in the same transaction. A row is therefore counted
exactly once, whoever folds it: a user's learning agent (a task created with
the feedback) or the learning engine (chalicelib.engines.learning: the API, workflow steps and the
scheduled sweep, functions/learning_sweep.py),
which picks up whatever nobody else did — feedback is never lost.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent, TaskFeedback
from chalicelib.domain.quality import Posterior, decay_factor, update

DAY_SECONDS = 24 * 3600
#: rows folded per transaction by the sweep; a learning task folds at most this many too.
FOLD_LIMIT = 500


@dataclass
class FoldReport:
    feedback_ids: list[uuid.UUID] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def folded(self) -> int:
        return len(self.feedback_ids)


def fold_feedback(session: Session, *, now: datetime, half_life_days: float, user_id: uuid.UUID | None = None,
                  feedback_ids: Sequence[uuid.UUID] | None = None, limit: int = FOLD_LIMIT) -> FoldReport:
    """Count unprocessed feedback (a user's, or everyone's) into the rated agents' posteriors."""
    stmt = select(TaskFeedback).where(TaskFeedback.processed_at.is_(None))
    if user_id is not None:
        stmt = stmt.where(TaskFeedback.user_id == user_id)
    if feedback_ids is not None:
        stmt = stmt.where(TaskFeedback.id.in_(list(feedback_ids)))
    stmt = stmt.order_by(TaskFeedback.created_at, TaskFeedback.id).limit(limit)
    rows = list(session.scalars(stmt.with_for_update(skip_locked=True).execution_options(populate_existing=True)))
    if not rows:
        return FoldReport()

    ratings: dict[uuid.UUID, list[int]] = defaultdict(list)
    for row in rows:
        ratings[row.agent_id].append(row.rating)
    agents = session.scalars(
        select(Agent).where(Agent.id.in_(list(ratings))).order_by(Agent.id)
        # NO KEY UPDATE: new tasks and feedback rows referencing these agents (KEY SHARE) need not wait.
        .with_for_update(key_share=True).execution_options(populate_existing=True)
    )
    half_life_seconds = half_life_days * DAY_SECONDS
    report = FoldReport(feedback_ids=[row.id for row in rows])
    for agent in agents:
        before = Posterior(agent.quality_alpha, agent.quality_beta)
        factor = decay_factor(agent.quality_updated_at, now, half_life_seconds)
        after = update(before, ratings[agent.id], last_update=agent.quality_updated_at, now=now,
                       half_life_seconds=half_life_seconds)
        agent.quality_alpha, agent.quality_beta, agent.quality_updated_at = after.alpha, after.beta, now
        report.agents.append({
            "agent_id": str(agent.id), "agent_name": agent.name, "agent_type": agent.type,
            "feedback_count": len(ratings[agent.id]), "ratings": sorted(ratings[agent.id]),
            "decay_factor": round(factor, 6), "before": before.as_dict(), "after": after.as_dict(),
        })
    for row in rows:
        row.processed_at = now
    session.flush()
    return report
