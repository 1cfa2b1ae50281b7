"""The ledger's event types (docs/events.md), standard library only: the API's schemas (webhook
subscriptions) name them at import, which must not load SQLAlchemy and the models on a cold start."""

from __future__ import annotations

TASK_STATUS_CHANGED = "task.status_changed"
RUN_STATUS_CHANGED = "run.status_changed"
RUN_STEP_CHANGED = "run.step_changed"
RUN_APPROVAL_REQUESTED = "run.approval_requested"
WEBHOOK_DISABLED = "webhook.disabled"
EVENT_TYPES = (TASK_STATUS_CHANGED, RUN_STATUS_CHANGED, RUN_STEP_CHANGED, RUN_APPROVAL_REQUESTED, WEBHOOK_DISABLED)
