"""Composition root: builds each real adapter lazily, once per container (Lambda
or process). Entry points ask for services here; tests build a Container with
their own settings or adapters instead of patching."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from chalicelib.config import Settings, get_settings

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

    from chalicelib.auth.guard import SessionGuard
    from chalicelib.auth.passwords import PasswordHasher
    from chalicelib.auth.tokens import TokenService
    from chalicelib.cache.twolevel import TwoLevelCache
    from chalicelib.db.session import Database
    from chalicelib.events.connections import ConnectionIndex
    from chalicelib.events.live import TaskWake
    from chalicelib.events.notifier import EventSink, Notifier
    from chalicelib.events.websocket_sink import WebSocketSink
    from chalicelib.messaging.ingress import IngressQueues
    from chalicelib.messaging.inspection import QueueInspector
    from chalicelib.messaging.sqs import Publisher, VisibilityPort
    from chalicelib.net.outbound import OutboundPolicy
    from chalicelib.providers.registry import Providers
    from chalicelib.providers.user_keys import KeyCipher
    from chalicelib.ratelimit import RateLimiter
    from chalicelib.services.accounts import AccountService
    from chalicelib.services.agents import AgentService
    from chalicelib.services.alerts import AlertPublisher
    from chalicelib.services.audit import AuditLogService
    from chalicelib.services.cache_admin import CacheAdminService
    from chalicelib.services.dlq_admin import DlqAdminService
    from chalicelib.services.engines import EngineService
    from chalicelib.services.events import EventService
    from chalicelib.services.feedback import FeedbackService
    from chalicelib.services.health import HealthService
    from chalicelib.services.idempotency import IdempotencyStore
    from chalicelib.services.ingress import IngressService
    from chalicelib.services.leases import LeaseService
    from chalicelib.services.login_throttle import LoginThrottle
    from chalicelib.services.long_poll import LongPoll
    from chalicelib.services.messages import MessageService
    from chalicelib.services.monitoring import MonitoringService
    from chalicelib.services.orchestration import PlanRuns
    from chalicelib.services.outbox import OutboxRelay
    from chalicelib.services.processing import TaskProcessor
    from chalicelib.services.producer_keys import ProducerKeyService
    from chalicelib.services.provider_keys import ProviderKeyService
    from chalicelib.services.quotas import Quotas
    from chalicelib.services.reaper import DeadLetterSweep, TaskReaper
    from chalicelib.services.request_metrics import RequestMetrics
    from chalicelib.services.run_launch import Launcher
    from chalicelib.services.runs import RunService
    from chalicelib.services.tasks import TaskService
    from chalicelib.services.users import UserService
    from chalicelib.services.watchdog import Watchdog
    from chalicelib.services.webhooks import WebhookService
    from chalicelib.services.websocket import WebSocketService
    from chalicelib.services.workers import WorkerService
    from chalicelib.services.workflows import WorkflowService
    from chalicelib.webhooks.fanout import WebhookSink
    from chalicelib.webhooks.sender import WebhookSender
    from chalicelib.workflows.control import WorkflowControl
    from chalicelib.workflows.ports import StateMachines, TaskCallbacks
    from chalicelib.workflows.reconcile import Reconciler


class Container:
    def __init__(self, settings: Settings, *, database: Database | None = None,
                 publisher: Publisher | None = None, redis_client: Any = None,
                 providers: Providers | None = None) -> None:
        self.settings = settings
        if providers is not None:
            self.__dict__["providers"] = providers
        if database is not None:
            self.__dict__["db"] = database
            self._track_agent_writes(database)
        if publisher is not None:
            self.__dict__["publisher"] = publisher
        if redis_client is not None:
            self.__dict__["redis"] = redis_client

    @cached_property
    def providers(self) -> Providers:
        """Language-model providers for provider-backed agents (breakers and key cache live here)."""
        from chalicelib.providers.registry import Providers
        from chalicelib.providers.usage import UsageLedger
        from chalicelib.providers.user_keys import UserKeyStore

        return Providers(self.settings, usage=UsageLedger(self.db),
                         user_keys=UserKeyStore(self.db, lambda: self.provider_key_cipher), redis=lambda: self.redis)

    @cached_property
    def db(self) -> Database:
        from chalicelib.auth.secrets import load_database_url
        from chalicelib.db.session import Database, make_engine

        s = self.settings
        # From DATABASE_URL, or fetched from Secrets Manager once per container (YMERA_DATABASE_URL_SECRET_ARN).
        db = Database(make_engine(load_database_url(s), pool_size=s.db_pool_size, max_overflow=s.db_max_overflow,
                                  pool_timeout=s.db_pool_timeout, pool_recycle=s.db_pool_recycle,
                                  connect_timeout=s.db_connect_timeout_seconds,
                                  ping_idle_seconds=s.db_ping_idle_seconds))
        self._track_agent_writes(db)
        return db

    def _track_agent_writes(self, db: Database) -> None:
        """Every committed write to `agents`, by any service, bumps the agent cache (chalicelib.cache.tracking)."""
        from chalicelib.cache.tracking import track_agent_writes

        track_agent_writes(db.engine, lambda: self.cache)

    @cached_property
    def redis(self) -> Any:
        """A Redis client, or None when neither REDIS_URL nor its secret is set (features that need it degrade)."""
        if not self.settings.redis_url and not self.settings.redis_url_secret_arn:
            return None
        import redis

        from chalicelib.auth.secrets import load_redis_url

        return redis.Redis.from_url(load_redis_url(self.settings), socket_connect_timeout=1.0, socket_timeout=1.0)

    @cached_property
    def publisher(self) -> Publisher:
        from chalicelib.messaging.sqs import SqsPublisher, make_sqs_client

        s = self.settings
        return SqsPublisher(lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds),
                            s.queue_prefix, lean_send=s.sqs_lean_send, timeout=s.publish_timeout_seconds)

    def warm(self) -> None:
        """Build at cold start what the first POST /tasks would otherwise build on its own time: the SQS client
        it publishes with (boto3 loads the SQS service model, ~100 ms) and its lean sender. Nothing is sent."""
        from chalicelib.messaging.sqs import QueueClient, SqsPublisher

        publisher = self.publisher
        if isinstance(publisher, SqsPublisher):
            publisher.lean()
        elif isinstance(publisher, QueueClient):
            _ = publisher.client

    @cached_property
    def hasher(self) -> PasswordHasher:
        from chalicelib.auth.passwords import PasswordHasher

        return PasswordHasher(self.settings.bcrypt_rounds)

    @cached_property
    def tokens(self) -> TokenService:
        from chalicelib.auth.secrets import load_jwt_secret
        from chalicelib.auth.tokens import TokenService

        s = self.settings
        # From the environment, or fetched from Secrets Manager once per container when YMERA_JWT_SECRET_ARN is set.
        return TokenService(load_jwt_secret(s), issuer=s.jwt_issuer, audience=s.jwt_audience,
                            access_ttl=s.access_token_ttl_seconds, refresh_ttl=s.refresh_token_ttl_seconds,
                            algorithm=s.jwt_algorithm)

    @cached_property
    def relay(self) -> OutboxRelay:
        from chalicelib.services.outbox import Backoff, OutboxRelay

        s = self.settings
        return OutboxRelay(self.db, self.publisher, s.outbox_batch_limit, max_attempts=s.outbox_max_attempts,
                           callbacks=lambda: self.callbacks,
                           backoff=Backoff(s.outbox_backoff_base_seconds, s.outbox_backoff_max_seconds),
                           alerts=self.alerts)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        """`Idempotency-Key` records in Postgres (chalicelib.services.idempotency)."""
        from chalicelib.services.idempotency import IdempotencyStore

        return IdempotencyStore(self.db, ttl_seconds=self.settings.idempotency_key_ttl_seconds)

    @cached_property
    def users(self) -> UserService:
        from chalicelib.services.users import UserService

        return UserService(self.db, self.hasher, self.tokens, self.sessions, throttle=self.login_throttle,
                           refresh_grace_seconds=self.settings.refresh_reuse_grace_seconds,
                           sessions_ended=self.end_websocket_sessions)

    def end_websocket_sessions(self, user_id: uuid.UUID, families: tuple[str, ...],
                               below_version: int | None) -> None:
        """`SessionsEnded` for the auth services: the WebSocket connections opened with those sessions close
        (chalicelib.services.websocket.end_sessions). Called after the sessions are revoked, so it cannot undo
        a logout: a Redis failure here is logged, and those connections stay open until they close or expire."""
        if self.redis is None:
            return
        from redis.exceptions import RedisError

        from chalicelib.observability import logger

        try:
            ended = self.websocket.end_sessions(user_id, families, below_version)
        except RedisError as exc:
            logger.warning("could not end the WebSocket connections of ended sessions",
                           extra={"user_id": str(user_id), "error": type(exc).__name__})
            return
        if ended:
            logger.info("websocket connections ended with their sessions", extra={"user_id": str(user_id),
                                                                                  "connections": ended})

    @cached_property
    def sessions(self) -> SessionGuard:
        """The per-request check that makes logout, deactivation and password changes take effect at once."""
        from chalicelib.auth.guard import SessionGuard

        s = self.settings
        return SessionGuard(self.db, self.redis, key_prefix=s.redis_key_prefix, state_ttl=s.session_cache_ttl_seconds,
                            access_ttl=s.access_token_ttl_seconds, breaker_seconds=s.redis_breaker_seconds,
                            family_ttl=s.session_family_cache_ttl_seconds)

    # --- WebSocket notifications (issue 11, docs/websocket.md) ---------------------------------------------------

    @cached_property
    def websocket_connections(self) -> ConnectionIndex:
        """Who is connected (Redis: chalicelib.events.connections). Needs REDIS_URL."""
        from chalicelib.errors import DependencyUnavailableError
        from chalicelib.events.connections import ConnectionIndex

        if self.redis is None:
            raise DependencyUnavailableError("WebSocket connections need Redis", {"dependency": "redis"})
        return ConnectionIndex(self.redis, self.settings.redis_key_prefix)

    @cached_property
    def websocket_management(self) -> Any:
        """boto3 `apigatewaymanagementapi` at settings.websocket_management_url (locally: the runtime's gateway)."""
        from chalicelib.events.websocket_sink import management_client

        return management_client(self.settings.websocket_management_url, self.settings.aws_region)

    @cached_property
    def websocket_sink(self) -> WebSocketSink | None:
        """None when the stage has no WebSocket API (no management URL) or no Redis for the connection index."""
        from chalicelib.events.websocket_sink import WebSocketSink

        s = self.settings
        if not s.websocket_management_url or self.redis is None:
            return None
        return WebSocketSink(self.websocket_connections, lambda: self.websocket_management,
                             replay_max=s.websocket_replay_max_events)

    @cached_property
    def websocket(self) -> WebSocketService:
        """$connect / $default / $disconnect (chalicelib.services.websocket)."""
        from chalicelib.events.notifier import wake
        from chalicelib.services.websocket import WebSocketService

        return WebSocketService(self.tokens, self.sessions, lambda: self.websocket_connections,
                                max_per_user=self.settings.websocket_max_connections_per_user,
                                wake_notifier=lambda user_id: wake(self.db, user_id))

    def event_sinks(self) -> list[EventSink]:
        """What the notifier delivers to: WebSocket connections, and webhook subscriptions (delivery rows the
        webhook sender sends; chalicelib/webhooks/fanout.py)."""
        sinks: list[EventSink] = [] if self.websocket_sink is None else [self.websocket_sink]
        sinks.append(self.webhook_sink)
        return sinks

    def notifier(self) -> Notifier:
        """A notifier for one invocation (its LISTEN connection is opened and closed by that invocation)."""
        from chalicelib.auth.secrets import load_database_url
        from chalicelib.events.ledger import NOTIFY_CHANNEL
        from chalicelib.events.notifier import Notifier, PgListener, libpq_dsn

        s = self.settings
        ws = self.websocket_sink
        listen_url = s.notifier_listen_url or load_database_url(s)
        return Notifier(self.db, self.event_sinks(), listener=PgListener(libpq_dsn(listen_url), NOTIFY_CHANNEL),
                        redis=self.redis, key_prefix=s.redis_key_prefix, batch_size=s.notifier_batch_size,
                        users_per_sweep=s.notifier_users_per_sweep, reserve_ms=int(s.notifier_reserve_seconds * 1000),
                        max_run_seconds=s.notifier_run_seconds, concurrency=s.notifier_concurrency,
                        gather_seconds=s.notifier_gather_seconds, replayer=ws,
                        replay_users=None if ws is None else ws.index.take_replays,
                        replay_retry=None if ws is None else ws.index.request_replay)

    @cached_property
    def accounts(self) -> AccountService:
        from chalicelib.services.accounts import AccountService

        return AccountService(self.db, self.hasher, self.tokens, self.sessions, throttle=self.login_throttle,
                              sessions_ended=self.end_websocket_sessions)

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        """Failed-password budgets per account and per (account, address): chalicelib.services.login_throttle."""
        from chalicelib.ratelimit import Buckets
        from chalicelib.services.login_throttle import LoginThrottle

        return LoginThrottle(self.rate_limiter, Buckets.from_settings(self.settings))

    @cached_property
    def agents(self) -> AgentService:
        from chalicelib.services.agents import AgentService

        return AgentService(self.db, self.cache, quotas=self.quotas)

    @cached_property
    def tasks(self) -> TaskService:
        from chalicelib.domain.lanes import Allowances
        from chalicelib.services.tasks import TaskService

        s = self.settings
        lanes = Allowances(share=s.lane_share_allowance, urgent=s.lane_urgent_allowance, low=s.lane_low_allowance,
                           bulk_message_groups=s.lane_bulk_message_groups)
        return TaskService(self.db, after_commit=self.relay.publish_one, agents=self.agents, cache=self.cache,
                           quotas=self.quotas, idempotency=self.idempotency, fast_publish=self.relay.publish_committed,
                           lanes=lanes)

    @cached_property
    def events(self) -> EventService:
        """The event ledger's reads and retention purge (chalicelib.services.events; docs/events.md)."""
        from chalicelib.services.events import EventService

        s = self.settings
        return EventService(self.db, retention_days=s.events_retention_days, purge_batch=s.events_purge_batch)

    @cached_property
    def long_poll(self) -> LongPoll:
        """?wait=N on GET /tasks/{id} and GET /runs/{id}: Redis pub/sub wake-ups plus periodic re-reads."""
        from chalicelib.events.live import Waiter
        from chalicelib.services.long_poll import LongPoll

        s = self.settings
        waiter = Waiter(self.redis, s.redis_key_prefix, s.long_poll_recheck_seconds)
        return LongPoll(waiter, tasks=lambda: self.tasks, runs=lambda: self.runs)

    @cached_property
    def quotas(self) -> Quotas:
        """Per-user quotas (agents, tasks per day, agent metadata/config size): chalicelib.services.quotas."""
        from chalicelib.services.quotas import Quotas

        return Quotas.from_settings(self.settings)

    @cached_property
    def cache(self) -> TwoLevelCache:
        """L1 + L2 cache. Without Redis every read goes to the database (an L1 alone cannot be invalidated)."""
        from chalicelib.cache.namespaces import Namespace
        from chalicelib.cache.twolevel import TwoLevelCache

        s = self.settings
        ttls: dict[str, int] = {Namespace.AGENTS: s.cache_agents_ttl_seconds,
                                Namespace.TASK_RESULTS: s.cache_task_results_ttl_seconds,
                                Namespace.SESSIONS: s.session_cache_ttl_seconds}
        return TwoLevelCache(self.redis, prefix=s.redis_key_prefix, ttls=ttls, l1_max_entries=s.cache_l1_max_entries,
                             breaker_seconds=s.redis_breaker_seconds, l1_max_bytes=s.cache_l1_max_bytes,
                             l1_max_entry_bytes=s.cache_l1_max_entry_bytes)

    @cached_property
    def cache_admin(self) -> CacheAdminService:
        from chalicelib.services.cache_admin import CacheAdminService

        return CacheAdminService(self.db, self.cache)

    @cached_property
    def audit_log(self) -> AuditLogService:
        from chalicelib.services.audit import AuditLogService

        return AuditLogService(self.db)

    @cached_property
    def processor(self) -> TaskProcessor:
        from chalicelib.services.processing import Backoff, Heartbeat, TaskProcessor

        s = self.settings
        return TaskProcessor(self.db, max_attempts=s.max_task_attempts, ports=AgentPorts(self),
                             agent_records=lambda agent_id, session: self.agents.record(agent_id, session),
                             backoff=Backoff(s.retry_base_seconds, s.retry_max_seconds),
                             cancel_check_seconds=s.cancel_check_seconds, answers=self.relay.publish_many,
                             heartbeats=lambda token: Heartbeat(lambda: self.callbacks.heartbeat(token),
                                                                s.workflow_heartbeat_seconds),
                             finished=self.task_wake)

    @cached_property
    def task_wake(self) -> TaskWake:
        """A finished task's long-polls answer now (the notifier's ledger event follows)."""
        from chalicelib.events.live import TaskWake

        s = self.settings
        return TaskWake(self.redis, s.redis_key_prefix, s.redis_breaker_seconds)

    @cached_property
    def callbacks(self) -> TaskCallbacks:
        """SendTaskSuccess/Failure/Heartbeat for workflow task tokens (built on first use)."""
        from chalicelib.messaging.callbacks import StepFunctionsCallbacks

        return StepFunctionsCallbacks(lambda: self.states_client)

    @cached_property
    def states_client(self) -> Any:
        """One boto3 Step Functions client for the API's adapter and the token callbacks (built on first use)."""
        from chalicelib.messaging.states import make_states_client

        s = self.settings
        return make_states_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds)

    @cached_property
    def workflow_control(self) -> WorkflowControl:
        from chalicelib.workflows.control import WorkflowControl

        return WorkflowControl(self.db, self.settings, self.relay.publish_many)

    @cached_property
    def workflow_reconciler(self) -> Reconciler:
        from chalicelib.workflows.reconcile import Reconciler

        s = self.settings
        # DescribeExecution / GetExecutionHistory through the API's adapter (the function may only read).
        return Reconciler(self.db, lambda: self.state_machines, after_seconds=s.workflow_reconcile_after_seconds,
                          batch=s.workflow_reconcile_batch)

    @cached_property
    def task_reaper(self) -> TaskReaper:
        from chalicelib.services.reaper import TaskReaper

        s = self.settings
        return TaskReaper(self.db, stuck_grace_seconds=s.task_stuck_grace_seconds,
                          max_run_seconds=s.task_max_run_seconds, max_queued_seconds=s.task_max_queued_seconds)

    @cached_property
    def dead_letter_sweep(self) -> DeadLetterSweep:
        from chalicelib.agents.registry import available_types
        from chalicelib.messaging.sqs import SqsDeadLetters, SqsPublisher, make_sqs_client
        from chalicelib.services.reaper import DeadLetterSweep

        s = self.settings
        publisher = self.publisher
        factory = (lambda: publisher.client) if isinstance(publisher, SqsPublisher) else \
            (lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds))
        return DeadLetterSweep(self.db, SqsDeadLetters(factory, s.queue_prefix), available_types())

    @cached_property
    def visibility(self) -> VisibilityPort:
        """ChangeMessageVisibility for the consumers' own records (shares the publisher's SQS client)."""
        from chalicelib.messaging.sqs import SqsPublisher, SqsVisibility, make_sqs_client

        s = self.settings
        publisher = self.publisher
        if isinstance(publisher, SqsPublisher):
            return SqsVisibility(lambda: publisher.client, s.queue_prefix)
        return SqsVisibility(lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds),
                             s.queue_prefix)

    @cached_property
    def leases(self) -> LeaseService:
        from chalicelib.services.leases import LeaseService

        s = self.settings
        return LeaseService(self.db, lease_seconds=s.lease_seconds, max_attempts=s.max_task_attempts,
                            poll_seconds=s.lease_poll_seconds)

    @cached_property
    def workers(self) -> WorkerService:
        from chalicelib.services.workers import WorkerService

        return WorkerService(self.db, self.leases, max_attempts=self.settings.max_task_attempts,
                             answers=self.relay.publish_many)

    @cached_property
    def health(self) -> HealthService:
        from chalicelib.services.health import HealthService

        return HealthService(self.db, lambda: self.redis, self.publisher, self.settings)

    @cached_property
    def rate_limiter(self) -> RateLimiter | None:
        """None when switched off, or in development without Redis. Outside development a missing Redis
        counts as Redis down: general buckets serve, the login buckets refuse (503)."""
        s = self.settings
        if not s.rate_limit_enabled or (self.redis is None and s.is_development):
            return None
        from chalicelib.ratelimit import RateLimiter

        return RateLimiter(self.redis, s.redis_key_prefix, s.redis_breaker_seconds)

    @cached_property
    def request_metrics(self) -> RequestMetrics | None:
        if self.redis is None:
            return None
        from chalicelib.services.request_metrics import RequestMetrics

        s = self.settings
        return RequestMetrics(self.redis, s.redis_key_prefix, s.redis_breaker_seconds,
                              flush_seconds=s.request_metrics_flush_seconds)

    @cached_property
    def queue_inspector(self) -> QueueInspector:
        from chalicelib.messaging.inspection import QueueInspector
        from chalicelib.messaging.sqs import SqsPublisher, make_sqs_client

        s = self.settings
        publisher = self.publisher
        if isinstance(publisher, SqsPublisher):  # share its client: a boto3 client costs ~50 ms to build
            return QueueInspector(lambda: publisher.client, s.queue_prefix)
        return QueueInspector(lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds),
                              s.queue_prefix)

    @cached_property
    def dlq_admin(self) -> DlqAdminService:
        from chalicelib.agents.registry import available_types
        from chalicelib.messaging.dlq import DlqOperator
        from chalicelib.services.dlq_admin import DlqAdminService

        inspector = self.queue_inspector  # shares the publisher's SQS client (see queue_inspector)
        return DlqAdminService(self.db, DlqOperator(lambda: inspector.client, self.settings.queue_prefix),
                               available_types)

    @cached_property
    def monitoring(self) -> MonitoringService:
        from chalicelib.agents.registry import available_types
        from chalicelib.services.monitoring import MonitoringService

        return MonitoringService(self.db, self.request_metrics, self.queue_inspector, self.settings, available_types)

    @cached_property
    def feedback(self) -> FeedbackService:
        from chalicelib.services.feedback import FeedbackService

        return FeedbackService(self.db, after_commit=self.relay.publish_one)

    @cached_property
    def provider_key_cipher(self) -> KeyCipher:
        """Users' provider keys' cipher; raises ConfigError (not cached) when the stage has no key."""
        from chalicelib.providers.user_keys import KeyCipher

        return KeyCipher.from_settings(self.settings)

    @cached_property
    def provider_keys(self) -> ProviderKeyService:
        from chalicelib.services.provider_keys import ProviderKeyService

        return ProviderKeyService(self.db, lambda: self.provider_key_cipher)

    @cached_property
    def producer_keys(self) -> ProducerKeyService:
        from chalicelib.services.producer_keys import ProducerKeyService

        return ProducerKeyService(self.db, lambda: self.provider_key_cipher)

    @cached_property
    def ingress(self) -> IngressService:
        """Event producers' messages -> tasks (functions/ingress_consumer.py, docs/producers.md)."""
        from chalicelib.ratelimit import Bucket
        from chalicelib.services.ingress import IngressService

        s = self.settings
        bucket = Bucket("ingress", s.ingress_rate_limit_capacity, s.ingress_rate_limit_refill_per_second,
                        fail_open=True)
        return IngressService(self.db, self.tasks, self.producer_keys, self.rate_limiter, bucket,
                              s.ingress_max_message_bytes)

    @cached_property
    def ingress_queues(self) -> IngressQueues:
        from chalicelib.messaging.ingress import IngressQueues
        from chalicelib.messaging.sqs import make_sqs_client

        s = self.settings
        return IngressQueues(lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds))

    @cached_property
    def messages(self) -> MessageService:
        from chalicelib.services.messages import MessageService

        return MessageService(self.db)

    @cached_property
    def alerts(self) -> AlertPublisher:
        """The operators' SNS topic: YMERA_ALERT_TOPIC_ARN, else `<queue_prefix>-alerts` looked up by name."""
        from chalicelib.services.alerts import AlertPublisher, make_sns_client

        s = self.settings
        return AlertPublisher(lambda: make_sns_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds),
                              topic_name=f"{s.queue_prefix}-alerts", topic_arn=s.alert_topic_arn, redis=self.redis,
                              key_prefix=s.redis_key_prefix, cooldown_seconds=s.alert_cooldown_seconds)

    @cached_property
    def watchdog(self) -> Watchdog:
        from chalicelib.agents.registry import available_types
        from chalicelib.services.watchdog import Watchdog

        return Watchdog(self.health, self.queue_inspector, available_types)

    @cached_property
    def state_machines(self) -> StateMachines:
        """Step Functions (chalicelib.messaging.states); the boto3 client is built at the first call."""
        from chalicelib.messaging.states import SfnStateMachines

        return SfnStateMachines(lambda: self.states_client)

    @cached_property
    def engines(self) -> EngineService:
        """The engines over HTTP (chalicelib.services.engines; docs/engines.md)."""
        from chalicelib.services.engines import EngineService

        return EngineService(self.db, self.settings)

    @cached_property
    def workflows(self) -> WorkflowService:
        """Workflow definitions and versions (chalicelib.services.workflows; docs/workflows-api.md)."""
        from chalicelib.services.workflows import WorkflowService

        return WorkflowService(self.db, engines=_engine_names)

    @cached_property
    def launcher(self) -> Launcher:
        """Workflow executions: state machines created lazily, StartExecution (chalicelib.services.run_launch)."""
        from chalicelib.messaging.sqs import QueueClient, SqsPublisher, make_sqs_client
        from chalicelib.services.run_launch import Launcher

        s = self.settings
        publisher = self.publisher
        # Queue URLs through the publisher's client and URL cache when it is the SQS one (a client costs ~50 ms).
        queues = publisher if isinstance(publisher, SqsPublisher) else QueueClient(
            lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds), s.queue_prefix)
        return Launcher(self.db, self.state_machines, queues.url_of, queue_prefix=s.queue_prefix,
                        control_queue_suffix=s.workflow_control_queue_suffix, role_arn=s.workflow_role_arn)

    @cached_property
    def plans(self) -> PlanRuns:
        """Orchestrator plans as workflow runs (chalicelib.services.orchestration)."""
        from chalicelib.services.orchestration import PlanRuns

        return PlanRuns(self.db, self.runs, self.workflows)

    @cached_property
    def runs(self) -> RunService:
        """Workflow runs: start, read, decide, cancel, redrive (chalicelib.services.runs)."""
        from chalicelib.services.runs import RunService

        s = self.settings
        launcher = self.launcher
        relay = self.relay
        tasks = self.tasks
        # Token answers ("states" outbox rows) go out through the relay's fast path, which routes them to the
        # TaskCallbacks port (chalicelib.services.outbox); the scheduled relay is the safety net.
        return RunService(self.db, launcher, cancel_task=lambda user_id, task_id, meta: tasks.cancel(
                              user_id, task_id, meta),
                          publish_answer=lambda outbox_id, _payload: relay.publish_one(outbox_id),
                          idempotency=self.idempotency, quotas=self.quotas,
                          inline_bytes=s.workflow_output_inline_bytes)

    # --- webhooks (docs/webhooks.md) ---------------------------------------------------------------------------

    @cached_property
    def outbound_policy(self) -> OutboundPolicy:
        """Where user-chosen URLs may lead: the same rules as users' own model endpoints (chalicelib.net.outbound)."""
        from chalicelib.net.outbound import OutboundPolicy

        s = self.settings
        return OutboundPolicy(allow_private=s.outbound_private_allowed, allow_http=s.is_development)

    @cached_property
    def webhook_sender(self) -> WebhookSender:
        from chalicelib.webhooks.sender import SenderConfig, WebhookSender

        return WebhookSender(self.db, lambda: self.provider_key_cipher, self.outbound_policy,
                             SenderConfig.from_settings(self.settings))

    @cached_property
    def webhook_sink(self) -> WebhookSink:
        """The notifier's sink for webhook subscriptions (chalicelib.webhooks.fanout)."""
        from chalicelib.webhooks.fanout import WebhookSink

        return WebhookSink(self.settings.webhook_retry_window_seconds)

    @cached_property
    def webhooks(self) -> WebhookService:
        from chalicelib.services.webhooks import WebhookService

        s = self.settings
        return WebhookService(self.db, lambda: self.provider_key_cipher, self.outbound_policy,
                              lambda: self.webhook_sender, max_per_user=s.webhook_max_per_user,
                              retry_window_seconds=s.webhook_retry_window_seconds,
                              rotation_grace_seconds=s.webhook_secret_rotation_grace_seconds)


def _engine_names() -> frozenset[str]:
    """The platform's engines a workflow step may name (asked at each validation: tests register their own)."""
    from chalicelib.engines import registry

    return frozenset(registry.names())



class AgentPorts:
    """What an agent may use (chalicelib.agents.base.AgentPorts), each built only when first asked for:
    agents never see the container itself."""

    def __init__(self, container: Container) -> None:
        self._container = container

    @property
    def settings(self) -> Settings:
        return self._container.settings

    @property
    def providers(self) -> Providers:
        return self._container.providers

    @property
    def alerts(self) -> AlertPublisher:
        return self._container.alerts

    @property
    def watchdog(self) -> Watchdog:
        return self._container.watchdog

    def transaction(self) -> AbstractContextManager[Session]:
        return self._container.db.transaction()

    @property
    def plans(self) -> PlanRuns:
        return self._container.plans


_container: Container | None = None


def get_container() -> Container:
    global _container
    if _container is None:
        _container = Container(get_settings())
    return _container


def set_container(container: Container | None) -> None:
    """Install a container (tests, the local runtime); None resets to lazy defaults."""
    global _container
    _container = container
