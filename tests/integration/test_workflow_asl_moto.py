"""Compiled workflows run in moto's Step Functions interpreter (execution on), answered by simulated consumers.

No Postgres here: the consumers are a loop that receives the queues' messages and answers each token with
SendTaskSuccess / SendTaskFailure, which is what the agent and control consumers do after their work. This
proves the ASL shapes (levels, Parallel, FOREACH + Map with ItemSelector, approval, Retry/Catch) run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.workflows import asl
from chalicelib.workflows.definition import WorkflowDefinition

TYPES = ("editing", "llm", "communication")
ROLE = "arn:aws:iam::123456789012:role/ymera-workflow"
#: a hang guard, not a timing assertion: a run still RUNNING after this long is reported as stuck.
STUCK_AFTER_SECONDS = 90
POLL = 0.02


#: a token is answered no sooner than this after its message arrived. moto's interpreter (LocalStack's) can
#: drop a SendTaskSuccess that lands before the branch thread that sent the message starts waiting for it
#: (seen once in ~15 runs of the Parallel test, answering within a millisecond); real consumers take longer.
MIN_ANSWER_DELAY = 0.05


@dataclass
class Seen:
    body: dict[str, Any]
    answered: bool = False
    at: float = field(default_factory=time.monotonic)


Answer = Callable[["Consumers", Seen], "tuple[str, Any] | None"]


@dataclass
class Consumers:
    """The queues' consumers: receive every message, keep it, and answer its token as `answer` says."""

    sqs: Any
    sfn: Any
    urls: dict[str, str]
    control: str
    answer: Answer
    seen: list[Seen] = field(default_factory=list)
    max_items_open: int = 0

    def open_items(self, step_id: str) -> list[Seen]:
        return [s for s in self.seen if s.body.get("step_id") == step_id and "item_index" in s.body
                and not s.answered]

    def poll(self) -> bool:
        got = False
        for url in (*self.urls.values(), self.control):
            for msg in self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
                body = json.loads(msg["Body"])
                assert body.get("agent_type") in (None, *[t for t, u in self.urls.items() if u == url])
                self.seen.append(Seen(body, answered="token" not in body))
                got = True
        for step in {s.body["step_id"] for s in self.seen if "item_index" in s.body}:
            self.max_items_open = max(self.max_items_open, len(self.open_items(step)))
        for s in self.seen:
            if not s.answered and time.monotonic() - s.at >= MIN_ANSWER_DELAY:
                decision = self.answer(self, s)
                if decision is not None:
                    s.answered = True
                    verb, payload = decision
                    if verb == "succeed":
                        self.sfn.send_task_success(taskToken=s.body["token"], output=json.dumps(payload))
                    else:
                        self.sfn.send_task_failure(taskToken=s.body["token"], error=payload[0], cause=payload[1])
        return got

    def kinds(self, step_id: str | None = None) -> list[str]:
        return [s.body["kind"] for s in self.seen if step_id is None or s.body.get("step_id") == step_id]


def succeed_all(_: Consumers, s: Seen) -> tuple[str, Any]:
    if s.body["kind"] == "workflow.foreach":
        return "succeed", {"step_id": s.body["step_id"], "indexes": list(range(5))}
    return "succeed", {"step_id": s.body["step_id"], "status": "succeeded", "item_index": s.body.get("item_index")}


@pytest.fixture
def sfn_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, dict[str, str], str]]:
    import boto3
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sqs = boto3.client("sqs", region_name="us-east-1")
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        urls = {t: sqs.create_queue(QueueName=f"ymera-test-agent-{t}")["QueueUrl"] for t in TYPES}
        control = sqs.create_queue(QueueName="ymera-test-workflow-control")["QueueUrl"]
        yield sqs, sfn, urls, control


def run(env: tuple[Any, Any, dict[str, str], str], definition: dict[str, Any], answer: Answer = succeed_all,
        step_agent_types: dict[str, str] | None = None) -> tuple[str, Consumers, dict[str, Any]]:
    sqs, sfn, urls, control = env
    d = WorkflowDefinition.model_validate(definition)
    machine = asl.render(asl.compile_definition(d, step_agent_types or {}), agent_queue_urls=urls,
                         control_queue_url=control)
    arn = sfn.create_state_machine(name=f"ymera-test-wf-{uuid.uuid4().hex}", definition=json.dumps(machine),
                                   roleArn=ROLE)["stateMachineArn"]
    run_id = uuid.uuid4()
    execution = sfn.start_execution(stateMachineArn=arn, name=f"{run_id.hex}-1",
                                    input=json.dumps({"run_id": str(run_id), "execution": 1}))["executionArn"]
    consumers = Consumers(sqs, sfn, urls, control, answer)
    status = "RUNNING"
    give_up = time.monotonic() + STUCK_AFTER_SECONDS
    while time.monotonic() < give_up:
        if not consumers.poll():
            status = sfn.describe_execution(executionArn=execution)["status"]
            if status != "RUNNING":
                consumers.poll()  # the run report may land right after the last state
                break
            time.sleep(POLL)
    if status == "RUNNING":
        events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
        pytest.fail(f"execution stuck; seen {consumers.kinds()}; last events {[e['type'] for e in events[-8:]]}")
    for s in consumers.seen:
        assert s.body["run_id"] == str(run_id) and s.body["execution"] == 1
    return status, consumers, sfn.describe_execution(executionArn=execution)


