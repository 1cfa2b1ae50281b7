from __future__ import annotations

from typing import TYPE_CHECKING

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
from chalicelib.schemas.common import Page
from chalicelib.schemas.events import WaitQuery
from chalicelib.schemas.tasks import TaskCreate, TaskListQuery, TaskPublic, TaskResultPublic

if TYPE_CHECKING:
    from chalicelib.db.models import Task

bp = Blueprint(__name__)


def task_public(task: Task, *, with_result: bool) -> TaskPublic:
    data = {name: getattr(task, name) for name in TaskPublic.model_fields if name != "result"}
    result = task.result if with_result else None
    return TaskPublic(**data, result=TaskResultPublic.model_validate(result) if result is not None else None)


@bp.route("/tasks", methods=["POST"])
@endpoint
def create_task() -> Response:
    request = bp.current_request
    user = principal(request)
    body = json_body(request, TaskCreate)
    key = idempotency_key(request, "POST /tasks", body)
    if key is not None:
        result = get_container().tasks.create_idempotent(user.user_id, body, request_meta(request), key)
        return ok(result.body, status=result.status_code,
                  headers={"Location": f"/tasks/{result.task_id}", **replay_headers(result.replayed)})
    task = get_container().tasks.create(user.user_id, body, request_meta(request))
    return ok(task_public(task, with_result=False), status=202, headers={"Location": f"/tasks/{task.id}"})


@bp.route("/tasks", methods=["GET"])
@endpoint
def list_tasks() -> Response:
    request = bp.current_request
    user = principal(request)
    query = validate(TaskListQuery, dict(request.query_params or {}), ("query",))
    settings = get_container().settings
    limit = min(query.limit or settings.page_size_default, settings.page_size_max)
    rows, cursor = get_container().tasks.list(user.user_id, query, limit)
    return ok(Page[TaskPublic](items=[task_public(t, with_result=False) for t in rows], next_cursor=cursor))


@bp.route("/tasks/{task_id}", methods=["GET"])
@endpoint
def get_task(task_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    # Only a query string is validated: the plain read (a cached task's hot path) skips the model.
    query = validate(WaitQuery, dict(request.query_params), ("query",)) if request.query_params else None
    if query is not None and query.wait is not None:
        return ok(get_container().long_poll.task(user.user_id, path_uuid(task_id, "task"), query.wait))
    return ok(get_container().tasks.get(user.user_id, path_uuid(task_id, "task")))


@bp.route("/tasks/{task_id}/cancel", methods=["POST"])
@endpoint
def cancel_task(task_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    task = get_container().tasks.cancel(user.user_id, path_uuid(task_id, "task"), request_meta(request))
    return ok(task_public(task, with_result=True))
