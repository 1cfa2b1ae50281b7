"""The notifier: delivers ledger events to sinks (WebSocket connections, webhooks) and to Redis.

One invocation loops until its context has less than `reserve_ms` left (AWS: scheduled every minute,
~60 s per run; the local runtime re-invokes it as soon as it returns). Each round:

1. wait for a `NOTIFY ymera_events` (LISTEN on a psycopg connection of its own, not the pool: a
   pooled connection would be handed to other work between rounds) or at most `sweep_seconds` —
   so an event whose NOTIFY was lost (the listener was reconnecting, a previous run was ending)
   waits at most that long;
2. sweep `pending_users` (delivered_event_id < last_event_id); for each user, one transaction:
   read the events after the cursor (bounded batch), hand them to every sink, CAS-advance the cursor;
   after the commit, publish each event to `<prefix>events:<user_id>` (LEDGER's long-poll wakes on it);
3. replay to connections that connected with `last_event_id` and have nothing pending.

Delivery is at-least-once: a crash between the sinks and the commit redelivers the batch, and two
overlapping invocations (the next schedule fires while this one finishes) both may send a batch
before one loses the CAS. A Redis lease (`<prefix>notifier:lease`) keeps overlaps rare: the newcomer
waits until the old run returns it (or it expires, if that run died).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from chalicelib.observability import logger

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.db.session import Database
    from chalicelib.events.ledger import Event

#: a lease outlives a stalled round by this much.
LEASE_SECONDS = 15
#: a round renews the lease (Redis) when it was set or renewed this long ago; rounds in between trust their own
#: clock: the lease still has at least LEASE_SECONDS - LEASE_RENEW_SECONDS to run.
LEASE_RENEW_SECONDS = 5.0


class EventSink(Protocol):
    def deliver(self, session: Session, user_id: uuid.UUID, events: Sequence[Event]) -> None:
        """Deliver (or durably queue, inside `session`) one user's events, in event_id order."""


class Replayer(Protocol):
    def replay(self, session: Session, user_id: uuid.UUID) -> int:
        """Send missed events to the user's connections that asked for them at connect."""


