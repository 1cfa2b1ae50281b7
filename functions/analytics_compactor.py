"""Scheduled rollup compaction (every 10 minutes): each user's closed hours of tasks become the hour and day
rows the analytics engine reads instead of the tasks (chalicelib/engines/rollups.py; docs/engines.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chalicelib.container import get_container
from chalicelib.db.types import utcnow
from chalicelib.engines.rollups import compact
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    container = get_container()
    s = container.settings
    return compact(container.db, now=utcnow(), grace=timedelta(seconds=s.analytics_compaction_grace_seconds),
                   max_hours=s.analytics_compaction_max_hours,
                   max_users=s.analytics_compaction_max_users).as_dict()
