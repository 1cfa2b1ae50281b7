"""Analytics rollups: what the analytics engine reads instead of every task of a long range
(chalicelib/engines/rollups.py writes them; docs/engines.md, "Rollups").

Written by a periodic compaction, never by a trigger: the hours before a user's `compacted_until` are
summarised once, when every task created in them is terminal (a terminal task never changes status again),
so the rows never need updating. Hour rows exist for every compacted hour; day rows for every compacted day.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from chalicelib.db.models import Base
from chalicelib.db.types import UTCDateTime, utcnow


class TaskRollupMark(Base):
    """How far a user's tasks are compacted: every task created before `compacted_until` is in the rollups."""

    __tablename__ = "task_rollup_marks"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    compacted_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class TaskRollup(Base):
    """Tasks created in one hour or day, counted per agent, status and error code."""

    __tablename__ = "task_rollups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    #: "hour" or "day"
    grain: Mapped[str] = mapped_column(String(8), nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    agent_type: Mapped[str] = mapped_column(String(32), nullable=False)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (Index("ix_task_rollups_user_id_grain_period_start", "user_id", "grain", "period_start"),
                      Index("ix_task_rollups_grain_period_start", "grain", "period_start"))


class TaskLatencyHistogram(Base):
    """Completed tasks' durations in one hour or day, as counts per log-spaced bucket
    (chalicelib/engines/histogram.py: bucket i holds (1 ms * 1.05**(i-1), 1 ms * 1.05**i] seconds)."""

    __tablename__ = "task_latency_histograms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    grain: Mapped[str] = mapped_column(String(8), nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: "run" (completed_at - started_at) or "e2e" (completed_at - created_at)
    metric: Mapped[str] = mapped_column(String(8), nullable=False)
    bucket: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        Index("ix_task_latency_histograms_user_id_grain_period_start", "user_id", "grain", "period_start"),
        Index("ix_task_latency_histograms_grain_period_start", "grain", "period_start"))
