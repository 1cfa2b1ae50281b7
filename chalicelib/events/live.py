"""Events over Redis pub/sub: the notifier publishes each event on its user's channel; a long-poll waits on it
(docs/events.md, "Long-poll").

Pub/sub is a wake-up call, never the record: a message nobody hears is lost, and that is fine because the
ledger and the resource rows are the truth. A waiter therefore re-reads the resource when a message for it
arrives, and also every `recheck_seconds` whatever arrives (the notifier may not be running).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from chalicelib.events.connections import redis_text
from chalicelib.observability import logger

if TYPE_CHECKING:
    from chalicelib.events.ledger import Event

T = TypeVar("T")
#: an event as published (Event.to_json) -> whether it may have changed what the waiter waits for
Wakes = Callable[[dict[str, Any]], bool]


def channel(prefix: str, user_id: uuid.UUID | str) -> str:
    """`<redis_key_prefix>events:<user_id>`: one channel per user, so a subscriber only hears its own user."""
    return f"{prefix}events:{user_id}"


def _body(event: Event) -> str:
    """An event's wire shape, as JSON."""
    return json.dumps(event.to_json(), separators=(",", ":"))


def publish(redis: Any, prefix: str, event: Event) -> int:
    """Publish one event on its user's channel; returns how many subscribers heard it."""
    return int(redis.publish(channel(prefix, event.user_id), _body(event)))


def publish_many(redis: Any, prefix: str, user_id: uuid.UUID | str, events: Sequence[Event]) -> None:
    """Publish a user's events in order, as `publish` does each, in one round trip (a pipeline, no MULTI)."""
    name = channel(prefix, user_id)
    pipe = redis.pipeline(transaction=False)
    for event in events:
        pipe.publish(name, _body(event))
    pipe.execute()


#: pub/sub connections a Waiter keeps for later waits (each is one Redis connection, idle and unsubscribed).
KEEP_IDLE_SUBSCRIBERS = 16

#: the type of the consumer's wake-up hint (`TaskWake`): not a ledger event, never delivered to sinks.
TASK_FINISHED_HINT = "task.finished"


