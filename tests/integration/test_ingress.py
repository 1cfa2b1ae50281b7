"""Event producers (docs/producers.md): signed messages on the (moto) ingress queue become tasks; poison
messages of every kind land in the ingress DLQ at once with their reason, and their owner can read why.

The local runner drives the real ingress consumer with Lambda-shaped events, as `make run` does.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chalicelib.container import Container, set_container
from chalicelib.db.models import IngressReceipt, Task
from chalicelib.ratelimit import Bucket
from chalicelib.services.ingress import Accepted, IngressService, Rejected, Throttled
from infra import manifest
from infra.local.runner import EventSourceRunner
from tests.integration.conftest import PREFIX, Api
from tests.integration.test_api_tasks import SCHEMA_TASK

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
from producer import Producer, sign, task_message  # noqa: E402 - clients/python is not a package

__all__ = ["Producer", "sign", "task_message"]

INGRESS = f"{PREFIX}-ingress"
INGRESS_SPEC = next(s for s in manifest.functions() if s.name == "ingress-consumer")
VALIDATION_SPEC = next(s for s in manifest.functions() if s.name == "agent-validation")


def url(sqs: Any, name: str) -> str:
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


def drain(sqs: Any, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url(sqs, name), MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                  AttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        out += got


def setup_producer(api: Api, aws: Any) -> tuple[Producer, dict[str, Any], dict[str, Any]]:
    api.signup()
    agent = api.agent()
    r = api.call("POST", "/producer-keys", {"name": "orders"})
    assert r.status_code == 201, r.json_body
    key = r.json_body
    return Producer(aws, url(aws, INGRESS), key_id=key["key_id"], secret=key["secret"]), agent, key


def consume(aws: Any, spec: Any = INGRESS_SPEC) -> None:
    EventSourceRunner(aws, PREFIX, [spec], wait_seconds=0).poll_once(spec)


def good(agent: dict[str, Any], key: str = "k1", **over: Any) -> dict[str, Any]:
    return {**task_message(agent_id=agent["id"], title="from a producer", input_data=SCHEMA_TASK,
                           idempotency_key=key, correlation_id="corr-1"), **over}


def test_a_signed_message_becomes_a_task_that_runs(api: Api, aws: Any, container: Container) -> None:
    producer, agent, _ = setup_producer(api, aws)
    producer.send_task(agent_id=agent["id"], title="from a producer", input_data=SCHEMA_TASK,
                       idempotency_key="order-42")
    consume(aws)  # ingress -> task (+ outbox, published right after commit)
    consume(aws, VALIDATION_SPEC)  # the agent runs it
    tasks = api.call("GET", "/tasks").json_body["items"]
    assert [t["title"] for t in tasks] == ["from a producer"]
    done = api.call("GET", f"/tasks/{tasks[0]['id']}").json_body
    assert done["status"] == "completed" and done["result"] is not None
    created = api.call("GET", "/audit-logs?event_type=task.created").json_body["items"]
    assert len(created) == 1  # audited as the key's owner, like POST /tasks
    assert drain(aws, INGRESS) == [] and drain(aws, f"{INGRESS}-dlq") == []


def test_the_same_idempotency_key_twice_creates_one_task(api: Api, aws: Any, container: Container) -> None:
    producer, agent, _ = setup_producer(api, aws)
    body = json.dumps(good(agent, "dup"))
    producer.send_body(body)
    producer.send_body(body)
    consume(aws)
    consume(aws)
    with container.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1
    assert drain(aws, INGRESS) == [] and drain(aws, f"{INGRESS}-dlq") == []


class RacingIngress(IngressService):
    """Every thread's first receipt lookup misses, so all of them race to insert (what concurrent
    Lambda instances do when duplicates arrive at the same moment)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: set[int] = set()

    def _receipt(self, owner: uuid.UUID, idempotency_key: str) -> uuid.UUID | None:
        if threading.get_ident() not in self.seen:
            self.seen.add(threading.get_ident())
            return None
        return super()._receipt(owner, idempotency_key)


def test_concurrent_duplicates_create_one_task(api: Api, aws: Any, container: Container) -> None:
    """Both pass the receipt lookup; the unique constraint makes the second roll back, task included."""
    _, agent, key = setup_producer(api, aws)
    body = json.dumps(good(agent, "race"))
    attrs = {"ymera-key-id": key["key_id"], "ymera-signature": sign(body, key["secret"])}
    service = RacingIngress(container.db, container.tasks, container.producer_keys, None,
                            Bucket("ingress", 1000, 1000.0, fail_open=True), 128 * 1024)
    barrier = threading.Barrier(4)
    outcomes: list[Any] = []

    def one(n: int) -> None:
        barrier.wait()
        outcomes.append(service.handle(body, attrs, f"m{n}"))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 4 and all(isinstance(o, Accepted) for o in outcomes), outcomes
    assert sum(not o.duplicate for o in outcomes) == 1
    assert len({o.task_id for o in outcomes}) == 1
    with container.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1
        assert session.scalar(select(func.count()).select_from(IngressReceipt)) == 1


POISON = {
    "not_json": lambda agent: "{this is not json",
    "unknown_schema_version": lambda agent: json.dumps(good(agent, schema_version=2)),
    "invalid": lambda agent: json.dumps({k: v for k, v in good(agent).items() if k != "title"}),
    "oversized": lambda agent: json.dumps(good(agent, description="x" * 10,
                                               input_data={"pad": "y" * (200 * 1024)})),
}


