"""Queue depths of every agent queue and its DLQ, for /metrics and /status.

One function serves both endpoints. A queue that cannot be read (not
deployed, SQS unreachable) is reported with `error` instead of failing the
whole answer: monitoring is most needed while something is broken.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chalicelib.messaging.sqs import QueueClient, queue_name
from chalicelib.observability import logger

_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
#: Queues are read in parallel: with a dozen agent types, serial calls would add up to a slow scrape.
_MAX_WORKERS = 8


@dataclass(frozen=True)
class QueueDepth:
    agent_type: str
    queue: str
    dlq: str
    messages: int | None = None  # waiting to be received
    in_flight: int | None = None  # received, not yet deleted
    dlq_messages: int | None = None
    error: str | None = None


def dlq_name(prefix: str, agent_type: str) -> str:
    """Matches infra.manifest.QueueSpec.dlq_name (infra is not packaged with chalicelib)."""
    return f"{queue_name(prefix, agent_type)}-dlq"


class QueueInspector(QueueClient):
    def _attributes(self, name: str) -> dict[str, str]:
        url = self.url_of(name)
        return dict(self.client.get_queue_attributes(QueueUrl=url, AttributeNames=_ATTRIBUTES)["Attributes"])

    def depth(self, agent_type: str) -> QueueDepth:
        main, dlq = queue_name(self.prefix, agent_type), dlq_name(self.prefix, agent_type)
        try:
            attrs = self._attributes(main)
            dlq_attrs = self._attributes(dlq)
        except Exception as exc:  # noqa: BLE001 - an unreadable queue is reported, not raised
            logger.warning("cannot read queue depth", extra={"queue": main, "error": repr(exc)})
            return QueueDepth(agent_type, main, dlq, error=type(exc).__name__)
        return QueueDepth(agent_type, main, dlq, messages=int(attrs.get("ApproximateNumberOfMessages", 0)),
                          in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                          dlq_messages=int(dlq_attrs.get("ApproximateNumberOfMessages", 0)))

    def depths(self, agent_types: Sequence[str]) -> list[QueueDepth]:
        if len(agent_types) <= 1:
            return [self.depth(t) for t in agent_types]
        _ = self.client  # build the client once, before the threads race to do it
        with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(agent_types))) as pool:
            return list(pool.map(self.depth, agent_types))