class TaskWake:
    """The consumer's hint right after it committed a task's outcome: long-polls of that task wake now, not when
    the notifier gets to the ledger event (a round of its own per user, after the other events of the task).
    Best effort and never raises: the notifier's publish and the waiter's re-reads still come. After a Redis
    failure it stays quiet for `breaker_seconds` (a consumer must not wait on a dead Redis once per task)."""

    def __init__(self, redis: Any, prefix: str, breaker_seconds: float = 5.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.prefix = prefix
        self.breaker_seconds = breaker_seconds
        self.clock = clock
        self._quiet_until = 0.0

    def __call__(self, user_id: uuid.UUID, task_id: uuid.UUID, status: str) -> None:
        if self.redis is None or self.clock() < self._quiet_until:
            return
        body = json.dumps({"type": TASK_FINISHED_HINT, "resource": {"type": "task", "id": str(task_id)},
                           "status": status}, separators=(",", ":"))
        try:
            self.redis.publish(channel(self.prefix, user_id), body)
        except Exception as exc:  # noqa: BLE001 - a lost hint only costs the early answer
            self._quiet_until = self.clock() + self.breaker_seconds
            logger.warning("task wake-up hints paused: Redis failed", extra={"error": type(exc).__name__,
                                                                            "seconds": self.breaker_seconds})


class Waiter:
    """Waits for a resource to be done without holding a database connection: `read` opens and closes its own
    session each time; between reads this only listens on Redis (or sleeps, without Redis)."""

    def __init__(self, redis: Any, prefix: str, recheck_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 keep_idle: int = KEEP_IDLE_SUBSCRIBERS) -> None:
        self.redis = redis
        self.prefix = prefix
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self.sleep = sleep
        #: pub/sub connections of finished waits, unsubscribed, for the next waits (redis-py disconnects a
        #: closed PubSub: each wait paid a connect and the client handshake otherwise).
        self.keep_idle = keep_idle
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()

    def wait(self, user_id: uuid.UUID, read: Callable[[], T], done: Callable[[T], bool], wakes: Wakes,
             seconds: float) -> T:
        """`read()` until `done(value)`, at most `seconds`: re-read when a waking event arrives on the user's
        channel, and every recheck_seconds regardless; at the deadline, the value as it is then."""
        deadline = self.clock() + seconds
        value = read()
        if done(value):
            return value
        name = channel(self.prefix, user_id)
        subscription = self._subscribe(name)
        try:
            if subscription is not None:
                value = read()  # subscribed now: a change committed after this read cannot go unheard
            while not done(value):
                now = self.clock()
                if now >= deadline:
                    break
                subscription = self._until(subscription, name, min(deadline, now + self.recheck_seconds), wakes)
                value = read()
            return value
        finally:
            if subscription is not None:
                self._release(subscription)

    def _subscribe(self, name: str) -> Any | None:
        """A subscription to `name` whose SUBSCRIBE Redis has confirmed, or None (no Redis, or it is down: poll
        only). An idle connection of an earlier wait is used first; if it fails, a new one is tried."""
        if self.redis is None:
            return None
        with self._idle_lock:
            reused = self._idle.pop() if self._idle else None
        if reused is not None:
            subscription = self._confirmed(reused, name)
            if subscription is not None:
                return subscription
        subscription = self._confirmed(self.redis.pubsub(), name, report=True)
        return subscription

    def _confirmed(self, subscription: Any, name: str, *, report: bool = False) -> Any | None:
        """SUBSCRIBE on `subscription` and wait (at most 1 s) for Redis to confirm *this* channel: a reused one may
        first deliver its last wait's UNSUBSCRIBE confirmation and that channel's last messages."""
        try:
            subscription.subscribe(name)
            until = self.clock() + 1.0
            while (left := until - self.clock()) > 0:
                message = subscription.get_message(timeout=left)
                if (message is not None and message.get("type") == "subscribe"
                        and redis_text(message.get("channel")) == name):
                    return subscription
            raise ConnectionError("no subscribe confirmation")
        except Exception as exc:  # noqa: BLE001 - any Redis failure only costs the early answer: poll instead
            if report:
                logger.warning("long-poll cannot subscribe; polling the database instead",
                               extra={"error": type(exc).__name__})
            self._close(subscription)
            return None

    def _release(self, subscription: Any) -> None:
        """Done waiting: UNSUBSCRIBE (not waited for) and keep the connection for the next wait, or close it."""
        with self._idle_lock:
            keep = len(self._idle) < self.keep_idle
        if keep:
            try:
                subscription.unsubscribe()
            except Exception:  # noqa: BLE001 - a broken connection is not kept
                logger.debug("unsubscribing a long-poll subscription failed", exc_info=True)
                keep = False
        if not keep:
            self._close(subscription)
            return
        with self._idle_lock:
            self._idle.append(subscription)

    def _until(self, subscription: Any | None, name: str, until: float, wakes: Wakes) -> Any | None:
        """Listen on `name` until a waking event or `until`; returns the subscription still usable (None once it
        failed)."""
        while (remaining := until - self.clock()) > 0:
            if subscription is None:
                self.sleep(remaining)
                return None
            try:
                message = subscription.get_message(timeout=remaining)
            except Exception as exc:  # noqa: BLE001 - as in _subscribe: fall back to the recheck cadence
                logger.warning("long-poll subscription lost; polling the database instead",
                               extra={"error": type(exc).__name__})
                self._close(subscription)
                subscription = None
                continue
            if (message is not None and message.get("type") == "message" and redis_text(message.get("channel")) == name
                    and _wakes(message.get("data"), wakes)):
                return subscription
        return subscription

    @staticmethod
    def _close(subscription: Any) -> None:
        try:
            subscription.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is dropped either way
            logger.debug("closing a long-poll subscription failed", exc_info=True)


def _wakes(data: Any, wakes: Wakes) -> bool:
    try:
        event = json.loads(data)
    except (TypeError, ValueError):
        return False
    return isinstance(event, dict) and wakes(event)
