"""Task use cases: create (task + outbox row in one transaction), read, list, cancel."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from pydantic import PrivateAttr
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, selectinload

from chalicelib.agents import registry
from chalicelib.cache.namespaces import Namespace
from chalicelib.db import pipeline
from chalicelib.db.models import Agent, AuditLog, OutboxMessage, Task, TaskResult
from chalicelib.db.pipeline import DriverStatement
from chalicelib.db.session import Database, rowcount
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import WorkflowRun
from chalicelib.domain import lanes
from chalicelib.domain.lanes import Allowances
from chalicelib.domain.leases import AgentMode
from chalicelib.domain.tasks import CANCELLABLE, TERMINAL, TaskStatus
from chalicelib.engines.optimization import route
from chalicelib.errors import ConflictError, NotFoundError, ValidationError
from chalicelib.schemas.common import RenderedOnce
from chalicelib.schemas.tasks import TaskCreate, TaskListQuery, TaskPublic
from chalicelib.services import audit
from chalicelib.services import lanes as lanes_service
from chalicelib.services.agents import AgentRecord, get_owned_agent
from chalicelib.services.lanes import destination_and_tasks_since, destination_for
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor
from chalicelib.services.quotas import day_of

if TYPE_CHECKING:
    from chalicelib.cache.twolevel import TwoLevelCache
    from chalicelib.services.agents import AgentService
    from chalicelib.services.idempotency import IdempotencyStore, IdempotentRequest
    from chalicelib.services.quotas import Quotas

#: Called after the create transaction commits, with the new outbox id (best-effort fast path).
AfterCommit = Callable[[uuid.UUID], None]
#: The cheaper fast path: called on the connection the create transaction just committed on, with the outbox
#: row's id, destination and payload (OutboxRelay.publish_committed). Never raises.
FastPublish = Callable[[Connection, uuid.UUID, str, dict[str, Any]], None]
R = TypeVar("R")


def task_message(task: Task) -> dict[str, str]:
    return {"task_id": str(task.id), "agent_type": task.agent_type}


def public_body(task: Task) -> dict[str, Any]:
    """A new task as `POST /tasks` answers it (no result yet), as JSON: what an idempotent replay repeats."""
    data = {name: getattr(task, name) for name in TaskPublic.model_fields if name != "result"}
    return TaskPublic(**data, result=None).model_dump(mode="json")


@dataclass(frozen=True)
class IdempotentResult:
    status_code: int
    body: dict[str, Any]
    task_id: uuid.UUID | None
    replayed: bool


def initial_status(agent_mode: str) -> TaskStatus:
    """An external agent's task is waiting for a lease at once; a managed one waits for its publish."""
    return TaskStatus.QUEUED if agent_mode == AgentMode.EXTERNAL else TaskStatus.PENDING


@dataclass(frozen=True)
class Enqueued:
    """The outbox row a create wrote, as plain values (the fast path publishes it after the commit)."""

    outbox_id: uuid.UUID
    destination: str  # the agent type, or its bulk lane ("validation-bulk"): docs/scheduling.md
    payload: dict[str, Any]


_CREATED_TASK_COLUMNS = ("id", "user_id", "agent_id", "agent_type", "title", "description", "status", "priority",
                         "input_data", "attempts", "created_at", "updated_at")
_CREATED_OUTBOX_COLUMNS = ("id", "aggregate_id", "destination", "payload", "attempts", "created_at")
_CREATED_AUDIT_COLUMNS = ("id", "user_id", "event_type", "action", "resource_type", "resource_id", "details",
                          "client_ip", "request_id", "timestamp")


def _bound(table: Any, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in columns}


@functools.lru_cache(maxsize=2)
def _created_rows_statement(with_outbox: bool) -> Any:
    """`WITH outbox AS (INSERT ...), audit AS (INSERT ...) INSERT INTO tasks ...`: a new task's rows in one round
    trip, built once. Through the ORM's unit of work the three INSERTs (three flushes) cost ~2.5 ms of CPU per
    POST /tasks, more than the rest of the transaction (issue #14)."""
    stmt = insert(Task).values(_bound(Task.__table__, "t_", _CREATED_TASK_COLUMNS))
    audit_cte = (insert(AuditLog).values(_bound(AuditLog.__table__, "a_", _CREATED_AUDIT_COLUMNS))
                 .returning(AuditLog.id).cte("created_audit"))
    if with_outbox:
        stmt = stmt.add_cte(insert(OutboxMessage).values(_bound(OutboxMessage.__table__, "o_", _CREATED_OUTBOX_COLUMNS))
                            .returning(OutboxMessage.id).cte("created_outbox"))
    return stmt.add_cte(audit_cte)


