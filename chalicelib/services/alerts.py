"""Alerts to the operators' SNS topic (`<queue_prefix>-alerts`, created by infra/).

A standing condition (a dependency down, messages in a DLQ) is checked every
few minutes; without a cooldown it would page every few minutes too. An alert
with a fingerprint is therefore sent at most once per cooldown (a Redis
SET NX EX). Without Redis it is sent every time: a noisy pager beats a
silent one. Alerts about a transition (agents just marked offline) have no
fingerprint and are always sent — each transition happens once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chalicelib.observability import logger

SUBJECT_MAX = 100  # SNS limit for email subjects
#: SNS refuses a Subject with anything but printable ASCII (no line breaks, no control characters).
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")


def sanitize_subject(text: str) -> str:
    """A Subject SNS accepts: printable ASCII, one line, at most 100 characters, never empty.

    Summaries quote user-chosen names (an agent called "\\u0001x"); SNS answers InvalidParameter
    to the whole Publish for one bad character, so the subject is cleaned here, at the publisher.
    The message body (JSON, ASCII-escaped) keeps the exact text.
    """
    subject = " ".join(_NOT_PRINTABLE.sub("?", text).split())
    if len(subject) > SUBJECT_MAX:
        subject = subject[:SUBJECT_MAX - 3].rstrip() + "..."
    return subject or "(no subject)"


@dataclass(frozen=True)
class Alert:
    kind: str  # dependency_down | agents_offline | dlq_not_empty
    severity: str  # critical | warning
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    #: same fingerprint = same standing condition: re-sent only after the cooldown.
    fingerprint: str | None = None


class TopicNotFoundError(RuntimeError):
    pass


class AlertPublisher:
    def __init__(self, sns_factory: Callable[[], Any], *, topic_name: str, topic_arn: str | None = None,
                 redis: Any = None, key_prefix: str = "", cooldown_seconds: int = 900, source: str = "ymera") -> None:
        self._sns_factory = sns_factory
        self._sns: Any = None
        self.topic_name = topic_name
        self._topic_arn = topic_arn
        self.redis = redis
        self.key_prefix = key_prefix
        self.cooldown_seconds = cooldown_seconds
        self.source = source

    @property
    def sns(self) -> Any:
        if self._sns is None:
            self._sns = self._sns_factory()
        return self._sns

    def topic_arn(self) -> str:
        """The configured ARN, or the topic named `topic_name` (how the local runtime finds bootstrap's)."""
        if self._topic_arn is None:
            for page in self.sns.get_paginator("list_topics").paginate():
                for topic in page.get("Topics", []):
                    if topic["TopicArn"].rsplit(":", 1)[-1] == self.topic_name:
                        self._topic_arn = str(topic["TopicArn"])
                        return self._topic_arn
            raise TopicNotFoundError(f"SNS topic {self.topic_name!r} not found: deploy infra/ or run "
                                     "`python -m infra.bootstrap`, or set YMERA_ALERT_TOPIC_ARN")
        return self._topic_arn

    def publish(self, alert: Alert, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one alert; the answer says what happened (sent, suppressed, or the error) — never raises."""
        outcome: dict[str, Any] = {"kind": alert.kind, "severity": alert.severity, "summary": alert.summary}
        if alert.fingerprint is not None and not self._first_in_cooldown(alert.fingerprint):
            return {**outcome, "status": "suppressed", "cooldown_seconds": self.cooldown_seconds}
        message = {"source": self.source, **asdict(alert), **(context or {})}
        try:
            response = self.sns.publish(
                TopicArn=self.topic_arn(), Subject=sanitize_subject(f"[{alert.severity}] {alert.summary}"),
                Message=json.dumps(message, default=str),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": alert.kind},
                                   "severity": {"DataType": "String", "StringValue": alert.severity}},
            )
        except Exception as exc:  # noqa: BLE001 - reported in the monitoring result, and logged
            logger.error("alert could not be published", extra={"kind": alert.kind, "error": repr(exc)})
            self._forget(alert.fingerprint)  # so the next check tries again instead of waiting out the cooldown
            return {**outcome, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {**outcome, "status": "sent", "message_id": response.get("MessageId")}

    def _key(self, fingerprint: str) -> str:
        return f"{self.key_prefix}alerts:{fingerprint}"

    def _first_in_cooldown(self, fingerprint: str) -> bool:
        if self.redis is None or self.cooldown_seconds <= 0:
            return True
        try:
            return bool(self.redis.set(self._key(fingerprint), b"1", nx=True, ex=self.cooldown_seconds))
        except Exception as exc:  # noqa: BLE001 - without Redis every alert goes out
            logger.warning("alert cooldown unavailable; sending", extra={"error": repr(exc)})
            return True

    def _forget(self, fingerprint: str | None) -> None:
        if fingerprint is None or self.redis is None:
            return
        try:
            self.redis.delete(self._key(fingerprint))
        except Exception as exc:  # noqa: BLE001 - worst case the alert waits out one cooldown
            logger.warning("alert cooldown could not be reset", extra={"error": repr(exc)})


def make_sns_client(region: str, endpoint_url: str | None, timeout: float) -> Any:
    """Honours AWS_ENDPOINT_URL through `endpoint_url` (settings); fails fast like the SQS client."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("sns", region_name=region, endpoint_url=endpoint_url, config=config)
