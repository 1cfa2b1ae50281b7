"""Running tasks delivered by SQS: claim → commit → run → store → commit.

Each record commits on its own, and no transaction or connection is held while
an agent runs (agents open short ones through `ctx.transaction()`). The claim is
a conditional update that also takes a *claim lease* (`tasks.lease_expires_at`)
until the end of the claiming invocation: a duplicate delivery while the claimer
lives finds the task held and is acknowledged, so a task never runs twice at
once. A claimer that died (Lambda timeout, crash) cannot outlive its invocation,
so once the lease has passed a redelivery of the message may claim the task
again — SQS redelivers only after the visibility timeout (≥ 6× the function
timeout), well after that. A claimer that fails in-process gives the claim back
(`queued`) before SQS retries the record. Writes are fenced by the attempt
number the claim took, so a stale claimer never moves a task it no longer holds.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Connection, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from chalicelib.agents.base import Agent as AgentImpl
from chalicelib.agents.base import AgentContext, AgentPorts
from chalicelib.agents.registry import get_agent, pydantic_errors
from chalicelib.agents.sandbox import run_task_agent
from chalicelib.db.models import Agent, Task
from chalicelib.db.types import UTCDateTime, utcnow
from chalicelib.domain.tasks import CLAIMABLE, TaskStatus
from chalicelib.errors import AgentError, MalformedMessageError, RetryLaterError
from chalicelib.observability import logger
from chalicelib.schemas.tasks import TaskMessage
from chalicelib.services.after_commit import AfterCommit
from chalicelib.services.results import (
    finish_plain,
    finish_plain_group,
    plain_outcome,
    storable,
    store_outcome,
    store_plain_outcome,
)
from chalicelib.workflows.runstate import ANSWERS_KEY

if TYPE_CHECKING:
    from chalicelib.db.session import Database

RunResult = tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]
AgentRecords = Callable[[uuid.UUID, Session], Any]
#: an agent said "not finished yet" (e.g. an orchestrator waiting for subtasks).
PENDING = "pending_work"
#: a claim with no known invocation deadline is held for the longest a Lambda function can run.
DEFAULT_CLAIM = timedelta(minutes=15)
#: added to a claim lease for clock differences between consumers.
CLAIM_SKEW = timedelta(seconds=5)


@dataclass(frozen=True)
class Outcome:
    task_id: uuid.UUID
    status: str  # completed | failed | skipped | pending_work | discarded
    #: the run ended but its outcome is not written yet: it waits in an `OutcomeGroups` for `write_deferred`.
    deferred: bool = False


@dataclass(frozen=True)
class ClaimedTask:
    """What a run needs of its task, returned by the claim statement itself (no ORM object, no second read)."""

    id: uuid.UUID
    user_id: uuid.UUID
    agent_id: uuid.UUID
    agent_type: str
    input_data: dict[str, Any]
    attempts: int
    callback_token: str | None
    priority: str

    @property
    def plain(self) -> bool:
        """Neither a workflow step nor an orchestrator: its outcome needs no follow-up (Core outcome path)."""
        return self.callback_token is None and self.agent_type != "orchestrator"


#: the columns `ClaimedTask` reads, in its field order.
_CLAIMED = (Task.id, Task.user_id, Task.agent_id, Task.agent_type, Task.input_data, Task.attempts,
            Task.callback_token, Task.priority)


@dataclass(frozen=True)
class Claim:
    task: ClaimedTask  # read by the claim statement, in the claim's transaction
    config: dict[str, Any]
    #: the claim lease it took: until then a redelivery of its message finds the task held and is acknowledged
    lease_until: datetime | None = None

    @property
    def attempt(self) -> int:
        return self.task.attempts


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter for a record SQS should bring back later (ChangeMessageVisibility).

    Attempt n waits between half and all of base × 2^(n-1) seconds, at most `max_seconds` ("equal jitter":
    retries of tasks that failed together spread out, and none comes back sooner than half the step).
    """

    base_seconds: float = 10.0
    max_seconds: float = 900.0
    rng: Callable[[], float] = random.random

    def delay(self, attempt: int, at_least: float | None = None) -> int:
        step = min(self.max_seconds, self.base_seconds * 2 ** max(0, min(attempt, 32) - 1))
        jittered = step / 2 + self.rng() * step / 2
        return min(43_200, math.ceil(max(jittered, at_least or 0.0)))