def _new_task(user_id: uuid.UUID, req: TaskCreate, agent: Agent | AgentRecord) -> tuple[Task, datetime]:
    """The new task's row (not in any session) and its creation time; the agent must be active and take the
    input."""
    if agent.status != "active":
        raise ConflictError("agent is not active", {"agent_id": str(agent.id), "status": agent.status})
    registry.validate_input(agent.type, req.input_data)
    now = utcnow()
    task = Task(id=uuid.uuid4(), user_id=user_id, agent_id=agent.id, agent_type=agent.type, title=req.title,
                description=req.description, priority=req.priority, input_data=req.input_data,
                status=initial_status(agent.mode), attempts=0, created_at=now, updated_at=now)
    return task, now


def _created_audit(task: Task, agent: Agent | AgentRecord, req: TaskCreate, meta: RequestMeta) -> dict[str, Any]:
    return audit.row(user_id=task.user_id, event_type="task.created", action="create", resource_type="task",
                     resource_id=task.id, details={"agent_id": str(agent.id), "agent_type": agent.type,
                                                   "routed": req.agent_id is None}, meta=meta)


def _insert_created(session: Session, task: Task, destination: str | None, audit_row: dict[str, Any],
                    allowances: Allowances, now: datetime) -> Enqueued | None:
    """Write a new task (every column set on `task`, which stays out of the session), its audit row and what
    makes it reachable by its agent, in one statement.

    Managed agents (`destination` set): an outbox row; the relay publishes it to the lane chosen for it (fast
    `{prefix}-agent-{type}` or bulk `...-bulk`, by the owner's active tasks: chalicelib/domain/lanes.py).
    External agents: nothing, the task waits in `queued` for a lease (`POST /agents/{id}/lease`, by priority);
    on SQS a managed consumer would run it instead of the user's worker."""
    params, enqueued = _created_params(task, destination, audit_row, allowances, now)
    if session.get_bind().dialect.name != "postgresql":  # no data-modifying CTEs (SQLite): one INSERT each
        conn = session.connection()
        if enqueued is not None:
            conn.execute(insert(OutboxMessage), {k[2:]: v for k, v in params.items() if k[:2] == "o_"})
        conn.execute(insert(AuditLog), {k[2:]: v for k, v in params.items() if k[:2] == "a_"})
        conn.execute(insert(Task), {k[2:]: v for k, v in params.items() if k[:2] == "t_"})
        return enqueued
    session.connection().execute(_created_rows_statement(enqueued is not None), params)
    return enqueued


def _created_params(task: Task, destination: str | None, audit_row: dict[str, Any], allowances: Allowances,
                    now: datetime) -> tuple[dict[str, Any], Enqueued | None]:
    """What `_created_rows_statement` binds for a new task, and its outbox row (when `destination` is set)."""
    params: dict[str, Any] = {f"t_{name}": getattr(task, name) for name in _CREATED_TASK_COLUMNS}
    params.update({f"a_{name}": value for name, value in audit_row.items()})
    params.update(a_id=uuid.uuid4(), a_timestamp=now)
    enqueued = None
    if destination is not None:
        payload: dict[str, Any] = dict(task_message(task))
        if allowances.bulk_message_groups and lanes.lane_of(destination) is lanes.Lane.BULK:
            payload[lanes.MESSAGE_GROUP] = str(task.user_id)  # fairness between heavy owners (docs/scheduling.md)
        enqueued = Enqueued(uuid.uuid4(), destination, payload)
        params.update(o_id=enqueued.outbox_id, o_aggregate_id=task.id, o_destination=destination, o_payload=payload,
                      o_attempts=0, o_created_at=now)
    return params, enqueued


class _CreateStatements(NamedTuple):
    """The pipelined create's statements, compiled for the driver."""

    counts: DriverStatement  # the lane's two counts and the daily quota's
    turn: DriverStatement  # a `low` task's recount: the owner's turn ...
    load: DriverStatement  # ... and the lane's counts again
    rows: DriverStatement  # the outbox, audit and task rows


@functools.lru_cache(maxsize=8)
def _driver_statements(dialect: Dialect, allowances: Allowances) -> _CreateStatements:
    """Compiled once per dialect and allowances."""
    def compiled(stmt: Any) -> DriverStatement:
        return DriverStatement(stmt, dialect)

    return _CreateStatements(counts=compiled(lanes_service.prepared_load_and_count_statement(allowances)),
                             turn=compiled(lanes_service.low_work_turn_statement()),
                             load=compiled(lanes_service.prepared_load_statement(allowances)),
                             rows=compiled(_created_rows_statement(True)))


