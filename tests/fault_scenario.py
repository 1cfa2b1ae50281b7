"""The fault-load scenario shared by bench/fault_load.py (1,000 tasks) and the test suite (200): tasks are created
through the in-process API while faults are injected, a consumer drains the (moto) queue, and the figures say
whether anything was lost or run twice.

Faults, in order, while tasks are being submitted: Postgres cut (its proxy, tests/fault_proxy.py) for
`outage_seconds`; Redis cut for `outage_seconds`; one consumer crash (the process "dies" mid-batch: no
cleanup, no delete). The API client retries a refused submission (503/429) like a well-behaved client would.
Everything is loopback and bounded: the drain stops at `drain_deadline_seconds` whatever happens.

Definitions: *lost* = a task in the database that never reached a terminal state; *duplicated* = a task with
more than one result row; *reruns* = tasks whose agent finished more than once (allowed: at-least-once
execution after a crash or a failed commit, the result is still stored once); *5xx* = any 5xx other than
503 DEPENDENCY_UNAVAILABLE (503 is the documented answer during an outage); *recovery seconds* = the longest
time from a dependency's return to the first accepted task.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from chalicelib.agents.validation import ValidationAgent
from chalicelib.db.models import Task, TaskResult
from chalicelib.domain.tasks import TERMINAL
from tests.fault_proxy import FaultProxy

SCHEMA_TASK = {"schema": {"type": "object", "required": ["n"]}, "payload": {"n": 1}}


class ProcessDied(BaseException):
    """Stands for the consumer process going away mid-batch (nothing after it runs, no delete)."""


@dataclass
class Figures:
    submitted: int = 0  # 202 answers
    in_database: int = 0  # tasks that exist (a 503 after the commit makes a retried submission a second task)
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    reruns: int = 0
    http_503: int = 0
    http_5xx: int = 0  # any other 5xx: must be 0
    recovery_seconds: float = 0.0
    drain_seconds: float = 0.0
    crashes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    stuck: list[tuple[str, str, int]] = field(default_factory=list)  # (task id, status, attempts) of lost ones

    def line(self) -> str:
        return (f"tasks submitted={self.submitted} in_db={self.in_database} completed={self.completed} "
                f"failed={self.failed} lost={self.lost} duplicated={self.duplicated} reruns={self.reruns} "
                f"5xx={self.http_5xx} 503={self.http_503} recovery_s={self.recovery_seconds:.2f} "
                f"drain_s={self.drain_seconds:.2f} crashes={self.crashes}"
                + (f" stuck={self.stuck}" if self.stuck else ""))


class CountingAgent(ValidationAgent):
    """The real validation agent, counting finished runs per task and dying once when told to."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.crash_next = threading.Event()
        self.lock = threading.Lock()

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        if self.crash_next.is_set():
            self.crash_next.clear()
            raise ProcessDied
        out = super().run(data, config, ctx)
        with self.lock:
            self.runs[str(ctx.task_id) if ctx is not None else "?"] += 1
        return out


class Consumer(threading.Thread):
    """Polls the agent type's lanes in turn (the fast queue and the bulk one: an owner past its allowances
    publishes to bulk, docs/scheduling.md) and invokes the real handler (infra.local.runner), plus the outbox
    sweep."""

    def __init__(self, runner: Any, specs: list[Any], relay: Any) -> None:
        super().__init__(daemon=True)
        self.runner, self.specs, self.relay = runner, specs, relay
        self.stop = threading.Event()
        self.crashes = 0
        self.poll_errors = 0  # SQS or poll failures (the outages): counted, and the next poll goes on

    def run(self) -> None:
        last_sweep = 0.0
        while not self.stop.is_set():
            got = 0
            for spec in self.specs:
                try:
                    got += self.runner.poll_once(spec, wait_seconds=0)
                except ProcessDied:
                    self.crashes += 1  # a new "container" takes over; the batch reappears after its visibility
                except Exception:  # noqa: BLE001 - SQS/poll errors: a real event source keeps polling too
                    self.poll_errors += 1
            if time.monotonic() - last_sweep > 1.0:
                last_sweep = time.monotonic()
                try:
                    self.relay.run_once()
                except Exception:  # noqa: BLE001 - the database may be down; the next sweep retries
                    last_sweep = time.monotonic()
            if not got:
                time.sleep(0.05)