class CancelCheck:
    """`AgentContext.cancelled()` for one claim: has the task been cancelled (or timed out) since it was claimed?

    One indexed read of the task's status, at most every `every_seconds` (agents may ask before every step).
    """

    STOPPED = (TaskStatus.CANCELLED, TaskStatus.TIMED_OUT)

    def __init__(self, db: Database, task_id: uuid.UUID, every_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, heartbeat: Heartbeat | None = None) -> None:
        self.db, self.task_id, self.every, self.clock = db, task_id, every_seconds, clock
        self._checked_at: float | None = None
        self._stopped = False
        #: a workflow step's task: its token is kept alive from the same cadence (long provider work).
        self.heartbeat = heartbeat

    def __call__(self) -> bool:
        now = self.clock()
        if self.heartbeat is not None:
            self.heartbeat.maybe(now)
        if self._stopped or (self._checked_at is not None and now - self._checked_at < self.every):
            return self._stopped
        self._checked_at = now
        with self.db.read() as session:
            self._stopped = session.scalar(select(Task.status).where(Task.id == self.task_id)) in self.STOPPED
        return self._stopped


class Heartbeat:
    """SendTaskHeartbeat for a workflow step's token: once when the task is claimed, then at most every
    `every_seconds` while the agent asks whether it was cancelled. A failed beat is logged, never raised:
    the step's HeartbeatSeconds is generous (twice the queue's visibility timeout) and the result still
    answers the token."""

    def __init__(self, send: Callable[[], Any], every_seconds: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.send, self.every, self.clock = send, every_seconds, clock
        self._sent_at: float | None = None
        self.sent = 0

    def beat(self) -> None:
        self._sent_at = self.clock()
        try:
            self.send()
            self.sent += 1
        except Exception:  # noqa: BLE001 - a missed heartbeat is not the task's failure
            logger.warning("workflow step heartbeat failed", exc_info=True)

    def maybe(self, now: float) -> None:
        if self._sent_at is None or now - self._sent_at >= self.every:
            self.beat()


@dataclass(frozen=True)
class Deferred:
    """A plain task's finished run whose outcome waits for its group's statement (`TaskProcessor.write_deferred`);
    the fields are what the per-task `_store` takes, should the grouped write not take it."""

    claim: Claim
    status: str
    output: dict[str, Any]
    metrics: dict[str, Any]
    error: dict[str, Any] | None
    final: bool
    started: datetime
    since: float  # monotonic, when the run ended
    #: `plain_outcome`'s parameters, made when the run ended (its completion time, its result row's id: a
    #: per-task write after a grouped statement whose answer was lost cannot add a second result row).
    outcome: dict[str, Any]


class OutcomeGroups:
    """The outcomes of one invocation's fast plain runs, written a statement per (owner, agent type) group.

    Only a run that took at most `window_seconds` is deferred (a slow agent's outcome is written at once, as
    its commit is a small part of its time), and the consumer writes what waits as soon as the oldest outcome
    has waited `window_seconds` (`due`), and at the end of its batch: an outcome is visible at most that long,
    plus the record running when it became due, after its run ended."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window_seconds, clock
        self.items: list[Deferred] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Deferred) -> None:
        self.items.append(item)

    def due(self) -> bool:
        return bool(self.items) and self.clock() - self.items[0].since >= self.window

    def take(self) -> list[Deferred]:
        items, self.items = self.items, []
        return items


class RecordDeferredError(RuntimeError):
    """Not started: too little of the invocation is left. Reported as a batch item failure (SQS retries it)."""


@dataclass
class RecordBudget:
    """How much of the invocation is left, and whether another record fits in it."""

    remaining_ms: Callable[[], int]
    reserve_seconds: float
    clock: Callable[[], datetime] = utcnow
    slowest_seconds: float = field(default=0.0)

    @property
    def reserve(self) -> float:
        """The expected time of one record: the setting, or twice the slowest record seen so far."""
        return max(self.reserve_seconds, 2 * self.slowest_seconds)

    def check(self) -> None:
        left = self.remaining_ms() / 1000
        if left < self.reserve:
            raise RecordDeferredError(f"{left:.1f}s left in the invocation, {self.reserve:.1f}s reserved per record")

    def lease_until(self) -> datetime:
        """The claim lease: the end of this invocation (nobody can still be running it after that)."""
        return self.clock() + timedelta(milliseconds=self.remaining_ms()) + CLAIM_SKEW

    def spent(self, seconds: float) -> None:
        self.slowest_seconds = max(self.slowest_seconds, seconds)


def parse_message(body: str, queue_agent_type: str | None) -> TaskMessage:
    try:
        message = TaskMessage.model_validate_json(body)
    except PydanticValidationError as exc:
        raise MalformedMessageError("message body is not a task message",
                                    {"errors": pydantic_errors(exc)}) from exc
    if queue_agent_type is not None and message.agent_type != queue_agent_type:
        raise MalformedMessageError(
            "message agent_type does not match its queue",
            {"message_agent_type": message.agent_type, "queue_agent_type": queue_agent_type},
        )
    return message


@functools.cache
def _claim_statement(joined: bool, typed: bool) -> Any:
    """The conditional claim, built once per shape (per task only parameters are bound): the tasks `p_ids`
    (of type `p_type` when `typed`) that are claimable or abandoned, returning what their runs need.

    `joined` (Postgres) also returns each task's agent config (`UPDATE tasks ... FROM agents`): no agent lookup
    per task. SQLite cannot return a joined table's columns; there the config is read per task."""
    now = bindparam("p_now", type_=UTCDateTime())
    claim = (update(Task)
             .where(Task.id.in_(bindparam("p_ids", expanding=True)),
                    or_(Task.status.in_(CLAIMABLE), TaskProcessor._abandoned(now)))
             .values(status=TaskStatus.PROCESSING, attempts=Task.attempts + 1, started_at=now, updated_at=now,
                     lease_expires_at=bindparam("p_lease", type_=UTCDateTime())))
    if typed:
        claim = claim.where(Task.agent_type == bindparam("p_type"))
    if joined:
        return claim.where(Agent.id == Task.agent_id).returning(*_CLAIMED, Agent.config)
    return claim.returning(*_CLAIMED)


class TaskProcessor:
    def __init__(self, db: Database, *, agent_loader: Callable[[str], AgentImpl] = get_agent, max_attempts: int = 5,
                 ports: AgentPorts | None = None, agent_records: AgentRecords | None = None,
                 clock: Callable[[], datetime] = utcnow, backoff: Backoff | None = None,
                 cancel_check_seconds: float = 0.5, answers: Callable[[list[uuid.UUID]], None] | None = None,
                 heartbeats: Callable[[str], Heartbeat] | None = None,
                 finished: Callable[[uuid.UUID, uuid.UUID, str], None] | None = None) -> None:
        self.db = db
        #: told (user_id, task_id, status) right after a task's final outcome committed: wakes its long-polls.
        #: Called on the `after_commit` thread: the next record does not wait for Redis (`flush()` does).
        self.finished = finished
        self.after_commit = AfterCommit()
        #: publishes the workflow token answers a committed outcome wrote (the outbox fast path).
        self.answers = answers
        #: a Heartbeat for a step task's token (None: no Step Functions here).
        self.heartbeats = heartbeats
        #: when a retryable agent failure comes back (the consumer applies it with ChangeMessageVisibility).
        self.backoff = backoff or Backoff()
        self.cancel_check_seconds = cancel_check_seconds
        self.agent_loader = agent_loader
        #: handed to agents through AgentContext (database, providers, settings, alerts...).
        self.ports = ports
        #: the agent cache (saves a query per task); None reads the agent's row.
        self.agent_records = agent_records
        #: the queue's maxReceiveCount: on the last delivery an unexpected crash fails the
        #: task instead of leaving it queued forever behind a message in the DLQ.
        self.max_attempts = max_attempts
        self.clock = clock

    def claim_batch(self, messages: list[TaskMessage], lease_until: datetime) -> dict[uuid.UUID, Claim]:
        """Claim the tasks of a whole batch in one transaction (one commit, not one per record).

        Only tasks that are claimable and of the message's type are claimed; every other message goes
        through `process`'s own claim, which explains why (unknown task, wrong type, duplicate...).
        Claims the batch does not get to must be given back with `release_unstarted`.
        """
        wanted = {m.task_id: m.agent_type for m in messages}
        if not wanted:
            return {}
        by_type: dict[str, list[uuid.UUID]] = {}
        for task_id, agent_type in wanted.items():
            by_type.setdefault(agent_type, []).append(task_id)
        claims: list[Claim] = []
        # A queue's batch is one type: one claim statement, its own transaction on Postgres (no BEGIN/COMMIT
        # round trips). Several types claim in one transaction: all of them or none.
        alone = len(by_type) == 1 and self.db.dialect == "postgresql"
        with self.db.statement() if alone else self.db.statements() as conn:
            for agent_type, ids in by_type.items():
                claims += self._claimed(conn, ids, lease_until, agent_type)
        return {c.task.id: c for c in claims}

    def flush(self) -> None:
        """Wait for the calls queued after this invocation's commits (the wake-up hints): before it returns."""
        self.after_commit.flush()

    def release_unstarted(self, claims: list[Claim]) -> None:
        """Give back claims that were never run: `queued` again, with the attempt they took undone."""
        if not claims:
            return
        with self.db.statements() as conn:
            conn.execute(update(Task).where(
                or_(*(and_(Task.id == c.task.id, Task.attempts == c.attempt) for c in claims)),
                Task.status == TaskStatus.PROCESSING)
                .values(status=TaskStatus.QUEUED, attempts=Task.attempts - 1, lease_expires_at=None,
                        updated_at=self.clock()))

    def process(self, message: TaskMessage, receive_count: int = 1, *, lease_until: datetime | None = None,
                claimed: Claim | None = None, groups: OutcomeGroups | None = None) -> Outcome:
        """Claim (commit) unless `claim_batch` did, run with no transaction open, store the outcome (commit).

        With `groups` (Postgres), a plain task's outcome from a run no longer than the groups' window is not
        written here: it is added to `groups` and the Outcome says `deferred` (`write_deferred` writes it)."""
        claim = claimed or self._claim(message, lease_until or self.clock() + DEFAULT_CLAIM)
        if claim is None:
            return Outcome(message.task_id, "skipped")
        task = claim.task
        # The task's attempt limit: receives of this message, or runs of the task (a duplicate message counts too).
        final = max(receive_count, claim.attempt) >= self.max_attempts
        heartbeat = None
        if task.callback_token is not None and self.heartbeats is not None:
            heartbeat = self.heartbeats(task.callback_token)
            heartbeat.beat()  # claimed: the step's token hears from us before the agent starts
        ctx = AgentContext(task_id=task.id, agent_id=task.agent_id, user_id=task.user_id, agent_type=task.agent_type,
                           now=self.clock(), attempt=receive_count, ports=self.ports,
                           cancel_check=CancelCheck(self.db, task.id, self.cancel_check_seconds, heartbeat=heartbeat))
        started, ran = self.clock(), time.perf_counter()
        try:
            status, output, metrics, error = self._run(task, claim.config, ctx, final)
        except _Retryable as retry:
            # Back to the queue with the error the user can see while it waits; SQS brings it back after the delay.
            held = self._release(claim, error=retry.error)
            logger.info("retryable agent failure; retrying later", extra={
                "task_id": str(task.id), "code": retry.error["code"], "attempt": claim.attempt})
            raise RetryLaterError(max(self.backoff.delay(claim.attempt, retry.retry_after), held),
                                  retry.error["code"]) from None
        except Exception as exc:
            held = self._release(claim)  # an unexpected crash: retried with backoff too
            raise RetryLaterError(max(self.backoff.delay(claim.attempt), held), type(exc).__name__) from exc
        if status == PENDING:
            self._hand_over(claim)
            logger.info("task waiting", extra={"task_id": str(task.id), "agent_type": task.agent_type})
            return Outcome(task.id, PENDING)
        if (groups is not None and groups.window > 0 and task.plain and self.db.dialect == "postgresql"
                and time.perf_counter() - ran <= groups.window):
            outcome = plain_outcome(task.id, status, output, metrics, error, started_at=started)
            groups.add(Deferred(claim, status, output, metrics, error, final, started, groups.clock(), outcome))
            return Outcome(task.id, status, deferred=True)
        if not self._store(claim, status, output, metrics, error, final, started):
            status = "discarded"  # cancelled or timed out while it ran: its result is not the task's
        elif self.finished is not None:
            self.after_commit.submit(self.finished, task.user_id, task.id, status)
        logger.info("task finished", extra={"task_id": str(task.id), "status": status,
                                            "agent_type": task.agent_type})
        return Outcome(task.id, status)

    def write_deferred(self, groups: OutcomeGroups,
                       scope: Callable[[uuid.UUID], AbstractContextManager[Any]] = lambda task_id: nullcontext()
                       ) -> dict[uuid.UUID, Outcome | Exception]:
        """Write the outcomes waiting in `groups`: one statement, its own transaction, per (owner, agent type)
        group (`finish_plain_group`: the tasks' updates and result rows, the ledger's triggers once), never one
        transaction across two owners' tasks. A task the statement did not move (cancelled or timed out while
        it ran), and every task of a group whose statement failed, goes through the per-task `_store`, so one
        bad outcome costs its group the grouping, not its results. Returns each task's Outcome (`discarded`
        when its run's result is not the task's), or the exception its per-task write raised (its claim given
        back unless it was the last attempt, as `process` would have). `scope(task_id)` is entered around what
        is done for each task after the grouped statement (the consumer's log context: its record's ids)."""
        by_group: dict[tuple[uuid.UUID, str], dict[uuid.UUID, Deferred]] = {}
        for item in groups.take():
            by_group.setdefault((item.claim.task.user_id, item.claim.task.agent_type), {})[item.claim.task.id] = item
        done: dict[uuid.UUID, Outcome | Exception] = {}
        for (user_id, agent_type), items in by_group.items():
            moved: set[uuid.UUID] = set()
            if len(items) > 1:
                try:
                    with self.db.statement() as conn:
                        moved = finish_plain_group(conn, user_id, agent_type, [i.outcome for i in items.values()])
                except Exception:  # noqa: BLE001 - each outcome is then written on its own, its failure its own
                    logger.warning("the grouped outcome write failed; writing each task's on its own",
                                   extra={"tasks": len(items), "agent_type": agent_type}, exc_info=True)
            for task_id, item in items.items():
                with scope(task_id):
                    done[task_id] = self._write_one(item, task_id in moved)
        return done

    def _write_one(self, item: Deferred, moved: bool) -> Outcome | Exception:
        """A deferred outcome after its group's statement: finished (`moved`), or written on its own."""
        if not moved:
            try:
                stored = self._store(item.claim, item.status, item.output, item.metrics, item.error, item.final,
                                     item.started, outcome=item.outcome)
            except Exception as exc:  # noqa: BLE001 - reported for its record (SQS retries it)
                return exc
            if not stored:
                return self._finished(item.claim, "discarded")
        return self._finished(item.claim, item.status)

    def _finished(self, claim: Claim, status: str) -> Outcome:
        """After a deferred outcome committed: the wake-up hint (when it moved the task) and the log line."""
        task = claim.task
        if status != "discarded" and self.finished is not None:
            self.after_commit.submit(self.finished, task.user_id, task.id, status)
        logger.info("task finished", extra={"task_id": str(task.id), "status": status, "agent_type": task.agent_type})
        return Outcome(task.id, status)

    def _claim(self, message: TaskMessage, lease_until: datetime) -> Claim | None:
        with self.db.statements() as conn:
            # One statement claims and reads what the run needs; only a refused claim costs a second (why?).
            claims = self._claimed(conn, [message.task_id], lease_until)
            if not claims:
                status = conn.scalar(select(Task.status).where(Task.id == message.task_id))
                if status is None:
                    raise MalformedMessageError("message names a task that does not exist",
                                                {"task_id": str(message.task_id)})
                logger.info("task not claimable; duplicate or stale delivery acknowledged",
                            extra={"task_id": str(message.task_id), "status": status})
                return None
            claim = claims[0]
            if claim.task.agent_type != message.agent_type:
                raise MalformedMessageError("message agent_type does not match the task",
                                            {"task_agent_type": claim.task.agent_type})  # rolls the claim back
            return claim

    def _claimed(self, conn: Connection, ids: list[uuid.UUID], lease_until: datetime,
                 agent_type: str | None = None) -> list[Claim]:
        joined = self.db.dialect == "postgresql"
        params = {"p_ids": ids, "p_type": agent_type, "p_now": self.clock(), "p_lease": lease_until}
        rows = conn.execute(_claim_statement(joined, agent_type is not None), params).all()
        if joined:
            return [Claim(ClaimedTask(*row[:-1]), row[-1] or {}, lease_until) for row in rows]
        with Session(bind=conn) as session:  # the agent cache takes a session for its miss
            return [Claim(ClaimedTask(*row), self._agent_config(session, row.agent_id), lease_until) for row in rows]

    @staticmethod
    def _abandoned(now: Any) -> Any:
        """A `processing` task whose claim lease passed: claimed by an invocation that is over."""
        return and_(Task.status == TaskStatus.PROCESSING, Task.lease_expires_at.is_not(None),
                    Task.lease_expires_at < now)

    def _agent_config(self, session: Session, agent_id: uuid.UUID) -> dict[str, Any]:
        """The agent's config, from the agent cache when there is one (saves a query per task)."""
        if self.agent_records is not None:
            record = self.agent_records(agent_id, session)
            if record is not None:
                # A copy: the cached record is shared with every reader in this process.
                return copy.deepcopy(record.config)
        # Deleted agents are not cached; a task already running for one still gets its config.
        return session.scalar(select(Agent.config).where(Agent.id == agent_id)) or {}

    def _held(self, claim: Claim, **values: Any) -> None:
        """Update the task if this claim still holds it (status `processing`, same attempt)."""
        with self.db.statements() as conn:
            conn.execute(update(Task).where(Task.id == claim.task.id, Task.status == TaskStatus.PROCESSING,
                                            Task.attempts == claim.attempt)
                         .values(updated_at=self.clock(), **values))

    def _release(self, claim: Claim, error: dict[str, Any] | None = None) -> int:
        """Give the claim back (`queued`). Returns how long its record must stay away: 0 when the claim was
        given back; when that failed, the task stays held until its lease lapses and a redelivery before then
        would be acknowledged as a duplicate, so `lapse_seconds`."""
        try:
            self._held(claim, status=TaskStatus.QUEUED, lease_expires_at=None,
                       **({"error": storable(error)} if error is not None else {}))
        except Exception:  # noqa: BLE001 - the claim lease runs out instead; the original error is what matters
            logger.warning("could not give the claim back; it lapses with its lease",
                           extra={"task_id": str(claim.task.id)}, exc_info=True)
            return self.lapse_seconds(claim)
        return 0

    def lapse_seconds(self, claim: Claim) -> int:
        """Seconds until the claim's lease has lapsed (with a second to spare): the earliest a redelivery of its
        message can claim the task again instead of finding it held (the visibility port caps it at SQS's 12 h)."""
        if claim.lease_until is None:
            return 0
        return max(0, math.ceil((claim.lease_until - self.clock()).total_seconds()) + 1)

    def _hand_over(self, claim: Claim) -> None:
        """A pending task is held by its subtasks now, not by this consumer: nobody may reclaim it."""
        self._held(claim, lease_expires_at=None)

    def _store(self, claim: Claim, status: str, output: dict[str, Any], metrics: dict[str, Any],
               error: dict[str, Any] | None, final: bool, started: datetime, *,
               outcome: dict[str, Any] | None = None) -> bool:
        """Store the outcome; return False when the task had been cancelled (or timed out) meanwhile. `outcome`:
        a plain task's `plain_outcome` parameters made earlier (a deferred outcome's)."""
        try:
            if claim.task.plain:  # no parent, no token: the same rules in Core statements, no unit of work
                if outcome is None:
                    outcome = plain_outcome(claim.task.id, status, output, metrics, error, started_at=started)
                tried = self.db.dialect == "postgresql"
                if tried:
                    # The common case is one statement, its own transaction: no BEGIN/COMMIT round trips.
                    with self.db.statement() as conn:
                        if finish_plain(conn, outcome):
                            return True
                with self.db.statements() as conn:  # not `processing` any more (cancelled?): its result row
                    return store_plain_outcome(conn, outcome, finish_tried=tried)
            with self.db.transaction() as session:
                # The one outcome path (shared with external workers and the lease reaper): result row,
                # status, an orchestrator parent moved on and a workflow step's answer, in one transaction.
                moved = store_outcome(session, claim.task.id, status, output, metrics, error, started_at=started)
            self._publish_answers(session)
            return moved
        except Exception as exc:
            if not final:
                seconds = self._release(claim)
                if seconds:
                    # Still held: a record back after the consumer's usual short delay would find the task held
                    # and be acknowledged, leaving it `processing` until the reaper. It returns once the lease lapsed.
                    logger.warning("the outcome was not stored and the claim is still held; the record returns "
                                   "once its lease lapsed", extra={"task_id": str(claim.task.id), "seconds": seconds})
                    raise RetryLaterError(seconds, type(exc).__name__) from exc
                raise
            logger.exception("the outcome could not be stored on the last attempt",
                             extra={"task_id": str(claim.task.id)})
            error = {"code": "RESULT_NOT_STORED", "message": f"the result could not be stored: {type(exc).__name__}",
                     "details": {"attempts": self.max_attempts}}
            with self.db.transaction() as session:
                moved = store_outcome(session, claim.task.id, TaskStatus.FAILED, {},
                                      {"duration_ms": metrics.get("duration_ms", 0.0)}, error)
            self._publish_answers(session)
            return moved

    def _publish_answers(self, session: Session) -> None:
        """Right after the commit: the token answers it wrote go to Step Functions now, not at the next sweep."""
        ids: list[uuid.UUID] = session.info.pop(ANSWERS_KEY, [])
        if ids and self.answers is not None:
            self.answers(ids)

    def _run(self, task: ClaimedTask, config: dict[str, Any], ctx: AgentContext, final_attempt: bool) -> RunResult:
        started = time.perf_counter()

        def failed(code: str, message: str, details: dict[str, Any]) -> RunResult:
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            return TaskStatus.FAILED, {}, {"duration_ms": elapsed}, {"code": code, "message": message,
                                                                      "details": details}

        try:
            agent = self.agent_loader(task.agent_type)
            data = agent.Input.model_validate(task.input_data)
            result = run_task_agent(agent, data, config, ctx)  # budgets and output cap: agents/sandbox.py
        except AgentError as exc:
            if getattr(exc, "retryable", False):
                if not final_attempt:
                    raise _Retryable({"code": exc.code, "message": exc.message, "details": exc.details},
                                     getattr(exc, "retry_after", None)) from exc
                # The attempt limit is reached: the task fails with the last error.
                return failed(exc.code, exc.message, {**exc.details, "attempts": max(ctx.attempt, task.attempts)})
            return failed(exc.code, exc.message, exc.details)
        except PydanticValidationError as exc:
            return failed("AGENT_INPUT_INVALID", "input_data does not match the agent's schema",
                          {"errors": pydantic_errors(exc, prefix=("input_data",))})
        except Exception as exc:
            if not final_attempt:
                raise  # transient until proven otherwise: SQS redelivers
            logger.exception("agent crashed on its last attempt", extra={"task_id": str(task.id)})
            return failed("AGENT_CRASHED", f"the agent failed unexpectedly on every attempt: {type(exc).__name__}",
                          {"attempts": self.max_attempts})
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        if result.pending:
            return PENDING, result.output, result.metrics, None
        metrics = {"duration_ms": elapsed, **result.metrics}
        return TaskStatus.COMPLETED, result.output, metrics, None


class _Retryable(Exception):
    """A retryable AgentError (chalicelib.providers.errors: `retryable`) before the last attempt."""

    def __init__(self, error: dict[str, Any], retry_after: float | None) -> None:
        super().__init__(error["code"])
        self.error = error
        self.retry_after = retry_after
