"""POST /tasks's transaction order and its fast-path mark, as Postgres sees them.

The task's INSERT fires the event ledger's trigger, which locks the user's event counter row until the
transaction ends; a user's concurrent POSTs wait on that row. So the INSERT is the create transaction's last
statement (the outbox and audit rows go first), and the mark that follows the publish is its own autocommit
statement. The pool must not keep that autocommit for the next checkout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from chalicelib.container import Container
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import create_task


@contextmanager
def statements(engine: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    def commit(_conn: Any) -> None:
        seen.append("COMMIT")

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", commit)


def test_the_task_insert_is_last_before_commit_and_the_mark_commits_on_its_own(
        api: Api, container: Container) -> None:
    api.signup()
    agent = api.agent()
    create_task(api, agent["id"])  # warm: the agent is cached, the queue URL known
    engine = container.db.engine
    with statements(engine) as seen:
        r = create_task(api, agent["id"])
    assert r.status_code == 202, r.json_body
    first_commit = seen.index("COMMIT")
    writes = [s for s in seen[:first_commit] if s.startswith(("INSERT", "WITH"))]
    # One statement writes the three rows (the outbox and audit INSERTs as data-modifying CTEs); the task's
    # INSERT is its final one, so nothing follows it before the COMMIT.
    assert writes[-1].rsplit("INSERT INTO ", 1)[-1].startswith("tasks "), seen
    written = " ".join(writes)
    assert "INSERT INTO outbox " in written and "INSERT INTO audit_logs " in written, seen
    # Before it, one read: the lane's two counts and the daily quota's count in the same SELECT.
    reads = [s for s in seen[:first_commit] if s.startswith("SELECT")]
    assert len(reads) == 1 and reads[0].count("count(*)") == 3, seen
    after = seen[first_commit + 1:]
    assert [s for s in after if s != "COMMIT"][0].startswith("WITH marked AS (UPDATE outbox"), seen

    # Every pooled connection is transactional again (the autocommit was that checkout's only).
    pool = engine.pool
    held = [engine.raw_connection() for _ in range(pool.checkedin())]
    try:
        assert held and all(not c.driver_connection.autocommit for c in held)
    finally:
        for c in held:
            c.close()
