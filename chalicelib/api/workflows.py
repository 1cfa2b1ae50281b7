"""/workflows and /runs: define pipelines, run them, watch, approve, cancel, redrive (docs/workflows-api.md)."""

from __future__ import annotations

import uuid

from chalice import Blueprint, Response

from chalicelib.api.http import (
    endpoint,
    idempotency_key,
    json_body,
    ok,
    path_uuid,
    principal,
    replay_headers,
    request_meta,
    validate,
)
from chalicelib.container import get_container
from chalicelib.domain.rbac import Role
from chalicelib.errors import NotFoundError, RunNotFoundError, WorkflowNotFoundError
from chalicelib.schemas.common import Page
from chalicelib.schemas.events import WaitQuery
from chalicelib.schemas.workflows import (
    DecisionRequest,
    RawObject,
    RunListQuery,
    RunStart,
    RunSummary,
    WorkflowListQuery,
    WorkflowSummary,
)

bp = Blueprint(__name__)


def _workflow_id(value: str) -> uuid.UUID:
    """A malformed id names nothing: 404 with the same code as an unknown one."""
    try:
        return path_uuid(value, "workflow")
    except NotFoundError as exc:
        raise WorkflowNotFoundError(exc.message, exc.details) from None


def _run_id(value: str) -> uuid.UUID:
    try:
        return path_uuid(value, "run")
    except NotFoundError as exc:
        raise RunNotFoundError(exc.message, exc.details) from None


def _limit(requested: int | None) -> int:
    settings = get_container().settings
    return min(requested or settings.page_size_default, settings.page_size_max)


@bp.route("/workflows", methods=["POST"])
@endpoint
def create_workflow() -> Response:
    request = bp.current_request
    user = principal(request)
    # Read as any object: the service reports every violation of the definition at once (422 WORKFLOW_INVALID).
    data = json_body(request, RawObject).root
    workflow = get_container().workflows.create(user.user_id, data, request_meta(request))
    return ok(workflow, status=201, headers={"Location": f"/workflows/{workflow.id}"})


@bp.route("/workflows", methods=["GET"])
@endpoint
def list_workflows() -> Response:
    request = bp.current_request
    user = principal(request)
    query = validate(WorkflowListQuery, dict(request.query_params or {}), ("query",))
    rows, cursor = get_container().workflows.list(user.user_id, query, _limit(query.limit))
    return ok(Page[WorkflowSummary](items=[WorkflowSummary.model_validate(w) for w in rows], next_cursor=cursor))


@bp.route("/workflows/{workflow_id}", methods=["GET"])
@endpoint
def get_workflow(workflow_id: str) -> Response:
    user = principal(bp.current_request)
    return ok(get_container().workflows.get(user.user_id, _workflow_id(workflow_id)))


@bp.route("/workflows/{workflow_id}", methods=["PUT"])
@endpoint
def update_workflow(workflow_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    data = json_body(request, RawObject).root
    return ok(get_container().workflows.update(user.user_id, _workflow_id(workflow_id), data,
                                               request_meta(request)))


@bp.route("/workflows/{workflow_id}", methods=["DELETE"])
@endpoint
def delete_workflow(workflow_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    get_container().workflows.delete(user.user_id, _workflow_id(workflow_id), request_meta(request))
    return Response(body="", status_code=204)


@bp.route("/workflows/{workflow_id}/runs", methods=["POST"])
@endpoint
def start_run(workflow_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    wid = _workflow_id(workflow_id)
    body = json_body(request, RunStart) if (request.raw_body or b"").strip() else RunStart()
    key = idempotency_key(request, f"POST /workflows/{wid}/runs", body)
    result = get_container().runs.start(user.user_id, wid, body, request_meta(request), key)
    return ok(result.body, status=result.status_code,
              headers={"Location": f"/runs/{result.run_id}", **replay_headers(result.replayed)})


@bp.route("/workflows/{workflow_id}/runs", methods=["GET"])
@endpoint
def list_runs(workflow_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    wid = _workflow_id(workflow_id)
    query = validate(RunListQuery, dict(request.query_params or {}), ("query",))
    rows, cursor = get_container().runs.list(user.user_id, wid, query, _limit(query.limit))
    return ok(Page[RunSummary](items=rows, next_cursor=cursor))


@bp.route("/runs/{run_id}", methods=["GET"])
@endpoint
def get_run(run_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    query = validate(WaitQuery, dict(request.query_params), ("query",)) if request.query_params else None
    if query is not None and query.wait is not None:
        return ok(get_container().long_poll.run(user.user_id, _run_id(run_id), query.wait))
    return ok(get_container().runs.get(user.user_id, _run_id(run_id)))


@bp.route("/runs/{run_id}/steps/{step_id}/decision", methods=["POST"])
@endpoint
def decide(run_id: str, step_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    body = json_body(request, DecisionRequest)
    return ok(get_container().runs.decide(user.user_id, user.role == Role.ADMIN, _run_id(run_id),
                                          step_id, body, request_meta(request)))


@bp.route("/runs/{run_id}/cancel", methods=["POST"])
@endpoint
def cancel_run(run_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    return ok(get_container().runs.cancel(user.user_id, _run_id(run_id), request_meta(request)))


@bp.route("/runs/{run_id}/redrive", methods=["POST"])
@endpoint
def redrive_run(run_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    return ok(get_container().runs.redrive(user.user_id, _run_id(run_id), request_meta(request)))
