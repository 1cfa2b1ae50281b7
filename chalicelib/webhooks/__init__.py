"""Webhooks (docs/webhooks.md): signed, retried HTTP deliveries of a user's ledger events.

- `signing`: Standard Webhooks secrets and signatures.
- `fanout.WebhookSink`: the notifier's sink; inserts one delivery per event and matching subscription.
- `sender.WebhookSender`: claims due deliveries, POSTs them through chalicelib.net.outbound, retries, disables.
- chalicelib/services/webhooks.py: the API's use cases (CRUD, rotate, test, deliveries, redeliver).
"""

from __future__ import annotations

from chalicelib.events.types import EVENT_TYPES, WEBHOOK_DISABLED

__all__ = ["ALL", "DISABLED_EVENT", "EVENT_TYPES", "NOTIFY_CHANNEL", "TEST_EVENT", "matches"]

#: a subscription names exact types of the ledger (EVENT_TYPES), or ["*"] for all of them.
ALL = "*"
#: sent by POST /webhooks/{id}/test to that subscription only, whatever its event_types.
TEST_EVENT = "webhook.test"
DISABLED_EVENT = WEBHOOK_DISABLED
#: pg_notify channel the sink signals (on commit) so the looping sender wakes up at once.
NOTIFY_CHANNEL = "ymera_webhooks"


def matches(event_types: list[str], event_type: str) -> bool:
    return ALL in event_types or event_type in event_types
