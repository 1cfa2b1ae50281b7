"""Lanes against real Postgres and moto (docs/scheduling.md): a heavy owner's work past its allowances takes the
bulk lane, a light owner's and a few urgent tasks the fast lane; the bulk lane's messages are consumed like any
other; and the counting statement stays a bounded read for an owner with thousands of active tasks."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import insert, select, text

from chalicelib.container import Container
from chalicelib.db.models import OutboxMessage, Task
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.domain.lanes import Allowances
from chalicelib.services.lanes import load_statement, owner_load
from functions.agent_consumer import handler
from tests.integration.conftest import PREFIX, Api, FakeContext, sqs_event
from tests.integration.test_api_tasks import create_task
from tests.integration.workflow_support import make_agent, make_user


def drain(aws: Any, queue: str) -> list[dict[str, Any]]:
    """Every message now in `queue` (hidden for 60 s once read), with its body parsed."""
    url = aws.get_queue_url(QueueName=f"{PREFIX}-{queue}")["QueueUrl"]
    out: list[dict[str, Any]] = []
    while True:
        got = aws.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                  MessageSystemAttributeNames=["MessageGroupId"]).get("Messages", [])
        if not got:
            return out
        out.extend({**m, "body": json.loads(m["Body"])} for m in got)


def destinations(db: Database, task_ids: list[str]) -> dict[str, str]:
    with db.read() as s:
        rows = s.execute(select(OutboxMessage.aggregate_id, OutboxMessage.destination)
                         .where(OutboxMessage.aggregate_id.in_([uuid.UUID(t) for t in task_ids])))
        return {str(a): d for a, d in rows}


def new_tasks(api: Api, agent_id: str, n: int, priority: str = "normal") -> list[str]:
    ids = []
    for _ in range(n):
        r = create_task(api, agent_id, priority=priority)
        assert r.status_code == 202, r.json_body
        ids.append(r.json_body["id"])
    return ids


def test_a_heavy_owners_eleventh_task_takes_the_bulk_lane_and_a_light_owners_first_the_fast(
        api: Api, other_api: Api, aws: Any, db: Database) -> None:
    api.signup()
    heavy_agent = api.agent()
    first_ten = new_tasks(api, heavy_agent["id"], 10)
    [eleventh] = new_tasks(api, heavy_agent["id"], 1)
    other_api.signup()
    [light] = new_tasks(other_api, other_api.agent()["id"], 1)

    lanes = destinations(db, [*first_ten, eleventh, light])
    assert [lanes[t] for t in first_ten] == ["validation"] * 10
    assert lanes[eleventh] == "validation-bulk" and lanes[light] == "validation"
    # published (by the create's fast path) to the queue its destination names
    fast = {m["body"]["task_id"] for m in drain(aws, "agent-validation")}
    bulk = drain(aws, "agent-validation-bulk")
    assert fast == {*first_ten, light}
    # the message names the type (not the lane) and, for SQS fair queues, its owner as the message group
    [bulk_message] = bulk
    with db.read() as s:
        owner = str(s.scalar(select(Task.user_id).where(Task.id == uuid.UUID(eleventh))))
    assert bulk_message["body"] == {"task_id": eleventh, "agent_type": "validation",
                                    "message_group": owner}
    assert bulk_message["Attributes"]["MessageGroupId"] == owner


def test_a_heavy_owners_urgent_tasks_take_the_fast_lane_up_to_the_urgent_allowance(
        api: Api, aws: Any, db: Database) -> None:
    api.signup()
    agent = api.agent()
    normal = new_tasks(api, agent["id"], 12)
    critical = new_tasks(api, agent["id"], 6, priority="critical")
    [high] = new_tasks(api, agent["id"], 1, priority="high")
    lanes = destinations(db, [*normal, *critical, high])
    assert [lanes[t] for t in normal] == ["validation"] * 10 + ["validation-bulk"] * 2
    assert [lanes[t] for t in critical] == ["validation"] * 5 + ["validation-bulk"]
    assert lanes[high] == "validation-bulk"  # high counts against the same urgent allowance
    assert len(drain(aws, "agent-validation")) == 15 and len(drain(aws, "agent-validation-bulk")) == 4


def test_finished_tasks_give_their_fast_lane_share_back(api: Api, aws: Any, db: Database) -> None:
    api.signup()
    agent = api.agent()
    ten = new_tasks(api, agent["id"], 10)
    with db.transaction() as s:  # five of them ran to completion
        s.execute(text("UPDATE tasks SET status = 'completed' WHERE id = ANY(:ids)"),
                  {"ids": [uuid.UUID(t) for t in ten[:5]]})
    more = new_tasks(api, agent["id"], 6)
    lanes = destinations(db, more)
    assert [lanes[t] for t in more] == ["validation"] * 5 + ["validation-bulk"]


def test_a_burst_of_parallel_low_creates_puts_exactly_the_low_allowance_on_the_fast_lane(
        container: Container, db: Database) -> None:
    """12 creates of one owner's low tasks at once: each used to count only the committed ones (all 0), and
    every one took the fast lane; the recount in the owner's turn (services.lanes.recounted_for_low_work) makes
    the count exact."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.domain.tasks import TaskPriority
    from chalicelib.schemas.tasks import TaskCreate
    from chalicelib.services.meta import RequestMeta

    user = make_user(db)
    agent = make_agent(db, user)
    start = threading.Barrier(12)

    def create(_: int) -> str:
        req = TaskCreate(agent_id=agent, title="burst", priority=TaskPriority.LOW,
                         input_data={"schema": {"type": "object"}, "payload": {}})
        start.wait(timeout=30)
        return str(container.tasks.create(user, req, RequestMeta()).id)

    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(create, range(12)))
    lanes = destinations(db, ids)
    assert sorted(lanes.values()) == ["validation"] * 2 + ["validation-bulk"] * 10


