"""The ASL a definition compiles to, rendered with real queue URLs, for the runtime's end-to-end tests.

Uses the compiler's `chalicelib.workflows.asl` when it is on the branch; otherwise builds the contract's
shape (docs/workflows.md, WF-CONTRACT) itself: levels by depth, Parallel for a level of several steps, a
top-level Catch to ReportFailure, FOREACH + Map for for_each, token Tasks on the agent or control queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.workflows.definition import WorkflowDefinition, WorkflowStep
from infra import manifest

TOKEN = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
SEND = "arn:aws:states:::sqs:sendMessage"
NO_RETRY = ["Ymera.RunCancelled", "Ymera.ToleranceExceeded", "Ymera.ApprovalRejected"]


def render_asl(definition: WorkflowDefinition, step_types: dict[str, str], url_of: Callable[[str], str]
               ) -> dict[str, Any]:
    asl = _compiled(definition, step_types)
    text = json.dumps(asl)
    text = text.replace("${ControlQueueUrl}", url_of(manifest.WORKFLOW_CONTROL_SUFFIX))
    for agent_type in manifest.AGENT_CONSUMERS:
        text = text.replace(f"${{AgentQueueUrl:{agent_type}}}", url_of(f"agent-{agent_type}"))
    return dict(json.loads(text))


def _compiled(definition: WorkflowDefinition, step_types: dict[str, str]) -> dict[str, Any]:
    try:
        from chalicelib.workflows import asl as compiler  # type: ignore[attr-defined]
    except ImportError:
        return build(definition, step_types)
    compile_fn = getattr(compiler, "compile_definition", None) or getattr(compiler, "compile", None)
    if compile_fn is None:
        return build(definition, step_types)
    return dict(compile_fn(definition, step_types))


def _levels(definition: WorkflowDefinition) -> list[list[WorkflowStep]]:
    depth: dict[str, int] = {}

    def of(step: WorkflowStep) -> int:
        if step.step_id not in depth:
            depth[step.step_id] = 1 + max((of(definition.step(d)) for d in step.depends_on), default=-1)
        return depth[step.step_id]

    for s in definition.steps:
        of(s)
    levels: list[list[WorkflowStep]] = [[] for _ in range(max(depth.values()) + 1)]
    for s in definition.steps:
        levels[depth[s.step_id]].append(s)
    return levels


def _task(step: WorkflowStep, step_types: dict[str, str], item: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"run_id.$": "$.run_id", "execution.$": "$.execution", "step_id": step.step_id,
                            "token.$": "$$.Task.Token"}
    if item:
        body["item_index.$"] = "$.index"
    if step.type == "approval":
        body["kind"] = "workflow.approval"
        queue = "${ControlQueueUrl}"
        heartbeat = max(1, step.timeout - 1)
    elif step.engine:
        body.update(kind="workflow.engine", engine=step.engine)
        queue = "${ControlQueueUrl}"
        heartbeat = max(1, step.timeout - 1)
    else:
        agent_type = step.agent_type or step_types[step.step_id]
        body.update(kind="workflow.step", agent_type=agent_type)
        queue = f"${{AgentQueueUrl:{agent_type}}}"
        heartbeat = max(1, min(step.timeout - 1, 2 * manifest.agent_queue(agent_type).visibility_timeout))
    state: dict[str, Any] = {"Type": "Task", "Resource": TOKEN, "Parameters": {"QueueUrl": queue, "MessageBody": body},
                             "ResultPath": None, "TimeoutSeconds": step.timeout, "HeartbeatSeconds": heartbeat}
    if step.retry:
        state["Retry"] = [{"ErrorEquals": NO_RETRY, "MaxAttempts": 0},
                          {"ErrorEquals": ["States.ALL"], "IntervalSeconds": step.retry.backoff_seconds,
                           "MaxAttempts": step.retry.max_attempts - 1, "BackoffRate": step.retry.backoff_rate}]
    return state


def _step_states(step: WorkflowStep, step_types: dict[str, str], nxt: str | None) -> tuple[str, dict[str, Any]]:
    """(first state name, states) of one step, chained to `nxt` (None: End)."""
    end: dict[str, Any] = {"Next": nxt} if nxt else {"End": True}
    if step.for_each is None:
        return step.step_id, {step.step_id: {**_task(step, step_types, False), **end}}
    fe, mp = f"{step.step_id}.foreach", f"{step.step_id}.map"
    foreach = {"Type": "Task", "Resource": TOKEN, "Parameters": {"QueueUrl": "${ControlQueueUrl}", "MessageBody": {
        "kind": "workflow.foreach", "run_id.$": "$.run_id", "execution.$": "$.execution", "step_id": step.step_id,
        "token.$": "$$.Task.Token"}}, "ResultPath": f"$.foreach.{step.step_id}", "TimeoutSeconds": 300,
        "HeartbeatSeconds": 299, "Next": mp}
    inner = {**_task(step, step_types, True), "End": True}
    mapping = {"Type": "Map", "ItemsPath": f"$.foreach.{step.step_id}.indexes",
               "MaxConcurrency": step.max_concurrency,
               "ItemSelector": {"run_id.$": "$.run_id", "execution.$": "$.execution", "index.$": "$$.Map.Item.Value"},
               "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "item", "States": {"item": inner}},
               "ResultPath": None, **end}
    return fe, {fe: foreach, mp: mapping}


def build(definition: WorkflowDefinition, step_types: dict[str, str]) -> dict[str, Any]:
    levels = _levels(definition)
    names = [(f"{lv[0].step_id}.foreach" if lv[0].for_each else lv[0].step_id) if len(lv) == 1 else f"level-{i}"
             for i, lv in enumerate(levels)]
    states: dict[str, Any] = {}
    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ReportFailure"}]
    first = ""
    for i, level in enumerate(levels):
        nxt = names[i + 1] if i + 1 < len(levels) else "ReportSuccess"
        if len(level) == 1:
            start, group = _step_states(level[0], step_types, nxt)
            for state in group.values():
                if state["Type"] in ("Task", "Map") and "Catch" not in state:
                    state["Catch"] = catch
            states.update(group)
        else:
            branches = []
            for step in level:
                b_start, b_states = _step_states(step, step_types, None)
                branches.append({"StartAt": b_start, "States": b_states})
            start = names[i]
            states[start] = {"Type": "Parallel", "Branches": branches, "ResultPath": None, "Next": nxt,
                             "Catch": catch}
        if i == 0:
            first = start
    report = {"run_id.$": "$.run_id", "execution.$": "$.execution"}
    states["ReportSuccess"] = {"Type": "Task", "Resource": SEND, "Parameters": {
        "QueueUrl": "${ControlQueueUrl}", "MessageBody": {"kind": "workflow.finished", **report}}, "End": True}
    states["ReportFailure"] = {"Type": "Task", "Resource": SEND, "Parameters": {
        "QueueUrl": "${ControlQueueUrl}", "MessageBody": {"kind": "workflow.failed", **report, "error.$": "$.error"}},
        "Next": "RunFailed"}
    states["RunFailed"] = {"Type": "Fail", "Error": "Ymera.RunFailed"}
    return {"Comment": "runtime test build", "StartAt": first, "TimeoutSeconds": definition.timeout_seconds,
            "States": states}

