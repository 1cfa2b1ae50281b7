"""The one description of every AWS resource outside the Chalice app.

`infra/template.py` turns it into CloudFormation (AWS, LocalStack);
`infra/bootstrap.py` creates the same queues with boto3 against any endpoint
(the embedded emulator included); the local runtime maps queues to handlers
from it. Standard library only: LocalStack init hooks import it too.

Adding an agent type = one module in chalicelib/agents + one name in AGENT_CONSUMERS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Concurrency and the connection budget live in chalicelib.capacity (standard library only, so the hooks can
# still import this module) because the optimization engine reasons about the same numbers. Re-exported here
# for the template, the bootstrap and their tests.
from chalicelib.capacity import (
    CONSUMER_MAX_CONCURRENCY,
    DB_CONNECTION_BUDGET,
    DB_CONNECTIONS_PER_INSTANCE,
    INGRESS_MAX_CONCURRENCY,
    PROVIDER_BACKED,
    PROVIDER_CONSUMER_MAX_CONCURRENCY,
    WORKFLOW_CONTROL_MAX_CONCURRENCY,
    agent_max_concurrency,
    lane_max_concurrency,
)

__all__ = ["CONSUMER_MAX_CONCURRENCY", "DB_CONNECTION_BUDGET", "DB_CONNECTIONS_PER_INSTANCE", "INGRESS_MAX_CONCURRENCY",
           "PROVIDER_BACKED", "PROVIDER_CONSUMER_MAX_CONCURRENCY", "WORKFLOW_CONTROL_MAX_CONCURRENCY",
           "agent_max_concurrency"]

#: Agent types with a consumer (must match chalicelib.agents.registry.IMPLEMENTATIONS).
AGENT_CONSUMERS: tuple[str, ...] = ("validation", "examination", "security", "llm", "drafting", "editing",
                                    "enhancement", "learning", "communication", "orchestrator", "metrics", "monitoring")
#: What some consumers need beyond their own queue: the monitoring agent reads queue depths (its alerts are
#: the user's audit rows, never the operators' topic: only the scheduled monitor publishes there);
#: provider-backed agents call Bedrock and read provider keys from Secrets Manager (ymera/llm/*).
AGENT_NEEDS: dict[str, tuple[str, ...]] = {
    "monitoring": ("sqs:inspect",),
    **{agent_type: ("llm",) for agent_type in PROVIDER_BACKED},
}
#: Provider-backed consumers take one record per invocation with a long timeout, so one slow model call
#: cannot push nine others past the function timeout (and, after five such timeouts, into the DLQ).
PROVIDER_CONSUMER_TIMEOUT_SECONDS = 300

#: A bulk lane's queue is its fast lane's + this (docs/scheduling.md). Equal to chalicelib.domain.lanes.BULK_SUFFIX
#: (tests/unit/test_lane_rule.py); not imported from there: the LocalStack hook mounts only infra/ and capacity.py.
BULK_SUFFIX = "-bulk"

CONSUMER_TIMEOUT_SECONDS = 60
#: AWS guidance for SQS event sources: visibility timeout >= 6x the function timeout.
VISIBILITY_TIMEOUT_SECONDS = 6 * CONSUMER_TIMEOUT_SECONDS
MAX_RECEIVE_COUNT = 5
RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: Event producers' queue (docs/producers.md). Its consumer moves poison messages to the DLQ itself, at once;
#: receives are spent by rate-limit delays (ChangeMessageVisibility) and infrastructure retries, so a producer
#: over its budget for a while is delayed, not dead-lettered after five tries.
INGRESS_TIMEOUT_SECONDS = 60
INGRESS_MAX_RECEIVE_COUNT = 100
#: The workflow control queue (docs/workflows-runtime.md): approvals, for_each fan-outs, engine steps and run
#: reports sent by workflow state machines. Engines run in-process, so its consumer gets the long timeout.
WORKFLOW_CONTROL_SUFFIX = "workflow-control"
WORKFLOW_CONTROL_TIMEOUT_SECONDS = 120
#: The notifier (chalicelib/events/notifier.py) loops inside one invocation: scheduled every minute, each run
#: delivers for ~60 s (settings.notifier_run_seconds) and the timeout leaves room for its last round; an
#: overlap with the next run is harmless (a Redis lease, then the cursor CAS). Trade-offs on AWS: LISTEN needs
#: a direct Postgres connection (RDS Proxy pins a session that LISTENs: YMERA_NOTIFIER_LISTEN_URL bypasses it
#: and holds one connection of DB_CONNECTION_BUDGET), and a function that runs all the time costs: 30 GB-s per
#: run at 512 MB, 43,200 runs a month = ~1.3M GB-s, about $21.60/month at $0.0000166667 per GB-s (docs/websocket.md).
NOTIFIER_TIMEOUT_SECONDS = 90
#: The looping webhook sender: ~60 s of rounds per invocation (its reserve covers the last attempt's 5 s deadline).
WEBHOOK_SENDER_FUNCTION = "webhook-sender"
WEBHOOK_SENDER_TIMEOUT_SECONDS = 75
#: The function `make deploy` invokes (synchronously) to run Alembic to head before the API is updated; no
#: queue and no schedule. Long enough for an index build on a large table; Lambda's maximum is 900 s.
MIGRATE_FUNCTION = "migrate"
MIGRATE_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class QueueSpec:
    suffix: str  # full name is f"{prefix}-{suffix}"
    visibility_timeout: int = VISIBILITY_TIMEOUT_SECONDS
    max_receive_count: int = MAX_RECEIVE_COUNT
    retention: int = RETENTION_SECONDS
    #: another queue's DLQ (its suffix) instead of one of its own: a bulk lane dead-letters into its agent
    #: type's DLQ, so DLQ tools and the task reaper see one DLQ per type. That DLQ's owner creates it.
    dead_letter_suffix: str | None = None

    @property
    def dlq_suffix(self) -> str:
        return self.dead_letter_suffix or f"{self.suffix}-dlq"

    @property
    def owns_dlq(self) -> bool:
        """Whether this queue's DLQ is its own (created, alarmed and output with it) or shared."""
        return self.dead_letter_suffix is None

    def name(self, prefix: str) -> str:
        return f"{prefix}-{self.suffix}"

    def dlq_name(self, prefix: str) -> str:
        return f"{prefix}-{self.dlq_suffix}"


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # logical name; deployed as f"{prefix}-{name}"
    handler: str  # "module.function" inside the functions/ bundle
    timeout: int = CONSUMER_TIMEOUT_SECONDS
    memory: int = 512
    queue: QueueSpec | None = None
    batch_size: int = 10
    batching_window_seconds: int = 1
    #: concurrent instances at most (event source ScalingConfig.MaximumConcurrency); consumers only.
    max_concurrency: int = CONSUMER_MAX_CONCURRENCY
    schedule: str | None = None  # EventBridge schedule expression
    #: a function that loops until its context's time is nearly out (the notifier): the local runner
    #: re-invokes it as soon as it returns instead of waiting for the schedule.
    loops: bool = False
    env: dict[str, str] = field(default_factory=dict)
    #: what the function may touch: "db", "sqs:send", "sqs:consume", "sqs:inspect" (read queue depths),
    #: "sqs:reject" (send to its own queue's DLQ only),
    #: "sns:alerts" (publish to the alert topic), "llm" (Bedrock + provider keys in Secrets Manager),
    #: "sqs:peek-dlq" (receive from the agent DLQs without deleting: the task reaper),
    #: "states:callback" (SendTaskSuccess/Failure/Heartbeat: answer workflow task tokens),
    #: "states:read" (DescribeExecution/GetExecutionHistory on workflow executions: the reconciler),
    #: "websocket:post" (execute-api:ManageConnections on the WebSocket API: the notifier)
    needs: tuple[str, ...] = ("db",)


