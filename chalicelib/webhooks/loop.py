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
from concurrent.futures import FIRST_COMPLETED, Future, wait
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


def listener_for(sender: WebhookSender, listen_url: str = "") -> Listener | None:
    """A listener on `listen_url` (YMERA_NOTIFIER_LISTEN_URL: the instance's own endpoint when DATABASE_URL goes
    through RDS Proxy, which pins a LISTENing session) or the sender's database; None on SQLite, or when
    Postgres refuses (then the loop polls only)."""
    from sqlalchemy.engine import make_url

    url = make_url(listen_url) if listen_url else sender.db.engine.url
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
    """A pipeline, not rounds: whenever one of the sender's threads is free, claim that many due deliveries
    and start them; each is recorded as soon as its receiver answers. A slow receiver therefore holds only its
    own threads (at most `per_user_concurrency` for one user), never the others' next deliveries."""
    total = SendReport()
    pool = sender.pool()
    threads = sender.config.threads
    inflight: set[Future[SendReport]] = set()
    try:
        while remaining_seconds() > reserve_seconds:
            for future in [f for f in inflight if f.done()]:
                inflight.discard(future)
                _collect(future, total)
            # Up to two jobs per thread are claimed ahead (queued in the pool, their lease running), so a
            # thread that finishes starts the next at once instead of waiting for a claim statement.
            free = QUEUE_PER_THREAD * threads - len(inflight)
            jobs = sender.claim(limit=free) if free > 0 else []
            total.taken += len(jobs)
            inflight.update(pool.submit(sender.send_one, job) for job in jobs)
            if jobs and len(jobs) == free:
                continue  # the queue is full and more may be due: wait for one below on the next pass
            left = remaining_seconds() - reserve_seconds
            if left <= 0:
                break
            if len(inflight) >= QUEUE_PER_THREAD * threads:
                wait(inflight, timeout=min(poll_seconds, left), return_when=FIRST_COMPLETED)
            else:
                # nothing more is due now: sleep until the sink's NOTIFY (or the poll, for due retries); while
                # sends are out, in short slices, so a user held back by the per-user bound goes next promptly
                _sleep(listener, min(poll_seconds if not inflight else BUSY_SLICE_SECONDS, left))
    finally:
        for future in inflight:
            _collect(future, total)  # bounded by the attempt deadline, which the reserve covers
    return total


#: claimed jobs per sender thread (running or queued)
QUEUE_PER_THREAD = 2
#: how long the loop waits for new work while sends are in flight (a completed send may free a user's slot)
BUSY_SLICE_SECONDS = 0.1


def _sleep(listener: Listener | None, seconds: float) -> None:
    if listener is not None:
        listener.wait(seconds)
    else:
        import time

        time.sleep(seconds)


def _collect(future: Future[SendReport], total: SendReport) -> None:
    try:
        report = future.result()
    except Exception:  # noqa: BLE001 - recording failed (database): the claim's lease makes the row due again
        logger.warning("recording a webhook attempt failed; it is retried when its claim expires", exc_info=True)
        return
    total.succeeded += report.succeeded
    total.retrying += report.retrying
    total.failed += report.failed
    total.disabled.extend(report.disabled)
