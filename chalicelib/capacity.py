"""How much the queue consumers may run at once, and the Postgres connections that costs.

Standard library only, and the one place these numbers live: `infra/manifest.py` (imported by LocalStack
hooks and the deploy tooling, never by chalicelib) builds the event sources from them, and the optimization
engine (chalicelib.engines.optimization) recommends per-queue concurrency within the same connection budget.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Types whose work is a language-model call: seconds to minutes per task, not milliseconds.
PROVIDER_BACKED: tuple[str, ...] = ("llm", "drafting", "editing", "enhancement", "orchestrator")
#: At most this many instances of one agent type's consumers run at once, both lanes together (each lane's
#: event source has its own MaximumConcurrency, >= 2): a flood on one type cannot take every Postgres
#: connection from the others and the API.
CONSUMER_MAX_CONCURRENCY = 5
#: Provider-backed consumers wait on models, not Postgres, but hold a connection while they claim/store.
#: 4 = the two lanes at Lambda's floor of 2 each (it was 3 in one queue before the lanes, docs/scheduling.md).
PROVIDER_CONSUMER_MAX_CONCURRENCY = 4
#: Lambda's floor for an SQS event source's MaximumConcurrency.
MIN_EVENT_SOURCE_CONCURRENCY = 2
#: The fast lane (`agent-{type}`: light owners, a few urgent tasks, workflow steps) runs at the floor: its
#: traffic is bounded per owner by the lane allowances; the bulk lane (`agent-{type}-bulk`) gets the rest.
FAST_LANE_MAX_CONCURRENCY = MIN_EVENT_SOURCE_CONCURRENCY
#: Connections one function instance may hold (the engine's pool opens them lazily; one invocation at a time
#: uses one, a second only while the outbox or audit writes overlap).
DB_CONNECTIONS_PER_INSTANCE = 2
#: What all consumers together may hold at their maximum concurrency; the template refuses more. Sized for a
#: small RDS instance (max_connections ~ 100-170) with room for the API, the schedules and migrations.
DB_CONNECTION_BUDGET = 120
#: 2 (was 3): the bulk lanes cost 5 more instances (the provider-backed types went from 3 to 2 + 2), and the
#: budget stays; ingress work is a short insert per message, bounded by the producers' rate limits, so its
#: floor of 2 instances gives up least. All consumers at their maximum = exactly DB_CONNECTION_BUDGET (120).
INGRESS_MAX_CONCURRENCY = 2
WORKFLOW_CONTROL_MAX_CONCURRENCY = 3


def agent_max_concurrency(agent_type: str) -> int:
    """The configured MaximumConcurrency of an agent type's consumers, both lanes together."""
    return PROVIDER_CONSUMER_MAX_CONCURRENCY if agent_type in PROVIDER_BACKED else CONSUMER_MAX_CONCURRENCY


def lane_max_concurrency(agent_type: str, *, bulk: bool) -> int:
    """One lane's MaximumConcurrency: the fast lane the floor, the bulk lane the rest of the type's share."""
    total = agent_max_concurrency(agent_type)
    return total - FAST_LANE_MAX_CONCURRENCY if bulk else FAST_LANE_MAX_CONCURRENCY


def consumer_connections(agent_types: Iterable[str]) -> int:
    """Connections every queue consumer (these agent types', ingress', workflow control's) may hold at once."""
    instances = sum(agent_max_concurrency(t) for t in agent_types)
    return (instances + INGRESS_MAX_CONCURRENCY + WORKFLOW_CONTROL_MAX_CONCURRENCY) * DB_CONNECTIONS_PER_INSTANCE
