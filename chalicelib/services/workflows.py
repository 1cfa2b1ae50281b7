"""Workflow use cases: create, read, list, update (a new version), soft delete. Owner-filtered everywhere.

A definition is checked in two passes and both are reported together as one 422 WORKFLOW_INVALID: the
request model (`WorkflowCreate`: field rules) and, when that passes, `chalicelib.workflows.validate` (the
whole graph: unknown steps, cycles, references, inputs against agent types). `agent_id` steps are resolved
here, owner-filtered: another user's agent, or a deleted one, is an unknown agent like a made-up id.

A version is immutable: `PUT` writes version n+1 and moves `current_version`; runs pin the version they
started on. `DELETE` is soft (`deleted_at`): the workflow disappears from every /workflows route (404),
new runs are refused with 404, and runs already started finish and stay readable at /runs/{run_id}.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.db.models import Agent
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import Workflow, WorkflowVersion
from chalicelib.errors import WorkflowInvalidError, WorkflowNotFoundError
from chalicelib.schemas.workflows import WorkflowListQuery, WorkflowPublic
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta
from chalicelib.services.pagination import after_cursor, encode_cursor
from chalicelib.workflows.definition import WorkflowCreate, WorkflowDefinition

#: `kind` of workflows made through the API (plans of orchestrator tasks are "plan": not listed, not editable).
KIND_WORKFLOW = "workflow"


def path_of(loc: Sequence[Any]) -> str:
    """A pydantic location as a definition path: ("steps", 2, "depends_on", 0) -> "steps[2].depends_on[0]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _violation(path: Any, code: str, message: str) -> dict[str, str]:
    return {"path": path if isinstance(path, str) else path_of(path), "code": code, "message": message}


def invalid(violations: list[dict[str, str]]) -> WorkflowInvalidError:
    return WorkflowInvalidError(f"the workflow definition has {len(violations)} violation(s)",
                                {"violations": violations})


def parse_create(data: dict[str, Any]) -> WorkflowCreate:
    """The request model, or 422 WORKFLOW_INVALID listing every field error with its path."""
    try:
        return WorkflowCreate.model_validate(data)
    except PydanticValidationError as exc:
        found = [_violation(err["loc"], str(err["type"]).upper(), err["msg"])
                 for err in exc.errors(include_input=False, include_url=False)]
        raise invalid(found) from exc


@dataclass(frozen=True)
class Compiled:
    definition: WorkflowDefinition
    step_agent_types: dict[str, str]
    asl: dict[str, Any]


def public(workflow: Workflow, version: WorkflowVersion) -> WorkflowPublic:
    return WorkflowPublic(id=workflow.id, name=workflow.name, description=workflow.description,
                          current_version=workflow.current_version, created_at=workflow.created_at,
                          updated_at=workflow.updated_at, version=version.version, version_id=version.id,
                          definition=version.definition, asl=version.asl,
                          step_agent_types=dict(version.step_agent_types or {}))


def owned_workflow(session: Session, user_id: uuid.UUID, workflow_id: uuid.UUID, *, for_update: bool = False,
                   editable: bool = False) -> Workflow:
    """The caller's live workflow, or 404 WORKFLOW_NOT_FOUND (another user's, deleted, or, when `editable`, a
    plan: those belong to their orchestrator task)."""
    stmt = select(Workflow).where(Workflow.id == workflow_id, Workflow.user_id == user_id,
                                  Workflow.deleted_at.is_(None))
    if editable:
        stmt = stmt.where(Workflow.kind == KIND_WORKFLOW)
    workflow = session.scalar(stmt.with_for_update() if for_update else stmt)
    if workflow is None:
        raise WorkflowNotFoundError("workflow not found", {"workflow_id": str(workflow_id)})
    return workflow


def current_version(session: Session, workflow: Workflow) -> WorkflowVersion:
    version = session.scalar(select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow.id,
                                                           WorkflowVersion.version == workflow.current_version))
    if version is None:  # the two are written in one transaction: this is a broken row, not a user error
        raise LookupError(f"workflow {workflow.id} has no version {workflow.current_version}")
    return version