def _get_owned_task(session: Session, user_id: uuid.UUID, task_id: uuid.UUID, *, with_result: bool) -> Task:
    stmt = select(Task).where(Task.id == task_id, Task.user_id == user_id)
    if with_result:
        stmt = stmt.options(selectinload(Task.result))
    task = session.scalar(stmt)
    if task is None:
        raise NotFoundError("task not found", {"task_id": str(task_id)})
    return task


#: the columns of a TaskRecord: the task's, and its result's (if any) under `result_*` labels.
_RESULT_FIELDS = ("id", "status", "output_data", "metrics", "created_at")
_RECORD = select(
    *(Task.__table__.c[name] for name in ("user_id", *(f for f in TaskPublic.model_fields if f != "result"))),
    *(TaskResult.__table__.c[name].label(f"result_{name}") for name in _RESULT_FIELDS),
).select_from(Task.__table__.outerjoin(TaskResult.__table__, TaskResult.task_id == Task.id))


def _record(row: Any) -> TaskRecord:
    fields = {name: value for name, value in row.items() if not name.startswith("result_")}
    fields["result"] = None if row["result_id"] is None else {name: row[f"result_{name}"] for name in _RESULT_FIELDS}
    return TaskRecord.model_validate(fields)


class FinalTaskPublic(TaskPublic, RenderedOnce):
    """The public view of a cached record: shared and never modified, so rendered to JSON once."""


class TaskRecord(TaskPublic):
    """A task with its result as cached: the public view plus its owner, checked on every cached read."""

    user_id: uuid.UUID
    _public: TaskPublic | None = PrivateAttr(default=None)

    def is_final(self) -> bool:
        """Nothing about this task can change any more, so it may be cached.

        Terminal, and either its result is stored or no consumer ever ran it: a task cancelled or
        timed out while running can still receive the result of the run in flight.
        """
        return self.status in TERMINAL and (self.result is not None or self.started_at is None)

    def public(self) -> TaskPublic:
        # A cached record is shared and never modified, so its public view is built once (model_construct
        # costs more than the rest of a cached read).
        if self._public is None:
            fields = {name: getattr(self, name) for name in TaskPublic.model_fields}
            self._public = FinalTaskPublic.model_construct(**fields)
        return self._public