def database_connections(specs: Iterable[FunctionSpec]) -> int:
    """Postgres connections the queue consumers may hold at once, at their maximum concurrency."""
    return sum(f.max_concurrency * DB_CONNECTIONS_PER_INSTANCE
               for f in specs if f.queue is not None and "db" in f.needs)


def consumer_timeout(agent_type: str) -> int:
    return PROVIDER_CONSUMER_TIMEOUT_SECONDS if agent_type in PROVIDER_BACKED else CONSUMER_TIMEOUT_SECONDS


def agent_queue(agent_type: str) -> QueueSpec:
    """The fast lane (docs/scheduling.md): the queue workflow steps are sent to, and the type's DLQ."""
    return QueueSpec(suffix=f"agent-{agent_type}", visibility_timeout=6 * consumer_timeout(agent_type))


def bulk_queue(agent_type: str) -> QueueSpec:
    """The bulk lane: a heavy owner's tasks past its allowances. Same timeouts; dead-letters into the fast
    lane's DLQ (SQS allows several source queues per DLQ)."""
    fast = agent_queue(agent_type)
    return QueueSpec(suffix=fast.suffix + BULK_SUFFIX, visibility_timeout=fast.visibility_timeout,
                     dead_letter_suffix=fast.dlq_suffix)


def is_bulk_lane(q: QueueSpec) -> bool:
    return q.suffix.startswith("agent-") and q.suffix.endswith(BULK_SUFFIX)


