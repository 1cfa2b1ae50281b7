"""Which agent gets a task sent to an agent *type* (`POST /tasks` with `agent_type`). Pure: no I/O.

The rule, in order:
1. only the caller's own, non-deleted agents of that type whose status is `active`;
2. only agents with capacity: tasks in `processing` < `max_concurrency`;
3. highest quality estimate first: the posterior mean alpha / (alpha + beta) of the
   agent's Beta(quality_alpha, quality_beta), which the learning agent maintains;
4. then fewest tasks in flight (`processing`);
5. then smallest backlog (`pending` + `queued`): a burst sent to equally good idle agents
   is spread across them instead of piling onto one;
6. then the oldest agent (created_at), then the id, so the choice is deterministic.

No eligible agent is a decision too: the caller reports how many agents of the type
exist, how many are active and how many of those are at capacity.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

ACTIVE = "active"


def quality_estimate(alpha: float, beta: float) -> float:
    """Posterior mean of Beta(alpha, beta); an unusable prior (non-positive) counts as no information (0.5)."""
    if alpha <= 0 or beta <= 0:
        return 0.5
    return alpha / (alpha + beta)


@dataclass(frozen=True)
class Candidate:
    agent_id: uuid.UUID
    status: str
    max_concurrency: int
    in_flight: int
    backlog: int
    quality_alpha: float
    quality_beta: float
    created_at: datetime

    @property
    def quality(self) -> float:
        return quality_estimate(self.quality_alpha, self.quality_beta)

    @property
    def has_capacity(self) -> bool:
        return self.in_flight < self.max_concurrency


@dataclass(frozen=True)
class Decision:
    chosen: Candidate | None
    total: int  # agents of the type (not deleted), whatever their status
    active: int
    at_capacity: int  # active agents with no free slot


def _rank(c: Candidate) -> tuple[float, int, int, datetime, str]:
    return (-c.quality, c.in_flight, c.backlog, c.created_at, str(c.agent_id))


def choose(candidates: Iterable[Candidate]) -> Decision:
    pool = list(candidates)
    active = [c for c in pool if c.status == ACTIVE]
    eligible = [c for c in active if c.has_capacity]
    chosen = min(eligible, key=_rank) if eligible else None
    return Decision(chosen=chosen, total=len(pool), active=len(active), at_capacity=len(active) - len(eligible))