def agent(step_id: str, agent_type: str = "editing", **kw: Any) -> dict[str, Any]:
    return {"step_id": step_id, "agent_type": agent_type, **kw}


def test_sequential_steps_run_in_order_and_report_success(sfn_env: Any) -> None:
    status, c, _ = run(sfn_env, {"steps": [agent("a"), agent("b", "llm", depends_on=["a"]),
                                           agent("c", depends_on=["b"])]})
    assert status == "SUCCEEDED"
    assert [(s.body["kind"], s.body.get("step_id")) for s in c.seen] == [
        ("workflow.step", "a"), ("workflow.step", "b"), ("workflow.step", "c"), ("workflow.finished", None)]


def test_a_parallel_level_sends_both_branches_before_either_answers(sfn_env: Any) -> None:
    def both_first(c: Consumers, s: Seen) -> tuple[str, Any] | None:
        if s.body.get("step_id") in ("b", "c") and not {"b", "c"} <= {x.body.get("step_id") for x in c.seen}:
            return None  # hold b (or c) until the other is on its queue too: they run at once
        return succeed_all(c, s)

    status, c, _ = run(sfn_env, {"steps": [agent("a"), agent("b", depends_on=["a"]),
                                           agent("c", "llm", depends_on=["a"]), agent("d", depends_on=["b", "c"])]},
                       both_first)
    assert status == "SUCCEEDED"
    order = [s.body.get("step_id") for s in c.seen]
    assert order[0] == "a" and set(order[1:3]) == {"b", "c"} and order[3:] == ["d", None]


def test_for_each_runs_every_item_at_most_max_concurrency_at_once(sfn_env: Any) -> None:
    idle: dict[str, int] = {"polls": 0}

    def two_at_a_time(c: Consumers, s: Seen) -> tuple[str, Any] | None:
        if "item_index" in s.body:
            open_now = c.open_items(s.body["step_id"])
            idle["polls"] += 1
            if len(open_now) < 2 and idle["polls"] < 20:
                return None  # wait for the Map to put a second item in flight
            idle["polls"] = 0
        return succeed_all(c, s)

    status, c, _ = run(sfn_env, {"steps": [agent("list"), agent("each", depends_on=["list"], max_concurrency=2,
                                                                for_each="$.steps.list.output.items")]},
                       two_at_a_time)
    assert status == "SUCCEEDED"
    items = sorted(s.body["item_index"] for s in c.seen if "item_index" in s.body)
    assert items == [0, 1, 2, 3, 4]
    assert c.max_items_open == 2
    assert c.kinds() == ["workflow.step", "workflow.foreach", *["workflow.step"] * 5, "workflow.finished"]


def test_for_each_with_no_items_runs_nothing(sfn_env: Any) -> None:
    def none(c: Consumers, s: Seen) -> tuple[str, Any]:
        if s.body["kind"] == "workflow.foreach":
            return "succeed", {"step_id": s.body["step_id"], "indexes": []}  # a skipped for_each
        return succeed_all(c, s)

    status, c, _ = run(sfn_env, {"steps": [agent("list"), {"step_id": "each", "engine": "count",
                                                           "depends_on": ["list"], "max_concurrency": 3,
                                                           "for_each": "$.steps.list.output"},
                                           agent("after", depends_on=["each"])]}, none)
    assert status == "SUCCEEDED"
    assert c.kinds() == ["workflow.step", "workflow.foreach", "workflow.step", "workflow.finished"]


def test_for_each_in_a_parallel_branch_and_an_engine_step(sfn_env: Any) -> None:
    status, c, _ = run(sfn_env, {"steps": [
        agent("list"), {"step_id": "each", "engine": "count", "depends_on": ["list"], "max_concurrency": 40,
                        "for_each": "$.steps.list.output"},
        agent("side", depends_on=["list"])]})
    assert status == "SUCCEEDED"
    engines = [s.body for s in c.seen if s.body["kind"] == "workflow.engine"]
    assert sorted(b["item_index"] for b in engines) == [0, 1, 2, 3, 4]
    assert {b["engine"] for b in engines} == {"count"}


def test_an_approved_gate_lets_the_run_continue_and_an_agent_id_step_uses_its_type(sfn_env: Any) -> None:
    status, c, _ = run(sfn_env, {"steps": [agent("draft"), {"step_id": "ok", "type": "approval",
                                                            "depends_on": ["draft"]},
                                           {"step_id": "send", "agent_id": str(uuid.uuid4()), "depends_on": ["ok"]}]},
                       step_agent_types={"send": "communication"})
    assert status == "SUCCEEDED"
    assert c.kinds() == ["workflow.step", "workflow.approval", "workflow.step", "workflow.finished"]
    assert c.seen[2].body["agent_type"] == "communication"