def ingress_queue() -> QueueSpec:
    return QueueSpec(suffix="ingress", visibility_timeout=6 * INGRESS_TIMEOUT_SECONDS,
                     max_receive_count=INGRESS_MAX_RECEIVE_COUNT)


def workflow_control_queue() -> QueueSpec:
    return QueueSpec(suffix=WORKFLOW_CONTROL_SUFFIX, visibility_timeout=6 * WORKFLOW_CONTROL_TIMEOUT_SECONDS)


def agent_queues() -> list[QueueSpec]:
    """The queues the API and the outbox relay publish tasks to (not the producers' ingress queue): both
    lanes of every type, each fast lane before its bulk lane (whose DLQ it owns, so it is created first)."""
    return [q for t in AGENT_CONSUMERS for q in (agent_queue(t), bulk_queue(t))]


def queues() -> list[QueueSpec]:
    return [*agent_queues(), ingress_queue(), workflow_control_queue()]


def functions() -> list[FunctionSpec]:
    specs = [
        FunctionSpec(
            # one function per lane (agent-{type}, agent-{type}-bulk), the same handler: each consumes its own
            # lane only, and the type's concurrency is split between them (chalicelib.capacity)
            name=queue.suffix,
            handler="functions.agent_consumer.handler",
            queue=queue,
            timeout=consumer_timeout(agent_type),
            batch_size=1 if agent_type in PROVIDER_BACKED else 10,
            max_concurrency=lane_max_concurrency(agent_type, bulk=bulk),
            # every agent queue may carry workflow steps: their tokens are answered and kept alive
            needs=("db", "sqs:consume", "states:callback", *AGENT_NEEDS.get(agent_type, ())),
        )
        for agent_type in AGENT_CONSUMERS
        for bulk, queue in ((False, agent_queue(agent_type)), (True, bulk_queue(agent_type)))
    ]
    specs.append(
        FunctionSpec(
            # event producers' signed messages -> tasks; it publishes them (sqs:send, as the API does) and moves
            # poison messages to its own DLQ (sqs:reject)
            name="ingress-consumer",
            handler="functions.ingress_consumer.handler",
            queue=ingress_queue(),
            timeout=INGRESS_TIMEOUT_SECONDS,
            max_concurrency=INGRESS_MAX_CONCURRENCY,
            needs=("db", "sqs:consume", "sqs:send", "sqs:reject"),
        )
    )
    specs.append(
        FunctionSpec(
            # also alerts the operators when a message is parked past the attempt cap (docs/delivery.md);
            # workflow token answers are outbox rows too (destination "states")
            name="outbox-relay",
            handler="functions.outbox_relay.handler",
            timeout=60,
            schedule="rate(1 minute)",
            needs=("db", "sqs:send", "sns:alerts", "states:callback"),
        )
    )
    specs.append(
        FunctionSpec(
            # approvals, for_each fan-outs, engine steps and run reports of workflow state machines
            name="workflow-control",
            handler="functions.workflow_control.handler",
            queue=workflow_control_queue(),
            timeout=WORKFLOW_CONTROL_TIMEOUT_SECONDS,
            max_concurrency=WORKFLOW_CONTROL_MAX_CONCURRENCY,
            needs=("db", "sqs:consume", "states:callback"),
        )
    )
    specs.append(
        FunctionSpec(
            # runs whose execution ended while a callback or report was lost: repaired from the execution
            name="workflow-reconciler",
            handler="functions.workflow_reconciler.handler",
            timeout=60,
            schedule="rate(1 minute)",
            needs=("db", "states:read"),
        )
    )
    specs.append(
        FunctionSpec(
            # webhook deliveries (docs/webhooks.md): a loop, not a one-shot sweep. Each invocation LISTENs for the
            # notifier's sink (woken on commit) and polls due retries every second until its reserve (10 s) is
            # left; the minute schedule starts the next, so one overlaps the last seconds of the previous (claims
            # are SKIP LOCKED with a lease: harmless). Locally the runner re-invokes it the same way.
            name=WEBHOOK_SENDER_FUNCTION,
            handler="functions.webhook_sender.handler",
            timeout=WEBHOOK_SENDER_TIMEOUT_SECONDS,
            schedule="rate(1 minute)",
            loops=True,
            needs=("db",),
        )
    )
    specs.append(
        FunctionSpec(
            # external agents' tasks whose lease passed without a heartbeat: back to the queue, or failed
            name="lease-reaper",
            handler="functions.lease_reaper.handler",
            timeout=60,
            schedule="rate(1 minute)",
            needs=("db",),
        )
    )
    specs.append(
        FunctionSpec(
            # nothing stuck: dead-lettered tasks fail (DLQ messages kept), stuck/overdue managed tasks end
            name="task-reaper",
            handler="functions.task_reaper.handler",
            timeout=60,
            schedule="rate(1 minute)",
            needs=("db", "sqs:peek-dlq"),
        )
    )
    specs.append(
        FunctionSpec(
            # dependency health, stale heartbeats -> offline, DLQ depth; alerts to the SNS alert topic
            name="monitor",
            handler="functions.monitor.handler",
            timeout=60,
            schedule="rate(5 minutes)",
            needs=("db", "sqs:inspect", "sns:alerts"),
        )
    )
    specs.append(
        FunctionSpec(
            # ratings nobody counted yet (no learning agent, or its task failed) -> agents' quality estimates
            name="learning-sweep",
            handler="functions.learning_sweep.handler",
            timeout=60,
            schedule="rate(5 minutes)",
            needs=("db",),
        )
    )
    specs.append(
        FunctionSpec(
            # ledger events -> WebSocket connections (API Gateway Management API), webhooks, Redis (long-poll);
            # LISTENs on a direct Postgres connection (see NOTIFIER_TIMEOUT_SECONDS)
            name="notifier",
            handler="functions.notifier.handler",
            timeout=NOTIFIER_TIMEOUT_SECONDS,
            schedule="rate(1 minute)",
            loops=True,
            needs=("db", "websocket:post"),
        )
    )
    specs.append(
        FunctionSpec(
            # closed hours of tasks -> hour/day rollups the analytics engine reads (chalicelib/engines/rollups.py)
            name="analytics-compactor",
            handler="functions.analytics_compactor.handler",
            timeout=300,
            schedule="rate(10 minutes)",
            needs=("db",),
        )
    )
    specs.append(
        FunctionSpec(
            # invoked by the deploy only (infra/deploy.py): migrations run inside the VPC, before the API changes
            name=MIGRATE_FUNCTION,
            handler="functions.migrate.handler",
            timeout=MIGRATE_TIMEOUT_SECONDS,
            needs=("db",),
        )
    )
    return specs
