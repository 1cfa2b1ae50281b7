"""Invalidate cached agents after any committed ORM write to the `agents` table, whoever made it.

Agent rows change in many places: PUT/DELETE, heartbeats (status, last_heartbeat), the watchdog
(offline), the learning agent (quality). Most run inside a caller's transaction, so "call
invalidate after you commit" cannot be a rule every writer remembers. Instead, Session events
collect what a transaction wrote and bump the versions once the outermost transaction commits —
never before, or a reader could re-cache the old row between the bump and the commit:

- ORM unit-of-work changes (attribute edits, deletes) are read from the flush;
- bulk `update(Agent)` / `delete(Agent)` statements name their rows when the WHERE clause has
  `Agent.id == x` or `Agent.id.in_(...)`; otherwise, if any row matched, the whole agents namespace
  is bumped (rare: the watchdog marking agents offline).

A rolled-back transaction keeps what it collected until its session's next commit: an extra
miss, never a stale read. Writes that bypass the ORM Session (raw connections, migrations) are
not seen: use `POST /admin/cache/clear` after such a fix.

Listeners are process-wide (SQLAlchemy's Session class); each engine maps to the cache that
serves it, so several containers in one process (tests) each reach their own.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, ColumnElement

from chalicelib.cache.namespaces import Namespace

if TYPE_CHECKING:
    from chalicelib.cache.twolevel import TwoLevelCache

TABLE = "agents"
ALL = "*"  # collected marker: ids unknown, bump the namespace
_INFO_KEY = "ymera.cache.agents_written"

_targets: weakref.WeakKeyDictionary[Engine, Callable[[], TwoLevelCache]] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()
_installed = False


def track_agent_writes(engine: Engine, cache: Callable[[], TwoLevelCache]) -> None:
    """Route committed agent writes made through sessions bound to `engine` to `cache()` (built lazily)."""
    global _installed
    with _install_lock:
        _targets[engine] = cache
        if not _installed:
            event.listen(Session, "after_flush", _after_flush)
            event.listen(Session, "do_orm_execute", _do_orm_execute)
            event.listen(Session, "after_commit", _after_commit)
            _installed = True


def _collected(session: Session) -> set[str]:
    written: set[str] = session.info.setdefault(_INFO_KEY, set())
    return written


def _engine(session: Session) -> Engine | None:
    """The engine a session writes through, bound directly or via a held connection (Database.connection)."""
    bind = session.bind
    if isinstance(bind, Connection):
        return bind.engine
    return bind if isinstance(bind, Engine) else None


def _tracked(session: Session) -> bool:
    engine = _engine(session)
    return engine is not None and engine in _targets


def _after_flush(session: Session, _context: UOWTransaction) -> None:
    if not _tracked(session):
        return
    from chalicelib.db.models import Agent

    # Still the pre-flush view here: `dirty` and `deleted` list what this flush wrote.
    ids = {str(obj.id) for obj in session.deleted if isinstance(obj, Agent)}
    ids |= {str(obj.id) for obj in session.dirty if isinstance(obj, Agent) and session.is_modified(obj)}
    if ids:
        _collected(session).update(ids)


def _do_orm_execute(state: ORMExecuteState) -> Any:
    if not (state.is_update or state.is_delete) or not _tracked(state.session):
        return None
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) != TABLE:
        return None
    ids = _ids_in(getattr(state.statement, "whereclause", None))
    if ids is not None:
        _collected(state.session).update(ids)
        return None
    result = state.invoke_statement()
    matched = getattr(result, "rowcount", None)
    if matched is None or matched > 0:
        _collected(state.session).add(ALL)
    return result


def _ids_in(where: ColumnElement[Any] | None) -> set[str] | None:
    """The agent ids a WHERE clause pins down (`id = x` or `id IN (...)` in a top-level AND), else None."""
    if where is None:
        return None
    clauses = list(where.clauses) if isinstance(where, BooleanClauseList) and where.operator is operators.and_ \
        else [where]
    for clause in clauses:
        if not isinstance(clause, BinaryExpression) or not isinstance(clause.right, BindParameter):
            continue
        left = clause.left
        if getattr(left, "name", None) != "id" or getattr(getattr(left, "table", None), "name", None) != TABLE:
            continue
        value = clause.right.effective_value
        if clause.operator is operators.eq and value is not None:
            return {str(value)}
        if clause.operator is operators.in_op and isinstance(value, list | tuple):
            return {str(v) for v in value}
    return None


def _after_commit(session: Session) -> None:
    written: set[str] | None = session.info.pop(_INFO_KEY, None)
    engine = _engine(session)
    if not written or engine is None:
        return
    target = _targets.get(engine)
    if target is None:
        return
    cache = target()
    if ALL in written:
        cache.invalidate_namespace(Namespace.AGENTS)
        return
    for agent_id in written:
        cache.invalidate(Namespace.AGENTS, agent_id)
