"""An orchestrator task's plan becomes a workflow run on the workflow machinery (issue 9).

`PlanRuns.start` checks the plan whole (bounds, every step's agent and input), then writes a hidden workflow
(kind "plan", never listed by GET /workflows), one version whose definition is the plan, and a run whose
`parent_task_id` is the orchestrator task — in one transaction — and starts its execution. Step Functions
then sequences the steps like any workflow: each step is a task of the run (`parent_task_id` = the
orchestrator task, so the depth and size bounds below still count them). When the run ends,
`chalicelib.workflows.plan_outcome.on_run_finished` completes or fails the orchestrator task, and when the
task ends first (cancelled, timed out) `plan_outcome.on_task_ended` cancels the run.

Idempotent for a rerun of the orchestrator task (its consumer died after the run was written): the run of
that task is found by `parent_task_id` and nothing is created twice; a run whose start failed is started
again. A plan run counts against the owner's daily task quota like any run (`RunService.create_in`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from chalicelib.agents import registry
from chalicelib.db.models import Agent, Task
from chalicelib.db.session import Database
from chalicelib.db.workflow_models import WorkflowRun
from chalicelib.domain.tasks import TaskStatus
from chalicelib.engines.optimization import candidates, choose
from chalicelib.errors import (
    AgentError,
    DependencyUnavailableError,
    TaskCancelledError,
    ValidationError,
    WorkflowInvalidError,
)
from chalicelib.schemas.plans import PlanStep

if TYPE_CHECKING:
    from chalicelib.services.runs import RunService
    from chalicelib.services.workflows import WorkflowService

ORCHESTRATOR = "orchestrator"
KIND_PLAN = "plan"
START_FAILED = "START_FAILED"


class StepAgentUnavailableError(AgentError):
    code = "STEP_AGENT_UNAVAILABLE"


class StepInputInvalidError(AgentError):
    code = "STEP_INPUT_INVALID"


class OrchestratorStepForbiddenError(AgentError):
    code = "ORCHESTRATOR_STEP_FORBIDDEN"


class OrchestrationTooDeepError(AgentError):
    code = "ORCHESTRATION_TOO_DEEP"


class OrchestrationTooLargeError(AgentError):
    code = "ORCHESTRATION_TOO_LARGE"


class PlanNotRunnableError(AgentError):
    """The plan passed its own checks but not the workflow compiler's (reported with its violations)."""

    code = "PLAN_INVALID"


class PlanStartUnavailableError(AgentError):
    """Step Functions (or SQS, for the queue URLs) could not be reached to start the run: retried like a
    provider outage, and the task fails with this code on its last attempt."""

    code = "DEPENDENCY_UNAVAILABLE"
    retryable = True


@dataclass(frozen=True)
class Bounds:
    """How far one root task may fan out (settings orchestrator_max_depth / orchestrator_max_descendants)."""

    max_depth: int = 3
    max_descendants: int = 100
    #: each step's deadline in the run (Step Functions TimeoutSeconds): the reaper's longest run by default.
    step_timeout_seconds: int = 6 * 3600


