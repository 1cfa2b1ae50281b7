"""The platform for the scheduling benchmarks (not a benchmark itself: run_all skips `_` files).

What runs, all real, as `make run` runs it: a throwaway Postgres database (migrated), this machine's Redis (own key
prefix), moto in a child process (`infra.local.emulator.spawn_moto`, SQS sped up as make run's is) with every
manifest queue created by infra.bootstrap, the task creation path in this process (`TaskService.create` from
chalicelib.container: task + outbox row in one transaction, then the publish), and the agent consumer
(functions.agent_consumer.handler) run by `infra.local.functions` children: one per lane of the agent type under
test (`--only agent-validation`, `--only agent-validation-bulk`), as Lambda runs each event source's instances apart
and make run runs the bulk lanes apart, `BULK_LANES_NICE` nicer (docs/local-runtime.md). Each child's
EventSourceRunner has one poller per queue. They can be paused (`pause()`, `resume()`: the runners stop and start
again, the processes stay warm) to build a backlog faster than it drains. The children's log goes to a temporary
file.

Until 2026-12-03 everything ran in this one process: the bulk lane's consumer, the fast lane's and moto's server
threads then shared one GIL, which no deployment has (on AWS each lane's instances are separate containers), and
a critical task under a backlog waited for the GIL more than for its lane (docs/scheduling.md, "Measured").

Timestamps are the platform's own: tasks.created_at (written at the create's flush, this process) and
tasks.started_at / completed_at (written by the consumer's claim and outcome, in a child), one machine's clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above

AGENT_TYPE = "validation"
CONSUMER = "functions.agent_consumer.handler"
INPUT = {"schema": {"type": "object"}, "payload": {}}


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def note(message: str) -> None:
    """Progress goes to stderr: stdout is silenced while the platform runs (EMF metrics, JSON logs)."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Owner:
    user_id: uuid.UUID
    agent_id: uuid.UUID
    name: str


@dataclass(frozen=True)
class Times:
    status: str
    priority: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def to_claim(self) -> float | None:
        return (self.started_at - self.created_at).total_seconds() if self.started_at else None

    @property
    def to_completed(self) -> float | None:
        return (self.completed_at - self.created_at).total_seconds() if self.completed_at else None


def consumer_specs(agent_type: str = AGENT_TYPE) -> list[Any]:
    """Every manifest function that consumes a queue of `agent_type` with the agent consumer (all its lanes)."""
    from infra import manifest

    base = manifest.agent_queue(agent_type).suffix
    return [spec for spec in manifest.functions()
            if spec.queue is not None and spec.handler == CONSUMER
            and (spec.queue.suffix == base or spec.queue.suffix.startswith(base + "-"))]


