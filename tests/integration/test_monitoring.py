"""GET /metrics and GET /status against real Postgres, Redis and moto SQS; JSON logs and EMF metrics."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from chalicelib.agents.registry import available_types
from chalicelib.container import Container, set_container
from chalicelib.messaging.inspection import QueueInspector
from chalicelib.services.request_metrics import RequestMetrics
from functions.agent_consumer import handler as consumer
from tests.integration.conftest import PREFIX, Api, FakeContext, sqs_event
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_api_tasks import create_task
from tests.integration.test_rate_limit import unreachable_redis

SCRAPE_TOKEN = "scrape-" + "s" * 40
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(metric name, labels): value}; fails on any line that is not valid exposition."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def scrape_token(container: Container) -> str:
    container.settings = container.settings.model_copy(update={"metrics_token": SCRAPE_TOKEN})
    return SCRAPE_TOKEN


def admin(api: Api) -> Api:
    from chalicelib.admin import create_admin

    name = f"admin{uuid.uuid4().hex[:6]}"
    create_admin(name, f"{name}@example.com", "admin password")
    boss = Api(api.client)
    r = boss.call("POST", "/auth/login", {"username": name, "password": "admin password"})
    assert r.status_code == 200, r.json_body
    boss.token = r.json_body["access_token"]
    return boss


def scrape(api: Api, token: str | None = None) -> dict[Any, float]:
    r = api.call("GET", "/metrics", token=token)
    assert r.status_code == 200, r.body
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(r.body.decode())


# --- who may read ---------------------------------------------------------------------------------------------


def test_metrics_need_an_admin_or_the_scrape_token(api: Api, scrape_token: str) -> None:
    assert_envelope(api.call("GET", "/metrics"), 401, "AUTHENTICATION_ERROR")
    api.signup()
    assert_envelope(api.call("GET", "/metrics"), 403, "AUTHORIZATION_ERROR")
    assert_envelope(api.call("GET", "/metrics", token=scrape_token + "x"), 401, "AUTHENTICATION_ERROR")
    assert value(scrape(api, token=scrape_token), "ymera_build_info", version="0.1.0", stage="test") == 1
    assert value(scrape(admin(api)), "ymera_build_info", version="0.1.0", stage="test") == 1


def test_without_a_configured_token_no_bearer_string_opens_metrics(api: Api, container: Container) -> None:
    assert container.settings.metrics_token == ""
    assert_envelope(api.call("GET", "/metrics", token=""), 401, "AUTHENTICATION_ERROR")
    assert_envelope(api.call("GET", "/metrics", headers={"Authorization": "Bearer "}), 401, "AUTHENTICATION_ERROR")


def test_status_is_for_any_authenticated_user(api: Api) -> None:
    assert_envelope(api.call("GET", "/status"), 401, "AUTHENTICATION_ERROR")
    api.signup()
    assert api.call("GET", "/status").status_code == 200


def test_status_shows_platform_wide_counts_only_to_admins(api: Api, other_api: Api) -> None:
    # GIVEN two users with agents of their own
    api.signup()
    api.agent()
    api.agent("examination")
    other_api.signup()
    other_api.agent()
    # WHEN a user asks, THEN they see their own agents and no queue depths (both are other tenants' business)
    mine = other_api.call("GET", "/status").json_body
    assert mine["scope"] == "user" and mine["agents"] == {"active": 1, "inactive": 0, "offline": 0}
    assert mine["queues"] == []
    # An admin sees the platform.
    everyone = admin(api).call("GET", "/status").json_body
    assert everyone["scope"] == "platform" and everyone["agents"] == {"active": 3, "inactive": 0, "offline": 0}
    assert [q["agent_type"] for q in everyone["queues"]] == list(available_types())  # every agent queue, in order


class CountingSqs:
    """Counts the SQS calls made through a boto3 client (botocore's event hooks; the calls still reach moto)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.sqs.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def test_liveness_does_no_io_and_answers_while_the_database_is_down(api: Api, container: Container) -> None:
    from chalicelib.db.session import Database, make_engine

    sqs = CountingSqs(container.publisher.client)
    container.__dict__["db"] = Database(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    container.__dict__.pop("health", None)
    r = api.call("GET", "/health")
    assert r.status_code == 200 and r.json_body == {"status": "ok", "version": "0.1.0", "stage": "test"}
    assert sqs.calls == []
    ready = api.call("GET", "/health/ready")
    assert ready.status_code == 503 and ready.json_body["checks"]["database"]["status"] == "down"


def test_readiness_checks_dependencies_at_most_once_per_cache_period(api: Api, container: Container) -> None:
    sqs = CountingSqs(container.publisher.client)
    first = api.call("GET", "/health/ready")
    assert first.status_code == 200 and first.json_body["status"] == "ok"
    assert set(first.json_body["checks"]) == {"database", "redis", "queues"}
    per_check = sqs.calls.count("GetQueueAttributes")
    assert per_check == 2 * len(available_types())  # one per agent queue: both lanes of every type
    for _ in range(20):
        again = api.call("GET", "/health/ready")
        assert again.status_code == 200 and again.json_body["age_seconds"] >= 0
    assert sqs.calls.count("GetQueueAttributes") == per_check  # 21 requests within the cache period: one check
    container.settings = container.settings.model_copy(update={"readiness_cache_seconds": 0})
    container.__dict__.pop("health")  # built with the new setting: no cache
    api.call("GET", "/health/ready")
    api.call("GET", "/health/ready")
    assert sqs.calls.count("GetQueueAttributes") == 3 * per_check


# --- what they report -----------------------------------------------------------------------------------------


def test_request_counts_and_latency_histogram_by_route_and_status(api: Api, scrape_token: str) -> None:
    api.signup()
    agent = api.agent()
    for _ in range(2):
        assert api.call("GET", f"/agents/{agent['id']}").status_code == 200
    assert api.call("GET", f"/agents/{uuid.uuid4()}").status_code == 404

    samples = scrape(api, scrape_token)
    ok = {"route": "/agents/{agent_id}", "method": "GET", "status": "200"}
    assert value(samples, "ymera_http_requests_total", **ok) == 2
    assert value(samples, "ymera_http_requests_total", **{**ok, "status": "404"}) == 1
    assert value(samples, "ymera_http_requests_total", route="/agents", method="POST", status="201") == 1
    # Histogram: cumulative buckets ending in +Inf == count, and a positive sum.
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                     if name == "ymera_http_request_duration_seconds_bucket" and dict(labels).items() >= ok.items())
    assert buckets[-1] == (float("inf"), 2)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert value(samples, "ymera_http_request_duration_seconds_count", **ok) == 2
    assert 0 < value(samples, "ymera_http_request_duration_seconds_sum", **ok) < 10  # type: ignore[operator]


def test_request_metrics_aggregate_across_containers(api: Api, container: Container, scrape_token: str) -> None:
    """Requests served by one Lambda container are visible in a scrape answered by another, once the
    first container has flushed its buffer: at its first request a flush interval after the oldest sample."""
    now = [0.0]
    container.request_metrics = RequestMetrics(container.redis, container.settings.redis_key_prefix,
                                               flush_seconds=1.0, clock=lambda: now[0])
    api.signup()
    for _ in range(3):
        api.call("GET", "/agents")
    first = container
    other = Container(container.settings, database=container.db)  # another cold start: no shared memory
    set_container(other)
    assert value(scrape(api, scrape_token), "ymera_http_requests_total", route="/agents", method="GET",
                 status="200") is None  # still in the first container's buffer

    set_container(first)
    now[0] += 1.0
    api.call("GET", "/agents")  # a second later: this request finds the buffer due and writes it, itself included
    assert first.request_metrics is not None and first.request_metrics.buffered == 0
    set_container(other)
    samples = scrape(api, scrape_token)
    assert value(samples, "ymera_http_requests_total", route="/agents", method="GET", status="200") == 4


def test_task_counts_by_state_and_agent_type(api: Api, scrape_token: str) -> None:
    api.signup()
    validation, examination = api.agent("validation"), api.agent("examination")
    done = create_task(api, validation["id"]).json_body
    create_task(api, validation["id"])
    create_task(api, examination["id"], input_data={"source": "x = 1\n"})
    consumer(sqs_event([("m1", json.dumps({"task_id": done["id"], "agent_type": "validation"}))]), FakeContext())

    samples = scrape(api, scrape_token)
    assert value(samples, "ymera_tasks", agent_type="validation", status="completed") == 1
    # Published right after commit, so the others are queued.
    assert value(samples, "ymera_tasks", agent_type="validation", status="queued") == 1
    assert value(samples, "ymera_tasks", agent_type="examination", status="queued") == 1
    assert value(samples, "ymera_tasks", agent_type="validation", status="pending") == 0
    assert value(samples, "ymera_tasks", agent_type="examination", status="failed") == 0  # zeros are explicit
    assert value(samples, "ymera_agents", status="active") == 2


def fill_queues(aws: Any, main: int, dlq: int, bulk: int = 0) -> None:
    for name, n in ((f"{PREFIX}-agent-validation", main), (f"{PREFIX}-agent-validation-dlq", dlq),
                    (f"{PREFIX}-agent-validation-bulk", bulk)):
        url = aws.get_queue_url(QueueName=name)["QueueUrl"]
        for i in range(n):
            aws.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))