class WorkflowService:
    def __init__(self, db: Database, *, engines: Callable[[], Collection[str]] = frozenset) -> None:
        self.db = db
        #: names of the platform's engines (chalicelib.engines.registry), asked at each validation.
        self.engines = engines

    def compile(self, session: Session, user_id: uuid.UUID, req: WorkflowCreate) -> Compiled:
        """Resolve agent_id steps (owner-filtered), validate the whole definition, compile it to ASL."""
        from chalicelib.workflows import asl, validate

        definition = req.definition()
        wanted = {s.agent_id for s in definition.steps if s.agent_id is not None}
        types: dict[uuid.UUID, str] = {}
        if wanted:
            types = {row[0]: row[1] for row in session.execute(
                select(Agent.id, Agent.type).where(Agent.id.in_(wanted), Agent.user_id == user_id,
                                                   Agent.deleted_at.is_(None)))}
        step_agent_types: dict[str, str] = {}
        found: list[dict[str, str]] = []
        for index, step in enumerate(definition.steps):
            if step.agent_id is None:
                continue
            if step.agent_id in types:
                step_agent_types[step.step_id] = types[step.agent_id]
            else:  # another user's agent is exactly as unknown as one that never existed
                found.append(_violation(("steps", index, "agent_id"), "UNKNOWN_AGENT",
                                        f"no agent {step.agent_id} among your agents"))
        reported = {v["path"] for v in found}
        for v in validate.violations(definition, step_agent_types=step_agent_types, engines=self.engines()):
            item = _violation(v.path, str(v.code), str(v.message))
            if item["path"] not in reported:  # an unresolved agent_id is reported once, above
                found.append(item)
        if found:
            raise invalid(found)
        return Compiled(definition, step_agent_types, asl.compile_definition(definition, step_agent_types))

    def create(self, user_id: uuid.UUID, data: dict[str, Any], meta: RequestMeta) -> WorkflowPublic:
        req = parse_create(data)
        with self.db.transaction() as session:
            return public(*self.create_in(session, user_id, req, meta))

    def create_in(self, session: Session, user_id: uuid.UUID, req: WorkflowCreate, meta: RequestMeta | None = None,
                  *, kind: str = KIND_WORKFLOW) -> tuple[Workflow, WorkflowVersion]:
        """Workflow + version 1 in the caller's transaction (`kind="plan"`: an orchestrator task's plan, not
        listed nor editable). Raises WorkflowInvalidError with every violation."""
        compiled = self.compile(session, user_id, req)
        workflow = Workflow(user_id=user_id, name=req.name, description=req.description, current_version=1,
                            kind=kind)
        session.add(workflow)
        session.flush()
        version = self._write_version(session, workflow, 1, compiled)
        audit.record(session, user_id=user_id, event_type="workflow.created", action="create",
                     resource_type="workflow", resource_id=workflow.id,
                     details={"version": 1, "steps": len(compiled.definition.steps), "kind": kind}, meta=meta)
        session.flush()
        return workflow, version

    def update(self, user_id: uuid.UUID, workflow_id: uuid.UUID, data: dict[str, Any],
               meta: RequestMeta) -> WorkflowPublic:
        """A new version (current_version + 1); earlier versions, and the runs pinned to them, are untouched."""
        req = parse_create(data)
        with self.db.transaction() as session:
            # The row lock orders concurrent PUTs: each writes the next number, none collides.
            workflow = owned_workflow(session, user_id, workflow_id, for_update=True, editable=True)
            compiled = self.compile(session, user_id, req)
            number = workflow.current_version + 1
            version = self._write_version(session, workflow, number, compiled)
            workflow.current_version = number
            workflow.name = req.name
            workflow.description = req.description
            workflow.updated_at = utcnow()
            audit.record(session, user_id=user_id, event_type="workflow.updated", action="update",
                         resource_type="workflow", resource_id=workflow.id,
                         details={"version": number, "steps": len(compiled.definition.steps)}, meta=meta)
            session.flush()
            return public(workflow, version)

    @staticmethod
    def _write_version(session: Session, workflow: Workflow, number: int, compiled: Compiled) -> WorkflowVersion:
        # exclude_unset: a condition's operators are the fields it was given (`equals: null` is one), so the
        # stored definition must keep exactly what was sent for a later model_validate to mean the same.
        version = WorkflowVersion(workflow_id=workflow.id, version=number,
                                  definition=compiled.definition.model_dump(mode="json", exclude_unset=True),
                                  asl=compiled.asl, step_agent_types=compiled.step_agent_types)
        session.add(version)
        session.flush()
        return version

    def get(self, user_id: uuid.UUID, workflow_id: uuid.UUID) -> WorkflowPublic:
        with self.db.read() as session:
            workflow = owned_workflow(session, user_id, workflow_id)
            return public(workflow, current_version(session, workflow))

    def list(self, user_id: uuid.UUID, query: WorkflowListQuery, limit: int) -> tuple[list[Workflow], str | None]:
        """Newest first; one statement per page. Deleted workflows and orchestrator plans are not listed."""
        stmt = select(Workflow).where(Workflow.user_id == user_id, Workflow.deleted_at.is_(None),
                                      Workflow.kind == KIND_WORKFLOW)
        if query.cursor:
            stmt = stmt.where(after_cursor(Workflow.created_at, Workflow.id, query.cursor))
        stmt = stmt.order_by(Workflow.created_at.desc(), Workflow.id.desc()).limit(limit + 1)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def delete(self, user_id: uuid.UUID, workflow_id: uuid.UUID, meta: RequestMeta) -> None:
        with self.db.transaction() as session:
            workflow = owned_workflow(session, user_id, workflow_id, for_update=True, editable=True)
            workflow.deleted_at = utcnow()
            audit.record(session, user_id=user_id, event_type="workflow.deleted", action="delete",
                         resource_type="workflow", resource_id=workflow.id,
                         details={"version": workflow.current_version}, meta=meta)
