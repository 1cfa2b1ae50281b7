"""Alerts: what crosses a threshold, the cooldown of standing conditions, and publishing failures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.agents import registry
from chalicelib.errors import ValidationError
from chalicelib.messaging.inspection import QueueDepth
from chalicelib.services.alerts import Alert, AlertPublisher
from chalicelib.services.watchdog import Watchdog

ARN = "arn:aws:sns:us-east-1:123456789012:ymera-test-alerts"


class FakeSns:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def publish(self, **kwargs: Any) -> dict[str, str]:
        if self.fail:
            raise ConnectionError("sns unreachable")
        self.sent.append(kwargs)
        return {"MessageId": f"m{len(self.sent)}"}


class FakeRedis:
    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    def set(self, key: str, value: bytes, nx: bool = False, ex: int | None = None) -> bool:
        if nx and key in self.keys:
            return False
        self.keys[key] = value
        return True

    def delete(self, key: str) -> int:
        return 1 if self.keys.pop(key, None) is not None else 0


class FakeHealth:
    def __init__(self, down: str | None) -> None:
        self.down = down

    def check(self, queue_types: tuple[str, ...]) -> tuple[bool, dict[str, Any]]:
        checks = {name: {"status": "down" if name == self.down else "ok", "required": name == "database",
                         "latency_ms": 1.0} for name in ("database", "redis", "queues")}
        return self.down != "database", {"status": "degraded" if self.down else "ok", "checks": checks}


class FakeInspector:
    def depths(self, agent_types: list[str]) -> list[QueueDepth]:
        return [QueueDepth(t, f"q-{t}", f"q-{t}-dlq", messages=0, in_flight=0, dlq_messages=3 if t == "llm" else 0)
                for t in agent_types]


def publisher(sns: FakeSns, redis: Any = None) -> AlertPublisher:
    return AlertPublisher(lambda: sns, topic_name="ymera-test-alerts", topic_arn=ARN, redis=redis,
                          key_prefix="t:", cooldown_seconds=900)


def test_a_standing_alert_is_sent_once_per_cooldown() -> None:
    sns, redis = FakeSns(), FakeRedis()
    alerts = publisher(sns, redis)
    down = Alert("dependency_down", "warning", "redis is down", {"dependency": "redis"}, fingerprint="dependency:redis")
    assert alerts.publish(down)["status"] == "sent"
    assert alerts.publish(down) == {"kind": "dependency_down", "severity": "warning", "summary": "redis is down",
                                    "status": "suppressed", "cooldown_seconds": 900}
    assert len(sns.sent) == 1
    sent = sns.sent[0]
    assert sent["TopicArn"] == ARN and sent["Subject"] == "[warning] redis is down"
    assert json.loads(sent["Message"])["details"] == {"dependency": "redis"}
    assert sent["MessageAttributes"]["kind"]["StringValue"] == "dependency_down"


def test_transition_alerts_have_no_cooldown_and_no_redis_means_always_send() -> None:
    sns = FakeSns()
    alerts = publisher(sns, redis=None)
    offline = Alert("agents_offline", "warning", "1 agent(s) marked offline")
    standing = Alert("dlq_not_empty", "warning", "3 message(s)", fingerprint="dlq:x")
    for _ in range(2):
        assert alerts.publish(offline)["status"] == "sent"
        assert alerts.publish(standing)["status"] == "sent"
    assert len(sns.sent) == 4


def test_a_failed_publish_is_reported_and_does_not_start_the_cooldown() -> None:
    redis = FakeRedis()
    broken = publisher(FakeSns(fail=True), redis)
    down = Alert("dependency_down", "critical", "database is down", fingerprint="dependency:database")
    result = broken.publish(down)
    assert result["status"] == "error" and "sns unreachable" in result["error"]
    assert redis.keys == {}  # the next check tries again
    assert publisher(FakeSns(), redis).publish(down)["status"] == "sent"


def test_the_watchdog_alerts_on_a_down_dependency_and_a_non_empty_dlq() -> None:
    watchdog = Watchdog(FakeHealth(down="redis"), FakeInspector(), lambda: ["validation", "llm"])
    report = watchdog.run(None, now=None, stale_seconds=300, user_id=None,  # type: ignore[arg-type]
                          checks=["dependencies", "dlq"])
    assert [(a.kind, a.severity, a.fingerprint) for a in report.alerts] == [
        ("dependency_down", "warning", "dependency:redis"), ("dlq_not_empty", "warning", "dlq:q-llm-dlq")]
    assert report.checked == ["dependencies", "dlq"] and report.offline == []
    assert [q["dlq_messages"] for q in report.queues or []] == [0, 3]


def test_a_down_database_is_critical() -> None:
    report = Watchdog(FakeHealth(down="database"), None, lambda: []).run(
        None, now=None, stale_seconds=300, user_id=None, checks=["dependencies"])  # type: ignore[arg-type]
    assert [(a.summary.split(" ")[0], a.severity) for a in report.alerts] == [("database", "critical")]


@pytest.mark.parametrize("bad", [{"checks": []}, {"checks": ["disk"]}, {"stale_after_seconds": 5}])
def test_monitoring_input_is_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        registry.validate_input("monitoring", bad)


@pytest.mark.parametrize("summary", ["\u0001x", "two\nlines\r\n", "naïve ☃ " * 30, "", "\x00" * 5])
def test_the_subject_is_one_line_of_printable_ascii_of_at_most_100_characters(summary: str) -> None:
    sns = FakeSns()
    assert publisher(sns).publish(Alert("agents_offline", "warning", summary))["status"] == "sent"
    subject = sns.sent[0]["Subject"]
    assert 1 <= len(subject) <= 100 and all(" " <= c <= "~" for c in subject), subject
    assert json.loads(sns.sent[0]["Message"])["summary"] == summary  # the body keeps the exact text