class TaskService:
    def __init__(self, db: Database, after_commit: AfterCommit | None = None, *,
                 agents: AgentService | None = None, cache: TwoLevelCache | None = None,
                 quotas: Quotas | None = None, idempotency: IdempotencyStore | None = None,
                 fast_publish: FastPublish | None = None, lanes: Allowances | None = None) -> None:
        self.db = db
        self.lanes = lanes or Allowances()
        self.fast_publish = fast_publish
        self.idempotency = idempotency
        self.after_commit = after_commit
        self.agents = agents
        self.cache = cache
        self.quotas = quotas

    def create(self, user_id: uuid.UUID, req: TaskCreate, meta: RequestMeta, *,
               on_created: Callable[[Session, Task], None] | None = None) -> Task:
        """`on_created` runs in the create transaction after the task is flushed (the ingress consumer's
        idempotency receipt): if it raises, nothing of the task is committed."""
        known, publish = self._known_agent(user_id, req), self.fast_publish
        if on_created is None and known is not None and known.mode != AgentMode.EXTERNAL and publish is not None \
                and pipeline.supported(self.db.engine.dialect):
            return self._create_pipelined(user_id, req, meta, known, publish)
        return self._committed_then_published(
            lambda session: self._create_in(session, user_id, req, meta, known, on_created))

    def _create_pipelined(self, user_id: uuid.UUID, req: TaskCreate, meta: RequestMeta, agent: AgentRecord,
                          publish: FastPublish) -> Task:
        """`create` for a managed agent named by id in two round trips before the publish (chalicelib/db/pipeline.py):
        BEGIN with the lane and quota read, then the rows with COMMIT (`_create_in` writes the same rows through
        the ORM session, in four). A `low` task whose count says fast takes its turn and counts again between."""
        task, now = _new_task(user_id, req, agent)
        with self.db.connection() as conn:
            statements = _driver_statements(conn.dialect, self.lanes)
            with pipeline.Pipelined(conn) as tx:
                active, urgent, used = tx.first(statements.counts, {**lanes_service.load_parameters(task),
                                                                   "since": day_of(now)})
                if self.quotas is not None:
                    self.quotas.check_tasks_used(int(used or 0), now)
                destination = lanes_service.destination_of(task, active, urgent, self.lanes)
                if lanes_service.needs_low_work_turn(task, destination):
                    tx.execute(statements.turn, {"turn_key": lanes_service.turn_key(task)})
                    active, urgent = tx.first(statements.load, lanes_service.load_parameters(task))
                    destination = lanes_service.destination_of(task, active, urgent, self.lanes)
                params, enqueued = _created_params(task, destination, _created_audit(task, agent, req, meta),
                                                   self.lanes, now)
                tx.execute(statements.rows, params)
                tx.commit()
            if enqueued is not None:  # always, with a destination: a managed agent's task has its outbox row
                publish(conn, enqueued.outbox_id, enqueued.destination, enqueued.payload)
        return task

    def _committed_then_published(self, work: Callable[[Session], tuple[R, Enqueued | None]]) -> R:
        """Run `work` in one transaction, then publish the task it wrote an outbox row for, before returning.

        With `fast_publish`, the publish and the one statement marking it use the connection the transaction
        used (one pool checkout per request); otherwise `after_commit` gets the outbox id."""
        if self.fast_publish is None:
            with self.db.transaction() as session:
                result, enqueued = work(session)
            if enqueued is not None and self.after_commit is not None:
                self.after_commit(enqueued.outbox_id)
            return result
        with self.db.connection() as conn:
            with self.db.transaction(conn) as session:
                result, enqueued = work(session)
            if enqueued is not None:
                self.fast_publish(conn, enqueued.outbox_id, enqueued.destination, enqueued.payload)
        return result

    def create_idempotent(self, user_id: uuid.UUID, req: TaskCreate, meta: RequestMeta,
                          request: IdempotentRequest) -> IdempotentResult:
        """`create` under an Idempotency-Key: the first call creates and stores its response in the same
        transaction; a replay (same key and body) returns that response and creates nothing."""
        if self.idempotency is None:
            raise RuntimeError("TaskService was built without an IdempotencyStore")
        known = self._known_agent(user_id, req)
        store = self.idempotency

        def work(session: Session) -> tuple[IdempotentResult, Enqueued | None]:
            stored = store.claim(session, user_id, request)
            if stored is not None:
                return IdempotentResult(stored.status_code, stored.body, stored.resource_id, replayed=True), None
            task, enqueued = self._create_in(session, user_id, req, meta, known)
            body = public_body(task)
            store.complete(session, user_id, request, 202, body, task.id)
            return IdempotentResult(202, body, task.id, replayed=False), enqueued

        return self._committed_then_published(work)

    def _known_agent(self, user_id: uuid.UUID, req: TaskCreate) -> AgentRecord | None:
        # The agent check uses the cached agent record (read before the transaction): one query fewer.
        return (self.agents.owned_record(user_id, req.agent_id)
                if self.agents is not None and req.agent_id is not None else None)

    def _create_in(self, session: Session, user_id: uuid.UUID, req: TaskCreate, meta: RequestMeta,
                   known: AgentRecord | None, on_created: Callable[[Session, Task], None] | None = None,
                   ) -> tuple[Task, Enqueued | None]:
        agent: Agent | AgentRecord
        if req.agent_id is None:  # only a type: the routing rule picks one of the caller's agents
            agent = route(session, user_id, str(req.agent_type))
        else:
            agent = known or get_owned_agent(session, user_id, req.agent_id)
        task, now = _new_task(user_id, req, agent)
        # The task's INSERT fires the event ledger's trigger, which locks the user's event counter row until
        # COMMIT (chalicelib.events.triggers), so a user's concurrent POSTs queue behind each other there. The
        # lane (and the daily quota's count, in the same statement) is read first (a `low` task's fast lane is
        # counted again in its owner's turn: services.lanes.recounted_for_low_work); the outbox, audit and task rows
        # then go in ONE statement (Core, data-modifying CTEs, the task's INSERT last), so the lock is held for
        # that statement's end and the COMMIT only.
        destination: str | None = None
        if agent.mode == AgentMode.EXTERNAL:
            if self.quotas is not None:
                self.quotas.check_tasks_today(session, user_id, now)
        elif self.quotas is not None:
            destination, used = destination_and_tasks_since(session, task, self.lanes, day_of(now))
            self.quotas.check_tasks_used(used, now)
        else:
            destination = destination_for(session, task, self.lanes)
        enqueued = _insert_created(session, task, destination, _created_audit(task, agent, req, meta), self.lanes,
                                   now)
        if on_created is not None:
            on_created(session, task)
            session.flush()
        return task, enqueued

    def get(self, user_id: uuid.UUID, task_id: uuid.UUID) -> TaskPublic:
        """The caller's task with its result; final tasks come from the cache."""

        def load() -> TaskRecord | None:
            return self.record(user_id, task_id)

        if self.cache is None:
            record = load()
        else:
            # A final task never changes again: its L1 copy needs no version check (no Redis) on a hit.
            record = self.cache.fetch(Namespace.TASK_RESULTS, str(task_id), TaskRecord, load,
                                      cacheable=TaskRecord.is_final, immutable=TaskRecord.is_final)
        if record is None or record.user_id != user_id:
            raise NotFoundError("task not found", {"task_id": str(task_id)})
        return record.public()

    def record(self, user_id: uuid.UUID, task_id: uuid.UUID) -> TaskRecord | None:
        """The caller's task with its result from the database (no cache), or None: one Core statement (task LEFT
        JOIN result), its own transaction. What `get` loads on a miss and what a long poll reads; `.public()` of
        it is the JSON of GET /tasks/{id}. (The ORM read with selectinload cost 2.7 ms, this ~0.6 ms; #14.)"""
        with self.db.statement() as conn:
            row = conn.execute(_RECORD.where(Task.id == task_id, Task.user_id == user_id)).mappings().first()
        return None if row is None else _record(row)

    def list(self, user_id: uuid.UUID, query: TaskListQuery, limit: int) -> tuple[list[Task], str | None]:
        """One statement whatever the page size: no per-row loads (results are not listed)."""
        stmt = select(Task).where(Task.user_id == user_id)
        if query.status is not None:
            stmt = stmt.where(Task.status == query.status)
        if query.agent_id is not None:
            stmt = stmt.where(Task.agent_id == query.agent_id)
        if query.priority is not None:
            stmt = stmt.where(Task.priority == query.priority)
        if query.created_after is not None:
            stmt = stmt.where(Task.created_at >= _aware(query.created_after, "created_after"))
        if query.created_before is not None:
            stmt = stmt.where(Task.created_at < _aware(query.created_before, "created_before"))
        if query.cursor:
            stmt = stmt.where(after_cursor(Task.created_at, Task.id, query.cursor))
        stmt = stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def cancel(self, user_id: uuid.UUID, task_id: uuid.UUID, meta: RequestMeta) -> Task:
        with self.db.transaction() as session:
            task = _get_owned_task(session, user_id, task_id, with_result=True)
            if task.agent_type == "orchestrator":
                # Its plan's run row first: the run-finished side locks run then task, so must this.
                session.execute(select(WorkflowRun.id).where(WorkflowRun.parent_task_id == task.id,
                                                             WorkflowRun.status.in_(("running", "waiting_approval")))
                                .with_for_update())
            now = utcnow()
            # Conditional update: a consumer finishing at the same moment wins or loses cleanly.
            moved = rowcount(session.execute(
                update(Task)
                .where(Task.id == task.id, Task.status.in_(CANCELLABLE))
                .values(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            ))
            if not moved:
                raise ConflictError(f"task is already {task.status}", {"status": task.status})
            if task.agent_type == "orchestrator":
                from chalicelib.workflows.plan_outcome import on_task_ended

                on_task_ended(session, task.id, {"code": "PARENT_CANCELLED", "message": "the parent task was "
                                                 "cancelled", "details": {"parent_task_id": str(task.id)}})
            if task.callback_token is not None:
                from chalicelib.workflows.steps import on_task_finished

                # a workflow step (an orchestrator plan's too): its run step fails and its token is answered
                on_task_finished(session, task.id)
            audit.record(session, user_id=user_id, event_type="task.cancelled", action="cancel",
                         resource_type="task", resource_id=task.id, details={"from": task.status}, meta=meta)
            session.refresh(task, attribute_names=["status", "completed_at", "updated_at"])
        if self.after_commit is not None:  # a workflow step's token answer, sent now rather than at the next sweep
            from chalicelib.workflows.runstate import committed_answers

            for outbox_id in committed_answers(session):
                self.after_commit(outbox_id)
        return task


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValidationError(f"{field} must include a timezone (e.g. 2026-01-01T00:00:00Z)", {"field": field})
    return value