def run_scenario(api: Any, container: Any, sqs: Any, pg: FaultProxy, redis: FaultProxy, direct_db: Any, *,
                 tasks: int, outage_seconds: float, prefix: str, drain_deadline_seconds: float = 120.0) -> Figures:
    from infra import manifest
    from infra.local.runner import EventSourceRunner

    figures = Figures()
    api.signup()
    agent = api.agent()
    counting = CountingAgent()
    container.processor.agent_loader = lambda agent_type: counting
    # A short function timeout and a visibility timeout above the claim lease it gives (timeout + CLAIM_SKEW,
    # 7 s), as deployed (6x the timeout there): a redelivery after a crash finds the lease over and runs it.
    # Both lanes: the tasks queued behind an outage put the owner past its share, and its next ones go to bulk.
    lanes = ("agent-validation", "agent-validation-bulk")
    specs = [dataclasses.replace(s, timeout=2) for s in manifest.functions() if s.name in lanes]
    for lane in lanes:
        url = sqs.get_queue_url(QueueName=f"{prefix}-{lane}")["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "8"})
    consumer = Consumer(EventSourceRunner(sqs, prefix, specs, wait_seconds=0), specs, container.relay)
    consumer.start()

    restored: dict[str, float] = {}
    recovered: dict[str, float] = {}

    def outage(name: str, proxy: FaultProxy) -> None:
        proxy.cut()

        def back() -> None:
            proxy.restore()
            restored[name] = time.monotonic()

        threading.Timer(outage_seconds, back).start()

    faults = {tasks // 5: lambda: outage("postgres", pg), tasks // 2: lambda: outage("redis", redis),
              (tasks * 7) // 10: counting.crash_next.set}
    try:
        for i in range(tasks):
            if i in faults:
                faults[i]()
            while True:
                r = api.call("POST", "/tasks", {"agent_id": agent["id"], "title": f"load {i}",
                                                "input_data": SCHEMA_TASK})
                figures.statuses[r.status_code] += 1
                if r.status_code == 202:
                    figures.submitted += 1
                    for name, at in restored.items():
                        recovered.setdefault(name, time.monotonic() - at)
                    break
                if r.status_code == 503 and r.json_body["error"]["code"] == "DEPENDENCY_UNAVAILABLE":
                    figures.http_503 += 1
                elif r.status_code >= 500:
                    figures.http_5xx += 1
                elif r.status_code != 429:
                    raise AssertionError(f"unexpected answer {r.status_code}: {r.json_body}")
                time.sleep(0.05)
        drain_started = time.monotonic()
        deadline = drain_started + drain_deadline_seconds
        while time.monotonic() < deadline:
            with direct_db.read() as session:
                open_tasks = session.scalar(select(func.count()).select_from(Task).where(
                    Task.status.not_in([str(s) for s in TERMINAL])))
            if open_tasks == 0 and not pg.is_cut and not redis.is_cut:
                break
            time.sleep(0.2)
        figures.drain_seconds = time.monotonic() - drain_started
    finally:
        consumer.stop.set()
        consumer.join(timeout=10)
        pg.restore()
        redis.restore()
    figures.crashes = consumer.crashes
    figures.recovery_seconds = max(recovered.values(), default=0.0)
    with direct_db.read() as session:
        by_status = dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
        figures.duplicated = len(session.execute(select(TaskResult.task_id).group_by(TaskResult.task_id)
                                                 .having(func.count() > 1)).all())
    figures.in_database = sum(by_status.values())
    figures.completed = by_status.get("completed", 0)
    figures.failed = by_status.get("failed", 0)
    figures.lost = sum(n for s, n in by_status.items() if s not in TERMINAL)
    with direct_db.read() as session:
        figures.stuck = [(str(i), st, a) for i, st, a in session.execute(
            select(Task.id, Task.status, Task.attempts).where(Task.status.not_in([str(s) for s in TERMINAL]))
            .limit(10))]
    figures.reruns = sum(1 for n in counting.runs.values() if n > 1)
    return figures