def test_queue_and_dlq_depths_in_metrics_and_status(api: Api, aws: Any, scrape_token: str) -> None:
    fill_queues(aws, main=3, dlq=2, bulk=4)
    samples = scrape(api, scrape_token)
    assert value(samples, "ymera_queue_messages", agent_type="validation", queue=f"{PREFIX}-agent-validation") == 3
    assert value(samples, "ymera_queue_messages", agent_type="validation",
                 queue=f"{PREFIX}-agent-validation-bulk") == 4  # each lane its own series
    assert len([s for s in samples if s[0] == "ymera_dlq_messages"]) == len(list(available_types()))  # one DLQ
    assert value(samples, "ymera_dlq_messages", agent_type="validation",
                 queue=f"{PREFIX}-agent-validation-dlq") == 2
    assert value(samples, "ymera_queue_messages", agent_type="examination", queue=f"{PREFIX}-agent-examination") == 0
    assert value(samples, "ymera_scrape_error", source="sqs") == 0

    status = admin(api).call("GET", "/status").json_body
    queues = {q["agent_type"]: q for q in status["queues"]}
    assert queues["validation"] == {"agent_type": "validation", "queue": f"{PREFIX}-agent-validation",
                                    "messages": 3, "in_flight": 0, "dlq": f"{PREFIX}-agent-validation-dlq",
                                    "dlq_messages": 2, "error": None,
                                    "bulk_queue": f"{PREFIX}-agent-validation-bulk", "bulk_messages": 4,
                                    "bulk_in_flight": 0}