class Context(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass
class Report:
    rounds: int = 0
    users: int = 0
    events: int = 0
    lost_cas: int = 0
    notifies: int = 0


class Listener(Protocol):
    def wait(self, timeout: float) -> int:
        """Block until a notification arrives or `timeout` passes; returns notifications drained."""

    def close(self) -> None: ...


class PgListener:
    """LISTEN on its own autocommit psycopg connection (reconnects on the next wait after a failure)."""

    def __init__(self, dsn: str, channel: str) -> None:
        self.dsn = dsn
        self.channel = channel
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    def wait(self, timeout: float) -> int:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            # Block until the first notification (or the timeout), then take whatever else is already queued.
            n = sum(1 for _ in self._conn.notifies(timeout=max(timeout, 0.0), stop_after=1))
            if n:
                n += sum(1 for _ in self._conn.notifies(timeout=0, stop_after=10_000))
            return n
        except psycopg.Error as exc:
            logger.warning("notifier LISTEN connection failed; sweeping on the timer",
                           extra={"error": type(exc).__name__})
            self.close()
            time.sleep(min(timeout, 1.0))
            return 0

    def close(self) -> None:
        import psycopg

        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error as exc:  # closing a broken connection: nothing left to do with it
                logger.debug("closing LISTEN connection failed", extra={"error": type(exc).__name__})
            self._conn = None


class _LostCas(Exception):
    """Another invocation advanced this user's cursor first."""


class Notifier:
    def __init__(self, db: Database, sinks: Sequence[EventSink], *, listener: Listener,
                 redis: Any = None, key_prefix: str = "ymera:", batch_size: int = 100, users_per_sweep: int = 200,
                 sweep_seconds: float = 1.0, reserve_ms: int = 5000, max_run_seconds: float = 60.0,
                 concurrency: int = 1,
                 replayer: Replayer | None = None,
                 replay_users: Callable[[], list[str]] | None = None,
                 replay_retry: Callable[[str], None] | None = None,
                 gather_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.db = db
        self.sinks = list(sinks)
        self.listener = listener
        self.redis = redis
        self.key_prefix = key_prefix
        self.batch_size = batch_size
        self.users_per_sweep = users_per_sweep
        self.sweep_seconds = sweep_seconds
        self.reserve_ms = reserve_ms
        self.max_run_seconds = max_run_seconds
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self.replayer = replayer
        self.replay_users = replay_users
        self.replay_retry = replay_retry
        self.gather_seconds = gather_seconds
        self._clock = clock
        self._sleep = sleep
        self._lease_token = uuid.uuid4().hex
        #: when this run last set or renewed its lease (clock seconds); None while it holds none.
        self._lease_renewed: float | None = None

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self, context: Context) -> Report:
        report = Report()
        ends = self._clock() + self.max_run_seconds

        def budget() -> float:  # seconds this run may still spend
            return min((context.get_remaining_time_in_millis() - self.reserve_ms) / 1000, ends - self._clock())

        try:
            while budget() > 0:
                if not self._hold_lease():
                    time.sleep(max(0.0, min(0.5, budget())))
                    continue
                self.round(report)
                if budget() <= 0:
                    break
                # Wait for a NOTIFY, but never past the sweep period nor into the reserve.
                woken = self.listener.wait(max(0.0, min(self.sweep_seconds, budget())))
                report.notifies += woken
                if woken and self.gather_seconds > 0 and budget() > self.gather_seconds:
                    # A change seldom comes alone (a task's claim and its outcome are milliseconds apart): let the
                    # rest of the burst commit, then deliver it in one round; its NOTIFYs need no round of their own.
                    self._sleep(self.gather_seconds)
                    report.notifies += self.listener.wait(0.0)
        finally:
            self.close()
            self._release_lease()
        return report

    def round(self, report: Report) -> None:
        """One sweep: deliver every pending user's next batch (repeating while batches come back full)."""
        from chalicelib.events import ledger

        report.rounds += 1
        with self.db.statement() as conn:  # one statement, its own transaction: no BEGIN and ROLLBACK round trips
            pending = ledger.pending_users(conn, self.users_per_sweep)
        if self.concurrency <= 1 or len(pending) <= 1:
            results = [self._drain(user_id, delivered) for user_id, delivered, _ in pending]
        else:  # users are independent (one cursor each); a user's own batches stay in order on one thread
            results = list(self._executor().map(lambda p: self._drain(p[0], p[1]), pending))
        for events, batches, lost in results:
            report.events += events
            report.users += batches
            report.lost_cas += lost
        self._replays()

    def _drain(self, user_id: uuid.UUID, delivered: int) -> tuple[int, int, int]:
        """Deliver the user's batches until one comes back short: (events, batches, lost CAS)."""
        events = batches = 0
        try:
            while True:
                n = self.deliver_user(user_id, delivered)
                if n is None:  # lost the CAS: another invocation is on it
                    return events, batches, 1
                events, batches = events + n, batches + 1
                if n < self.batch_size:
                    return events, batches, 0
                delivered += n
        except Exception as exc:  # noqa: BLE001 - one user's failure must not hold back the others; retried next round
            logger.exception("notifier delivery failed for a user", extra={"user_id": str(user_id),
                                                                          "error": type(exc).__name__})
            return events, batches, 0

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="notifier")
        return self._pool

    def close(self) -> None:
        self.listener.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def deliver_user(self, user_id: uuid.UUID, delivered: int) -> int | None:
        """Deliver the batch after `delivered`; the number of events, or None if the cursor moved meanwhile."""
        from chalicelib.events import ledger

        try:
            with self.db.transaction() as session:
                events = ledger.list_after(session, user_id, delivered, self.batch_size)
                if not events:
                    return 0
                for sink in self.sinks:
                    sink.deliver(session, user_id, events)
                if not ledger.advance(session, user_id, delivered, events[-1].event_id):
                    raise _LostCas  # roll back what the sinks queued in the session (webhook rows)
        except _LostCas:
            return None
        self._publish_all(user_id, events)
        return len(events)

    def _replays(self) -> None:
        if self.replayer is None or self.replay_users is None:
            return
        for raw in self.replay_users():
            try:
                user_id = uuid.UUID(raw)
            except ValueError:
                continue
            try:
                with self.db.read() as session:
                    self.replayer.replay(session, user_id)
            except Exception as exc:  # noqa: BLE001 - keep the request: the next round tries again
                logger.warning("replay failed; retrying next round", extra={"user_id": raw,
                                                                         "error": type(exc).__name__})
                if self.replay_retry is not None:
                    self.replay_retry(raw)

    def _publish_all(self, user_id: uuid.UUID, events: Sequence[Event]) -> None:
        if self.redis is None:
            return
        from chalicelib.events import live

        try:  # one round trip for the batch (a pipeline): a round delivers a task's few events together
            live.publish_many(self.redis, self.key_prefix, user_id, events)
        except RedisError as exc:  # long-poll falls back to polling the ledger (LEDGER); delivery went out
            logger.warning("publishing events to Redis failed", extra={"error": type(exc).__name__,
                                                                      "user_id": str(user_id)})

    # --- the lease -------------------------------------------------------------------------------------------

    @property
    def lease_key(self) -> str:
        return f"{self.key_prefix}notifier:lease"

    def _hold_lease(self) -> bool:
        """Whether this run may deliver now. A lease it set or renewed less than LEASE_RENEW_SECONDS ago is still
        its own (it lasts LEASE_SECONDS): no Redis round trip then (a round follows every NOTIFY, a few per task)."""
        if self.redis is None:
            return True  # no Redis: overlapping runs are still correct (CAS), just wasteful
        now = self._clock()
        if self._lease_renewed is not None and now - self._lease_renewed < LEASE_RENEW_SECONDS:
            return True
        try:
            if self.redis.set(self.lease_key, self._lease_token, nx=True, ex=LEASE_SECONDS):
                self._lease_renewed = now
                return True
            current = self.redis.get(self.lease_key)
            if current is not None and current.decode() == self._lease_token:
                self.redis.expire(self.lease_key, LEASE_SECONDS)
                self._lease_renewed = now
                return True
            self._lease_renewed = None
            return False
        except RedisError as exc:  # Redis down: deliver anyway (the CAS keeps it at-least-once)
            logger.warning("notifier lease unavailable", extra={"error": type(exc).__name__})
            self._lease_renewed = None
            return True

    def _release_lease(self) -> None:
        self._lease_renewed = None
        if self.redis is None:
            return
        try:
            current = self.redis.get(self.lease_key)
            if current is not None and current.decode() == self._lease_token:
                self.redis.delete(self.lease_key)
        except RedisError as exc:  # it expires by itself
            logger.warning("notifier lease not released", extra={"error": type(exc).__name__})


def wake(db: Database, user_id: uuid.UUID) -> None:
    """Wake a LISTENing notifier now (a connection asked for a replay, or a session ended and its connections
    are to close) instead of at its next sweep."""
    from sqlalchemy import text

    from chalicelib.events.ledger import NOTIFY_CHANNEL

    try:
        with db.transaction() as session:
            session.execute(text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": NOTIFY_CHANNEL, "payload": f"ws:{user_id}"})
    except SQLAlchemyError as exc:  # the sweep picks the replay up within a second anyway
        logger.warning("could not wake the notifier", extra={"error": type(exc).__name__})


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) as the libpq URI psycopg.connect takes."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
