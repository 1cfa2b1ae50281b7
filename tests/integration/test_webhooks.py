"""Webhooks end to end on real Postgres: the API, the notifier's sink, the sender posting to a receiver on
loopback (allowed on the test stage, like development), signatures checked with the docs' own snippet."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from chalicelib.auth.tokens import ACCESS
from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.models import AuditLog
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.webhook_models import Webhook, WebhookDelivery
from chalicelib.net.outbound import OutboundPolicy
from chalicelib.webhooks import loop
from tests.integration.conftest import Api
from tests.integration.webhook_support import Answer, Receiver, docs_verify, receiving


@dataclass(frozen=True)
class FakeEvent:
    """The shape of chalicelib.events.ledger.Event the sink reads."""

    event_id: int
    type: str = "task.status_changed"
    status: str = "completed"
    resource_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "type": self.type, "resource": {"type": "task", "id": self.resource_id},
                "run_id": None, "step_id": None, "status": self.status, "occurred_at": "2026-12-02T04:00:00Z",
                "payload": {"title": "t"}}


@pytest.fixture
def container(settings: Settings, db: Database, aws: Any) -> Iterator[Container]:
    """Retries due at once (base 0) so a test can run the next round; a short deadline; disable after 3."""
    s = settings.model_copy(update={"webhook_retry_base_seconds": 0.0, "webhook_timeout_seconds": 1.0,
                                    "webhook_disable_after_failures": 3})
    c = Container(s, database=db)
    set_container(c)
    yield c
    c.webhook_sender.close()
    set_container(None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def user_of(container: Container, api: Api) -> uuid.UUID:
    assert api.token is not None
    return container.tokens.verify(api.token, ACCESS).user_id


def subscribe(api: Api, url: str, types: list[str] | None = None) -> dict[str, Any]:
    r = api.call("POST", "/webhooks", {"url": url, "event_types": types or ["*"], "description": "test"})
    assert r.status_code == 201, r.json_body
    return dict(r.json_body)


def fan(container: Container, user_id: uuid.UUID, events: list[FakeEvent]) -> None:
    with container.db.transaction() as session:
        container.webhook_sink.deliver(session, user_id, events)


def deliveries(api: Api, hook_id: str, **query: str) -> list[dict[str, Any]]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    r = api.call("GET", f"/webhooks/{hook_id}/deliveries" + (f"?{qs}" if qs else ""))
    assert r.status_code == 200, r.json_body
    return list(r.json_body["items"])


# --- the happy path, signed ----------------------------------------------------------------------------------


def test_a_receiver_on_loopback_gets_a_delivery_signed_as_the_docs_verify_it(
        container: Container, api: Api, receiver: Receiver) -> None:
    # GIVEN a subscription to every event type, and the docs' verification snippet
    api.signup()
    hook = subscribe(api, receiver.url)
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) >= 6 + 32
    verify = docs_verify()
    # WHEN the notifier hands the user's event to the sink and the sender runs
    event = FakeEvent(7)
    fan(container, user_of(container, api), [event])
    report = container.webhook_sender.run_once()
    # THEN the receiver got it once, with Standard Webhooks headers, and the docs' code accepts the signature
    (got,) = receiver.wait_for(1)
    assert report.succeeded == 1
    assert got.path == "/hook" and got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"].startswith("msg_")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    assert got.headers["webhook-signature"].startswith("v1,")
    assert verify(hook["secret"], got.headers, got.body) == event.to_json()
    # a flipped byte, another secret or an old timestamp do not pass
    with pytest.raises(ValueError):
        verify(hook["secret"], got.headers, got.body.replace(b"completed", b"failed!!!"))
    with pytest.raises(ValueError):
        verify("whsec_" + "A" * 44, got.headers, got.body)
    with pytest.raises(ValueError):
        verify(hook["secret"], got.headers, got.body, tolerance=-1)
    # AND the delivery log shows one succeeded attempt with its latency; the secret is never shown again
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "succeeded" and d["event_id"] == 7 and d["event"] == event.to_json()
    assert d["last_status_code"] == 200 and len(d["attempt_log"]) == 1
    assert d["attempt_log"][0]["status_code"] == 200 and d["attempt_log"][0]["latency_ms"] >= 0
    listed = api.call("GET", "/webhooks").json_body["items"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert "secret" not in api.call("GET", f"/webhooks/{hook['id']}").json_body


def test_a_tasks_ledger_events_reach_the_receiver_as_get_events_shows_them(
        container: Container, api: Api, receiver: Receiver) -> None:
    """Real events: the triggers write them as the task changes; the sink gets them the way the notifier
    hands them over (ledger.list_after after its cursor)."""
    from tests.integration.test_api_tasks import create_task
    from tests.integration.test_consumer import message, run

    api.signup()
    uid = user_of(container, api)
    hook = subscribe(api, receiver.url, ["task.status_changed"])
    agent = api.agent()
    task = create_task(api, agent["id"]).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    events = _ledger_events(container, uid)
    assert [e.status for e in events][-2:] == ["processing", "completed"]
    fan(container, uid, events)  # type: ignore[arg-type]
    container.webhook_sender.run_once()
    got = receiver.wait_for(len(events))
    verify = docs_verify()
    bodies = sorted((verify(hook["secret"], r.headers, r.body) for r in got), key=lambda e: e["event_id"])
    shown = api.call("GET", "/events?after=0").json_body["items"]
    assert bodies == shown and {b["resource"]["id"] for b in bodies} == {task["id"]}


def test_the_notifier_hands_a_tasks_events_to_the_webhook_sink(container: Container, api: Api,
                                                                receiver: Receiver) -> None:
    """The real path: consumer commit -> ledger trigger -> the notifier's round (its sinks from the container)
    -> delivery rows -> the sender -> the receiver; the notifier's cursor moves past them."""
    from chalicelib.events.notifier import Report
    from tests.integration.test_api_tasks import create_task
    from tests.integration.test_consumer import message, run

    api.signup()
    uid = user_of(container, api)
    hook = subscribe(api, receiver.url, ["task.status_changed"])
    task = create_task(api, api.agent()["id"]).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    notifier = container.notifier()
    try:
        notifier.round(Report())
    finally:
        notifier.close()
    container.webhook_sender.run_once()
    events = _ledger_events(container, uid)
    got = receiver.wait_for(len(events))
    verify = docs_verify()
    assert sorted(verify(hook["secret"], r.headers, r.body)["event_id"] for r in got) == [e.event_id for e in events]
    notifier = container.notifier()
    try:
        notifier.round(Report())  # nothing pending: no second delivery
    finally:
        notifier.close()
    assert container.webhook_sender.run_once().taken == 0


