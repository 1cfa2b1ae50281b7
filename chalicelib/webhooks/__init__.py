"""Webhooks (docs/webhooks.md): signed, retried HTTP deliveries of a user's ledger events.

- `signing`: Standard Webhooks secrets and signatures.
- `fanout.WebhookSink`: the notifier's sink; inserts one delivery per event and matching subscription.
- `sender.WebhookSender`: claims due deliveries, POSTs them through chalicelib.net.outbound, retries, disables.
- chalicelib/services/webhooks.py: the API's use cases (CRUD, rotate, test, deliveries, redeliver).
"""

from __future__ import annotations

#: what a subscription may name (the ledger's event types; chalicelib/events), or ["*"] for all of them.
EVENT_TYPES: tuple[str, ...] = ("task.status_changed", "run.status_changed", "run.step_changed",
                                "run.approval_requested", "webhook.disabled")
ALL = "*"
#: sent by POST /webhooks/{id}/test to that subscription only, whatever its event_types.
TEST_EVENT = "webhook.test"
DISABLED_EVENT = "webhook.disabled"
#: pg_notify channel the sink signals (on commit) so the looping sender wakes up at once.
NOTIFY_CHANNEL = "ymera_webhooks"


def matches(event_types: list[str], event_type: str) -> bool:
    return ALL in event_types or event_type in event_types