class Platform:
    def __init__(self, agent_type: str = AGENT_TYPE, creators: int = 0) -> None:
        self.agent_type = agent_type
        self.creators = creators or env_int("BENCH_CREATORS", 12)
        self._stack = contextlib.ExitStack()
        self.container: Any = None
        self.sqs: Any = None
        self.specs: list[Any] = []
        self.queue_names: list[str] = []
        self.consumers: list[Any] = []
        self.consumer_log: Any = None

    def __enter__(self) -> Platform:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        url = self._stack.enter_context(_harness.throwaway_database())
        prefix = _harness.configure(url, YMERA_QUOTA_TASKS_PER_USER_PER_DAY=str(10**7), YMERA_LOG_LEVEL="WARNING",
                                    POWERTOOLS_LOG_LEVEL="WARNING", YMERA_BCRYPT_ROUNDS="4",
                                    YMERA_DB_POOL_SIZE=str(self.creators + 4))
        for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from infra.local.emulator import spawn_moto, sqs_client

        endpoint = spawn_moto()  # make run's emulator: its own process, SQS sped up (sets AWS_ENDPOINT_URL)
        self._stack.callback(endpoint.stop)
        from infra.bootstrap import bootstrap

        self.specs = consumer_specs(self.agent_type)
        assert self.specs, f"no consumer of {self.agent_type} in the manifest"
        self.sqs = sqs_client(max_pool_connections=self.creators + 4)
        bootstrap(self.sqs, _harness.QUEUE_PREFIX)
        self.queue_names = [spec.queue.name(_harness.QUEUE_PREFIX) for spec in self.specs]
        self.consumer_log = self._stack.enter_context(tempfile.TemporaryFile("w+b"))
        from chalicelib.container import get_container

        self.container = get_container()
        self._stack.callback(self.container.db.engine.dispose)
        self._stack.callback(_harness.drop_redis_keys, self.container.redis, prefix)
        self._spawn_consumers()

    # -- the consumers -------------------------------------------------------------------------------------------

    def _spawn_consumers(self) -> None:
        """One functions child per lane (`python -m infra.local.functions --only agent-{type}[-bulk]`), started
        together; returns once every one of them polls."""
        from infra.local.functions import BULK_LANES_NICE, spawn_functions
        from infra.manifest import is_bulk_lane

        self.consumers = [spawn_functions(lean_sqs=True, only=[spec.name], stderr=self.consumer_log,
                                          nice=BULK_LANES_NICE if is_bulk_lane(spec.queue) else 0)
                          for spec in self.specs]
        for child in self.consumers:
            child.wait_ready()
            self._stack.callback(child.stop)

    def pause(self) -> None:
        """Every consumer child's runner stopped, the processes kept warm (FunctionsProcess.pause)."""
        for child in self.consumers:
            child.pause()

    def resume(self) -> None:
        for child in self.consumers:
            child.resume()

    # -- users, tasks --------------------------------------------------------------------------------------------

    def owner(self, name: str) -> Owner:
        from chalicelib.db.models import Agent, User

        with self.container.db.transaction() as s:
            user = User(username=name, email=f"{name}@example.com", password_hash="x")
            s.add(user)
            s.flush()
            agent = Agent(user_id=user.id, name=f"{name}-{self.agent_type}", type=self.agent_type)
            s.add(agent)
            s.flush()
            return Owner(user.id, agent.id, name)

    def create(self, owner: Owner, priority: str = "normal", title: str = "bench") -> uuid.UUID:
        from chalicelib.domain.tasks import TaskPriority
        from chalicelib.schemas.tasks import TaskCreate
        from chalicelib.services.meta import RequestMeta

        req = TaskCreate(agent_id=owner.agent_id, title=title, priority=TaskPriority(priority), input_data=INPUT)
        return uuid.UUID(str(self.container.tasks.create(owner.user_id, req, RequestMeta()).id))

    def create_many(self, owner: Owner, n: int, priority: str = "normal", title: str = "bulk") -> list[uuid.UUID]:
        """n tasks through the real create path, from `creators` threads (faster than one consumer drains)."""
        with ThreadPoolExecutor(self.creators) as pool:
            return list(pool.map(lambda _: self.create(owner, priority, title), range(n)))

    def times(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Times]:
        from sqlalchemy import select

        from chalicelib.db.models import Task

        out: dict[uuid.UUID, Times] = {}
        with self.container.db.read() as s:
            for chunk in range(0, len(ids), 1000):
                rows = s.execute(select(Task.id, Task.status, Task.priority, Task.created_at, Task.started_at,
                                        Task.completed_at).where(Task.id.in_(ids[chunk:chunk + 1000])))
                for row in rows:
                    out[row.id] = Times(str(row.status), str(row.priority), row.created_at, row.started_at,
                                        row.completed_at)
        return out

    def waiting(self, owner: Owner | None = None, title: str | None = None) -> int:
        """Tasks not yet claimed (pending or queued), of `owner` and `title` when given: the backlog."""
        from sqlalchemy import func, select

        from chalicelib.db.models import Task

        stmt = select(func.count()).select_from(Task).where(Task.status.in_(("pending", "queued")))
        if owner is not None:
            stmt = stmt.where(Task.user_id == owner.user_id)
        if title is not None:
            stmt = stmt.where(Task.title == title)
        with self.container.db.read() as s:
            return int(s.scalar(stmt) or 0)

    def unfinished(self, owner: Owner, title: str) -> int:
        """Tasks of `owner` and `title` not yet in a terminal status."""
        from sqlalchemy import func, select

        from chalicelib.db.models import Task
        from chalicelib.domain.tasks import TERMINAL

        stmt = select(func.count()).select_from(Task).where(Task.user_id == owner.user_id, Task.title == title,
                                                             Task.status.not_in([str(t) for t in TERMINAL]))
        with self.container.db.read() as s:
            return int(s.scalar(stmt) or 0)

    def queue_depth(self) -> dict[str, int]:
        """ApproximateNumberOfMessages per polled queue (visible, not in flight)."""
        depth = {}
        for name in self.queue_names:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            depth[name] = int(attrs["Attributes"]["ApproximateNumberOfMessages"])
        return depth

    def wait_done(self, ids: Sequence[uuid.UUID], *, field: str = "completed_at", timeout: float = 300,
                  poll: float = 0.02) -> dict[uuid.UUID, Times]:
        """Poll until every task has `field` set (started_at or completed_at) or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.times(ids)
            if all(getattr(t, field) is not None for t in got.values()) and len(got) == len(ids):
                return got
            if time.monotonic() > deadline:
                missing = sum(1 for t in got.values() if getattr(t, field) is None)
                raise TimeoutError(f"{missing} of {len(ids)} task(s) without {field} after {timeout:.0f} s")
            time.sleep(poll)

    def one_at_a_time(self, owner: Owner, n: int, priority: str, field: str, spacing: float,
                      timeout: float = 60) -> list[float]:
        """n single tasks, each waited for (`field`) before the next, `spacing` apart: idle-platform latencies."""
        samples = []
        for _ in range(n):
            task_id = self.create(owner, priority, "single")
            t = self.wait_done([task_id], field=field, timeout=timeout, poll=0.005)[task_id]
            samples.append((getattr(t, field) - t.created_at).total_seconds())
            time.sleep(spacing)
        return samples


def spread(values: Sequence[float]) -> str:
    return (f"p50 {ms(statistics.median(values))}  p99 {ms(pct(values, 99))}  "
            f"min {ms(min(values))}  max {ms(max(values))}  (n={len(values)})")


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """stdout to /dev/null while the platform runs (each invocation prints an EMF document)."""
    with _harness.quiet_stdout():
        yield


class Sampler(threading.Thread):
    """Creates a task every `spacing` s (own thread) while the backlog is above `floor`, at most `limit`; records
    (task id, backlog when created)."""

    def __init__(self, platform: Platform, owner: Owner, priority: str, spacing: float, limit: int,
                 backlog: Any, floor: int, dry: bool = False) -> None:
        super().__init__(name="sampler", daemon=True)
        self.platform, self.owner, self.priority = platform, owner, priority
        self.spacing, self.limit, self.backlog, self.floor, self.dry = spacing, limit, backlog, floor, dry
        self.samples: list[tuple[uuid.UUID, int]] = []
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """`dry`: the same schedule and backlog queries, no task created (the baseline phase pays the same)."""
        try:
            while self.rounds < self.limit:
                left = self.backlog()
                if left <= self.floor:
                    break
                self.rounds += 1
                if not self.dry:
                    self.samples.append((self.platform.create(self.owner, self.priority, "sample"), left))
                time.sleep(self.spacing)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after join()
            self.error = exc


@dataclass
class Drain:
    """A backlog created with the runner paused, then drained with samples created along the way."""

    backlog: list[uuid.UUID]
    seeded_s: float
    depth: dict[str, int]
    #: runner resumed -> last backlog task completed
    drained_s: float
    #: first backlog task created -> last completed (the issue's throughput window)
    first_create_to_last_done_s: float
    #: (sample id, backlog tasks not yet claimed when it was created)
    samples: list[tuple[uuid.UUID, int]]
    sample_times: dict[uuid.UUID, Times]

    def latencies(self, field: str) -> list[float]:
        return [(getattr(self.sample_times[i], field) - self.sample_times[i].created_at).total_seconds()
                for i, _ in self.samples]

    @property
    def backlog_at(self) -> list[int]:
        return [left for _, left in self.samples]


def drain_with_samples(p: Platform, owner: Owner, n: int, priority: str, title: str, sampler_owner: Owner,
                       sample_priority: str, field: str, spacing: float, limit: int, label: str,
                       dry: bool = False) -> Drain:
    """Runner paused, `n` tasks of `owner` created (the real path, all published), runner resumed; while more than
    10% of them are unclaimed, a `sample_priority` task of `sampler_owner` every `spacing` s (at most `limit`)."""
    p.pause()
    started = time.monotonic()
    backlog = p.create_many(owner, n, priority, title)
    seeded = time.monotonic() - started
    depth = p.queue_depth()
    note(f"[{label}] seeded {n} {priority} tasks in {seeded:.1f} s ({n / seeded:.0f}/s); queue depth {depth}")
    resumed_at = datetime.now(UTC)
    p.resume()
    sampler = Sampler(p, sampler_owner, sample_priority, spacing, limit, backlog=lambda: p.waiting(owner, title),
                      floor=n // 10, dry=dry)
    sampler.start()
    sampler.join()
    if sampler.error is not None:
        raise sampler.error
    # Latencies come from the tasks' own timestamps: polling slowly costs no accuracy, and little platform time.
    sample_times = p.wait_done([i for i, _ in sampler.samples], field=field, timeout=900, poll=0.25)
    deadline = time.monotonic() + 900
    while p.unfinished(owner, title):
        if time.monotonic() > deadline:
            raise TimeoutError(f"[{label}] backlog not drained after 900 s")
        time.sleep(0.25)
    done = p.times(backlog)
    first = min(t.created_at for t in done.values())
    last = max(t.completed_at for t in done.values() if t.completed_at is not None)
    drained = (last - resumed_at).total_seconds()
    note(f"[{label}] {len(sampler.samples)} samples; drained in {drained:.1f} s ({n / drained:.0f} tasks/s)")
    return Drain(backlog, seeded, depth, drained, (last - first).total_seconds(), sampler.samples, sample_times)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))
