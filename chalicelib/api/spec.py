"""What every HTTP route promises: the table the OpenAPI document is built from.

ADDING A ROUTE? Add one entry to ROUTES below, keyed by (METHOD, path) exactly as written in `@bp.route`.
tests/integration/test_openapi.py fails, naming the route, until the entry exists (and for an entry
whose route is gone). The generator (chalicelib/api/openapi.py) joins this table with `app.routes`.

Error responses are derived so entries stay short; each uses the ErrorEnvelope schema with `error.code`
limited to the codes the app maps to that status (chalicelib/api/http.py STATUS + chalicelib/errors.py):
  - auth "bearer" / "agent-key"  -> 401
  - a request body               -> 400 (not a JSON object) and 422 (validation)
  - a query model                -> 422
  - a path parameter             -> 404 (malformed ids are "not found" too)
  - every route                  -> 500, and 429 unless chalicelib.ratelimit exempts it
Anything else a route can answer goes in `errors` (statuses; e.g. 403 for admin-only, 409, 503),
and non-error alternatives (a 503 that still carries the normal body) in `responses`. Required request
headers other than the credentials go in `headers`. auth "agent-key" is the X-Agent-Key header.

This module is imported lazily (by GET /openapi.json and tests), never at cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from chalicelib.api.admin import CacheClearRequest, CacheClearResult, DlqList, DlqQuery, RedriveRequest, RedriveResult
from chalicelib.api.agents import AgentListQuery
from chalicelib.schemas.agents import AgentCreate, AgentPublic, AgentUpdate
from chalicelib.schemas.audit import AuditLogPublic, AuditLogQuery
from chalicelib.schemas.common import Page
from chalicelib.schemas.engines import EngineInput, EngineList
from chalicelib.schemas.events import EventListQuery, EventPage, WaitQuery
from chalicelib.schemas.feedback import FeedbackCreate, FeedbackCreated, FeedbackPublic
from chalicelib.schemas.ingress import ProducerKeyCreate, ProducerKeyCreated, ProducerKeyList
from chalicelib.schemas.messages import MessageListQuery, MessagePublic
from chalicelib.schemas.monitoring import StatusPublic
from chalicelib.schemas.provider_keys import ProviderKeyList, ProviderKeyPublic, ProviderKeyPut
from chalicelib.schemas.responses import AgentTypeList, HealthReport, LivenessReport
from chalicelib.schemas.tasks import TaskCreate, TaskListQuery, TaskPublic
from chalicelib.schemas.users import (
    LoginRequest,
    LogoutRequest,
    PasswordChange,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UserAdminUpdate,
    UserListQuery,
    UserPublic,
)
from chalicelib.schemas.webhooks import (
    DeliveryListQuery,
    DeliveryPublic,
    SecretRotation,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
    WebhookUpdate,
)
from chalicelib.schemas.workers import (
    AgentCreated,
    AgentKeyPublic,
    AgentStatusPublic,
    CompleteRequest,
    FailRequest,
    HeartbeatResponse,
    LeaseRequest,
    LeaseResponse,
    TaskOutcomePublic,
)
from chalicelib.schemas.workflows import (
    DecisionRequest,
    RunListQuery,
    RunPublic,
    RunStart,
    RunSummary,
    WorkflowListQuery,
    WorkflowPublic,
    WorkflowSummary,
)
from chalicelib.workflows.definition import WorkflowCreate

Auth = Literal["bearer", "agent-key", "none"]
JSON = "application/json"
#: a response body given as a model, as a raw JSON Schema (non-JSON media, free-form objects), or none
Body = type[BaseModel] | dict[str, Any] | None


@dataclass(frozen=True)
class RouteSpec:
    summary: str
    tag: str
    response: Body = None  # the success body; None means no body (e.g. 204)
    status: int = 200
    auth: Auth = "bearer"
    body: type[BaseModel] | None = None
    body_required: bool = True  # False: an empty body means "all defaults"
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()  # extra error statuses, beyond the derived ones
    responses: Mapping[int, type[BaseModel]] = field(default_factory=dict)  # extra non-envelope responses
    media_types: tuple[str, ...] = (JSON,)  # of the success response
    description: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # required request headers: name -> description
    #: optional request headers: name -> OpenAPI parameter fields (description, schema)
    optional_headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: headers of the success response: name -> OpenAPI header object
    response_headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


TEXT: dict[str, Any] = {"type": "string"}
AGENT_ID_HEADER = {"X-Agent-Id": "The id of the external agent whose X-Agent-Key is presented."}
#: any create route that takes an Idempotency-Key (chalicelib.services.idempotency; docs/delivery.md)
IDEMPOTENCY_KEY_HEADER: dict[str, Mapping[str, Any]] = {"Idempotency-Key": {
    "description": "Your unique id for this request (1-255 printable ASCII characters, no spaces), kept for 24 h "
                   "per user: a retry with the same key and body returns the original response and creates "
                   "nothing; the same key with another body is 409 IDEMPOTENCY_KEY_REUSED; a malformed key is 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}}}
IDEMPOTENT_REPLAY_HEADERS: dict[str, Mapping[str, Any]] = {
    "Idempotent-Replayed": {"description": "`true` when this is the stored response of an earlier request with "
                                           "the same Idempotency-Key (absent otherwise).",
                            "schema": {"type": "string", "enum": ["true"]}},
    "Location": {"description": "The created resource.", "schema": {"type": "string"}}}

ROUTES: dict[tuple[str, str], RouteSpec] = {
    # --- auth -------------------------------------------------------------------------------------------------
    ("POST", "/auth/register"): RouteSpec(
        "Create an account", "auth", UserPublic, 201, auth="none", body=RegisterRequest, errors=(409,),
        description="Passwords over 72 bytes (UTF-8) are refused with 422. 409 when the username or email "
                    "is taken."),
    ("POST", "/auth/login"): RouteSpec(
        "Log in: an access and a refresh token", "auth", TokenPair, auth="none", body=LoginRequest,
        errors=(401, 503),
        description="`username` is the username or the email address. Every failure is the same 401. "
                    "503 when the login rate limiter cannot be reached (it fails closed)."),
    ("POST", "/auth/refresh"): RouteSpec(
        "Rotate a refresh token into a new pair", "auth", TokenPair, auth="none", body=RefreshRequest,
        errors=(401, 503),
        description="The presented refresh token is retired; presenting a retired one revokes its family."),
    ("POST", "/auth/logout"): RouteSpec(
        "Log out: revoke this session's tokens", "auth", None, 204, body=LogoutRequest, body_required=False,
        errors=(503,), description="The body is optional; a refresh token given in it is revoked too."),
    # --- users ------------------------------------------------------------------------------------------------
    ("GET", "/users"): RouteSpec("List users (admin)", "users", Page[UserPublic], query=UserListQuery,
                                 errors=(403,)),
    ("GET", "/users/{user_id}"): RouteSpec(
        "Read a user", "users", UserPublic, description="A user reads only themself (others are 404)."),
    ("PUT", "/users/{user_id}"): RouteSpec(
        "Update a user", "users", UserPublic, body=UserAdminUpdate, errors=(409, 503),
        description="A user may set only `email` on themself; `role` and `is_active` are admin-only "
                    "(unknown fields, 422, for anyone else)."),
    ("PUT", "/users/{user_id}/password"): RouteSpec(
        "Change a password (revokes every session)", "users", TokenPair, body=PasswordChange,
        errors=(403, 409, 503), description="Returns a fresh token pair; every other session is revoked."),
    # --- agents -----------------------------------------------------------------------------------------------
    ("POST", "/agents"): RouteSpec(
        "Create an agent", "agents", AgentCreated, 201, body=AgentCreate, errors=(409,),
        description="`mode: external` creates a self-hosted agent: the answer carries its `api_key`, shown only "
                    "this once (only its sha256 is stored). 409 QUOTA_EXCEEDED past the agents-per-user quota; "
                    "422 FIELD_TOO_LARGE when `metadata` or `config` is over its size limit."),
    ("POST", "/agents/{agent_id}/api-key"): RouteSpec(
        "Rotate an external agent's API key", "agents", AgentKeyPublic, errors=(409,),
        description="The new key is shown once; the old one stops working at once. 409 for a managed agent."),
    ("GET", "/agents/{agent_id}/status"): RouteSpec(
        "An agent's status, last heartbeat, in-flight tasks (with lease expiry) and task counts", "agents",
        AgentStatusPublic),
    ("GET", "/agents"): RouteSpec("List your agents", "agents", Page[AgentPublic], query=AgentListQuery),
    ("GET", "/agents/{agent_id}"): RouteSpec("Read an agent", "agents", AgentPublic),
    ("PUT", "/agents/{agent_id}"): RouteSpec("Update an agent", "agents", AgentPublic, body=AgentUpdate),
    ("DELETE", "/agents/{agent_id}"): RouteSpec("Delete an agent", "agents", None, 204),
    # --- provider keys ----------------------------------------------------------------------------------------
    ("GET", "/provider-keys"): RouteSpec(
        "List your stored provider keys (names only)", "provider-keys", ProviderKeyList,
        description="Keys are never returned, only their names and dates."),
    ("PUT", "/provider-keys/{name}"): RouteSpec(
        "Store (or replace) a provider key for your own endpoint", "provider-keys", ProviderKeyPublic,
        body=ProviderKeyPut, errors=(503,), responses={201: ProviderKeyPublic},
        description="An agent with `config.base_url` (your own endpoint) and `config.key` = this name sends it "
                    "as a Bearer token to that endpoint only. Encrypted at rest (AES-256-GCM); never returned. "
                    "201 when created, 200 when replaced; 503 when the stage has no encryption key."),
    ("DELETE", "/provider-keys/{name}"): RouteSpec("Delete a stored provider key", "provider-keys", None, 204),
    # --- producer keys (docs/producers.md) ---------------------------------------------------------------------
    ("POST", "/producer-keys"): RouteSpec(
        "Create a signing key for an event producer", "producer-keys", ProducerKeyCreated, 201,
        body=ProducerKeyCreate, body_required=False, errors=(503,),
        description="The secret is shown in this answer only. Sign each ingress message's exact body with it "
                    "(hex HMAC-SHA256 in the `ymera-signature` message attribute, the key id in `ymera-key-id`); "
                    "the task is created as you. 503 when the stage has no encryption key."),
    ("GET", "/producer-keys"): RouteSpec(
        "List your producer keys (never their secrets)", "producer-keys", ProducerKeyList),
    ("DELETE", "/producer-keys/{key_id}"): RouteSpec(
        "Revoke a producer key", "producer-keys", None, 204,
        description="Messages signed with it are refused from now on (to the ingress DLQ, reason `revoked_key`)."),
    # --- webhooks (docs/webhooks.md) ---------------------------------------------------------------------------
    ("POST", "/webhooks"): RouteSpec(
        "Subscribe a URL to your events", "webhooks", WebhookCreated, 201, body=WebhookCreate, errors=(409, 503),
        description="Deliveries are POSTed as JSON (the event as GET /events shows it) with the Standard Webhooks "
                    "headers `webhook-id` (stable across retries: deduplicate on it), `webhook-timestamp` and "
                    "`webhook-signature: v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">`, keyed with the "
                    "`secret` of this answer (shown once). 2xx is success; network errors, 5xx and 429 are retried "
                    "with exponential backoff and jitter for 24 h (Retry-After honoured up to an hour); other "
                    "statuses are not retried. After 5 deliveries in a row end failed, the subscription is "
                    "disabled (a `webhook.disabled` event, an audit row). 422 WEBHOOK_URL_REFUSED for a URL that "
                    "is not https (outside development) or resolves to a loopback, private, link-local or "
                    "metadata address (unless the stage allows private targets); 409 QUOTA_EXCEEDED past the "
                    "per-user cap; 503 when the stage has no encryption key.",
        response_headers={"Location": {"description": "The created subscription.", "schema": {"type": "string"}}}),
    ("GET", "/webhooks"): RouteSpec("List your webhooks (never their secrets)", "webhooks", WebhookList),
    ("GET", "/webhooks/{webhook_id}"): RouteSpec(
        "Read a webhook", "webhooks", WebhookPublic,
        description="404 WEBHOOK_NOT_FOUND for another user's subscription."),
    ("PUT", "/webhooks/{webhook_id}"): RouteSpec(
        "Change a webhook's URL, event types, description or status", "webhooks", WebhookPublic,
        body=WebhookUpdate,
        description="Only the fields sent change. `status: active` re-enables a disabled subscription (its failure "
                    "count starts again); `disabled` stops deliveries and abandons pending ones. A new URL is "
                    "checked as on create (422 WEBHOOK_URL_REFUSED)."),
    ("DELETE", "/webhooks/{webhook_id}"): RouteSpec(
        "Delete a webhook and its delivery log", "webhooks", None, 204),
    ("POST", "/webhooks/{webhook_id}/rotate-secret"): RouteSpec(
        "Replace a webhook's signing secret", "webhooks", WebhookCreated, body=SecretRotation, body_required=False,
        errors=(503,),
        description="The new secret is in this answer only; deliveries are signed with it from now on, and also "
                    "with the old one (two space-separated `v1,` signatures) until `previous_secret_expires_at` "
                    "(default 24 h; `previous_secret_valid_seconds: 0` stops the old one at once)."),
    ("POST", "/webhooks/{webhook_id}/test"): RouteSpec(
        "Send a `webhook.test` event now", "webhooks", DeliveryPublic, errors=(409, 503),
        description="One attempt is made within this request and the answer shows it (status code, latency, "
                    "error); a retryable failure is retried like any delivery. 409 WEBHOOK_DISABLED for a disabled "
                    "subscription."),
    ("GET", "/webhooks/{webhook_id}/deliveries"): RouteSpec(
        "A webhook's deliveries with every attempt (newest first)", "webhooks", Page[DeliveryPublic],
        query=DeliveryListQuery,
        description="Each delivery: its event, status (pending, succeeded, failed: not retried, abandoned: retries "
                    "over or the subscription disabled), next attempt, and `attempt_log` (status code, latency, "
                    "error, the start of the answer, when the retry was scheduled). Cursor pages; `status` filters."),
    ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): RouteSpec(
        "Send a delivery again now", "webhooks", DeliveryPublic, errors=(409, 503),
        description="Whatever its status; same `webhook-id` (it is the same message), a fresh signature and a "
                    "new 24 h retry window. One attempt within this request, as for test. 409 WEBHOOK_DISABLED "
                    "for a disabled subscription."),
    ("GET", "/agents/{agent_id}/messages"): RouteSpec(
        "An agent's inbox (newest first)", "agents", Page[MessagePublic], query=MessageListQuery,
        description="Messages other agents sent it (communication agent). `unread=true`: only unread ones."),
    ("POST", "/agents/{agent_id}/messages/{message_id}/read"): RouteSpec(
        "Mark a message read", "agents", MessagePublic, description="Idempotent: keeps the first read_at."),
    ("GET", "/agent-types"): RouteSpec(
        "List agent types with their input and config schemas", "agents", AgentTypeList),
    # --- tasks ------------------------------------------------------------------------------------------------
    ("POST", "/tasks"): RouteSpec(
        "Create a task (queued for its agent)", "tasks", TaskPublic, 202, body=TaskCreate, errors=(404, 409),
        description="Send `agent_id` or only `agent_type` (exactly one; 422 otherwise): with a type, one of your "
                    "active agents of it with capacity is picked, best quality estimate first, then fewest tasks in "
                    "flight (409 NO_AGENT_AVAILABLE when none). 404 when the agent does not exist or is not yours; "
                    "409 when it is not active; 422 when input_data does not match the agent type's input schema; "
                    "429 QUOTA_EXCEEDED when today's (UTC) task quota is spent. With an Idempotency-Key, a retry "
                    "answers the first response again (Idempotent-Replayed: true).",
        optional_headers=IDEMPOTENCY_KEY_HEADER, response_headers=IDEMPOTENT_REPLAY_HEADERS),
    ("GET", "/tasks"): RouteSpec("List your tasks", "tasks", Page[TaskPublic], query=TaskListQuery),
    ("GET", "/tasks/{task_id}"): RouteSpec(
        "Read a task with its result (optionally waiting for it to finish)", "tasks", TaskPublic, query=WaitQuery,
        description="With `wait=N` (0 < N <= 20 seconds) a long-poll: the answer comes as soon as the task is "
                    "completed, failed, cancelled or timed_out, or after N seconds with the task as it is then "
                    "(docs/events.md)."),
    ("POST", "/tasks/{task_id}/cancel"): RouteSpec("Cancel a task", "tasks", TaskPublic, errors=(409,),
                                                   description="409 when the task is already final."),
    ("POST", "/tasks/{task_id}/feedback"): RouteSpec(
        "Rate a finished task's result (1..5)", "tasks", FeedbackCreated, 201, body=FeedbackCreate, errors=(409,),
        description="409 when the task has not finished or you already rated it. The rating is counted into the "
                    "agent's quality estimate by your learning agent (a task is created for it) or by the "
                    "platform's sweep."),
    ("GET", "/tasks/{task_id}/feedback"): RouteSpec("Read your rating of a task", "tasks", FeedbackPublic),
    # --- events (docs/events.md) ------------------------------------------------------------------------------
    ("GET", "/events"): RouteSpec(
        "Your events after a cursor (catch up after being offline)", "events", EventPage, query=EventListQuery,
        description="Oldest first: every status change of your tasks, runs and run steps, approvals waiting and "
                    "webhooks disabled, as WebSocket messages and webhook bodies carry them. `event_id` is "
                    "gap-free per user: pass the last one you saw as `after` (default 0), `limit` 1..500 "
                    "(default 100); follow `next_after` while `has_more`. Events are kept for "
                    "`events_retention_days` (default 7)."),
    # --- workflows and runs (docs/workflows-api.md) ------------------------------------------------------------
    ("POST", "/workflows"): RouteSpec(
        "Create a workflow (version 1)", "workflows", WorkflowPublic, 201, body=WorkflowCreate,
        description="Steps run agents (`agent_type`, or one of your agents by `agent_id`), engines, or approval "
                    "gates, with dependencies, references, conditions and fan-out (docs/workflows.md). The answer "
                    "carries the definition and the ASL it compiled to (queue URLs as placeholders). 422 "
                    "WORKFLOW_INVALID lists every violation at once in `details.violations` ({path, code, "
                    "message}); another user's agent is an unknown agent."),
    ("GET", "/workflows"): RouteSpec(
        "List your workflows", "workflows", Page[WorkflowSummary], query=WorkflowListQuery,
        description="Newest first, cursor pages. Deleted workflows are not listed."),
    ("GET", "/workflows/{workflow_id}"): RouteSpec(
        "Read a workflow: its current version's definition and ASL", "workflows", WorkflowPublic,
        description="404 WORKFLOW_NOT_FOUND for another user's workflow or a deleted one."),
    ("PUT", "/workflows/{workflow_id}"): RouteSpec(
        "Replace a workflow's definition: a new version", "workflows", WorkflowPublic, body=WorkflowCreate,
        description="Writes version current_version + 1; earlier versions, and runs pinned to them, are unchanged. "
                    "422 WORKFLOW_INVALID as for create."),
    ("DELETE", "/workflows/{workflow_id}"): RouteSpec(
        "Delete a workflow (soft)", "workflows", None, 204,
        description="New runs are refused (404); runs already started finish and stay readable at /runs/{run_id}."),
    ("POST", "/workflows/{workflow_id}/runs"): RouteSpec(
        "Start a run of the current version", "workflows", RunPublic, 202, body=RunStart, body_required=False,
        errors=(409, 503),
        description="`input` is checked against the workflow's input_schema (422 RUN_INPUT_INVALID with "
                    "`details.errors`). 503 DEPENDENCY_UNAVAILABLE when Step Functions cannot be reached: the run "
                    "is then `failed` (START_FAILED), never left `running`. 429 QUOTA_EXCEEDED when today's task "
                    "quota is spent. With an Idempotency-Key a retry answers the first response again.",
        optional_headers=IDEMPOTENCY_KEY_HEADER, response_headers=IDEMPOTENT_REPLAY_HEADERS),
    ("GET", "/workflows/{workflow_id}/runs"): RouteSpec(
        "List a workflow's runs", "workflows", Page[RunSummary], query=RunListQuery,
        description="Newest first, cursor pages; filters `status`, `created_after`, `created_before`."),
    ("GET", "/runs/{run_id}"): RouteSpec(
        "Read a run with its step timeline (optionally waiting for it)", "workflows", RunPublic, query=WaitQuery,
        description="Every step in definition order: status, attempts, times, task, output (inline up to 64 KB of "
                    "JSON, else a reference to the task), error, for_each items, approval state. With `wait=N` "
                    "(0 < N <= 20 seconds) a long-poll: the answer comes as soon as the run ended or waits for an "
                    "approval, or after N seconds with the run as it is then (docs/events.md)."),
    ("POST", "/runs/{run_id}/steps/{step_id}/decision"): RouteSpec(
        "Approve or reject a waiting approval step", "workflows", RunPublic, body=DecisionRequest, errors=(409,),
        description="The run's owner or an admin, once: 409 APPROVAL_NOT_PENDING when the step is not waiting, "
                    "409 APPROVAL_ALREADY_DECIDED on a second decision. `payload` is checked against the step's "
                    "input_schema (422). A rejection fails the step (APPROVAL_REJECTED) and the run."),
    ("POST", "/runs/{run_id}/cancel"): RouteSpec(
        "Cancel a run and its open tasks", "workflows", RunPublic, errors=(409,),
        description="409 RUN_NOT_CANCELLABLE when the run already ended."),
    ("POST", "/runs/{run_id}/redrive"): RouteSpec(
        "Resume a failed or timed-out run from its failed steps", "workflows", RunPublic, errors=(409, 503),
        description="Succeeded steps keep their outputs and are not run again. 409 RUN_NOT_REDRIVABLE unless the "
                    "run is failed or timed_out (or when its workflow was deleted)."),
    # --- workers: external agents, authenticated with X-Agent-Key (task routes also send X-Agent-Id) ---------
    ("POST", "/agents/{agent_id}/lease"): RouteSpec(
        "Lease queued tasks (long polling)", "workers", LeaseResponse, auth="agent-key", body=LeaseRequest,
        body_required=False, errors=(409,),
        description="Up to `max_tasks` of the agent's queued tasks, most urgent first, each leased for "
                    "`lease_seconds`; waits up to `wait_seconds` for one. Never more than `max_concurrency` in "
                    "flight. Counts as a heartbeat. 409 AGENT_INACTIVE for an inactive agent."),
    ("POST", "/agents/{agent_id}/heartbeat"): RouteSpec(
        "Heartbeat: extend every lease the agent holds", "workers", HeartbeatResponse, auth="agent-key",
        description="A task missing from the answer is no longer held (cancelled, or its lease expired)."),
    ("POST", "/tasks/{task_id}/complete"): RouteSpec(
        "Complete a leased task with its result", "workers", TaskOutcomePublic, auth="agent-key",
        body=CompleteRequest, body_required=False, errors=(409,), headers=AGENT_ID_HEADER,
        description="Send X-Agent-Id with the key. 404 when the task is not this agent's; 409 LEASE_NOT_HELD when "
                    "it is not `processing` or `attempt` names an older lease."),
    ("POST", "/tasks/{task_id}/fail"): RouteSpec(
        "Fail a leased task (or put it back: retryable)", "workers", TaskOutcomePublic, auth="agent-key",
        body=FailRequest, errors=(409,), headers=AGENT_ID_HEADER,
        description="`retryable: true` requeues while attempts remain. Errors as for complete."),
    # --- platform ---------------------------------------------------------------------------------------------
    ("GET", "/health"): RouteSpec(
        "Liveness: the API answers (no dependency is checked)", "platform", LivenessReport, auth="none",
        description="No I/O and never rate limited: for load balancers and uptime checks."),
    ("GET", "/health/ready"): RouteSpec(
        "Readiness: each dependency with its latency", "platform", HealthReport, auth="none",
        responses={503: HealthReport},
        description="503 (same body) when a required dependency is down. Each container answers from its last "
                    "check for YMERA_READINESS_CACHE_SECONDS (`age_seconds` says how old it is)."),
    ("GET", "/metrics"): RouteSpec(
        "Prometheus metrics (admin, or the scrape token)", "platform", TEXT, errors=(403,),
        media_types=("text/plain",),
        description="Prometheus text exposition. Bearer: an admin's access token or YMERA_METRICS_TOKEN."),
    ("GET", "/status"): RouteSpec(
        "Version, uptime, agent counts, queue depths", "platform", StatusPublic,
        description="Admins: every agent and queue (`scope: platform`). Others: their own agents' counts and no "
                    "queue depths (`scope: user`). `websocket_url`: where to connect for live events "
                    "(docs/websocket.md), null when the stage has no WebSocket API."),
    ("POST", "/admin/cache/clear"): RouteSpec(
        "Clear cache namespaces (admin)", "admin", CacheClearResult, body=CacheClearRequest,
        body_required=False, errors=(403,), description="No body (or no `namespaces`) clears every namespace."),
    ("GET", "/admin/dlq"): RouteSpec(
        "Dead-letter queues: depth and a sample (admin)", "admin", DlqList, query=DlqQuery, errors=(403, 503),
        description="Peeks without consuming (VisibilityTimeout=0, nothing deleted). Each sampled message names "
                    "its task with the task's status and last error. A DLQ that cannot be read has `error`."),
    ("POST", "/admin/dlq/{queue}/redrive"): RouteSpec(
        "Move dead letters back to their queue (admin, audited)", "admin", RedriveResult, body=RedriveRequest,
        body_required=False, errors=(403, 404, 503),
        description="`queue` is the agent type. Uses SQS StartMessageMoveTask where the endpoint supports it "
                    "(`moved` is then null and `approximate` the depth), receive/send/delete otherwise (`moved` is "
                    "exact, at most `limit`). Redriven messages of tasks that already finished are no-ops."),
    ("GET", "/audit-logs"): RouteSpec(
        "Audit trail (admins: everyone's; users: their own)", "admin", Page[AuditLogPublic], query=AuditLogQuery,
        errors=(403, 404)),
    # --- engines (docs/engines.md) -------------------------------------------------------------------------------
    ("GET", "/engines"): RouteSpec(
        "The platform's engines: what each takes and answers, with an example", "engines", EngineList,
        description="Every registered engine (analytics, performance, ...). POST an engine's `example` to "
                    "`/engines/{name}` to try it; a workflow step runs it with `engine: \"<name>\"`."),
    ("POST", "/engines/{name}"): RouteSpec(
        "Run an engine now, over your own data", "engines", {"type": "object"}, body=EngineInput,
        body_required=False,
        description="Synchronous. The body is the engine's input (an empty body is `{}`), checked against its "
                    "`input_schema`: 422 ENGINE_INPUT_INVALID lists every violation; an unknown name is 404 "
                    "ENGINE_NOT_FOUND. The answer matches the engine's `output_schema`. Engines see the "
                    "caller's tasks and runs only; an admin's cover every user's and say `\"scope\": \"all\"`."),
    # --- this description -------------------------------------------------------------------------------------
    ("GET", "/openapi.json"): RouteSpec("This OpenAPI document", "docs", {"type": "object"}, auth="none"),
    ("GET", "/docs"): RouteSpec("Interactive API docs (Swagger UI, no external assets)", "docs", TEXT,
                                auth="none", media_types=("text/html",)),
    ("GET", "/docs/assets/{name}"): RouteSpec(
        "A static asset of the docs page", "docs", TEXT, auth="none",
        media_types=("application/javascript", "text/css", "text/plain")),
    # --- the web console (docs/console.md) ----------------------------------------------------------------------
    ("GET", "/console"): RouteSpec("The web console (a page of ES modules, no external assets)", "docs", TEXT,
                                   auth="none", media_types=("text/html",)),
    ("GET", "/console/assets/{name}"): RouteSpec(
        "A static asset of the web console", "docs", TEXT, auth="none",
        media_types=("application/javascript", "text/css", "image/svg+xml", "text/plain")),
}

TAGS: dict[str, str] = {
    "auth": "Registration, login and sessions (JWT access + rotating refresh tokens).",
    "users": "Accounts. Another user's account is 404 unless you are an admin.",
    "agents": "Agents and agent types. Another user's agent is 404.",
    "tasks": "Tasks and their results. Another user's task is 404.",
    "workflows": "Workflows (pipelines of agent, engine and approval steps on Step Functions) and their runs. "
                 "Another user's workflow or run is 404.",
    "workers": "The API of external agents (self-hosted workers): lease, heartbeat, complete, fail.",
    "events": "Your event ledger: status changes of tasks, runs and steps, numbered per user (docs/events.md).",
    "webhooks": "Signed HTTP deliveries of your events to your URLs, retried, with a delivery log. Another "
                "user's webhook is 404.",
    "engines": "Platform computations over your data (analytics, performance, ...), also usable as workflow steps.",
    "platform": "Health, metrics and status.",
    "admin": "Administration and the audit trail.",
    "docs": "This API description.",
}
