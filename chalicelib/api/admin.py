"""Admin operations. POST /admin/cache/clear: {"namespaces": [...]} or no body (every namespace).
GET /admin/dlq and POST /admin/dlq/{queue}/redrive: the agent queues' dead letters (docs/faults.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from chalice import Blueprint, Response
from pydantic import Field, StringConstraints

from chalicelib.api.http import endpoint, json_body, ok, principal, request_meta, validate
from chalicelib.container import get_container
from chalicelib.schemas.common import NAME_CHARS, PublicModel, StrictModel

bp = Blueprint(__name__)


Namespace = Annotated[str, StringConstraints(max_length=64), NAME_CHARS]


class CacheClearRequest(StrictModel):
    namespaces: list[Namespace] | None = Field(default=None, max_length=20)


class CacheClearResult(PublicModel):
    cleared: list[str]


@bp.route("/admin/cache/clear", methods=["POST"])
@endpoint
def clear_cache() -> Response:
    request = bp.current_request
    actor = principal(request)
    body = json_body(request, CacheClearRequest) if (request.raw_body or b"").strip() else CacheClearRequest()
    cleared = get_container().cache_admin.clear(actor, body.namespaces, request_meta(request))
    return ok(CacheClearResult(cleared=cleared))


# --- dead-letter queues (chalicelib.services.dlq_admin) ---------------------------------------------------------


class DlqQuery(StrictModel):
    sample: int = Field(default=5, ge=0, le=10)


class DeadLetterPublic(PublicModel):
    message_id: str
    task_id: uuid.UUID | None
    task_status: str | None  # None: the body names no task, or a task that no longer exists
    last_error: dict[str, Any] | None  # the task's error, as GET /tasks/{id} shows it
    receive_count: int
    sent_at: datetime | None
    body_preview: str


class DlqQueuePublic(PublicModel):
    queue: str  # the agent type: what POST /admin/dlq/{queue}/redrive takes
    source_queue: str
    dlq: str
    depth: int | None
    messages: list[DeadLetterPublic]
    error: str | None = None  # the DLQ could not be read (the others still are)


class DlqList(PublicModel):
    queues: list[DlqQueuePublic]


class RedriveRequest(StrictModel):
    limit: int = Field(default=100, ge=1, le=10_000)


class RedriveResult(PublicModel):
    queue: str
    method: str  # "move_task" (SQS moves them in the background) | "receive_send_delete"
    moved: int | None  # exact with receive_send_delete; None with move_task
    approximate: int | None = None  # the DLQ's depth when the move task started
    task_handle: str | None = None


@bp.route("/admin/dlq", methods=["GET"])
@endpoint
def list_dlq() -> Response:
    request = bp.current_request
    actor = principal(request)
    query = validate(DlqQuery, dict(request.query_params or {}), ("query",))
    peeks, states = get_container().dlq_admin.inspect(actor, query.sample)
    queues = [DlqQueuePublic(
        queue=p.agent_type, source_queue=p.queue, dlq=p.dlq, depth=p.depth, error=p.error,
        messages=[DeadLetterPublic(
            message_id=m.message_id, task_id=m.task_id, receive_count=m.receive_count, sent_at=m.sent_at,
            body_preview=m.body_preview,
            task_status=states[m.task_id].status if m.task_id in states else None,
            last_error=states[m.task_id].error if m.task_id in states else None) for m in p.messages])
        for p in peeks]
    return ok(DlqList(queues=queues))


@bp.route("/admin/dlq/{queue}/redrive", methods=["POST"])
@endpoint
def redrive_dlq(queue: str) -> Response:
    request = bp.current_request
    actor = principal(request)
    body = json_body(request, RedriveRequest) if (request.raw_body or b"").strip() else RedriveRequest()
    outcome = get_container().dlq_admin.redrive(actor, queue, body.limit, request_meta(request))
    return ok(RedriveResult(queue=queue, method=outcome.method, moved=outcome.moved,
                            approximate=outcome.approximate, task_handle=outcome.task_handle))
