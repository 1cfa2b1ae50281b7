"""Workflow step overhead on the local runtime (`make run`'s pieces), against plain tasks in the same run.

Starts the embedded moto server with Step Functions execution on (infra.local.emulator), bootstraps the
manifest's queues and the workflow role, and runs infra.local.runner's EventSourceRunner threads (one long-
polling thread per queue, as under `make run`) over the agent queues and the workflow control queue, with
a throwaway Postgres database. Then, from the rows' own timestamps:

1. added latency per workflow step: a step's task completing → the next step's task being claimed
   (p50/p99 over 10-step sequential workflows), against one task's create → claim time (API-style outbox
   fast path) in the same run;
2. a for_each over 200 items with max_concurrency 20 (start → run finished), against 200 independent
   tasks (created together → all completed).

Prints the figures and their ratios.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import throwaway_database  # noqa: E402 - bench/ is on the path when run as a script

PREFIX = "ymera-bench"
SEQUENTIAL_RUNS = int(os.environ.get("BENCH_WORKFLOW_RUNS", "4"))
STEPS = 10
SINGLE_TASKS = int(os.environ.get("BENCH_SINGLE_TASKS", "20"))
ITEMS = int(os.environ.get("BENCH_FOREACH_ITEMS", "200"))
CHECK = {"schema": {"type": "object"}, "payload": {"a": 1}}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def main() -> int:
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        report = measure()
    print(report)
    return 0


def measure() -> str:
    import logging

    logging.getLogger("infra.local.runner").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's access log
    with throwaway_database() as url:
        os.environ.update({"DATABASE_URL": url, "YMERA_JWT_SECRET": "b" * 48, "YMERA_STAGE": "test",
                           "POWERTOOLS_LOG_LEVEL": "ERROR", "YMERA_QUEUE_PREFIX": PREFIX,
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench",
                           # a loaded machine can take over the default 2 s to answer a Step Functions call
                           "YMERA_PUBLISH_TIMEOUT_SECONDS": "10"})
        os.environ.pop("REDIS_URL", None)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        from infra.local.emulator import start_moto

        endpoint = start_moto()
        try:
            return _run()
        finally:
            endpoint.stop()


def _run() -> str:
    import boto3
    from sqlalchemy import select

    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container
    from chalicelib.db.models import Agent, OutboxMessage, Task, User
    from chalicelib.db.workflow_models import WorkflowRun
    from chalicelib.schemas.workflows import RunStart
    from chalicelib.services.audit import RequestMeta
    from infra import manifest
    from infra.bootstrap import bootstrap, ensure_workflow_role
    from infra.local.runner import EventSourceRunner, pool_size_for

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                       config=__import__("botocore.config").config.Config(
                           max_pool_connections=pool_size_for(manifest.functions())))
    bootstrap(sqs, PREFIX)
    os.environ["YMERA_WORKFLOW_ROLE_ARN"] = ensure_workflow_role(
        boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1"), sqs, PREFIX)
    container = Container(Settings())
    set_container(container)
    db = container.db
    with db.transaction() as s:
        user = User(username="bench", email="bench@example.com", password_hash="x")
        s.add(user)
        s.flush()
        agent = Agent(user_id=user.id, name="v", type="validation", max_concurrency=100)
        s.add(agent)
        s.flush()
        user_id, agent_id = user.id, agent.id
    specs = [f for f in manifest.functions() if f.name in ("agent-validation", "workflow-control")
             or f.name == "outbox-relay"]
    runner = EventSourceRunner(sqs, PREFIX, specs, schedule_seconds=2)
    runner.start()
    meta = RequestMeta()
    try:
        # -- one task's create -> claim (the API's path: task + outbox row, then the fast path) --------
        def plain_tasks(n: int) -> list[uuid.UUID]:
            ids = []
            with db.transaction() as s:
                for _ in range(n):
                    task = Task(user_id=user_id, agent_id=agent_id, agent_type="validation", title="t",
                                status="pending", input_data=CHECK)
                    s.add(task)
                    s.flush()
                    row = OutboxMessage(aggregate_id=task.id, destination="validation",
                                        payload={"task_id": str(task.id), "agent_type": "validation"})
                    s.add(row)
                    s.flush()
                    ids.append((task.id, row.id))
            container.relay.publish_many([r for _, r in ids])
            return [t for t, _ in ids]

        def tasks_done(ids: list[uuid.UUID]) -> bool:
            with db.read() as s:
                return all(st == "completed" for st in s.scalars(select(Task.status).where(Task.id.in_(ids))))

        plain_tasks(3)  # warm: imports, pools, queue URLs
        time.sleep(1)
        singles: list[float] = []
        for _ in range(SINGLE_TASKS):
            (tid,) = plain_tasks(1)
            wait(lambda tid=tid: tasks_done([tid]), 30, "single task")
            with db.read() as s:
                created, started = s.execute(select(Task.created_at, Task.started_at).where(Task.id == tid)).one()
            singles.append((started - created).total_seconds())

        # -- a 10-step sequential workflow: step i completed -> step i+1 claimed -----------------------
        steps = [{"step_id": f"s{i}", "agent_type": "validation", "input_data": CHECK,
                  **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(STEPS)]
        wf = container.workflows.create(user_id, {"name": "bench-seq", "steps": steps}, meta).id

        def finished(run_id: uuid.UUID) -> bool:
            with db.read() as s:
                return s.scalar(select(WorkflowRun.status).where(WorkflowRun.id == run_id)) not in (
                    "running", "waiting_approval")

        gaps: list[float] = []
        seq_walls: list[float] = []
        for _ in range(SEQUENTIAL_RUNS):
            t0 = time.perf_counter()
            run_id = container.runs.start(user_id, wf, RunStart(input={}), meta).run_id
            assert run_id is not None
            wait(lambda run_id=run_id: finished(run_id), 120, "sequential run")
            seq_walls.append(time.perf_counter() - t0)
            with db.read() as s:
                rows = {r.step_id: r for r in s.execute(select(Task.step_id, Task.started_at, Task.completed_at)
                                                        .where(Task.run_id == run_id))}
            assert len(rows) == STEPS, rows
            for i in range(1, STEPS):
                gaps.append((rows[f"s{i}"].started_at - rows[f"s{i - 1}"].completed_at).total_seconds())

        # -- for_each over ITEMS, max_concurrency 20, against ITEMS independent tasks -------------------
        fan = container.workflows.create(user_id, {"name": "bench-fan", "steps": [
            {"step_id": "fan", "agent_type": "validation", "for_each": "$.input.items", "max_concurrency": 20,
             "input_data": {"schema": {"type": "object"}, "payload": "$.item"}}]}, meta).id
        t0 = time.perf_counter()
        run_id = container.runs.start(user_id, fan, RunStart(input={"items": [{"i": i} for i in range(ITEMS)]}),
                                      meta).run_id
        assert run_id is not None
        wait(lambda: finished(run_id), 600, "for_each run")
        fan_wall = time.perf_counter() - t0
        with db.read() as s:
            fan_status = s.scalar(select(WorkflowRun.status).where(WorkflowRun.id == run_id))
        t0 = time.perf_counter()
        ids = plain_tasks(ITEMS)
        wait(lambda: tasks_done(ids), 600, "independent tasks")
        plain_wall = time.perf_counter() - t0
    finally:
        runner.stop()
        set_container(None)
        container.db.engine.dispose()

    single = statistics.median(singles)
    p50, p99 = pct(gaps, 50), pct(gaps, 99)
    return "\n".join([
        f"single task create->claim: median {single * 1000:.0f} ms over {len(singles)}",
        f"workflow step hand-off (task completed -> next step's task claimed), {len(gaps)} gaps over "
        f"{SEQUENTIAL_RUNS} x {STEPS}-step runs: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
        f"-> {p50 / single:.1f}x / {p99 / single:.1f}x a single task's create->claim",
        f"{STEPS}-step sequential run wall time: median {statistics.median(seq_walls):.2f} s",
        f"for_each over {ITEMS} items (max_concurrency 20): {fan_wall:.2f} s ({fan_status}); {ITEMS} independent "
        f"tasks: {plain_wall:.2f} s -> for_each takes {fan_wall / plain_wall:.2f}x",
    ])


if __name__ == "__main__":
    sys.exit(main())
