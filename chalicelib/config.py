"""Typed settings, loaded once per container and checked at cold start.

Every knob comes from the environment (Lambda configuration, `.chalice/config.json`
for non-secrets, or the local runtime). Nothing else in chalicelib reads
`os.environ`; services receive the values they need.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the only stages with relaxations (short secrets, no Redis for rate limits, plain-text database/Redis
#: connections). `make run` (infra/local) sets "development" and the test suite "test"; anything else,
#: including an unset YMERA_STAGE, is strict.
DEV_STAGES = frozenset({"development", "local", "test"})
MIN_SECRET_BYTES = 32
#: libpq sslmodes that refuse a plain-text connection.
TLS_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})


def check_data_store_tls(url: str, what: str) -> None:
    """Outside development: Postgres only with sslmode=require/verify-ca/verify-full, Redis only as rediss://.
    SQLite (a local file, no network) is allowed. Raises ValueError naming the setting, never the URL."""
    from urllib.parse import parse_qs, urlsplit

    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith("postgres"):
        modes = parse_qs(urlsplit(url).query).get("sslmode", [])
        if not modes or modes[-1] not in TLS_SSLMODES:
            raise ValueError(f"{what} must set sslmode=require (or verify-ca/verify-full) outside development")
    elif scheme.startswith("redis") or scheme == "unix":
        if scheme != "rediss":
            raise ValueError(f"{what} must use rediss:// (TLS) outside development")
    elif not scheme.startswith("sqlite"):
        raise ValueError(f"{what} has an unsupported scheme {scheme!r}")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable deployment."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YMERA_", extra="ignore", frozen=True)

    #: unset = strict (see DEV_STAGES); reported as "unset" by /health.
    stage: str = "unset"
    version: str = "0.1.0"

    # Data stores. `database_url` (or database_url_secret_arn) is required; the local runtime fills it in.
    database_url: str = Field(default="", validation_alias="DATABASE_URL")
    redis_url: str = Field(default="", validation_alias="REDIS_URL")
    #: every Redis key starts with this, so stages (and test sessions) can share a server.
    redis_key_prefix: str = "ymera:"
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout: float = 10.0
    db_pool_recycle: int = 3600
    #: a pooled connection idle this long is pinged before use (and replaced if dead); one used more recently
    #: is not, so a consumer's hot loop sends no `SELECT 1` per task (chalicelib.db.session.IdlePing).
    db_ping_idle_seconds: float = Field(default=1.0, ge=0, le=300)

    # AWS wiring. Queue names are `<queue_prefix>-agent-<type>`.
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_DEFAULT_REGION")
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    queue_prefix: str = "ymera-dev"
    publish_timeout_seconds: float = 2.0
    #: SendMessageBatch as a plain signed request instead of through botocore (chalicelib.messaging.sqs_json):
    #: "auto" to a plain-HTTP endpoint (make run's emulator, LocalStack), "on" to AWS too, "off" never.
    sqs_lean_send: Literal["auto", "on", "off"] = "auto"
    max_task_attempts: int = 5
    #: external agents: how long a leased task stays with its worker without a heartbeat.
    lease_seconds: int = Field(default=60, ge=1, le=3600)
    #: a long-polling lease checks for new work this often.
    lease_poll_seconds: float = Field(default=0.5, gt=0, le=5)

    # Auth.
    jwt_secret: str = Field(default="", repr=False)
    jwt_issuer: str = "ymera"
    jwt_audience: str = "ymera-api"
    jwt_algorithm: Literal["HS256"] = "HS256"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    #: when set, the signing secret is read from AWS Secrets Manager (once per container), not jwt_secret.
    jwt_secret_arn: str | None = None
    #: how long a user's state (active, role, token version) is cached in Redis for the per-request check.
    session_cache_ttl_seconds: int = Field(default=15 * 60, ge=1)

    # Sessions (issue 7 §5): refresh retries and revocation without Redis.
    #: a refresh token presented again this soon after its rotation, while its successor is unused, gets that
    #: successor back (a client that lost the answer); later, or once the successor was used, it is reuse.
    #: 0 = every second presentation is reuse.
    refresh_reuse_grace_seconds: float = Field(default=10.0, ge=0, le=60)
    #: a family's "not revoked" answer from Postgres is cached in Redis this long. It bounds how long a
    #: revocation whose Redis write failed (refresh-token reuse is recorded best effort) can go unseen.
    session_family_cache_ttl_seconds: int = Field(default=60, ge=1, le=3600)

    # Data-store secrets (issue 7 §6). When set, the URL is read from Secrets Manager once per container
    # (chalicelib.auth.secrets) instead of DATABASE_URL / REDIS_URL: a plain URL, JSON {"url": ...}, or (for
    # the database) an RDS-managed secret {username, password, host, port, dbname}. Outside development the
    # fetched URL must use TLS, like the environment's.
    database_url_secret_arn: str | None = None
    redis_url_secret_arn: str | None = None

    # API behaviour.
    page_size_default: int = 50
    page_size_max: int = 200
    max_body_bytes: int = 1_000_000

    # Event producers (issue 8, docs/producers.md): the ingress queue's consumer (functions/ingress_consumer.py).
    #: an ingress message body larger than this is rejected to the ingress DLQ (reason "oversized").
    ingress_max_message_bytes: int = Field(default=128 * 1024, ge=1024, le=256 * 1024)
    #: per-owner token bucket for ingress messages (burst, tokens per second); over it a message is delayed by
    #: the bucket's retry-after (ChangeMessageVisibility), never dropped. Fails open like the API's buckets.
    ingress_rate_limit_capacity: int = Field(default=60, ge=1)
    ingress_rate_limit_refill_per_second: float = Field(default=2.0, gt=0)

    # Two-level cache (chalicelib.cache): per-namespace TTLs; the "sessions" namespace uses
    # session_cache_ttl_seconds. Versioned keys make updates visible at once; TTLs bound memory.
    cache_agents_ttl_seconds: int = Field(default=3600, ge=1)
    cache_task_results_ttl_seconds: int = Field(default=30 * 60, ge=1)
    #: entries held in each process's L1 (LRU beyond that).
    cache_l1_max_entries: int = Field(default=1024, ge=1)

    # Rate limiting: token buckets in Redis (capacity = burst, refill = tokens per second).
    # Failure modes are per bucket and fixed in chalicelib.ratelimit: general buckets fail open,
    # the login buckets fail closed.
    rate_limit_enabled: bool = True
    rate_limit_user_capacity: int = Field(default=120, ge=1)
    rate_limit_user_refill_per_second: float = Field(default=2.0, gt=0)
    rate_limit_ip_capacity: int = Field(default=60, ge=1)
    rate_limit_ip_refill_per_second: float = Field(default=1.0, gt=0)
    #: failed sign-ins against one account from every address together (chalicelib.services.login_throttle).
    rate_limit_login_account_capacity: int = Field(default=20, ge=1)
    rate_limit_login_account_refill_per_second: float = Field(default=1 / 60, gt=0)
    rate_limit_login_ip_capacity: int = Field(default=20, ge=1)
    rate_limit_login_ip_refill_per_second: float = Field(default=0.2, gt=0)
    #: after a Redis failure, skip Redis for this long instead of paying its timeout on every request.
    redis_breaker_seconds: float = Field(default=5.0, ge=0)

    # Monitoring. A static bearer token lets Prometheus scrape /metrics without logging in.
    metrics_token: str = Field(default="", repr=False)
    #: request metrics are buffered per container and written to Redis when the oldest buffered sample is this
    #: old (checked as requests arrive; see chalicelib.services.request_metrics). 0 = every request at once.
    request_metrics_flush_seconds: float = Field(default=1.0, ge=0)

    # Language-model provider for the stage (chalicelib.providers); an agent's config overrides any of it.
    #: "" = none: provider-backed tasks fail with PROVIDER_NOT_CONFIGURED unless their agent names one.
    llm_provider: Literal["", "openai", "bedrock"] = ""
    llm_model: str = ""
    #: OpenAI-compatible endpoint (default https://api.openai.com/v1); the stage key is sent only there.
    llm_base_url: str = ""
    llm_api_key: str = Field(default="", repr=False)
    #: read once per container (cached 5 min) instead of llm_api_key; plain key or JSON {"api_key": ...}.
    llm_api_key_secret_arn: str | None = None
    #: attempts per model call (retryable errors only), full-jitter backoff between base and max seconds.
    llm_max_attempts: int = Field(default=3, ge=1, le=10)
    llm_retry_base_seconds: float = Field(default=0.5, ge=0)
    llm_retry_max_seconds: float = Field(default=8.0, ge=0)
    #: circuit breaker per endpoint: open after this many consecutive outages, half-open after the cool-down.
    llm_breaker_failure_threshold: int = Field(default=5, ge=1)
    llm_breaker_reset_seconds: float = Field(default=30.0, gt=0)

    # --- Provider endpoints, user keys, outbound requests, cost caps (issue 7 §1; docs/providers.md) ---
    #: the operator's endpoint catalog, JSON {alias: {provider, base_url, api_key_env | api_key_secret,
    #: models, max_tokens_per_task, timeout_seconds}}; the stage's llm_* above are the implicit "default".
    llm_endpoints: str = ""
    #: the same document in Secrets Manager (read once per container, cached 5 min); entries may hold api_key.
    llm_endpoints_secret_arn: str | None = None
    #: models the implicit "default" endpoint allows besides llm_model (comma-separated).
    llm_allowed_models: str = ""
    #: the "default" endpoint's hard per-task token ceiling and its (the operator's) attempt timeout.
    llm_max_tokens_per_task: int = Field(default=20_000, ge=1)
    llm_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    #: an agent's timeout_seconds on an operator endpoint is raised to at least this.
    llm_min_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    #: tokens one user may spend per UTC day on operator endpoints, across tasks; 0 = unlimited.
    llm_daily_token_budget_per_user: int = Field(default=0, ge=0)
    #: AES-256-GCM key (base64 of 32 bytes) for users' stored provider keys. Required outside development;
    #: development derives one from the JWT secret (HKDF).
    provider_key_encryption_key: str = Field(default="", repr=False)
    #: or a Secrets Manager secret holding that base64 (read once per container); under ymera/<stage>/llm/
    #: so both the API and the provider-backed consumers may read it.
    provider_key_encryption_key_secret_arn: str | None = None
    #: user-chosen endpoints may resolve to loopback/private/link-local/CGNAT addresses (self-hosted models).
    #: Unset = allowed only in development stages. Metadata and reserved ranges are never allowed.
    outbound_allow_private: bool | None = None
    #: the timeout of the function that runs provider-backed agents (set per function by the template and
    #: the local runtime; default = infra.manifest.PROVIDER_CONSUMER_TIMEOUT_SECONDS). Caps max_wall_seconds.
    function_timeout_seconds: int = Field(default=300, ge=1, le=900)

    # --- engines: analytics and performance (chalicelib/engines; docs/engines.md) ---------------------------
    #: the analytics time series refuses a range of more buckets than this (each bucket is a row of output).
    engine_analytics_max_buckets: int = Field(default=2000, ge=1, le=100_000)
    #: the rollup compactor (functions/analytics_compactor.py, chalicelib/engines/rollups.py): an hour is
    #: compacted once it closed at least this long ago (longer than any transaction that writes tasks) ...
    analytics_compaction_grace_seconds: int = Field(default=600, ge=60, le=86_400)
    #: ... at most this many hours per user and run (a user's first run catches up over several), and at most
    #: this many users per run (the least compacted first).
    analytics_compaction_max_hours: int = Field(default=24 * 31, ge=1, le=24 * 3660)
    analytics_compaction_max_users: int = Field(default=1000, ge=1, le=1_000_000)
    #: what the agent consumers are deployed with, which the performance engine's recommendations compare
    #: observations against. chalicelib may not import infra/, so these mirror infra/manifest.py's
    #: FunctionSpec values (tests/unit/test_engine_deployed_values.py fails when they drift); provider-backed
    #: consumers' timeout is `function_timeout_seconds` above.
    engine_consumer_timeout_seconds: int = Field(default=60, ge=1, le=900)
    engine_consumer_memory_mb: int = Field(default=512, ge=128, le=10240)
    engine_consumer_batch_size: int = Field(default=10, ge=1, le=10_000)
    engine_consumer_max_concurrency: int = Field(default=5, ge=2, le=1000)
    engine_provider_consumer_batch_size: int = Field(default=1, ge=1, le=10_000)
    engine_provider_consumer_max_concurrency: int = Field(default=4, ge=2, le=1000)  # both lanes: 2 + 2

    @property
    def outbound_private_allowed(self) -> bool:
        return self.is_development if self.outbound_allow_private is None else self.outbound_allow_private

    @field_validator("provider_key_encryption_key")
    @classmethod
    def _encryption_key_size(cls, value: str) -> str:
        if value:
            import base64
            import binascii

            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("YMERA_PROVIDER_KEY_ENCRYPTION_KEY must be base64") from exc
            if len(raw) != 32:
                raise ValueError("YMERA_PROVIDER_KEY_ENCRYPTION_KEY must decode to 32 bytes (AES-256)")
        return value

    # Learning, heartbeats and alerts (agent types learning / monitoring, functions/monitor.py).
    #: feedback older than this counts half as much in an agent's quality estimate.
    quality_half_life_days: float = Field(default=30.0, gt=0)
    #: an agent that heartbeats and has not for this long is marked offline.
    heartbeat_stale_seconds: int = Field(default=300, ge=1)
    #: the SNS topic for alerts; unset = look up `<queue_prefix>-alerts` (what infra creates) by name.
    alert_topic_arn: str | None = None
    #: the same standing alert (a dependency down, a DLQ not empty) is re-sent at most this often.
    alert_cooldown_seconds: int = Field(default=900, ge=0)

    # Tenancy limits (issue 7 section 3: one tenant cannot hurt another). Documented in docs/tenancy.md.
    #: failed sign-ins (and wrong current passwords) per (account, client address) before that address is refused
    #: for that account; the owner signing in from elsewhere is not.
    rate_limit_login_account_ip_capacity: int = Field(default=5, ge=1)
    rate_limit_login_account_ip_refill_per_second: float = Field(default=1 / 60, gt=0)
    #: GET /health/ready answers from a per-container cache this long (0 = check the dependencies every time).
    readiness_cache_seconds: float = Field(default=5.0, ge=0)
    #: live (not deleted) agents one user may own.
    quota_agents_per_user: int = Field(default=100, ge=1)
    #: tasks one user may create per UTC day (subtasks an orchestrator creates included).
    quota_tasks_per_user_per_day: int = Field(default=5000, ge=1)
    #: an agent's `metadata` and `config`, each, as canonical JSON (sorted keys, no spaces, UTF-8).
    quota_agent_json_bytes: int = Field(default=64 * 1024, ge=2)
    #: each process's L1 cache: total bytes it holds, and the largest entry it takes (bigger ones: L2 only).
    cache_l1_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    cache_l1_max_entry_bytes: int = Field(default=256 * 1024, ge=1)

    # Agent run limits (chalicelib.agents.sandbox; docs/limits.md). A run past its budget fails its task with
    # TIME_LIMIT_EXCEEDED / MEMORY_LIMIT_EXCEEDED. The wall budgets stay below the consumers' timeouts
    # (infra/manifest.py: 60 s, 300 s for provider-backed types) with room for the rest of the batch.
    agent_wall_seconds: float = Field(default=15.0, gt=0, le=50)
    agent_provider_wall_seconds: float = Field(default=240.0, gt=0, le=290)
    #: memory an isolated (forked) run may map beyond what the consumer already maps.
    agent_memory_bytes: int = Field(default=256 * 1024 * 1024, ge=16 * 1024 * 1024)
    #: a task's output_data larger than this (as JSON) is stored truncated, with a marker.
    agent_output_max_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    #: isolated agents run in-process below this input size (a fork costs more than the capped run).
    agent_isolate_min_bytes: int = Field(default=16 * 1024, ge=0)

    # Consumers and orchestration (issue 7 §3, docs/consumers.md): each record commits on its own.
    #: a consumer starts another record only while this much of its invocation remains (the expected time of
    #: one record, agent run plus commits); it raises the reserve to twice the slowest record it has run.
    consumer_record_reserve_seconds: float = Field(default=10.0, ge=0, le=900)
    #: a plain task whose run took at most this long has its outcome written with its owner's other such
    #: outcomes of the batch (one statement and commit per owner and agent type), waiting at most this long
    #: (plus the record then running) for them; 0 writes every outcome on its own as it ends.
    consumer_group_window_seconds: float = Field(default=0.05, ge=0, le=5)
    #: the longest chain of parent tasks (parent_task_id) under which an orchestrator may still start steps.
    orchestrator_max_depth: int = Field(default=3, ge=1, le=10)
    #: the most tasks one root task may have below it, across every level.
    orchestrator_max_descendants: int = Field(default=100, ge=1, le=10_000)

    # Delivery: idempotency keys and the outbox relay (issue 8; docs/delivery.md).
    #: how long an `Idempotency-Key` is remembered (per user); after that the same key creates anew.
    idempotency_key_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600)
    #: failed publishes of one outbox row before it is parked (no more tries) and the operators are alerted.
    outbox_max_attempts: int = Field(default=15, ge=1, le=100)
    #: the retry delay after the n-th failed publish: base * 2**(n-1), capped, then jittered (half to all of it).
    outbox_backoff_base_seconds: float = Field(default=30.0, ge=0)
    outbox_backoff_max_seconds: float = Field(default=3600.0, ge=0)
    #: rows one relay transaction takes; the scheduled relay takes batches until none is due (or its time is up).
    outbox_batch_limit: int = Field(default=100, ge=1, le=1000)

    # --- Dependencies down (issue 8 "faults"; docs/faults.md) ---
    #: a Postgres connection attempt gives up after this many seconds (libpq connect_timeout), so an unreachable
    #: database answers 503 quickly instead of holding the request until the OS gives up on TCP (minutes).
    db_connect_timeout_seconds: int = Field(default=5, ge=1, le=60)

    # Delivery: retries, stuck tasks, cancellation (issue 8 "retries"; docs/consumers.md).
    #: a retryable agent failure (provider outage, rate limit, timeout) comes back after base × 2^(attempt-1)
    #: seconds, with jitter (half to all of it), at most retry_max_seconds (a provider's Retry-After wins).
    retry_base_seconds: float = Field(default=10.0, ge=0, le=3600)
    retry_max_seconds: float = Field(default=900.0, ge=0, le=43_200)
    #: a record that failed for an infrastructure reason (database unreachable, commit failed) or was deferred
    #: comes back after this, not after the queue's visibility timeout (6-30 min).
    infra_retry_seconds: int = Field(default=5, ge=0, le=900)
    #: the task reaper: a managed `processing` task whose claim lease passed this long ago got no redelivery
    #: (its message dead-lettered or vanished) and ends `timed_out`. Above the longest visibility timeout (30 min).
    task_stuck_grace_seconds: int = Field(default=2400, ge=60, le=86_400)
    #: a `processing` task (orchestrator parents included) running longer than this ends `timed_out`.
    task_max_run_seconds: int = Field(default=6 * 3600, ge=60, le=7 * 86_400)
    #: a managed `pending`/`queued` task older than this was never delivered: it fails with DELIVERY_FAILED.
    task_max_queued_seconds: int = Field(default=24 * 3600, ge=60, le=14 * 86_400)
    #: how often a running agent's cancellation check really asks the database (cheaper checks reuse it).
    cancel_check_seconds: float = Field(default=0.5, ge=0, le=60)

    # Workflows on Step Functions (issue 9; docs/workflows.md).
    #: the role every workflow state machine runs as (a stack output; the local runtime creates one in the
    #: emulator). It may only send to the agent queues and the workflow control queue.
    workflow_role_arn: str = ""
    #: state machines are named `<queue_prefix>-wf-<version id>`; the control queue `<queue_prefix>-workflow-control`.
    workflow_control_queue_suffix: str = "workflow-control"
    #: a for_each step resolves at most this many items (more fails the step with FOREACH_TOO_LARGE).
    workflow_foreach_max_items: int = Field(default=1000, ge=1, le=10_000)
    #: the reconciler repairs runs whose execution ended while a callback was lost; it looks at runs not
    #: updated for this long (a running step updates its run's row).
    workflow_reconcile_after_seconds: int = Field(default=120, ge=1, le=86_400)
    #: a step task's token gets a heartbeat when it is claimed and then at most this often while its agent
    #: runs (from the cancellation-check cadence); state machines allow 2x the queue visibility timeout.
    workflow_heartbeat_seconds: float = Field(default=60, ge=1, le=3600)
    #: runs the reconciler looks at per sweep (oldest update first).
    workflow_reconcile_batch: int = Field(default=50, ge=1, le=1000)

    # Workflows API (issue 9; docs/workflows-api.md).
    #: GET /runs/{run_id} shows a step's output inline up to this many bytes of JSON, else a reference to its task.
    workflow_output_inline_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    # Intelligence gateway (issue 10; docs/engines-more.md): the prompt cache provider-backed agents opt into with
    # `config.cache_ttl_seconds`, in Redis, per user.
    #: an agent's cache_ttl_seconds is capped at this; 0 turns prompt caching off for everyone.
    llm_cache_max_ttl_seconds: int = Field(default=24 * 3600, ge=0, le=30 * 86_400)
    #: answers larger than this (as JSON) are not cached: Redis memory is shared with sessions and rate limits.
    llm_cache_max_entry_bytes: int = Field(default=256 * 1024, ge=1024, le=8 * 1024 * 1024)

    # --- WebSocket notifications (issue 11; docs/websocket.md): chalicelib/api/websocket.py, chalicelib/events/ ----
    #: what `GET /status` tells clients to connect to (the API Gateway WebSocket stage URL, wss://...; the local
    #: runtime sets ws://127.0.0.1:<API port + 1>). Empty: the WebSocket API is not deployed for this stage.
    websocket_url: str = ""
    #: the API Gateway Management API the notifier posts to (https://<api id>.execute-api.<region>.amazonaws.com/
    #: <stage>; the local runtime's gateway serves it too). Empty: WebSocket delivery is off (webhooks still run).
    websocket_management_url: str = ""
    #: connections one user may hold at once; a connect past it is refused (429) until one closes.
    websocket_max_connections_per_user: int = Field(default=10, ge=1, le=1000)
    #: events read (and delivered) per user per notifier round; a busy user waits its turn per batch.
    notifier_batch_size: int = Field(default=100, ge=1, le=1000)
    #: users delivered to at once (threads; each holds a database connection while it delivers). On AWS a
    #: post_to_connection is a network round trip: in parallel, one slow client does not pace the rest.
    notifier_concurrency: int = Field(default=8, ge=1, le=32)
    #: users handled per sweep of pending cursors.
    notifier_users_per_sweep: int = Field(default=200, ge=1, le=10_000)
    #: the Postgres URL the notifier LISTENs on when DATABASE_URL goes through RDS Proxy (a LISTEN pins a proxied
    #: connection for its whole session): the instance's own endpoint. Empty: the database URL.
    notifier_listen_url: str = Field(default="", repr=False)
    #: one notifier invocation runs this long at most (AWS: scheduled every minute with a 90 s timeout).
    notifier_run_seconds: float = Field(default=60.0, gt=0, le=850)
    #: the notifier returns when less than this is left of its invocation (the schedule starts the next one).
    notifier_reserve_seconds: float = Field(default=5.0, ge=0, le=60)
    #: after a NOTIFY wakes it, the notifier waits this long for the rest of the burst (a task's claim and outcome
    #: commit milliseconds apart) and delivers it in one round: fewer rounds per task, each event this much later.
    notifier_gather_seconds: float = Field(default=0.05, ge=0, le=1)
    #: an event replayed at connect (`last_event_id`) goes back at most this many events; older ones: GET /events.
    websocket_replay_max_events: int = Field(default=1000, ge=1, le=100_000)

    # Event ledger, GET /events and long-polling (issue 11; docs/events.md). Events are written by triggers.
    #: events older than this are purged (the outbox relay's sweep, every minute); a client offline for longer
    #: cannot catch up from GET /events and must re-read the resources it watches.
    events_retention_days: int = Field(default=7, ge=1, le=365)
    #: events one purge transaction deletes; the sweep repeats it while its invocation has time.
    events_purge_batch: int = Field(default=5000, ge=1, le=1_000_000)
    #: GET /tasks/{id}?wait=N and GET /runs/{id}?wait=N re-read the resource this often while waiting (the
    #: Redis channel the notifier publishes to usually answers first; this covers a notifier that is down).
    long_poll_recheck_seconds: float = Field(default=2.0, gt=0, le=20)

    # --- Webhooks (issue 11; docs/webhooks.md): chalicelib/webhooks, chalicelib/api/webhooks.py, the sender ----------
    #: subscriptions one user may have (active or disabled); creating one more is 409 QUOTA_EXCEEDED. URLs follow
    #: the outbound rules of user-chosen model endpoints (https outside development; private targets only with
    #: outbound_allow_private above), checked at create/update and again on every connect.
    webhook_max_per_user: int = Field(default=20, ge=1, le=1000)
    #: one delivery attempt, connect to last byte of the answer (chalicelib.net.outbound's whole-exchange deadline).
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    #: a receiver's answer is read up to this many bytes (the rest is dropped; the status still counts).
    webhook_response_max_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    #: retries on network errors, 5xx and 429: base * 2**(n-1) capped at max, jittered (half to all of it) ...
    webhook_retry_base_seconds: float = Field(default=10.0, ge=0, le=3600)
    webhook_retry_max_seconds: float = Field(default=4 * 3600.0, ge=0, le=24 * 3600)
    #: ... for this long after a delivery was created; then it is `abandoned`.
    webhook_retry_window_seconds: int = Field(default=24 * 3600, ge=0, le=7 * 86_400)
    #: a receiver's Retry-After (429/503) is honoured up to this many seconds.
    webhook_retry_after_max_seconds: int = Field(default=3600, ge=1, le=24 * 3600)
    #: after POST /webhooks/{id}/rotate-secret the old secret keeps signing (a second signature) this long by default.
    webhook_secret_rotation_grace_seconds: int = Field(default=24 * 3600, ge=0, le=7 * 86_400)
    #: this many deliveries in a row ending failed/abandoned disable the subscription (audit row + webhook.disabled).
    webhook_disable_after_failures: int = Field(default=5, ge=1, le=1000)
    #: deliveries one sender round claims, and how many of them may be in flight for one user at once (so one
    #: user's slow receiver holds at most this many of the sender's threads).
    webhook_sender_batch_size: int = Field(default=50, ge=1, le=1000)
    webhook_sender_per_user_concurrency: int = Field(default=4, ge=1, le=100)
    webhook_sender_threads: int = Field(default=8, ge=1, le=64)
    #: the looping sender returns when less than this is left of its invocation (the schedule starts the next).
    webhook_sender_reserve_seconds: float = Field(default=10.0, ge=0, le=60)
    #: the sender waits at most this long for a NOTIFY before it looks for due retries again.
    webhook_sender_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    #: finished deliveries (and their attempts) older than this are purged, a batch per sender invocation.
    webhook_delivery_retention_days: int = Field(default=30, ge=1, le=365)
    webhook_delivery_purge_batch: int = Field(default=5000, ge=1, le=100_000)

    # Web console (issue 13; docs/console.md): static pages under /console (chalicelib/api/console.py), same
    # origin as the API. A console served from another origin needs that origin here: comma-separated exact
    # origins ("https://console.example.com"), empty by default = no CORS headers at all (chalicelib/api/cors.py).
    console_cors_origins: str = ""
    #: extra connect-src origins in the console's Content-Security-Policy (e.g. the WebSocket API's wss:// URL).
    console_connect_src: str = ""

    # --- Task lanes (issue 14; docs/scheduling.md): chalicelib/domain/lanes.py, chalicelib/services/lanes.py ----
    #: an owner's active (pending/queued/processing) tasks of one agent type on the fast lane before its
    #: normal/low work goes to the type's bulk lane; 0 = every normal/low task takes the bulk lane.
    lane_share_allowance: int = Field(default=10, ge=0, le=10_000)
    #: an owner's active critical/high tasks of one type that still take the fast lane past the share.
    lane_urgent_allowance: int = Field(default=5, ge=0, le=10_000)
    #: the share for `low` tasks: an owner's active tasks of the type before its low work goes to the bulk
    #: lane (counted exactly, even for a burst of parallel creates); 0 = every low task takes the bulk lane.
    lane_low_allowance: int = Field(default=2, ge=0, le=10_000)
    #: bulk-lane messages carry their owner's id as MessageGroupId (SQS fair queues on standard queues:
    #: fairness between heavy owners); false for an endpoint that refuses it on a standard queue.
    lane_bulk_message_groups: bool = True

    @property
    def cors_origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.console_cors_origins.split(",") if o.strip())

    @field_validator("stage")
    @classmethod
    def _stage_lower(cls, value: str) -> str:
        return value.strip().lower()

    @property
    def is_development(self) -> bool:
        return self.stage in DEV_STAGES

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if not self.database_url and not self.database_url_secret_arn:
            raise ValueError("DATABASE_URL (or YMERA_DATABASE_URL_SECRET_ARN) is required "
                             "(postgresql+psycopg://... or sqlite:///...)")
        if not self.is_development:
            if self.database_url and not self.database_url_secret_arn:
                check_data_store_tls(self.database_url, "DATABASE_URL")
            if self.redis_url and not self.redis_url_secret_arn:
                check_data_store_tls(self.redis_url, "REDIS_URL")
        if self.jwt_secret_arn:  # length is checked when the secret is fetched (chalicelib.auth.secrets)
            return self
        # Consumers and scheduled functions never sign tokens, so an absent secret is fine here (the API
        # checks for one with `require_token_secret`); a weak one is refused wherever it appears.
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES and not self.is_development:
            raise ValueError(
                f"YMERA_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes outside development "
                f"(stage={self.stage!r})"
            )
        return self

    def require_token_secret(self) -> None:
        """For code that signs or verifies tokens (the API): a secret must be configured."""
        if not self.jwt_secret and not self.jwt_secret_arn:
            raise ConfigError("YMERA_JWT_SECRET or YMERA_JWT_SECRET_ARN is required by the API "
                              "(the local runtime generates a secret for you)")

    @model_validator(mode="after")
    def _check_metrics_token(self) -> Settings:
        # The scrape token bypasses login: a guessable one would publish every metric.
        if self.metrics_token and len(self.metrics_token.encode()) < MIN_SECRET_BYTES and not self.is_development:
            raise ValueError(f"YMERA_METRICS_TOKEN must be empty or at least {MIN_SECRET_BYTES} bytes")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        # Not str(exc): pydantic prints the input (the whole environment's settings, URLs with passwords).
        raise ConfigError(describe(exc)) from None


def describe(exc: ValueError) -> str:
    """A settings error without the input values (which can hold passwords and keys)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(
        (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
        for err in exc.errors(include_input=False, include_url=False)
    )
