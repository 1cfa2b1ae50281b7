"""The webhook sender: claims due deliveries, POSTs them signed, records every attempt, retries, disables.

- **Claim** (one short transaction): due `pending` rows of active subscriptions, `FOR UPDATE SKIP LOCKED` so
  concurrent senders take different rows, at most `batch_size`, and for each user at most
  `per_user_concurrency` minus what that user already has in flight (fair: every user's first row before
  anyone's second). A claimed row gets `claimed_until` (a lease) and is not due until then; no transaction is
  open while a receiver answers, and a sender that dies leaves its rows due again when the lease passes.
- **Send**: through chalicelib.net.outbound (the address checks of user-chosen model endpoints, on the
  connected socket: DNS rebinding cannot reach a private address), with a whole-exchange deadline and the
  answer read up to a byte cap. Standard Webhooks headers; `webhook-id` is the delivery's, stable across retries.
- **Record** (one transaction): an attempt row each; 2xx succeeds; network errors, 5xx and 429 retry after an
  exponential, jittered backoff (a receiver's Retry-After wins, within bounds) until the delivery's
  `retry_until`, then it is `abandoned`; any other status is `failed` (not retried). A subscription whose
  deliveries end failed/abandoned `disable_after` times in a row is disabled: audit row, `webhook.disabled`
  event, its pending deliveries abandoned.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chalicelib.config import ConfigError
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.webhook_models import Webhook, WebhookAttempt, WebhookDelivery
from chalicelib.errors import AppError
from chalicelib.net import outbound
from chalicelib.net.outbound import OutboundPolicy, OutboundRefusedError
from chalicelib.observability import logger
from chalicelib.services import audit
from chalicelib.services.outbox import Backoff
from chalicelib.webhooks import DISABLED_EVENT, claims, signing

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.providers.user_keys import KeyCipher

D, W = WebhookDelivery, Webhook
USER_AGENT = "ymera-webhooks/1"
#: pending rows of disabled subscriptions are cleaned up this often (the claim skips them meanwhile)
ORPHAN_CHECK_EVERY = timedelta(seconds=30)
EXCERPT_CHARS = 500


def secret_aad(webhook_id: uuid.UUID) -> str:
    return f"webhook:{webhook_id}"


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class SenderConfig:
    timeout_seconds: float = 5.0
    max_response_bytes: int = 64 * 1024
    backoff: Backoff = field(default_factory=lambda: Backoff(10.0, 4 * 3600.0))
    retry_after_max_seconds: int = 3600
    disable_after: int = 5
    batch_size: int = 50
    per_user_concurrency: int = 4
    threads: int = 8

    @property
    def lease(self) -> timedelta:
        """Longer than one attempt can take (the outbound deadline is the whole exchange)."""
        return timedelta(seconds=self.timeout_seconds + 30)

    @classmethod
    def from_settings(cls, s: Settings) -> SenderConfig:
        return cls(s.webhook_timeout_seconds, s.webhook_response_max_bytes,
                   Backoff(s.webhook_retry_base_seconds, s.webhook_retry_max_seconds),
                   s.webhook_retry_after_max_seconds, s.webhook_disable_after_failures, s.webhook_sender_batch_size,
                   s.webhook_sender_per_user_concurrency, s.webhook_sender_threads)


@dataclass(frozen=True)
class Taken:
    """A delivery leased to a sender (`WebhookSender.take`), its secrets still encrypted."""

    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    user_id: uuid.UUID
    url: str
    blobs: list[bytes]
    body: bytes
    attempt: int


@dataclass(frozen=True)
class Job:
    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    user_id: uuid.UUID
    url: str
    #: the current secret first, then the previous one during a rotation's grace; empty: none decrypts
    secrets: tuple[str, ...]
    body: bytes
    attempt: int


@dataclass(frozen=True)
class Outcome:
    job: Job
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    retryable: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class SendReport:
    taken: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
    disabled: list[uuid.UUID] = field(default_factory=list)

    def add(self, other: SendReport) -> None:
        self.taken += other.taken
        self.succeeded += other.succeeded
        self.retrying += other.retrying
        self.failed += other.failed
        self.disabled.extend(other.disabled)


Poster = Callable[..., outbound.Response]


class WebhookSender:
    def __init__(self, db: Database, cipher_factory: Callable[[], KeyCipher], policy: OutboundPolicy,
                 config: SenderConfig | None = None, *, post: Poster = outbound.post,
                 clock: Callable[[], datetime] = utcnow, wall: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.db = db
        self._cipher_factory = cipher_factory
        self.policy = policy
        self.config = config or SenderConfig()
        self._post = post
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self._pool: ThreadPoolExecutor | None = None
        self._orphans_checked: datetime | None = None

    def run_once(self, only_ids: Sequence[uuid.UUID] | None = None) -> SendReport:
        """One round: claim, send (in parallel), record. `only_ids`: only those rows, if they are due."""
        return self.send(self.claim(only_ids))

    def send_taken(self, taken: Sequence[Taken]) -> SendReport:
        """Attempt and record rows the caller leased in its own transaction (`take`): the API's test and
        redeliver, which must report their attempt whatever a looping sender is doing meanwhile."""
        return self.send(self.jobs(taken))

    def send(self, jobs: Sequence[Job]) -> SendReport:
        if not jobs:
            return SendReport()
        if len(jobs) == 1:
            outcomes = [self.attempt(jobs[0])]
        else:
            outcomes = list(self.pool().map(self.attempt, jobs))
        report = self.record(outcomes)
        report.taken = len(jobs)
        return report

    # --- claim ------------------------------------------------------------------------------------------------

    def send_one(self, job: Job) -> SendReport:
        """Attempt and record one claimed job (the looping sender runs these on its threads)."""
        return self.record([self.attempt(job)])

    def claim(self, only_ids: Sequence[uuid.UUID] | None = None, limit: int | None = None) -> list[Job]:
        now = self.clock()
        cfg = self.config
        limit = cfg.batch_size if limit is None else min(limit, cfg.batch_size)
        with self.db.transaction() as session:
            if self._orphans_checked is None or now - self._orphans_checked >= ORPHAN_CHECK_EVERY:
                claims.abandon_orphans(session, now)
                self._orphans_checked = now
            pick = claims.candidates(session, now, only_ids, limit, cfg.per_user_concurrency)
            rows = list(session.scalars(
                select(D).where(D.id.in_(pick), D.status == "pending", D.next_attempt_at <= now)
                .with_for_update(skip_locked=True)))
            if not rows:
                return []
            taken = self.take(session, rows, now)
        return self.jobs(taken)

    def take(self, session: Session, rows: Sequence[WebhookDelivery], now: datetime) -> list[Taken]:
        """Lease `rows` (locked, or just inserted, by the caller's transaction) to this sender: no claim picks
        them up until the lease ends. What `jobs` needs to send them, read while the transaction is open."""
        until = now + self.config.lease
        for row in rows:
            row.claimed_until = until
            row.next_attempt_at = until
        hooks = {h.id: h for h in session.scalars(select(W).where(W.id.in_({r.webhook_id for r in rows})))}
        return [Taken(row.id, row.webhook_id, row.user_id, hook.url, _blobs(hook, now), body_of(row.payload),
                      row.attempts + 1)
                for row in rows if (hook := hooks[row.webhook_id]).user_id == row.user_id]

    def jobs(self, taken: Sequence[Taken]) -> list[Job]:
        return [Job(t.delivery_id, t.webhook_id, t.user_id, t.url, self._secrets(t.blobs, t.user_id, t.webhook_id),
                    t.body, t.attempt) for t in taken]

    def _secrets(self, blobs: list[bytes], user_id: uuid.UUID, webhook_id: uuid.UUID) -> tuple[str, ...]:
        try:
            cipher = self._cipher_factory()
        except ConfigError:
            logger.error("webhook secrets cannot be read: no YMERA_PROVIDER_KEY_ENCRYPTION_KEY on this stage")
            return ()
        plain = [cipher.decrypt(blob, user_id, secret_aad(webhook_id)) for blob in blobs]
        if plain[0] is None:
            return ()  # never sign with the previous secret alone
        return tuple(p for p in plain if p is not None)

    # --- send -------------------------------------------------------------------------------------------------

    def attempt(self, job: Job) -> Outcome:
        started = self.clock()
        t0 = time.monotonic()

        def done(**kw: Any) -> Outcome:
            return Outcome(job, started, int((time.monotonic() - t0) * 1000), **kw)

        if not job.secrets:
            logger.error("a webhook's signing secret does not decrypt", extra={"webhook_id": str(job.webhook_id)})
            return done(error="the signing secret cannot be read (rotate it)", retryable=True)
        msg_id = f"msg_{job.delivery_id.hex}"
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   **signing.headers(job.secrets, msg_id, int(self.wall()), job.body)}
        try:
            response = self._post(job.url, job.body, headers, timeout=self.config.timeout_seconds,
                                  max_bytes=self.config.max_response_bytes, policy=self.policy, truncate=True)
        except OutboundRefusedError as exc:  # the address is not allowed (now): retrying will not change that
            return done(error=f"{exc.code}: {exc.message}")
        except AppError as exc:  # timeout, connection refused/reset, DNS
            return done(error=f"{exc.code}: {exc.message}", retryable=True)
        except Exception as exc:  # noqa: BLE001 - anything else is a failed attempt, retried like a network error
            logger.warning("webhook attempt failed unexpectedly", exc_info=True,
                           extra={"webhook_id": str(job.webhook_id)})
            return done(error=f"{type(exc).__name__}", retryable=True)
        status = response.status
        excerpt = response.body[:EXCERPT_CHARS * 4].decode("utf-8", "replace").replace("\x00", "")[:EXCERPT_CHARS]
        if 200 <= status < 300:
            return done(status_code=status, excerpt=excerpt or None)
        retryable = status == 429 or status >= 500
        return done(status_code=status, error=f"the receiver answered {status}", excerpt=excerpt or None,
                    retryable=retryable, retry_after=_retry_after(response.headers.get("retry-after"), self.wall())
                    if retryable else None)

    # --- record -----------------------------------------------------------------------------------------------

    def record(self, outcomes: Sequence[Outcome]) -> SendReport:
        report = SendReport()
        now = self.clock()
        with self.db.transaction() as session:
            hook_ids = sorted({o.job.webhook_id for o in outcomes})
            # A subscription's row is locked only when its failure count may change (a failure, or a success
            # after failures): one user's concurrent successes do not queue on it. Subscriptions first, in id
            # order, then deliveries: the order the API locks them in.
            counts = dict(session.execute(select(W.id, W.failure_count).where(W.id.in_(hook_ids))).tuples().all())
            failing = {o.job.webhook_id for o in outcomes if not o.ok}
            lock = sorted(h for h in counts if h in failing or counts[h])
            hooks = {h.id: h for h in session.scalars(select(W).where(W.id.in_(lock)).order_by(W.id)
                                                      .with_for_update())} if lock else {}
            hooks.update({h.id: h for h in session.scalars(select(W).where(W.id.in_(set(counts) - set(lock))))})
            rows = {r.id: r for r in session.scalars(
                select(D).where(D.id.in_([o.job.delivery_id for o in outcomes])).order_by(D.id).with_for_update())}
            for outcome in outcomes:
                row, hook = rows.get(outcome.job.delivery_id), hooks.get(outcome.job.webhook_id)
                if row is None or hook is None:
                    continue  # the subscription was deleted while the request was out
                self._record_one(session, row, hook, outcome, now, report)
        return report

    def _record_one(self, session: Session, row: WebhookDelivery, hook: Webhook, outcome: Outcome, now: datetime,
                    report: SendReport) -> None:
        attempt = WebhookAttempt(delivery_id=row.id, attempt=outcome.job.attempt, started_at=outcome.started_at,
                                 status_code=outcome.status_code, latency_ms=outcome.latency_ms, error=outcome.error,
                                 response_excerpt=outcome.excerpt)
        session.add(attempt)
        row.attempts = max(row.attempts, outcome.job.attempt)
        row.last_status_code, row.last_latency_ms, row.last_error = outcome.status_code, outcome.latency_ms, \
            outcome.error
        row.claimed_until = None
        row.updated_at = now
        if row.status != "pending":  # abandoned while the request was out (its subscription was disabled)
            return
        if outcome.ok:
            row.status, row.next_attempt_at = "succeeded", None
            if hook.failure_count:
                hook.failure_count = 0
            report.succeeded += 1
            return
        if outcome.retryable:
            if outcome.retry_after is not None:  # the receiver's wish, within bounds
                delay = min(max(outcome.retry_after, 0.0), float(self.config.retry_after_max_seconds))
            else:
                delay = self.config.backoff.delay(row.attempts, self.rng)
            due = now + timedelta(seconds=delay)
            if due <= row.retry_until:
                row.next_attempt_at = attempt.next_retry_at = due
                report.retrying += 1
                return
            row.status = "abandoned"
        else:
            row.status = "failed"
        row.next_attempt_at = None
        report.failed += 1
        hook.failure_count += 1
        if hook.status == "active" and hook.failure_count >= self.config.disable_after:
            disable(session, hook, f"{hook.failure_count} deliveries in a row failed (last: {outcome.error})",
                    now, except_id=row.id)
            report.disabled.append(hook.id)

    def purge(self, retention: timedelta, batch: int) -> int:
        with self.db.transaction() as session:
            return claims.purge(session, self.clock() - retention, batch)

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.threads, thread_name_prefix="webhook-send")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def disable(session: Session, hook: Webhook, reason: str, now: datetime, *,
            except_id: uuid.UUID | None = None) -> None:
    """Disable a subscription in the caller's transaction: audit row, `webhook.disabled` event, pending
    deliveries abandoned. The caller holds the subscription's row lock."""
    from chalicelib.events import ledger

    hook.status, hook.disabled_reason, hook.updated_at = "disabled", reason[:200], now
    stmt = update(D).where(D.webhook_id == hook.id, D.user_id == hook.user_id, D.status == "pending")
    if except_id is not None:
        stmt = stmt.where(D.id != except_id)
    session.execute(stmt.values(status="abandoned", next_attempt_at=None, claimed_until=None, updated_at=now,
                                last_error="the webhook was disabled").execution_options(synchronize_session=False))
    audit.record(session, user_id=hook.user_id, event_type="webhook", action="disable", resource_type="webhook",
                 resource_id=hook.id, details={"reason": hook.disabled_reason, "failure_count": hook.failure_count})
    ledger.append(session, hook.user_id, DISABLED_EVENT, "webhook", hook.id, "disabled",
                  {"webhook_id": str(hook.id), "reason": hook.disabled_reason, "failure_count": hook.failure_count})
    logger.warning("webhook disabled after repeated failures", extra={"webhook_id": str(hook.id),
                                                                      "failure_count": hook.failure_count})


def _blobs(hook: Webhook, now: datetime) -> list[bytes]:
    """The current secret's ciphertext, and the previous one's while its grace lasts."""
    blobs = [bytes(hook.secret_ciphertext)]
    if hook.previous_secret_ciphertext is not None and hook.previous_secret_expires_at is not None \
            and hook.previous_secret_expires_at > now:
        blobs.append(bytes(hook.previous_secret_ciphertext))
    return blobs


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError):
        return None
