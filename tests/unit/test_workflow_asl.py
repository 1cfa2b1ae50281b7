"""The ASL compiler (chalicelib.workflows.asl): shapes, budgets and invariants of the generated machines."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.workflows import asl
from chalicelib.workflows.definition import WorkflowDefinition

AGENT = uuid.UUID("00000000-0000-4000-8000-000000000001")


def defn(*steps: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"steps": list(steps), **extra})


def task(step_id: str, **kw: Any) -> dict[str, Any]:
    if not {"agent_type", "agent_id", "engine", "type"} & kw.keys():
        kw["agent_type"] = "editing"
    return {"step_id": step_id, **kw}


def sequential(n: int) -> WorkflowDefinition:
    return defn(task("s0"), *(task(f"s{i}", depends_on=[f"s{i - 1}"]) for i in range(1, n)))


def compiled(d: WorkflowDefinition, agents: dict[str, str] | None = None) -> dict[str, Any]:
    return asl.compile_definition(d, agents or {})


EXAMPLES: dict[str, WorkflowDefinition] = {
    "sequential": sequential(10),
    "parallel": defn(task("a"), task("b", depends_on=["a"]), task("c", depends_on=["a"], agent_type="llm"),
                     task("d", depends_on=["b", "c"])),
    "for_each": defn(task("list"), task("each", depends_on=["list"], for_each="$.steps.list.output.items",
                                        max_concurrency=2)),
    "for_each_in_parallel": defn(task("list"), task("each", depends_on=["list"], engine="count",
                                                    for_each="$.steps.list.output", max_concurrency=40),
                                 task("other", depends_on=["list"])),
    "approval": defn(task("draft"), {"step_id": "ok", "type": "approval", "depends_on": ["draft"]},
                     task("send", depends_on=["ok"], agent_id=str(AGENT))),
    "engine": defn({"step_id": "e", "engine": "word_count", "timeout_seconds": 30}),
    "retry": defn(task("r", retry={"max_attempts": 3, "backoff_seconds": 2, "backoff_rate": 1.5},
                       timeout_seconds=60)),
    "short_timeouts": defn(task("one", timeout_seconds=2),
                           {"step_id": "gate", "type": "approval", "timeout_seconds": 2, "depends_on": ["one"]}),
}
AGENTS = {"send": "communication"}


def all_asls() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, d in EXAMPLES.items():
        yield name, compiled(d, AGENTS)


def machines(machine: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield machine
    for state in machine["States"].values():
        for branch in state.get("Branches", ()):
            yield from machines(branch)
        if "ItemProcessor" in state:
            yield from machines(state["ItemProcessor"])


def test_a_single_step_is_a_task_then_the_report_states() -> None:
    m = compiled(defn(task("only", input_data={"text": "$.input.t"}, timeout_seconds=120)))
    assert m["StartAt"] == "step:only"
    assert m["TimeoutSeconds"] == 7 * 24 * 3600
    assert set(m["States"]) == {"step:only", "ReportSuccess", "ReportFailure", "RunFailed"}
    only = m["States"]["step:only"]
    assert only == {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"QueueUrl": "${AgentQueueUrl:editing}", "MessageBody": {
            "kind": "workflow.step", "run_id.$": "$.run_id", "execution.$": "$.execution", "step_id": "only",
            "agent_type": "editing", "retry_count.$": "$$.State.RetryCount", "token.$": "$$.Task.Token"}},
        "ResultPath": None,
        "TimeoutSeconds": 120,
        "HeartbeatSeconds": 119,
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ReportFailure"}],
        "Next": "ReportSuccess",
    }
    assert m["States"]["ReportSuccess"]["Parameters"] == {"QueueUrl": "${ControlQueueUrl}", "MessageBody": {
        "kind": "workflow.finished", "run_id.$": "$.run_id", "execution.$": "$.execution"}}
    assert m["States"]["ReportSuccess"]["End"] is True
    assert m["States"]["ReportFailure"]["Parameters"]["MessageBody"] == {
        "kind": "workflow.failed", "run_id.$": "$.run_id", "execution.$": "$.execution", "error.$": "$.error"}
    assert m["States"]["ReportFailure"]["Next"] == "RunFailed"
    assert m["States"]["RunFailed"]["Type"] == "Fail"


def test_heartbeat_is_twice_the_queue_visibility_below_the_timeout() -> None:
    m = compiled(defn(task("fast", agent_type="examination"), task("slow", agent_type="llm", depends_on=["fast"]),
                      task("long", agent_type="llm", depends_on=["slow"], timeout_seconds=86_400)))
    beats = {name: s["HeartbeatSeconds"] for name, s in asl.token_states(m)}
    assert beats == {"step:fast": 720, "step:slow": 899, "step:long": 3600}


def test_visibility_of_is_injectable() -> None:
    m = asl.compile_definition(defn(task("a", engine="e")), {}, visibility_of=lambda q: {"workflow-control": 7}[q])
    assert m["States"]["step:a"]["HeartbeatSeconds"] == 14


def test_default_visibility_matches_the_infra_manifest() -> None:
    from chalicelib.agents.registry import available_types
    from infra import manifest

    for agent_type in available_types():
        assert asl.default_visibility(agent_type) == manifest.agent_queue(agent_type).visibility_timeout, agent_type


def test_default_control_visibility_matches_the_manifests_control_queue() -> None:
    from infra import manifest

    specs = {q.suffix: q for q in manifest.queues()}
    if asl.CONTROL not in specs:
        pytest.skip("the manifest has no workflow control queue yet (the runtime branch adds it)")
    assert asl.default_visibility(asl.CONTROL) == specs[asl.CONTROL].visibility_timeout


def test_levels_group_by_longest_path_and_keep_definition_order() -> None:
    d = defn(task("z"), task("a"), task("b", depends_on=["a"]), task("c", depends_on=["b", "z"]),
             task("d", depends_on=["a"]))
    assert [[s.step_id for s in level] for level in asl.levels(d)] == [["z", "a"], ["b", "d"], ["c"]]


def test_levels_refuse_what_validation_refuses() -> None:
    with pytest.raises(ValueError, match="unknown dependencies"):
        asl.levels(defn(task("a", depends_on=["ghost"])))
    with pytest.raises(ValueError, match="cycle"):
        asl.levels(defn(task("a", depends_on=["b"]), task("b", depends_on=["a"])))
    with pytest.raises(ValueError, match="duplicate"):
        asl.levels(defn(task("a"), task("a")))


def test_a_level_of_several_steps_is_a_parallel_with_one_branch_each() -> None:
    m = compiled(EXAMPLES["parallel"])
    assert m["States"]["step:a"]["Next"] == "level:1"
    level = m["States"]["level:1"]
    assert level["Type"] == "Parallel" and level["ResultPath"] is None and level["Next"] == "step:d"
    assert [b["StartAt"] for b in level["Branches"]] == ["step:b", "step:c"]
    assert level["Branches"][1]["States"]["step:c"]["Parameters"]["QueueUrl"] == "${AgentQueueUrl:llm}"
    for branch in level["Branches"]:
        (only,) = branch["States"].values()
        assert only["End"] is True and "Catch" not in only  # the Parallel catches for its branches


def test_for_each_is_a_foreach_task_then_a_map() -> None:
    m = compiled(EXAMPLES["for_each"])
    foreach, items = m["States"]["foreach:each"], m["States"]["items:each"]
    assert foreach["Parameters"] == {"QueueUrl": "${ControlQueueUrl}", "MessageBody": {
        "kind": "workflow.foreach", "run_id.$": "$.run_id", "execution.$": "$.execution", "step_id": "each",
        "token.$": "$$.Task.Token"}}
    assert foreach["ResultPath"] == "$.foreach.each" and foreach["Next"] == "items:each"
    assert items["Type"] == "Map" and items["ItemsPath"] == "$.foreach.each.indexes"
    assert items["MaxConcurrency"] == 2 and items["ResultPath"] is None and items["Next"] == "ReportSuccess"
    assert items["ItemSelector"] == {"run_id.$": "$.run_id", "execution.$": "$.execution",
                                     "index.$": "$$.Map.Item.Value"}
    inner = items["ItemProcessor"]["States"]["item:each"]
    assert inner["Parameters"]["MessageBody"]["item_index.$"] == "$.index"
    assert inner["Parameters"]["MessageBody"]["kind"] == "workflow.step"
    assert inner["End"] is True and "Catch" not in inner
    assert "Catch" in foreach and "Catch" in items


def test_for_each_in_a_parallel_branch_is_the_branchs_two_states() -> None:
    m = compiled(EXAMPLES["for_each_in_parallel"])
    branch = m["States"]["level:1"]["Branches"][0]
    assert branch["StartAt"] == "foreach:each"
    assert branch["States"]["foreach:each"]["Next"] == "items:each"
    assert branch["States"]["items:each"]["End"] is True
    inner = branch["States"]["items:each"]["ItemProcessor"]["States"]["item:each"]
    assert inner["Parameters"]["MessageBody"]["kind"] == "workflow.engine"
    assert inner["Parameters"]["MessageBody"]["engine"] == "count"


def test_approval_and_agent_id_steps() -> None:
    m = compiled(EXAMPLES["approval"], AGENTS)
    gate = m["States"]["approval:ok"]
    assert gate["Parameters"]["QueueUrl"] == "${ControlQueueUrl}"
    assert gate["Parameters"]["MessageBody"]["kind"] == "workflow.approval"
    assert (gate["TimeoutSeconds"], gate["HeartbeatSeconds"]) == (86_400, 86_399)
    send = m["States"]["step:send"]["Parameters"]
    assert send["QueueUrl"] == "${AgentQueueUrl:communication}"
    assert send["MessageBody"]["agent_type"] == "communication"


def test_engine_step_goes_to_the_control_queue() -> None:
    body = compiled(EXAMPLES["engine"])["States"]["step:e"]["Parameters"]
    assert body["QueueUrl"] == "${ControlQueueUrl}"
    assert body["MessageBody"]["kind"] == "workflow.engine" and body["MessageBody"]["engine"] == "word_count"
    assert "agent_type" not in body["MessageBody"]


def test_retry_never_retries_cancellation_tolerance_or_rejection() -> None:
    r = compiled(EXAMPLES["retry"])["States"]["step:r"]["Retry"]
    assert r == [
        {"ErrorEquals": ["Ymera.RunCancelled", "Ymera.ToleranceExceeded", "Ymera.ApprovalRejected"],
         "MaxAttempts": 0},
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 2, "BackoffRate": 1.5},
    ]
    assert "Retry" not in compiled(sequential(1))["States"]["step:s0"]
    inner = compiled(defn(task("l"), task("e", depends_on=["l"], for_each="$.input.x", max_concurrency=1,
                                          retry={"max_attempts": 2})))
    assert inner["States"]["items:e"]["ItemProcessor"]["States"]["item:e"]["Retry"][1]["MaxAttempts"] == 1


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_token_state_has_a_timeout_and_a_shorter_heartbeat(name: str) -> None:
    m = compiled(EXAMPLES[name], AGENTS)
    tokens = list(asl.token_states(m))
    assert tokens
    for state_name, state in tokens:
        assert 1 <= state["HeartbeatSeconds"] < state["TimeoutSeconds"], state_name


def test_a_one_second_step_has_no_heartbeat_rather_than_an_invalid_one() -> None:
    state = compiled(defn(task("a", timeout_seconds=1)))["States"]["step:a"]
    assert state["TimeoutSeconds"] == 1 and "HeartbeatSeconds" not in state


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_transition_target_exists_and_names_are_unique_and_short(name: str) -> None:
    m = compiled(EXAMPLES[name], AGENTS)
    seen: list[str] = []
    for machine in machines(m):
        names = set(machine["States"])
        seen.extend(names)
        assert machine["StartAt"] in names
        for state in machine["States"].values():
            targets = [state.get("Next")] + [c["Next"] for c in state.get("Catch", ())]
            for target in filter(None, targets):
                # a Catch inside a branch could only reach its own branch; there are none
                assert target in names
            assert ("Next" in state) != bool(state.get("End")) or state["Type"] == "Fail"
    assert len(seen) == len(set(seen))
    assert max(map(len, seen)) <= 80


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_result_path_is_null_everywhere_but_foreach(name: str) -> None:
    for state_name, state in asl.states(compiled(EXAMPLES[name], AGENTS)):
        if state["Type"] == "Fail":
            continue
        expected = f"$.foreach.{state_name.split(':', 1)[1]}" if state_name.startswith("foreach:") else None
        assert state["ResultPath"] == expected, state_name


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_top_level_step_states_catch_into_report_failure(name: str) -> None:
    m = compiled(EXAMPLES[name], AGENTS)
    for state_name, state in m["States"].items():
        if state_name in (asl.REPORT_SUCCESS, asl.REPORT_FAILURE, asl.RUN_FAILED):
            assert "Catch" not in state
        else:
            assert state["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                       "Next": "ReportFailure"}]


def test_the_ten_step_pipeline_stays_within_four_transitions_per_step() -> None:
    m = compiled(sequential(10))
    assert asl.transitions_on_success(m) == 11  # ten steps and ReportSuccess
    assert asl.transitions_on_success(m) <= 4 * 10


def test_transitions_count_parallel_branches_and_map_items() -> None:
    assert asl.transitions_on_success(compiled(EXAMPLES["parallel"])) == 1 + (1 + 2) + 1 + 1
    assert asl.transitions_on_success(compiled(EXAMPLES["for_each"]), items=5) == 1 + 1 + (1 + 5) + 1
    assert asl.transitions_on_success(compiled(EXAMPLES["for_each_in_parallel"]), items=3) == \
        1 + (1 + (1 + (1 + 3)) + 1) + 1


def test_a_hundred_step_definition_compiles_within_the_size_limit() -> None:
    wide = defn(task("root"), *(task(f"s{i}", depends_on=["root"], retry={"max_attempts": 2})
                                for i in range(1, 51)),
                *(task(f"t{i}", depends_on=[f"s{i}"], for_each="$.input.items", max_concurrency=5)
                  for i in range(1, 50)))
    for d in (sequential(100), wide):
        m = compiled(d)
        assert len(list(asl.token_states(m))) >= 100
        assert len(json.dumps(asl.render(m, agent_queue_urls={"editing": "https://sqs/x" * 5},
                                         control_queue_url="https://sqs/c"))) < 1_048_576  # AWS's 1 MB


def test_placeholders_and_agent_types() -> None:
    m = compiled(EXAMPLES["approval"], AGENTS)
    assert asl.placeholders(m) == {"${ControlQueueUrl}", "${AgentQueueUrl:editing}",
                                   "${AgentQueueUrl:communication}"}
    assert asl.agent_types(m) == {"editing", "communication"}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_render_leaves_no_placeholder_and_does_not_touch_the_original(name: str) -> None:
    m = compiled(EXAMPLES[name], AGENTS)
    before = json.dumps(m, sort_keys=True)
    urls = {t: f"https://sqs.us-east-1.amazonaws.com/123456789012/p-agent-{t}" for t in asl.agent_types(m)}
    rendered = asl.render(m, agent_queue_urls=urls, control_queue_url="https://sqs/p-workflow-control")
    assert asl.placeholders(rendered) == set()
    assert "${" not in json.dumps(rendered)
    assert json.dumps(m, sort_keys=True) == before
    assert any(s["Parameters"]["QueueUrl"].startswith("https://") for _, s in asl.token_states(rendered))


def test_render_names_a_missing_agent_queue() -> None:
    m = compiled(EXAMPLES["parallel"])
    with pytest.raises(KeyError) as err:
        asl.render(m, agent_queue_urls={"editing": "u"}, control_queue_url="c")
    assert str(err.value) == "no queue URL given for agent type 'llm' (placeholder ${AgentQueueUrl:llm})"
    with pytest.raises(asl.MissingQueueUrlError, match="unknown placeholder"):
        asl.render({"States": {"x": {"a": "${Other}"}}}, agent_queue_urls={}, control_queue_url="c")


def test_the_compiled_machine_is_plain_json() -> None:
    m = compiled(EXAMPLES["for_each_in_parallel"])
    assert json.loads(json.dumps(m)) == m


def test_an_agent_id_step_without_its_resolved_type_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="step 'send' runs agent .* whose type step_agent_types does not give"):
        compiled(EXAMPLES["approval"], {})
