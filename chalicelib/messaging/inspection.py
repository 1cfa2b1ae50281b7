"""Queue depths of every agent queue (both lanes: docs/scheduling.md) and its DLQ, for /metrics and /status.

One function serves both endpoints. A queue that cannot be read (not
deployed, SQS unreachable) is reported with `error` instead of failing the
whole answer: monitoring is most needed while something is broken.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chalicelib.domain import lanes
from chalicelib.messaging.sqs import QueueClient, queue_name
from chalicelib.observability import logger

_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
#: Queues are read in parallel: with a dozen agent types, serial calls would add up to a slow scrape.
_MAX_WORKERS = 8


@dataclass(frozen=True)
class QueueDepth:
    agent_type: str
    queue: str  # the fast lane, `{prefix}-agent-{type}`
    dlq: str  # shared by both lanes
    messages: int | None = None  # waiting to be received (fast lane)
    in_flight: int | None = None  # received, not yet deleted (fast lane)
    dlq_messages: int | None = None
    error: str | None = None
    bulk_queue: str | None = None  # the bulk lane, `{prefix}-agent-{type}-bulk`
    bulk_messages: int | None = None
    bulk_in_flight: int | None = None


def dlq_name(prefix: str, agent_type: str) -> str:
    """Matches infra.manifest.QueueSpec.dlq_name (infra is not packaged with chalicelib)."""
    return f"{queue_name(prefix, agent_type)}-dlq"


class QueueInspector(QueueClient):
    def _attributes(self, name: str) -> dict[str, str]:
        url = self.url_of(name)
        return dict(self.client.get_queue_attributes(QueueUrl=url, AttributeNames=_ATTRIBUTES)["Attributes"])

    def depth(self, agent_type: str) -> QueueDepth:
        main, dlq = queue_name(self.prefix, agent_type), dlq_name(self.prefix, agent_type)
        bulk = queue_name(self.prefix, lanes.destination(agent_type, lanes.Lane.BULK))
        try:
            attrs = self._attributes(main)
            bulk_attrs = self._attributes(bulk)
            dlq_attrs = self._attributes(dlq)
        except Exception as exc:  # noqa: BLE001 - an unreadable queue is reported, not raised
            logger.warning("cannot read queue depth", extra={"queue": main, "error": repr(exc)})
            return QueueDepth(agent_type, main, dlq, error=type(exc).__name__, bulk_queue=bulk)
        return QueueDepth(agent_type, main, dlq, messages=int(attrs.get("ApproximateNumberOfMessages", 0)),
                          in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                          dlq_messages=int(dlq_attrs.get("ApproximateNumberOfMessages", 0)), bulk_queue=bulk,
                          bulk_messages=int(bulk_attrs.get("ApproximateNumberOfMessages", 0)),
                          bulk_in_flight=int(bulk_attrs.get("ApproximateNumberOfMessagesNotVisible", 0)))

    def depths(self, agent_types: Sequence[str]) -> list[QueueDepth]:
        if len(agent_types) <= 1:
            return [self.depth(t) for t in agent_types]
        _ = self.client  # build the client once, before the threads race to do it
        with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(agent_types))) as pool:
            return list(pool.map(self.depth, agent_types))
