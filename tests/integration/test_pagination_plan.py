"""Deep pages stay cheap: the keyset cursor is a row-value comparison, an index range condition, so a mid-list
page reads its own rows only (the OR form read every row newer than the cursor)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import insert, select, text

from chalicelib.db.models import Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.services.pagination import after_cursor, encode_cursor
from tests.integration.workflow_support import make_agent, make_user


def test_a_mid_list_page_reads_only_its_own_rows(db: Database) -> None:
    user = make_user(db)
    agent = make_agent(db, user)
    now = utcnow()
    rows = [{"id": uuid.uuid4(), "user_id": user, "agent_id": agent, "agent_type": "validation", "title": "t",
             "status": "completed", "priority": "normal", "input_data": {}, "created_at": now - timedelta(seconds=i),
             "updated_at": now} for i in range(4000)]
    with db.transaction() as s:
        for i in range(0, len(rows), 1000):  # multi-row statements: one ledger trigger call each
            s.execute(insert(Task).values(rows[i:i + 1000]))
    median = rows[2000]
    cursor = encode_cursor(median["created_at"], median["id"])
    stmt = (select(Task.id).where(Task.user_id == user, after_cursor(Task.created_at, Task.id, cursor))
            .order_by(Task.created_at.desc(), Task.id.desc()).limit(51))
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE tasks"))
        ids = [r.id for r in conn.execute(stmt)]
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")).scalar()
    assert ids == [r["id"] for r in rows[2001:2052]]
    node = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    while "Scan" not in node["Node Type"]:
        node = node["Plans"][0]
    assert node["Actual Rows"] + node.get("Rows Removed by Filter", 0) <= 51, node
