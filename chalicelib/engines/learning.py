"""The learning engine: the refresh of agents' quality estimates from feedback, with a report of what changed.

Folding itself is `chalicelib.services.learning.fold_feedback` (shared with the learning agent, which counts
the ratings a feedback submission names): every unprocessed rating, claimed under SKIP LOCKED and stamped in
the same transaction, so whoever folds a rating — this engine, the agent, the schedule — counts it once.
Called by a user (the API, a workflow step) it folds only that user's ratings, which are ratings of their own
agents; the scheduled sweep (functions/learning_sweep.py -> `sweep`) folds everyone's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from chalicelib.engines import Engine, EngineContext
from chalicelib.services.learning import FOLD_LIMIT, fold_feedback

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.container import Container

#: batches (of FOLD_LIMIT ratings, a transaction each) one refresh folds at most; the rest wait for the next.
DEFAULT_MAX_BATCHES = 20


def refresh(transaction: Callable[[], AbstractContextManager[Session]], *, half_life_days: float, now: datetime,
            user_id: uuid.UUID | None = None, max_batches: int = DEFAULT_MAX_BATCHES,
            batch_size: int = FOLD_LIMIT) -> dict[str, Any]:
    """Fold unprocessed ratings (a user's, or everyone's with None) batch by batch; per agent, what changed."""
    changed: dict[str, dict[str, Any]] = {}
    counted = batches = 0
    more = True
    while more and batches < max_batches:
        with transaction() as session:
            report = fold_feedback(session, now=now, half_life_days=half_life_days, user_id=user_id,
                                   limit=batch_size)
        batches += 1
        counted += report.folded
        more = report.folded >= batch_size
        for entry in report.agents:
            seen = changed.get(entry["agent_id"])
            if seen is None:
                changed[entry["agent_id"]] = {**entry, "ratings": list(entry["ratings"])}
            else:  # a later batch: the first "before" stays, the last "after" wins
                seen["ratings"] = sorted(seen["ratings"] + entry["ratings"])
                seen["feedback_count"] += entry["feedback_count"]
                seen["after"] = entry["after"]
    agents = []
    for entry in sorted(changed.values(), key=lambda e: (e["agent_type"], e["agent_name"], e["agent_id"])):
        entry["mean_change"] = round(entry["after"]["mean"] - entry["before"]["mean"], 6)
        agents.append(entry)
    return {"feedback_counted": counted, "agents_updated": len(agents), "batches": batches,
            "complete": not more, "half_life_days": half_life_days, "agents": agents}


def sweep(container: Container, now: datetime | None = None) -> dict[str, Any]:
    """The scheduled refresh over every user (functions/learning_sweep.py)."""
    from chalicelib.db.types import utcnow
    from chalicelib.observability import logger

    report = refresh(container.db.transaction, half_life_days=container.settings.quality_half_life_days,
                     now=now or utcnow(), user_id=None, max_batches=10_000)
    logger.info("learning sweep", extra={"feedback_counted": report["feedback_counted"],
                                          "agents_updated": report["agents_updated"]})
    # The function's return value stays small: the per-agent detail is the engine's answer to a user.
    return {"feedback_counted": report["feedback_counted"], "agent_updates": report["agents_updated"]}


class LearningEngine(Engine):
    name = "learning"
    description = ("Refreshes your agents' quality estimates (Beta posteriors with a time decay, which routing "
                   "and recommendation prefer higher) from your ratings not counted yet, and reports what changed: "
                   "per agent, the ratings folded in and the estimate before and after.")
    input_schema = {
        "type": "object", "additionalProperties": False,
        "properties": {"max_batches": {"type": "integer", "minimum": 1, "maximum": 100,
                                       "default": DEFAULT_MAX_BATCHES,
                                       "description": f"transactions of up to {FOLD_LIMIT} ratings each"}},
    }
    output_schema = {
        "type": "object", "required": ["feedback_counted", "agents_updated", "agents"],
        "properties": {
            "feedback_counted": {"type": "integer"}, "agents_updated": {"type": "integer"},
            "batches": {"type": "integer"}, "complete": {"type": "boolean"}, "half_life_days": {"type": "number"},
            "agents": {"type": "array", "items": {"type": "object", "required": ["agent_id", "before", "after"]}},
        },
    }
    example: ClassVar[dict[str, Any]] = {}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the contract's name
        from chalicelib.db.types import utcnow

        return refresh(ctx.transaction, half_life_days=ctx.settings.quality_half_life_days, now=utcnow(),
                       user_id=ctx.user_id, max_batches=int(input.get("max_batches", DEFAULT_MAX_BATCHES)))