@pytest.mark.parametrize("reason", sorted(POISON))
def test_poison_messages_go_to_the_dlq_at_once_with_a_reason_the_owner_can_read(
        reason: str, api: Api, aws: Any, container: Container) -> None:
    producer, agent, key = setup_producer(api, aws)
    producer.send_body(POISON[reason](agent))
    consume(aws)
    dead = drain(aws, f"{INGRESS}-dlq")
    assert [m["MessageAttributes"]["ymera-reject-reason"]["StringValue"] for m in dead] == [reason]
    assert drain(aws, INGRESS) == []  # deleted from the ingress queue on the first receive: never retried
    rows = api.call("GET", "/audit-logs?event_type=ingress.rejected").json_body["items"]
    assert [r["details"]["reason"] for r in rows] == [reason]
    with container.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def test_unsigned_bad_signature_revoked_unknown_key_and_another_users_agent_are_rejected(
        api: Api, other_api: Api, aws: Any, container: Container) -> None:
    producer, agent, key = setup_producer(api, aws)
    other_api.signup()
    theirs = other_api.agent()
    queue = url(aws, INGRESS)
    body = json.dumps(good(agent, "a"))
    aws.send_message(QueueUrl=queue, MessageBody=body)  # unsigned
    Producer(aws, queue, key_id=key["key_id"], secret="wrong" * 8).send_body(json.dumps(good(agent, "b")))
    Producer(aws, queue, key_id=str(uuid.uuid4()), secret=key["secret"]).send_body(json.dumps(good(agent, "c")))
    producer.send_body(json.dumps(good(theirs, "d")))  # another user's agent: not found for this owner
    consume(aws)
    consume(aws)
    assert api.call("DELETE", f"/producer-keys/{key['key_id']}").status_code == 204
    producer.send_body(json.dumps(good(agent, "e")))
    consume(aws)
    reasons = sorted(m["MessageAttributes"]["ymera-reject-reason"]["StringValue"]
                     for m in drain(aws, f"{INGRESS}-dlq"))
    assert reasons == ["bad_signature", "not_found", "revoked_key", "unknown_key", "unsigned"]
    owned = sorted(r["details"]["reason"]
                   for r in api.call("GET", "/audit-logs?event_type=ingress.rejected").json_body["items"])
    assert owned == ["bad_signature", "not_found", "revoked_key"]  # unknown key / unsigned: no owner, logged
    assert other_api.call("GET", "/audit-logs?event_type=ingress.rejected").json_body["items"] == []
    with container.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def test_over_the_rate_limit_a_message_is_delayed_not_dropped(api: Api, aws: Any, container: Container) -> None:
    """GIVEN a burst of one and a refill of 0.5/s, WHEN two messages arrive at once, THEN the second is
    delayed (visibility set to the bucket's retry-after, reported failed) and runs on a later receive."""
    producer, agent, _ = setup_producer(api, aws)
    tight = Container(container.settings.model_copy(update={"ingress_rate_limit_capacity": 1,
                                                            "ingress_rate_limit_refill_per_second": 0.5}),
                      database=container.db)
    set_container(tight)
    producer.send_body(json.dumps(good(agent, "one")))
    producer.send_body(json.dumps(good(agent, "two")))
    consume(aws)
    with container.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1
    assert drain(aws, f"{INGRESS}-dlq") == []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        consume(aws)
        with container.db.read() as session:
            if session.scalar(select(func.count()).select_from(Task)) == 2:
                break
        time.sleep(0.3)
    with container.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 2


def test_throttled_outcome_carries_the_buckets_retry_after(api: Api, aws: Any, container: Container) -> None:
    _, agent, key = setup_producer(api, aws)
    assert container.rate_limiter is not None
    tight = IngressService(container.db, container.tasks, container.producer_keys, container.rate_limiter,
                           Bucket(f"ingress-test-{uuid.uuid4().hex[:6]}", 1, 0.25, fail_open=True), 128 * 1024)

    def send(k: str) -> Any:
        body = json.dumps(good(agent, k))
        return tight.handle(body, {"ymera-key-id": key["key_id"], "ymera-signature": sign(body, key["secret"])}, k)

    assert isinstance(send("x1"), Accepted)
    throttled = send("x2")
    assert isinstance(throttled, Throttled) and 1 <= throttled.retry_after <= 4
    assert isinstance(send("x1"), Accepted)  # a duplicate costs no token and is still answered
    assert not isinstance(send("x3"), Rejected)


def test_producer_keys_show_the_secret_once_list_without_it_and_are_owner_filtered_and_audited(
        api: Api, other_api: Api, aws: Any, container: Container) -> None:
    from chalicelib.db.models import ProducerKey

    _, _, key = setup_producer(api, aws)
    assert set(key) >= {"key_id", "secret", "name", "created_at"} and len(key["secret"]) == 64
    listed = api.call("GET", "/producer-keys").json_body["items"]
    assert [k["key_id"] for k in listed] == [key["key_id"]] and "secret" not in listed[0]
    with container.db.read() as session:
        stored = bytes(session.scalar(select(ProducerKey.ciphertext)))
    assert key["secret"].encode() not in stored  # encrypted at rest
    other_api.signup()
    assert other_api.call("GET", "/producer-keys").json_body["items"] == []
    assert other_api.call("DELETE", f"/producer-keys/{key['key_id']}").status_code == 404
    assert api.call("DELETE", f"/producer-keys/{key['key_id']}").status_code == 204
    assert api.call("GET", "/producer-keys").json_body["items"][0]["revoked_at"] is not None
    actions = sorted(r["action"] for r in api.call("GET", "/audit-logs?event_type=producer_key").json_body["items"])
    assert actions == ["create", "revoke"]
    assert api.call("DELETE", "/producer-keys/not-a-uuid").status_code == 404