def test_the_same_event_handed_over_twice_is_one_delivery(container: Container, api: Api,
                                                          receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    uid = user_of(container, api)
    fan(container, uid, [FakeEvent(1), FakeEvent(2)])
    fan(container, uid, [FakeEvent(2)])  # the notifier's cursor CAS lost: at-least-once hands it over again
    container.webhook_sender.run_once()
    assert len(receiver.wait_for(2)) == 2
    assert sorted(d["event_id"] for d in deliveries(api, hook["id"])) == [1, 2]


def test_event_types_narrow_what_a_subscription_receives(container: Container, api: Api,
                                                         receiver: Receiver) -> None:
    api.signup()
    runs = subscribe(api, receiver.url, ["run.status_changed", "run.step_changed"])
    everything = subscribe(api, receiver.url, ["*"])
    fan(container, user_of(container, api), [FakeEvent(1, "task.status_changed"), FakeEvent(2, "run.status_changed")])
    assert [d["event_id"] for d in deliveries(api, runs["id"])] == [2]
    assert sorted(d["event_id"] for d in deliveries(api, everything["id"])) == [1, 2]
    for bad in (["task.nope"], ["*", "task.status_changed"], [], ["run.status_changed", "run.status_changed"]):
        r = api.call("POST", "/webhooks", {"url": receiver.url, "event_types": bad})
        assert r.status_code == 422, (bad, r.json_body)
    r = api.call("PUT", f"/webhooks/{runs['id']}", {"event_types": ["task.status_changed"]})
    assert r.status_code == 200 and r.json_body["event_types"] == ["task.status_changed"]


# --- retries -------------------------------------------------------------------------------------------------


def test_a_500_is_retried_and_the_retry_is_delivered(container: Container, api: Api, receiver: Receiver) -> None:
    # GIVEN a receiver that answers 500 once, then 200
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.script = [Answer(500, body=b"database is down")]
    fan(container, user_of(container, api), [FakeEvent(3)])
    # WHEN the sender runs: the first attempt fails and schedules a retry; the next round sends it again
    first = container.webhook_sender.run_once()
    assert (first.retrying, first.succeeded) == (1, 0)
    (pending,) = deliveries(api, hook["id"])
    assert pending["status"] == "pending" and pending["next_attempt_at"] is not None
    assert pending["attempt_log"][0]["status_code"] == 500
    assert pending["attempt_log"][0]["response_excerpt"] == "database is down"
    assert pending["attempt_log"][0]["next_retry_at"] is not None
    second = container.webhook_sender.run_once()
    # THEN the receiver got the same message twice (same webhook-id), each correctly signed, and it succeeded
    a, b = receiver.wait_for(2)
    assert second.succeeded == 1
    assert a.headers["webhook-id"] == b.headers["webhook-id"]
    verify = docs_verify()
    assert verify(hook["secret"], a.headers, a.body) == verify(hook["secret"], b.headers, b.body)
    (done,) = deliveries(api, hook["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert [x["status_code"] for x in done["attempt_log"]] == [500, 200]


def test_backoff_grows_and_a_429_retry_after_is_honoured_within_bounds(container: Container, api: Api,
                                                                       receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.script = [Answer(429, {"Retry-After": "120"}), Answer(503, {"Retry-After": "999999"})]
    fan(container, user_of(container, api), [FakeEvent(1)])
    sender = container.webhook_sender
    before = utcnow()
    sender.run_once()
    row = _delivery_row(container, hook["id"])
    assert row.next_attempt_at is not None
    assert timedelta(seconds=119) <= row.next_attempt_at - before <= timedelta(seconds=125)
    _make_due(container, row.id)
    sender.run_once()
    row = _delivery_row(container, hook["id"])
    assert row.next_attempt_at is not None  # capped at webhook_retry_after_max_seconds (1 h), not 11 days
    assert row.next_attempt_at - utcnow() <= timedelta(seconds=3600)
    assert row.next_attempt_at - utcnow() >= timedelta(seconds=3500)
    # and without Retry-After the exponential backoff applies (base 10 s here: 2nd failure -> 10-20 s)
    from chalicelib.services.outbox import Backoff

    sender.config = dataclasses.replace(sender.config, backoff=Backoff(10.0, 3600.0))
    receiver.script = [Answer(502)]
    _make_due(container, row.id)
    sender.run_once()
    row = _delivery_row(container, hook["id"])
    assert row.next_attempt_at is not None
    assert timedelta(seconds=19) <= row.next_attempt_at - utcnow() <= timedelta(seconds=41)  # 3rd try: 20-40 s


def test_a_4xx_other_than_429_is_not_retried(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.script = [Answer(404, body=b"no such hook")]
    fan(container, user_of(container, api), [FakeEvent(1)])
    report = container.webhook_sender.run_once()
    assert report.failed == 1
    container.webhook_sender.run_once()
    assert len(receiver.requests) == 1  # nothing was sent again
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "failed" and d["next_attempt_at"] is None and d["last_status_code"] == 404
    assert d["attempt_log"][0]["next_retry_at"] is None
    assert api.call("GET", f"/webhooks/{hook['id']}").json_body["failure_count"] == 1


def test_a_receiver_slower_than_the_deadline_is_a_retryable_timeout(container: Container, api: Api,
                                                                    receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.script = [Answer(200, delay=3.0)]  # the deadline is 1 s
    fan(container, user_of(container, api), [FakeEvent(1)])
    started = time.monotonic()
    report = container.webhook_sender.run_once()
    assert time.monotonic() - started < 2.5 and report.retrying == 1
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "pending" and d["last_status_code"] is None
    assert d["last_error"].startswith("OUTBOUND_TIMEOUT")


def test_a_large_answer_is_cut_at_the_cap_and_still_counts(container: Container, api: Api,
                                                           receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.script = [Answer(200, body=b"x" * (2 * 1024 * 1024))]  # 2 MB, the cap is 64 KB
    fan(container, user_of(container, api), [FakeEvent(1)])
    assert container.webhook_sender.run_once().succeeded == 1
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "succeeded" and len(d["attempt_log"][0]["response_excerpt"]) == 500


def test_retries_stop_when_the_window_is_over(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.default = Answer(500)
    fan(container, user_of(container, api), [FakeEvent(1)])
    with container.db.transaction() as session:
        row = session.scalar(select(WebhookDelivery))
        assert row is not None
        row.retry_until = utcnow() - timedelta(seconds=1)
    container.webhook_sender.run_once()
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "abandoned" and d["next_attempt_at"] is None


# --- disabling -----------------------------------------------------------------------------------------------


def test_repeated_failures_disable_the_subscription_with_an_audit_row_and_an_event(
        container: Container, api: Api, receiver: Receiver) -> None:
    # GIVEN a receiver that refuses everything (400), and a second subscription that only hears webhook.disabled
    api.signup()
    uid = user_of(container, api)
    hook = subscribe(api, receiver.url)
    with receiving() as watcher:
        watch = subscribe(api, watcher.url, ["webhook.disabled"])
        receiver.default = Answer(400)
        # WHEN three deliveries in a row fail (the setting is 3 here), a fourth still pending
        fan(container, uid, [FakeEvent(1), FakeEvent(2), FakeEvent(3)])
        report = container.webhook_sender.run_once()
        # THEN the subscription is disabled, with a reason
        assert report.disabled == [uuid.UUID(hook["id"])]
        shown = api.call("GET", f"/webhooks/{hook['id']}").json_body
        assert shown["status"] == "disabled" and shown["failure_count"] == 3
        assert "3 deliveries in a row failed" in shown["disabled_reason"]
        # an audit row for the owner
        with container.db.read() as session:
            rows = session.scalars(select(AuditLog).where(AuditLog.user_id == uid, AuditLog.event_type == "webhook",
                                                          AuditLog.action == "disable")).all()
        assert [r.resource_id for r in rows] == [hook["id"]]
        # a webhook.disabled event in the ledger, which reaches the watcher through the sink like any event
        events = _ledger_events(container, uid)
        disabled = [e for e in events if e.type == "webhook.disabled"]
        assert len(disabled) == 1 and str(disabled[0].resource_id) == hook["id"]
        fan(container, uid, disabled)  # type: ignore[arg-type]
        container.webhook_sender.run_once()
        (got,) = watcher.wait_for(1)
        assert docs_verify()(watch["secret"], got.headers, got.body)["type"] == "webhook.disabled"
        # later events are not delivered to the disabled subscription; re-enabling starts the count again
        fan(container, uid, [FakeEvent(100)])
        assert [d for d in deliveries(api, hook["id"]) if d["event_id"] == 100] == []
        r = api.call("PUT", f"/webhooks/{hook['id']}", {"status": "active"})
        assert r.json_body["status"] == "active" and r.json_body["failure_count"] == 0


def _ledger_events(container: Container, user_id: uuid.UUID) -> list[Any]:
    from chalicelib.events import ledger

    with container.db.read() as session:
        return list(ledger.list_after(session, user_id, 0, 100))


def test_disabling_it_yourself_abandons_pending_deliveries_and_test_is_refused(
        container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    fan(container, user_of(container, api), [FakeEvent(1)])
    assert api.call("PUT", f"/webhooks/{hook['id']}", {"status": "disabled"}).status_code == 200
    assert container.webhook_sender.run_once().taken == 0
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "abandoned"
    r = api.call("POST", f"/webhooks/{hook['id']}/test")
    assert r.status_code == 409 and r.json_body["error"]["code"] == "WEBHOOK_DISABLED"
    assert receiver.requests == []


# --- where deliveries may go ---------------------------------------------------------------------------------


def test_loopback_and_private_urls_are_refused_when_the_setting_disallows_them(
        container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    allowed = subscribe(api, receiver.url)  # the test stage allows private targets (like development)
    fan(container, user_of(container, api), [FakeEvent(1)])
    # GIVEN the stage's policy without private targets (what YMERA_OUTBOUND_ALLOW_PRIVATE=false gives)
    strict = OutboundPolicy(allow_private=False, allow_http=True)
    container.webhooks.policy = strict
    container.webhook_sender.policy = strict
    # THEN creating or updating to loopback, private, link-local or metadata addresses is 422
    for url in (receiver.url, "http://10.0.0.5/hook", "http://169.254.169.254/latest", "http://[::1]:8080/",
                "http://localhost:9/hook", "http://100.64.0.1/x"):
        r = api.call("POST", "/webhooks", {"url": url, "event_types": ["*"]})
        assert r.status_code == 422 and r.json_body["error"]["code"] == "WEBHOOK_URL_REFUSED", (url, r.json_body)
    r = api.call("PUT", f"/webhooks/{allowed['id']}", {"url": "http://192.168.1.1/hook"})
    assert r.status_code == 422 and r.json_body["error"]["details"]["reason"] == "private"
    # AND a subscription made while they were allowed is refused at connect time: nothing reaches the receiver
    report = container.webhook_sender.run_once()
    assert report.failed == 1 and receiver.requests == []
    (d,) = deliveries(api, allowed["id"])
    assert d["status"] == "failed" and d["last_error"].startswith("OUTBOUND_REFUSED")
    # metadata stays refused even where private targets are allowed; credentials in a URL are refused
    container.webhooks.policy = OutboundPolicy(allow_private=True, allow_http=True)
    for url in ("http://169.254.169.254/latest/meta-data", "http://user:pw@example.com/hook", "ftp://example.com/",
                "http://a..b/hook", "http://no-such-host.invalid/hook"):
        assert api.call("POST", "/webhooks", {"url": url, "event_types": ["*"]}).status_code == 422, url


def test_plain_http_is_refused_outside_development(container: Container, api: Api) -> None:
    api.signup()
    container.webhooks.policy = OutboundPolicy(allow_private=False, allow_http=False,
                                               resolver=lambda host, port: ["93.184.215.14"])
    r = api.call("POST", "/webhooks", {"url": "http://example.com/hook", "event_types": ["*"]})
    assert r.status_code == 422 and r.json_body["error"]["details"]["reason"] == "scheme"
    r = api.call("POST", "/webhooks", {"url": "https://example.com/hook", "event_types": ["*"]})
    assert r.status_code == 201


def test_a_name_that_rebinds_to_loopback_after_the_check_is_refused_on_connect(
        container: Container, api: Api, receiver: Receiver) -> None:
    # GIVEN a host name that resolved to a public address when the webhook was made ...
    api.signup()
    answers = {"rebind.example": ["93.184.215.14"]}
    policy = OutboundPolicy(allow_private=False, allow_http=True, resolver=lambda host, port: answers[host])
    container.webhooks.policy = policy
    container.webhook_sender.policy = policy
    port = receiver.url.split(":")[2].split("/")[0]
    hook = subscribe(api, f"http://rebind.example:{port}/hook")
    # ... and resolves to 127.0.0.1 (where the receiver listens) when the sender connects
    answers["rebind.example"] = ["127.0.0.1"]
    fan(container, user_of(container, api), [FakeEvent(1)])
    container.webhook_sender.run_once()
    assert receiver.requests == []
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "failed" and "loopback" in d["last_error"]


# --- tenancy -------------------------------------------------------------------------------------------------


def test_another_user_never_sees_or_touches_a_webhook_or_its_deliveries(
        container: Container, api: Api, other_api: Api, receiver: Receiver) -> None:
    api.signup()
    other_api.signup()
    a, b = user_of(container, api), user_of(container, other_api)
    hook = subscribe(api, receiver.url)
    fan(container, a, [FakeEvent(1)])
    container.webhook_sender.run_once()
    (d,) = deliveries(api, hook["id"])
    # B's events never reach A's subscription
    fan(container, b, [FakeEvent(1, status="B's"), FakeEvent(2, status="B's")])
    assert len(deliveries(api, hook["id"])) == 1
    # every route answers 404 to B, and B lists nothing
    assert other_api.call("GET", "/webhooks").json_body["items"] == []
    base = f"/webhooks/{hook['id']}"
    for method, path, body in (("GET", base, None), ("PUT", base, {"description": "mine"}), ("DELETE", base, None),
                               ("POST", f"{base}/rotate-secret", None), ("POST", f"{base}/test", None),
                               ("GET", f"{base}/deliveries", None),
                               ("POST", f"{base}/deliveries/{d['id']}/redeliver", None)):
        r = other_api.call(method, path, body)
        assert r.status_code == 404 and r.json_body["error"]["code"] == "WEBHOOK_NOT_FOUND", (method, path)
    # A's own delivery id under another of A's hooks is not found either
    second = subscribe(api, receiver.url)
    r = api.call("POST", f"/webhooks/{second['id']}/deliveries/{d['id']}/redeliver")
    assert r.status_code == 404
    assert len(receiver.requests) == 1
    assert api.call("GET", base).json_body["description"] == "test"


def test_the_per_user_cap(container: Container, api: Api, receiver: Receiver) -> None:
    container.webhooks.max_per_user = 2
    api.signup()
    subscribe(api, receiver.url)
    subscribe(api, receiver.url)
    r = api.call("POST", "/webhooks", {"url": receiver.url, "event_types": ["*"]})
    assert r.status_code == 409 and r.json_body["error"]["code"] == "QUOTA_EXCEEDED"


def test_one_users_backlog_does_not_take_every_slot_of_a_round(container: Container, api: Api,
                                                               other_api: Api, receiver: Receiver) -> None:
    # GIVEN user A with 10 due deliveries and user B with 1, at most 2 in flight per user
    api.signup()
    other_api.signup()
    a_hook = subscribe(api, receiver.url)
    b_hook = subscribe(other_api, receiver.url)
    fan(container, user_of(container, api), [FakeEvent(i) for i in range(1, 11)])
    fan(container, user_of(container, other_api), [FakeEvent(1)])
    sender = container.webhook_sender
    sender.config = dataclasses.replace(sender.config, per_user_concurrency=2)
    # WHEN a sender claims (and, like a slow receiver, does not finish yet)
    jobs = sender.claim()
    # THEN it took 2 of A's and B's one; a second sender meanwhile takes nothing more of A's
    assert sorted(str(j.webhook_id) for j in jobs) == sorted([a_hook["id"]] * 2 + [b_hook["id"]])
    assert sender.claim() == []
    # once those are recorded, the next round takes A's next two
    sender.record([sender.attempt(j) for j in jobs])
    assert len(sender.claim()) == 2


# --- rotate, redeliver, test ---------------------------------------------------------------------------------


def test_rotate_secret_changes_the_signature_and_the_old_one_signs_too_for_a_while(
        container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    uid = user_of(container, api)
    verify = docs_verify()
    fan(container, uid, [FakeEvent(1)])
    container.webhook_sender.run_once()
    # GIVEN a rotation with the default grace (24 h)
    r = api.call("POST", f"/webhooks/{hook['id']}/rotate-secret")
    assert r.status_code == 200, r.json_body
    new_secret = r.json_body["secret"]
    assert new_secret.startswith("whsec_") and new_secret != hook["secret"]
    assert r.json_body["previous_secret_expires_at"] is not None
    fan(container, uid, [FakeEvent(2)])
    container.webhook_sender.run_once()
    before, during = receiver.wait_for(2)
    # THEN the next delivery carries two signatures: a receiver on either secret accepts it
    assert len(before.headers["webhook-signature"].split()) == 1
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verify(new_secret, during.headers, during.body)["event_id"] == 2
    assert verify(hook["secret"], during.headers, during.body)["event_id"] == 2
    # WHEN the grace is over (or a rotation asks for none): only the new secret signs
    with container.db.transaction() as session:
        row = session.get(Webhook, uuid.UUID(hook["id"]))
        assert row is not None
        row.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
    fan(container, uid, [FakeEvent(3)])
    container.webhook_sender.run_once()
    after = receiver.wait_for(3)[-1]
    assert verify(new_secret, after.headers, after.body)["event_id"] == 3
    with pytest.raises(ValueError):
        verify(hook["secret"], after.headers, after.body)
    r = api.call("POST", f"/webhooks/{hook['id']}/rotate-secret", {"previous_secret_valid_seconds": 0})
    third = r.json_body["secret"]
    assert r.json_body["previous_secret_expires_at"] is None
    fan(container, uid, [FakeEvent(4)])
    container.webhook_sender.run_once()
    last = receiver.wait_for(4)[-1]
    assert verify(third, last.headers, last.body)["event_id"] == 4
    with pytest.raises(ValueError):
        verify(new_secret, last.headers, last.body)
    assert api.call("POST", f"/webhooks/{hook['id']}/rotate-secret",
                    {"previous_secret_valid_seconds": -1}).status_code == 422


def test_redeliver_sends_a_delivery_again_now(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    receiver.script = [Answer(410)]  # gone: not retried
    fan(container, user_of(container, api), [FakeEvent(5)])
    container.webhook_sender.run_once()
    (d,) = deliveries(api, hook["id"])
    assert d["status"] == "failed"
    r = api.call("POST", f"/webhooks/{hook['id']}/deliveries/{d['id']}/redeliver")
    assert r.status_code == 200, r.json_body
    assert r.json_body["status"] == "succeeded" and r.json_body["attempts"] == 2
    assert [a["status_code"] for a in r.json_body["attempt_log"]] == [410, 200]
    first, again = receiver.wait_for(2)
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert docs_verify()(hook["secret"], again.headers, again.body)["event_id"] == 5
    r = api.call("POST", f"/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/redeliver")
    assert r.status_code == 404


def test_the_test_route_sends_a_webhook_test_event(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url, ["run.status_changed"])  # test events ignore event_types
    r = api.call("POST", f"/webhooks/{hook['id']}/test")
    assert r.status_code == 200, r.json_body
    assert r.json_body["event_type"] == "webhook.test" and r.json_body["status"] == "succeeded"
    assert r.json_body["event_id"] is None and r.json_body["attempt_log"][0]["status_code"] == 200
    (got,) = receiver.wait_for(1)
    event = docs_verify()(hook["secret"], got.headers, got.body)
    assert event["type"] == "webhook.test" and event["resource"] == {"type": "webhook", "id": hook["id"]}
    # a failing receiver: the answer shows the failed attempt and its scheduled retry
    receiver.script = [Answer(503)]
    r = api.call("POST", f"/webhooks/{hook['id']}/test")
    assert r.json_body["status"] == "pending" and r.json_body["last_status_code"] == 503
    assert r.json_body["attempt_log"][0]["next_retry_at"] is not None


def test_a_looping_sender_cannot_take_the_attempt_a_test_or_a_redeliver_waits_for(
        container: Container, api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row is leased to the request in the transaction that writes it: a looping sender's round right after
    the commit (the webhook sender runs in another process under `make run`) finds nothing to take."""
    from chalicelib.webhooks.sender import WebhookSender

    api.signup()
    hook = subscribe(api, receiver.url)
    raced: list[int] = []
    send_taken = WebhookSender.send_taken

    def after_a_racing_round(self: WebhookSender, taken: Any) -> Any:
        raced.append(container.webhook_sender.run_once().taken)
        return send_taken(self, taken)

    monkeypatch.setattr(WebhookSender, "send_taken", after_a_racing_round)
    r = api.call("POST", f"/webhooks/{hook['id']}/test")
    assert r.status_code == 200, r.json_body
    assert (r.json_body["status"], r.json_body["attempts"], r.json_body["last_status_code"]) == ("succeeded", 1, 200)
    r = api.call("POST", f"/webhooks/{hook['id']}/deliveries/{r.json_body['id']}/redeliver")
    assert r.status_code == 200, r.json_body
    assert (r.json_body["status"], r.json_body["attempts"]) == ("succeeded", 2)
    assert raced == [0, 0]
    assert len(receiver.wait_for(2)) == 2


def test_delete_removes_the_subscription_and_its_log(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    fan(container, user_of(container, api), [FakeEvent(1)])
    assert api.call("DELETE", f"/webhooks/{hook['id']}").status_code == 204
    assert api.call("GET", f"/webhooks/{hook['id']}").status_code == 404
    assert api.call("DELETE", f"/webhooks/{hook['id']}").status_code == 404
    assert container.webhook_sender.run_once().taken == 0
    with container.db.read() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_deliveries_are_cursor_pages_newest_first(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    uid = user_of(container, api)
    for i in range(1, 6):
        fan(container, uid, [FakeEvent(i)])
    seen: list[int] = []
    cursor = None
    while True:
        path = f"/webhooks/{hook['id']}/deliveries?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.call("GET", path).json_body
        seen += [d["event_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [5, 4, 3, 2, 1]
    assert deliveries(api, hook["id"], status="succeeded") == []


# --- the looping sender -------------------------------------------------------------------------------------


def test_the_looping_sender_wakes_on_the_sinks_notify(container: Container, api: Api, receiver: Receiver) -> None:
    """Event handed to the sink (committed) -> receiver, through LISTEN/NOTIFY: well under the 1 s poll."""
    api.signup()
    subscribe(api, receiver.url)
    uid = user_of(container, api)
    sender = container.webhook_sender
    listener = loop.listener_for(sender)
    assert listener is not None
    deadline = time.monotonic() + 6
    thread = threading.Thread(target=loop.run, args=(sender, lambda: deadline - time.monotonic()),
                              kwargs={"reserve_seconds": 0, "poll_seconds": 5.0, "listener": listener})
    thread.start()
    try:
        time.sleep(0.3)  # the loop's first (empty) round is done; it now waits on LISTEN (poll: 5 s)
        latencies = []
        for i in range(1, 6):
            committed = time.time()
            fan(container, uid, [FakeEvent(i)])
            got = receiver.wait_for(i, timeout=3)[-1]
            latencies.append(got.at - committed)
        assert max(latencies) < 1.0, latencies
    finally:
        thread.join()
        listener.close()


def test_a_slow_receiver_does_not_hold_back_another_users_deliveries(container: Container, api: Api,
                                                                     other_api: Api) -> None:
    # GIVEN user A's receiver takes 0.8 s per request (the deadline is 1 s) and user B's answers at once
    api.signup()
    other_api.signup()
    with receiving() as slow, receiving() as fast:
        slow.default = Answer(200, delay=0.8)
        subscribe(api, slow.url)
        subscribe(other_api, fast.url)
        sender = container.webhook_sender
        listener = loop.listener_for(sender)
        deadline = time.monotonic() + 5
        thread = threading.Thread(target=loop.run, args=(sender, lambda: deadline - time.monotonic()),
                                  kwargs={"reserve_seconds": 0, "poll_seconds": 1.0, "listener": listener})
        thread.start()
        try:
            # WHEN A has a backlog of 20 deliveries and B then gets one event
            fan(container, user_of(container, api), [FakeEvent(i) for i in range(1, 21)])
            slow.wait_for(4)  # A's 4 (the per-user bound) are out
            committed = time.time()
            fan(container, user_of(container, other_api), [FakeEvent(1)])
            (got,) = fast.wait_for(1, timeout=3)
            # THEN B's arrives at once, not after A's backlog; A never has more than 4 in flight
            assert got.at - committed < 0.5
            assert len(slow.requests) <= 8  # 0.5 s after A's first 4 started, at most 4 more
        finally:
            thread.join()
            if listener is not None:
                listener.close()


def _delivery_row(container: Container, hook_id: str) -> WebhookDelivery:
    with container.db.read() as session:
        row = session.scalar(select(WebhookDelivery).where(WebhookDelivery.webhook_id == uuid.UUID(hook_id)))
        assert row is not None
        return row


def _make_due(container: Container, delivery_id: uuid.UUID) -> None:
    with container.db.transaction() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        row.next_attempt_at = utcnow()


def test_a_secret_is_stored_encrypted(container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    with container.db.read() as session:
        blob = session.scalar(select(Webhook.secret_ciphertext).where(Webhook.id == uuid.UUID(hook["id"])))
    assert blob is not None and hook["secret"].encode() not in bytes(blob)
    assert hook["secret"].removeprefix("whsec_").encode() not in bytes(blob)


def test_the_readmes_receiver_accepts_a_real_delivery_and_refuses_a_forged_one(
        container: Container, api: Api, tmp_path: Any) -> None:
    """The "Receive webhooks" receiver in README.md, run as the README says (its own process)."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.integration.webhook_support import ROOT, python_block

    script = tmp_path / "receiver.py"
    script.write_text(python_block(ROOT / "README.md", "<!-- receiver-snippet"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api.signup()
    hook = subscribe(api, f"http://127.0.0.1:{port}/hook")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PORT": str(port), "YMERA_WEBHOOK_SECRET": hook["secret"]}, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the README receiver did not start"
                time.sleep(0.05)
        r = api.call("POST", f"/webhooks/{hook['id']}/test")
        assert r.json_body["status"] == "succeeded" and r.json_body["last_status_code"] == 204
        # a delivery signed with another secret is refused with 401 (and would not be retried)
        forged = urllib.request.Request(f"http://127.0.0.1:{port}/hook", data=b"{}", method="POST", headers={
            "webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=5)
        assert refused.value.code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
    assert f"None webhook.test webhook {hook['id'][:8]} test" in out
    assert "refused: no valid signature" in out


def test_finished_deliveries_past_their_retention_are_purged_pending_ones_stay(
        container: Container, api: Api, receiver: Receiver) -> None:
    api.signup()
    hook = subscribe(api, receiver.url)
    uid = user_of(container, api)
    fan(container, uid, [FakeEvent(i) for i in range(1, 5)])
    receiver.script = [Answer(200), Answer(404), Answer(500), Answer(200)]
    container.webhook_sender.run_once()
    statuses = sorted(d["status"] for d in deliveries(api, hook["id"]))
    assert statuses == ["failed", "pending", "succeeded", "succeeded"]
    young = next(d["id"] for d in deliveries(api, hook["id"]) if d["status"] == "succeeded")
    with container.db.transaction() as session:  # all but one succeeded delivery are 40 days old
        for row in session.scalars(select(WebhookDelivery).where(WebhookDelivery.id != uuid.UUID(young))):
            row.created_at = utcnow() - timedelta(days=40)
    assert container.webhook_sender.purge(timedelta(days=30), 100) == 2  # the old succeeded and failed ones
    left = {d["id"]: d["status"] for d in deliveries(api, hook["id"])}
    assert left.pop(young) == "succeeded"
    assert list(left.values()) == ["pending"]  # the old pending one is still being retried
    assert container.webhook_sender.purge(timedelta(days=30), 100) == 0
