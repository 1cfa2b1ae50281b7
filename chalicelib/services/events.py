"""The event ledger's use cases: a user's page of events (GET /events) and the retention purge (docs/events.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.events import ledger


class EventService:
    def __init__(self, db: Database, *, retention_days: int, purge_batch: int,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.retention = timedelta(days=retention_days)
        self.purge_batch = purge_batch
        self.clock = clock

    def page(self, user_id: uuid.UUID, after: int, limit: int) -> dict[str, Any]:
        """The caller's events after `after`, oldest first, in the wire shape; one query (limit + 1 rows says
        whether there is more)."""
        with self.db.read() as session:
            events = ledger.list_after(session, user_id, after, limit + 1)
        items = events[:limit]
        return {"items": [e.to_json() for e in items], "next_after": items[-1].event_id if items else after,
                "has_more": len(events) > limit}

    def purge_expired(self, keep_going: Callable[[], bool] = lambda: True) -> int:
        """Delete events older than the retention, a batch per transaction (short locks, bounded WAL), while
        `keep_going()` says the caller has time; returns how many went."""
        cutoff = self.clock() - self.retention
        purged = 0
        while True:
            with self.db.transaction() as session:
                n = ledger.purge(session, cutoff, batch=self.purge_batch)
            purged += n
            if n < self.purge_batch or not keep_going():
                return purged
