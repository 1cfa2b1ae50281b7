"""Webhook delivery: from the sink's commit to the receiver (docs/webhooks.md, "How it runs").

In-process, real Postgres: the looping sender (chalicelib/webhooks/loop.py, LISTEN on its own connection, the
default 8 threads, 4 per user) runs in a thread; receivers are ThreadingHTTPServers on loopback. The clock
starts when the transaction that inserted the delivery rows (WebhookSink.deliver, as the notifier calls it)
has committed and stops when the receiver has read the request.

1. Latency: one user, one event at a time (200), p50/p99.
2. Throughput: 20 users x 25 events handed over at once (one transaction per user): deliveries per second.
3. Isolation: user A's receiver takes 1 s per request with a 40-event backlog while user B's events (one
   every 50 ms) are delivered: B's p50/p99 against (1).

Fails (exit 1) when a p99 is over BUDGET_P99_SECONDS (the issue's real-time budget).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import configure, throwaway_database  # noqa: E402 - bench/ is on the path when run as a script

BUDGET_P99_SECONDS = 1.0
EVENTS = int(os.environ.get("BENCH_WEBHOOK_EVENTS", "200"))


class Event:
    def __init__(self, event_id: int) -> None:
        self.event_id, self.type = event_id, "task.status_changed"

    def to_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "type": self.type, "resource": {"type": "task", "id": str(uuid.uuid4())},
                "run_id": None, "step_id": None, "status": "completed", "occurred_at": "2026-12-02T04:00:00Z",
                "payload": {}}


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> int:
    with throwaway_database() as url:
        configure(url)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            report, ok = measure()
    print(report)
    return 0 if ok else 1


def measure() -> tuple[str, bool]:
    from chalicelib.config import Settings
    from chalicelib.container import Container
    from chalicelib.db.models import User
    from chalicelib.schemas.webhooks import WebhookCreate
    from chalicelib.services.meta import RequestMeta
    from chalicelib.webhooks import loop
    from tests.integration.webhook_support import Answer, receiving

    container = Container(Settings())
    db, sink, sender = container.db, container.webhook_sink, container.webhook_sender

    def user() -> uuid.UUID:
        with db.transaction() as session:
            row = User(username=f"b{uuid.uuid4().hex[:10]}", email=f"{uuid.uuid4().hex[:10]}@example.com",
                       password_hash="x")
            session.add(row)
            session.flush()
            return row.id

    def fan(user_id: uuid.UUID, events: list[Event]) -> float:
        with db.transaction() as session:
            sink.deliver(session, user_id, events)  # type: ignore[arg-type]
        return time.time()

    listener = loop.listener_for(sender)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(sender, lambda: 0.0 if stop.is_set() else 3600.0),
                              kwargs={"reserve_seconds": 0, "poll_seconds": 1.0, "listener": listener})
    thread.start()
    lines = ["webhook delivery: sink commit -> receiver (looping sender, LISTEN/NOTIFY, real Postgres)"]
    ok = True
    try:
        with receiving() as r:
            uid = user()
            container.webhooks.create(uid, WebhookCreate(url=r.url, event_types=["*"]), RequestMeta())
            latency = []
            for i in range(1, EVENTS + 1):
                committed = fan(uid, [Event(i)])
                latency.append(r.wait_for(i)[-1].at - committed)
            lines.append(f"  1 user, {EVENTS} events one at a time:   p50 {statistics.median(latency) * 1e3:7.1f} ms"
                         f"   p99 {pct(latency, 0.99) * 1e3:7.1f} ms   max {max(latency) * 1e3:7.1f} ms")
            ok &= pct(latency, 0.99) <= BUDGET_P99_SECONDS

        with receiving() as r:
            users = [user() for _ in range(20)]
            for u in users:
                container.webhooks.create(u, WebhookCreate(url=r.url, event_types=["*"]), RequestMeta())
            started = time.time()
            for u in users:
                fan(u, [Event(i) for i in range(1, 26)])
            r.wait_for(500, timeout=120)
            took = r.requests[-1].at - started
            lines.append(f"  20 users x 25 events at once:         {500 / took:7.0f} deliveries/s "
                         f"({took:.2f} s for 500)")

        with receiving() as slow, receiving() as fast:
            slow.default = Answer(200, delay=1.0)
            a, b = user(), user()
            container.webhooks.create(a, WebhookCreate(url=slow.url, event_types=["*"]), RequestMeta())
            container.webhooks.create(b, WebhookCreate(url=fast.url, event_types=["*"]), RequestMeta())
            fan(a, [Event(i) for i in range(1, 41)])
            slow.wait_for(4)
            b_latency = []
            for i in range(1, 51):
                committed = fan(b, [Event(i)])
                b_latency.append(fast.wait_for(i)[-1].at - committed)
                time.sleep(0.05)
            lines.append(f"  B while A's receiver takes 1 s/req:   p50 {statistics.median(b_latency) * 1e3:7.1f} ms"
                         f"   p99 {pct(b_latency, 0.99) * 1e3:7.1f} ms   (A had {len(slow.requests)} of 40 through)")
            ok &= pct(b_latency, 0.99) <= BUDGET_P99_SECONDS
    finally:
        stop.set()
        thread.join()
        if listener is not None:
            listener.close()
        sender.close()
        db.engine.dispose()
    lines.append(f"  budget: p99 <= {BUDGET_P99_SECONDS:.1f} s -> {'ok' if ok else 'OVER BUDGET'}")
    return "\n".join(lines), ok


if __name__ == "__main__":
    sys.exit(main())