def test_a_rejected_gate_fails_the_run_and_reports_it(sfn_env: Any) -> None:
    def reject(c: Consumers, s: Seen) -> tuple[str, Any]:
        if s.body["kind"] == "workflow.approval":
            return "fail", ("Ymera.ApprovalRejected", "rejected by the reviewer")
        return succeed_all(c, s)

    status, c, described = run(sfn_env, {"steps": [{"step_id": "ok", "type": "approval"},
                                                   agent("after", depends_on=["ok"])]}, reject)
    assert status == "FAILED"
    assert c.kinds() == ["workflow.approval", "workflow.failed"]
    assert c.seen[-1].body["error"]["Error"] == "Ymera.ApprovalRejected"
    assert described.get("error") in (None, "Ymera.RunFailed")


def test_a_failed_attempt_is_retried_once_with_max_attempts_2(sfn_env: Any) -> None:
    def fail_first(c: Consumers, s: Seen) -> tuple[str, Any]:
        if s.body.get("step_id") == "r" and c.kinds("r").count("workflow.step") == 1:
            return "fail", ("Ymera.StepFailed", "TASK_FAILED: first attempt")
        return succeed_all(c, s)

    status, c, _ = run(sfn_env, {"steps": [agent("r", retry={"max_attempts": 2, "backoff_seconds": 1}),
                                           agent("next", depends_on=["r"])]}, fail_first)
    assert status == "SUCCEEDED"
    assert c.kinds() == ["workflow.step", "workflow.step", "workflow.step", "workflow.finished"]
    assert [s.body.get("step_id") for s in c.seen[:3]] == ["r", "r", "next"]
    # moto hands the retry the same token; the attempt number tells the consumer it is a new attempt
    assert [s.body["retry_count"] for s in c.seen[:3]] == [0, 1, 0]


def test_the_last_failed_attempt_fails_the_run(sfn_env: Any) -> None:
    def always_fail(c: Consumers, s: Seen) -> tuple[str, Any]:
        return "fail", ("Ymera.StepFailed", "TASK_FAILED: broken")

    status, c, _ = run(sfn_env, {"steps": [agent("r", retry={"max_attempts": 2, "backoff_seconds": 1}),
                                           agent("never", depends_on=["r"])]}, always_fail)
    assert status == "FAILED"
    assert c.kinds() == ["workflow.step", "workflow.step", "workflow.failed"]
    assert c.seen[-1].body["error"]["Error"] == "Ymera.StepFailed"
    assert c.seen[-1].body["error"]["Cause"] in ("TASK_FAILED: broken", None)  # moto drops the cause


def test_a_cancelled_run_is_never_retried(sfn_env: Any) -> None:
    def cancel(c: Consumers, s: Seen) -> tuple[str, Any]:
        return "fail", ("Ymera.RunCancelled", "cancelled by the user")

    status, c, _ = run(sfn_env, {"steps": [agent("r", retry={"max_attempts": 5, "backoff_seconds": 1})]}, cancel)
    assert status == "FAILED"
    assert c.kinds() == ["workflow.step", "workflow.failed"]


def test_a_failed_item_past_tolerance_fails_the_map_and_the_run(sfn_env: Any) -> None:
    def item_fails(c: Consumers, s: Seen) -> tuple[str, Any]:
        if s.body.get("item_index") == 3:
            return "fail", ("Ymera.ToleranceExceeded", "1 of 5 items failed (tolerated 0%)")
        return succeed_all(c, s)

    status, c, _ = run(sfn_env, {"steps": [agent("list"), agent("each", depends_on=["list"], max_concurrency=1,
                                                                for_each="$.steps.list.output",
                                                                retry={"max_attempts": 3, "backoff_seconds": 1})]},
                       item_fails)
    assert status == "FAILED"
    assert [s.body.get("item_index") for s in c.seen if s.body["kind"] == "workflow.step"] == [None, 0, 1, 2, 3]
    assert c.seen[-1].body["kind"] == "workflow.failed"


def test_an_unanswered_step_times_out_is_retried_and_then_fails_the_run(sfn_env: Any) -> None:
    def never(c: Consumers, s: Seen) -> None:
        return None  # a consumer that died: no answer, no heartbeat

    status, c, _ = run(sfn_env, {"steps": [agent("slow", timeout_seconds=2,
                                                 retry={"max_attempts": 2, "backoff_seconds": 1})]}, never)
    assert status == "FAILED"
    assert c.kinds() == ["workflow.step", "workflow.step", "workflow.failed"]
    # HeartbeatSeconds (1) is shorter than TimeoutSeconds (2): the heartbeat deadline is what fires
    assert c.seen[-1].body["error"]["Error"] in ("States.HeartbeatTimeout", "States.Timeout")
