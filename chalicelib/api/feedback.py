"""POST/GET /tasks/{task_id}/feedback: rate a finished task's result (1..5 and a comment)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.http import endpoint, json_body, ok, path_uuid, principal, request_meta
from chalicelib.container import get_container
from chalicelib.schemas.feedback import FeedbackCreate

bp = Blueprint(__name__)


@bp.route("/tasks/{task_id}/feedback", methods=["POST"])
@endpoint
def submit_feedback(task_id: str) -> Response:
    request = bp.current_request
    user = principal(request)
    task_uuid = path_uuid(task_id, "task")
    created = get_container().feedback.submit(user.user_id, task_uuid, json_body(request, FeedbackCreate),
                                              request_meta(request))
    return ok(created, status=201, headers={"Location": f"/tasks/{task_uuid}/feedback"})


@bp.route("/tasks/{task_id}/feedback", methods=["GET"])
@endpoint
def get_feedback(task_id: str) -> Response:
    user = principal(bp.current_request)
    return ok(get_container().feedback.get(user.user_id, path_uuid(task_id, "task")))