def resolve_step(session: Session, user_id: uuid.UUID, step: PlanStep) -> Agent:
    """The agent that would run the step now (its input checked against its type); AgentError naming the step.

    Checked for every step before the run exists, so a plan that cannot run fails whole with no task."""
    where = {"step_id": step.step_id}
    if step.agent_id is not None:
        agent = session.get(Agent, step.agent_id)
        if agent is None or agent.user_id != user_id or agent.deleted_at is not None:
            raise StepAgentUnavailableError(f"step {step.step_id!r}: agent not found",
                                            {**where, "agent_id": str(step.agent_id)})
        if agent.status != "active":
            raise StepAgentUnavailableError(f"step {step.step_id!r}: agent is {agent.status}",
                                            {**where, "agent_id": str(agent.id), "status": agent.status})
    else:
        assert step.agent_type is not None
        # The same rule as POST /tasks with only a type (chalicelib.engines.optimization).
        decision = choose(candidates(session, user_id, step.agent_type))
        if decision.chosen is None:
            raise StepAgentUnavailableError(
                f"step {step.step_id!r}: you have no active {step.agent_type!r} agent with capacity",
                {**where, "agent_type": step.agent_type, "agents": decision.total, "active": decision.active,
                 "at_capacity": decision.at_capacity})
        chosen = session.get(Agent, decision.chosen.agent_id)
        assert chosen is not None  # read in this transaction a moment ago
        agent = chosen
    if agent.type == ORCHESTRATOR:  # a step by agent_id may name one: plans do not nest
        raise OrchestratorStepForbiddenError(f"step {step.step_id!r}: a plan step may not run an orchestrator",
                                             {**where, "agent_id": str(agent.id)})
    try:
        registry.validate_input(agent.type, step.input_data)
    except ValidationError as exc:
        raise StepInputInvalidError(f"step {step.step_id!r}: {exc.message}", {**where, **exc.details}) from exc
    return agent