def test_settings_tune_the_allowances(api: Api, container: Container, db: Database) -> None:
    container.settings = container.settings.model_copy(update={"lane_share_allowance": 0,
                                                               "lane_urgent_allowance": 1,
                                                               "lane_low_allowance": 4})
    container.__dict__.pop("tasks", None)  # rebuild the task service over the new settings
    api.signup()
    agent = api.agent()
    [normal] = new_tasks(api, agent["id"], 1)
    urgent = new_tasks(api, agent["id"], 2, priority="high")
    low = new_tasks(api, agent["id"], 2, priority="low")  # 3 and 4 active before them
    lanes = destinations(db, [normal, *urgent, *low])
    assert (lanes[normal], lanes[urgent[0]], lanes[urgent[1]]) == ("validation-bulk", "validation", "validation-bulk")
    assert [lanes[t] for t in low] == ["validation", "validation-bulk"]


def test_message_groups_can_be_switched_off(api: Api, aws: Any, container: Container) -> None:
    container.settings = container.settings.model_copy(update={"lane_share_allowance": 0,
                                                               "lane_bulk_message_groups": False})
    container.__dict__.pop("tasks", None)
    api.signup()
    [task_id] = new_tasks(api, api.agent()["id"], 1)
    [message] = drain(aws, "agent-validation-bulk")
    assert message["body"] == {"task_id": task_id, "agent_type": "validation"}
    assert "MessageGroupId" not in message.get("Attributes", {})


def test_a_bulk_lane_message_is_consumed_and_completed_through_the_handler(api: Api, aws: Any, db: Database) -> None:
    api.signup()
    agent = api.agent()
    new_tasks(api, agent["id"], 10)
    [task_id] = new_tasks(api, agent["id"], 1)
    [message] = drain(aws, "agent-validation-bulk")
    event = sqs_event([(message["MessageId"], message["Body"])], agent_type="validation-bulk")
    assert event["Records"][0]["eventSourceARN"].endswith(f"{PREFIX}-agent-validation-bulk")

    assert handler(event, FakeContext()) == {"batchItemFailures": []}

    got = api.call("GET", f"/tasks/{task_id}").json_body
    assert got["status"] == "completed" and got["result"]["output_data"]["valid"] is True


def test_counting_an_owner_with_5000_active_tasks_reads_a_bounded_number_of_index_entries(db: Database) -> None:
    now = utcnow()
    statuses = ("pending", "queued", "processing")
    priorities = ("low", "normal", "high", "critical")

    def tasks(user: uuid.UUID, n: int, status: str | None = None) -> list[dict[str, Any]]:
        agent = make_agent(db, user)
        return [{"id": uuid.uuid4(), "user_id": user, "agent_id": agent, "agent_type": "validation", "title": "t",
                 "status": status or statuses[i % 3], "priority": priorities[i % 4], "input_data": {},
                 "created_at": now, "updated_at": now} for i in range(n)]

    # the platform around it: other owners' tasks, written first (a sequential scan would read them all), and
    # the owner's own finished ones (outside the partial index)
    others = [row for _ in range(20) for row in tasks(make_user(db), 1000)]
    user = make_user(db)
    rows = tasks(user, 5000)
    with db.transaction() as s:
        # Multi-row statements: an executemany is a statement per row, each a ledger trigger call on its user's
        # counter row (bench/engine_analytics.py, `seed`)
        for batch in (others, tasks(user, 5000, status="completed"), rows):
            for i in range(0, len(batch), 1000):
                s.execute(insert(Task).values(batch[i:i + 1000]))
    allowances = Allowances()
    new_id = rows[0]["id"]
    stmt = load_statement(user, "validation", excluding=new_id, allowances=allowances)
    with db.read() as s:
        load = owner_load(s, user, "validation", excluding=new_id, allowances=allowances)
    assert (load.active, load.urgent) == (allowances.share, allowances.urgent)  # capped, not 4999 / 2500
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE tasks"))
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")).scalar()
    scans = []
    stack = [(plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        if "Scan" in node["Node Type"]:
            scans.append(node)
    assert len(scans) == 2, scans
    for node in scans:
        # each count stops at its LIMIT: the index hands over at most the allowance (+ the excluded new task)
        assert node.get("Index Name") == "ix_tasks_active_user_id_agent_type_priority", node
        assert node["Actual Rows"] + node.get("Rows Removed by Filter", 0) <= allowances.share + 1, node


def test_the_scheduled_relay_publishes_a_bulk_row_to_the_bulk_queue(api: Api, aws: Any, db: Database,
                                                                    container: Container) -> None:
    api.signup()
    agent = api.agent()
    [task_id] = new_tasks(api, agent["id"], 1)
    drain(aws, "agent-validation")
    with db.transaction() as s:  # as if the fast path had failed, on the bulk lane
        s.execute(text("UPDATE outbox SET published_at = NULL, destination = 'validation-bulk' "
                       "WHERE aggregate_id = :t"), {"t": uuid.UUID(task_id)})
    assert container.relay.run_once().published == 1
    assert [m["body"]["task_id"] for m in drain(aws, "agent-validation-bulk")] == [task_id]
    assert drain(aws, "agent-validation") == []