def test_status_reports_version_stage_uptime(api: Api) -> None:
    api.signup()
    body = api.call("GET", "/status").json_body
    assert body["version"] == "0.1.0" and body["stage"] == "test"
    assert body["uptime_seconds"] > 0
    assert datetime.fromisoformat(body["started_at"]) <= datetime.now(timezone.utc)


def test_a_broken_source_is_reported_and_the_rest_still_served(api: Api, container: Container, aws: Any,
                                                               scrape_token: str) -> None:
    api.signup()
    api.agent()
    container.request_metrics = RequestMetrics(unreachable_redis(), container.settings.redis_key_prefix)
    container.queue_inspector = QueueInspector(lambda: aws, "not-deployed")
    container.__dict__.pop("monitoring", None)  # rebuild the service over the broken sources

    samples = scrape(api, scrape_token)
    assert value(samples, "ymera_scrape_error", source="redis") == 1
    assert value(samples, "ymera_scrape_error", source="sqs") == 1
    assert value(samples, "ymera_scrape_error", source="database") == 0
    assert value(samples, "ymera_agents", status="active") == 1
    assert not any(name == "ymera_http_requests_total" for name, _ in samples)

    queues = admin(api).call("GET", "/status").json_body["queues"]
    assert {(q["messages"], q["error"]) for q in queues} == {(None, "QueueDoesNotExist")}


# --- logs and EMF ---------------------------------------------------------------------------------------------


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_api_logs_carry_request_id_and_user_id_cleared_per_request(api: Api, json_logs: io.StringIO) -> None:
    user_id = jwt_sub(api.signup()["access_token"])
    assert api.call("GET", "/agents").status_code == 200
    api.call("GET", "/health", token="")
    access = [entry for entry in lines(json_logs) if entry["message"] == "request"]
    agents = next(e for e in access if e["route"] == "/agents")
    health = next(e for e in access if e["route"] == "/health")
    assert agents["user_id"] == user_id and agents["status"] == 200 and agents["request_id"]
    assert "user_id" not in health and health["request_id"] != agents["request_id"]


def jwt_sub(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def test_consumer_logs_carry_task_and_message_ids(api: Api, json_logs: io.StringIO) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    consumer(sqs_event([("m-42", json.dumps({"task_id": task["id"], "agent_type": "validation"})),
                        ("m-bad", "not json")]), FakeContext())
    entries = lines(json_logs)
    finished = next(e for e in entries if e["message"] == "task finished")
    assert finished["task_id"] == task["id"] and finished["message_id"] == "m-42"
    malformed = next(e for e in entries if e["message"] == "malformed task message")
    assert malformed["message_id"] == "m-bad" and "task_id" not in malformed


def emf_blobs(text: str) -> list[dict[str, Any]]:
    return [blob for blob in (json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"'))]


def test_consumer_emits_task_metrics_as_emf(api: Api, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    api.signup()
    agent = api.agent()
    good = create_task(api, agent["id"]).json_body
    bad = create_task(api, agent["id"], input_data={"schema": {"type": "nonsense"}, "payload": 1}).json_body
    capsys.readouterr()
    consumer(sqs_event([("m1", json.dumps({"task_id": good["id"], "agent_type": "validation"})),
                        ("m2", json.dumps({"task_id": bad["id"], "agent_type": "validation"}))]), FakeContext())

    [blob] = emf_blobs(capsys.readouterr().out)
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "YMERA"
    assert ["agent_type", "service"] == sorted(directive["Dimensions"][0])
    assert blob["agent_type"] == "validation"
    assert blob["TaskCompleted"] == [1.0] and blob["TaskFailed"] == [1.0]
    assert len(blob["TaskDurationMs"]) == 2 and all(v >= 0 for v in blob["TaskDurationMs"])
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {"TaskCompleted": "Count", "TaskFailed": "Count", "TaskDurationMs": "Milliseconds"}


def test_consumer_emits_nothing_for_duplicate_deliveries(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.signup()
    task = create_task(api, api.agent()["id"]).json_body
    body = json.dumps({"task_id": task["id"], "agent_type": "validation"})
    consumer(sqs_event([("m1", body)]), FakeContext())
    capsys.readouterr()
    consumer(sqs_event([("m2", body)]), FakeContext())  # already completed: acknowledged, not re-run
    assert emf_blobs(capsys.readouterr().out) == []