def ancestors(session: Session, task_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
    """The parent_task_id chain above the task, nearest first, at most `limit` + 1 long."""
    chain: list[uuid.UUID] = []
    current: uuid.UUID | None = task_id
    while len(chain) <= limit:
        current = session.scalar(select(Task.parent_task_id).where(Task.id == current))
        if current is None:
            break
        chain.append(current)
    return chain


def descendant_count(session: Session, root_id: uuid.UUID) -> int:
    """Every task below the root, at any depth (one recursive query)."""
    tree = select(Task.id).where(Task.parent_task_id == root_id).cte("tree", recursive=True)
    tree = tree.union_all(select(Task.id).where(Task.parent_task_id == tree.c.id))
    return int(session.scalar(select(func.count()).select_from(tree)) or 0)


def check_bounds(session: Session, task_id: uuid.UUID, planned: int, bounds: Bounds) -> None:
    chain = ancestors(session, task_id, bounds.max_depth)
    if len(chain) + 1 > bounds.max_depth:
        raise OrchestrationTooDeepError(
            f"subtasks here would be {len(chain) + 1} levels below their root task; the limit is {bounds.max_depth}",
            {"depth": len(chain) + 1, "max_depth": bounds.max_depth})
    root = chain[-1] if chain else task_id
    below = descendant_count(session, root)
    if below + planned > bounds.max_descendants:
        raise OrchestrationTooLargeError(
            f"the root task would have {below + planned} tasks below it; the limit is {bounds.max_descendants}",
            {"root_task_id": str(root), "descendants": below, "planned": planned,
             "max_descendants": bounds.max_descendants})


def workflow_step_ids(plan: Sequence[PlanStep]) -> dict[str, str]:
    """Plan step id -> workflow step id. Plan ids may hold dots, workflow ids may not (a dot separates a
    reference's segments): dots become underscores, and a clash gets the step's position appended."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for index, step in enumerate(plan):
        wanted = step.step_id.replace(".", "_")
        if wanted in taken:
            wanted = f"{wanted[:56]}_{index}"
        out[step.step_id] = wanted
        taken.add(wanted)
    return out


def _literal(value: Any) -> Any:
    """Plan inputs are literals: a string a workflow would read as a reference (`$.x`) is escaped (`$$.x`)."""
    if isinstance(value, str):
        return "$" + value if value.startswith("$") and value.lstrip("$").startswith(".") else value
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    return value


def plan_definition(task_id: uuid.UUID, goal: str, plan: Sequence[PlanStep], bounds: Bounds) -> dict[str, Any]:
    """The WorkflowCreate body of a plan: the same steps, dependencies and inputs, nothing else."""
    ids = workflow_step_ids(plan)
    steps = []
    for s in plan:
        step: dict[str, Any] = {"step_id": ids[s.step_id], "input_data": _literal(s.input_data),
                                "depends_on": [ids[d] for d in s.depends_on],
                                "timeout_seconds": bounds.step_timeout_seconds}
        step.update({"agent_id": str(s.agent_id)} if s.agent_id is not None else {"agent_type": s.agent_type})
        if s.title:
            step["title"] = s.title
        steps.append(step)
    return {"name": f"plan of task {task_id}", "description": goal[:2000], "steps": steps}


def plan_of(input_data: dict[str, Any] | None) -> tuple[str, list[PlanStep]]:
    data = input_data or {}
    return str(data.get("goal", "")), [PlanStep.model_validate(s) for s in data.get("plan") or []]


class PlanRuns:
    """Starts an orchestrator task's plan as a workflow run (the AgentPorts `plans` port), through the API's
    own services: `WorkflowService.create_in` (kind "plan"), `RunService.create_in` and `RunService.launch`."""

    def __init__(self, db: Database, runs: RunService, workflows: WorkflowService) -> None:
        self.db, self.runs, self.workflows = db, runs, workflows

    def start(self, task_id: uuid.UUID, goal: str, plan: Sequence[PlanStep], *, drafted: bool,
              bounds: Bounds) -> uuid.UUID:
        """The run of the task's plan, started (or found started); AgentError when the plan cannot run."""
        with self.db.transaction() as session:
            # FOR NO KEY UPDATE: ordered against a cancel of the task (which cancels the run it finds) without
            # blocking the key-share locks its step tasks' foreign keys take.
            parent = session.execute(select(Task.id, Task.user_id, Task.input_data, Task.status)
                                     .where(Task.id == task_id).with_for_update(key_share=True)).first()
            assert parent is not None  # the consumer claimed it a moment ago
            if parent.status in (TaskStatus.CANCELLED, TaskStatus.TIMED_OUT):
                raise TaskCancelledError("the task was cancelled before its plan started", {"task_id": str(task_id)})
            run = session.scalars(select(WorkflowRun).where(WorkflowRun.parent_task_id == task_id)
                                  .order_by(WorkflowRun.created_at).limit(1).with_for_update()).first()
            if run is None:
                run = self._create(session, parent, goal, plan, drafted=drafted, bounds=bounds)
            elif run.status == "failed" and (run.error or {}).get("code") == START_FAILED:
                # A rerun after a start that could not reach Step Functions: the same run, started again (no
                # execution was created, so its name `<run_id.hex>-1` is free).
                run.status, run.error, run.finished_at = "running", None, None
            launch = run.execution_arn is None and run.status == "running"
        if launch:
            try:
                self.runs.launch(run)  # unreachable: the run ends failed START_FAILED and this raises
            except DependencyUnavailableError as exc:
                # Retried like a provider outage (the rerun takes the branch above); on the task's last attempt
                # it fails with this code.
                raise PlanStartUnavailableError(f"the plan's run could not start: {exc.message}",
                                                {**exc.details, "run_id": str(run.id)}) from exc
        return run.id

    def _create(self, session: Session, parent: Any, goal: str, plan: Sequence[PlanStep], *, drafted: bool,
                bounds: Bounds) -> WorkflowRun:
        from chalicelib.services.workflows import parse_create

        check_bounds(session, parent.id, len(plan), bounds)
        for step in plan:  # every step is checked before anything is written: a bad plan fails whole
            resolve_step(session, parent.user_id, step)
        try:
            workflow, version = self.workflows.create_in(
                session, parent.user_id, parse_create(plan_definition(parent.id, goal, plan, bounds)), kind=KIND_PLAN)
        except WorkflowInvalidError as exc:
            raise PlanNotRunnableError(f"the plan cannot run as a workflow: {exc.message}", exc.details) from exc
        if drafted:  # the outcome reads the plan from the task's input (plan_of)
            session.execute(update(Task).where(Task.id == parent.id)
                            .values(input_data={**parent.input_data, "plan": [s.model_dump(mode="json")
                                                                              for s in plan]})
                            .execution_options(synchronize_session=False))
        return self.runs.create_in(session, parent.user_id, workflow, version, {}, parent_task_id=parent.id)
