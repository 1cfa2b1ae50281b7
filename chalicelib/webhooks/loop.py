"""The looping sender (functions/webhook_sender.py): rounds until its invocation is nearly over.

Why a loop and not only a schedule: a delivery row is written by the notifier (WebhookSink) in its own
transaction, so an every-minute schedule alone would deliver up to a minute late, and there is no API request
to hang a fast path on. Each invocation LISTENs on NOTIFY_CHANNEL (its own psycopg connection, not the pool;
the sink signals it on commit) and also looks for due retries every `poll_seconds`, so a lost notification
costs at most that. On AWS it is scheduled every minute and runs until `reserve_seconds` remain (overlapping
invocations are harmless: claims are SKIP LOCKED with a lease); locally the runner re-invokes it, and its
context's remaining time drops to 0 on Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.observability import logger
from chalicelib.webhooks import NOTIFY_CHANNEL
from chalicelib.webhooks.sender import SendReport, WebhookSender


class Listener:
    """LISTEN on a dedicated autocommit connection; `wait` returns on a notification or after `timeout`."""

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self._conn: Any = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        got = False
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            got = True
        return got

    def close(self) -> None:
        self._conn.close()


def listener_for(sender: WebhookSender) -> Listener | None:
    """A listener on the sender's database, or None (SQLite; or Postgres refusing: then polling only)."""
    url = sender.db.engine.url
    if url.get_backend_name() != "postgresql":
        return None
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return Listener(conninfo)
    except Exception:  # noqa: BLE001 - without LISTEN the sender still polls every poll_seconds
        logger.warning("webhook sender cannot LISTEN; polling only", exc_info=True)
        return None


def run(sender: WebhookSender, remaining_seconds: Callable[[], float], *, reserve_seconds: float,
        poll_seconds: float, listener: Listener | None = None) -> SendReport:
    total = SendReport()
    while remaining_seconds() > reserve_seconds:
        report = sender.run_once()
        total.add(report)
        if report.taken >= sender.config.batch_size:
            continue  # more may be due now
        wait = min(poll_seconds, remaining_seconds() - reserve_seconds)
        if wait <= 0:
            break
        if listener is not None:
            listener.wait(wait)
        else:
            import time

            time.sleep(wait)
    return total
