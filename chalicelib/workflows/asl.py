"""A workflow definition compiled to Amazon States Language (JSONPath, Standard workflow).

Steps are grouped in levels by depth (the longest dependency path from a root); a level of one step is that
step's state(s), a level of several is a Parallel with one branch per step; levels are chained in order, so
a step waits for its whole previous level (docs/workflows.md, "Compilation"). Every step is a
`sqs:sendMessage.waitForTaskToken` Task whose message carries ids only (messages.py) and whose answer is
discarded (`ResultPath: null`), except a for_each step's FOREACH Task, whose answer holds the indexes its Map
iterates. Queue URLs are placeholders (`${AgentQueueUrl:<type>}`, `${ControlQueueUrl}`) until `render`, so
the stored ASL names no account.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from chalicelib.workflows import messages
from chalicelib.workflows.definition import WorkflowDefinition, WorkflowStep

WAIT_FOR_TOKEN = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
SEND_MESSAGE = "arn:aws:states:::sqs:sendMessage"
CONTROL_QUEUE = "${ControlQueueUrl}"
#: the key `visibility_of` is asked for the control queue (engine and FOREACH tasks run on its consumer).
CONTROL = "workflow-control"
#: an approval's rejection (SendTaskFailure from the decision endpoint); never retried.
#: the Fail state's error when a step failed and the failure was reported.
ERROR_RUN_FAILED = "Ymera.RunFailed"
NOT_RETRIED = [messages.ERROR_RUN_CANCELLED, messages.ERROR_TOLERANCE_EXCEEDED, messages.ERROR_APPROVAL_REJECTED]
REPORT_SUCCESS = "ReportSuccess"
REPORT_FAILURE = "ReportFailure"
RUN_FAILED = "RunFailed"
MAX_STATE_NAME = 80

_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")

# infra/manifest.py's consumer timeouts (chalicelib may not import infra/): a queue's visibility timeout is
# 6x its consumer's. tests/unit/test_workflow_asl.py fails if the two disagree.
_CONSUMER_TIMEOUT_SECONDS = 60
_PROVIDER_CONSUMER_TIMEOUT_SECONDS = 300
_CONTROL_CONSUMER_TIMEOUT_SECONDS = 120


def agent_queue_placeholder(agent_type: str) -> str:
    return f"${{AgentQueueUrl:{agent_type}}}"


def default_visibility(queue: str) -> int:
    """The visibility timeout of an agent type's queue (or of the control queue, for `CONTROL`)."""
    if queue == CONTROL:
        return 6 * _CONTROL_CONSUMER_TIMEOUT_SECONDS
    from chalicelib.agents import registry

    provider_backed = queue == "orchestrator" or registry.get_agent(queue).provider_backed
    return 6 * (_PROVIDER_CONSUMER_TIMEOUT_SECONDS if provider_backed else _CONSUMER_TIMEOUT_SECONDS)


def levels(defn: WorkflowDefinition) -> list[list[WorkflowStep]]:
    """Steps grouped by depth (longest path from a root), each level in definition order.

    Raises ValueError for a definition `validate.violations` refuses (unknown dependency, cycle).
    """
    by_id = {s.step_id: s for s in defn.steps}
    if len(by_id) != len(defn.steps):
        raise ValueError("duplicate step ids: validate the definition before compiling it")
    depth: dict[str, int] = {}
    pending = list(defn.steps)
    while pending:  # Kahn's algorithm; each pass settles at least one step, so at most len(steps) passes
        settled = [s for s in pending if all(d in depth for d in s.depends_on)]
        if not settled:
            unknown = sorted({d for s in pending for d in s.depends_on if d not in by_id})
            problem = f"unknown dependencies {unknown}" if unknown else "a dependency cycle"
            raise ValueError(f"cannot compile a definition with {problem}: validate it first")
        for s in settled:
            depth[s.step_id] = 1 + max((depth[d] for d in s.depends_on), default=-1)
        pending = [s for s in pending if s.step_id not in depth]
    grouped: list[list[WorkflowStep]] = [[] for _ in range(max(depth.values()) + 1)]
    for s in defn.steps:
        grouped[depth[s.step_id]].append(s)
    return grouped


def _heartbeat(timeout: int, visibility: int | None) -> dict[str, int]:
    """TimeoutSeconds and HeartbeatSeconds (< TimeoutSeconds, >= 1; none fits a 1-second timeout)."""
    beat = timeout - 1 if visibility is None else min(timeout - 1, 2 * visibility)
    return {"TimeoutSeconds": timeout, **({"HeartbeatSeconds": beat} if beat >= 1 else {})}


def _retry(step: WorkflowStep) -> dict[str, Any]:
    if step.retry is None:
        return {}
    return {"Retry": [
        {"ErrorEquals": list(NOT_RETRIED), "MaxAttempts": 0},
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": step.retry.backoff_seconds,
         "MaxAttempts": step.retry.max_attempts - 1, "BackoffRate": step.retry.backoff_rate},
    ]}


def _token_task(queue_url: str, body: dict[str, Any], timing: dict[str, int], *,
                result_path: str | None = None) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": WAIT_FOR_TOKEN,
        "Parameters": {"QueueUrl": queue_url, "MessageBody": body},
        "ResultPath": result_path,
        **timing,
    }


def _ids(kind: str, step_id: str, *, item: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "run_id.$": "$.run_id", "execution.$": "$.execution", "step_id": step_id}
    if item:
        body["item_index.$"] = "$.index"
    return body


def _work_task(step: WorkflowStep, agent_type: str | None, visibility_of: Callable[[str], int], *,
               item: bool) -> dict[str, Any]:
    """The Task that runs a task step (or one item of it) on an agent's queue or the control queue."""
    if step.engine is not None:
        body = {**_ids(messages.ENGINE, step.step_id, item=item), "engine": step.engine}
        queue, visibility = CONTROL_QUEUE, visibility_of(CONTROL)
    else:
        assert agent_type is not None
        body = {**_ids(messages.STEP, step.step_id, item=item), "agent_type": agent_type}
        queue, visibility = agent_queue_placeholder(agent_type), visibility_of(agent_type)
    # Which attempt this is (0 = the first): moto reuses one task token for every retry of a state, so a
    # consumer that keys work by the token alone would take a retry for a redelivery of the failed attempt.
    body["retry_count.$"] = "$$.State.RetryCount"
    body["token.$"] = "$$.Task.Token"
    return {**_token_task(queue, body, _heartbeat(step.timeout, visibility)), **_retry(step)}


def _name(prefix: str, step_id: str) -> str:
    name = f"{prefix}:{step_id}"
    assert len(name) <= MAX_STATE_NAME  # step ids are at most 64 characters
    return name


def _step_states(step: WorkflowStep, agent_type: str | None,
                 visibility_of: Callable[[str], int]) -> list[tuple[str, dict[str, Any]]]:
    """A step's states in order (one; two for for_each: FOREACH then its Map), not yet linked."""
    if step.type == "approval":
        body = {**_ids(messages.APPROVAL, step.step_id), "token.$": "$$.Task.Token"}
        return [(_name("approval", step.step_id), _token_task(CONTROL_QUEUE, body, _heartbeat(step.timeout, None)))]
    if step.for_each is None:
        return [(_name("step", step.step_id), _work_task(step, agent_type, visibility_of, item=False))]
    foreach_body = {**_ids(messages.FOREACH, step.step_id), "token.$": "$$.Task.Token"}
    foreach = _token_task(CONTROL_QUEUE, foreach_body, _heartbeat(step.timeout, visibility_of(CONTROL)),
                          result_path=f"$.foreach.{step.step_id}")
    inner = _name("item", step.step_id)
    items = {
        "Type": "Map",
        "ItemsPath": f"$.foreach.{step.step_id}.indexes",
        "MaxConcurrency": step.max_concurrency,
        "ItemSelector": {"run_id.$": "$.run_id", "execution.$": "$.execution", "index.$": "$$.Map.Item.Value"},
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "INLINE"},
            "StartAt": inner,
            "States": {inner: {**_work_task(step, agent_type, visibility_of, item=True), "End": True}},
        },
        "ResultPath": None,
    }
    return [(_name("foreach", step.step_id), foreach), (_name("items", step.step_id), items)]


def _chain(states: list[tuple[str, dict[str, Any]]], last_next: str | None) -> dict[str, dict[str, Any]]:
    """Link states in order; the last one goes to `last_next` (or ends its branch)."""
    linked: dict[str, dict[str, Any]] = {}
    for k, (name, state) in enumerate(states):
        following = states[k + 1][0] if k + 1 < len(states) else last_next
        linked[name] = {**state, **({"Next": following} if following is not None else {"End": True})}
    return linked


def _report(kind: str, extra: dict[str, str]) -> dict[str, Any]:
    body = {"kind": kind, "run_id.$": "$.run_id", "execution.$": "$.execution", **extra}
    # A transient SQS error must not turn a finished run into a failed one: retry the report itself.
    return {"Type": "Task", "Resource": SEND_MESSAGE,
            "Parameters": {"QueueUrl": CONTROL_QUEUE, "MessageBody": body}, "ResultPath": None,
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2.0}]}


def compile_definition(defn: WorkflowDefinition, step_agent_types: Mapping[str, str], *,
                       visibility_of: Callable[[str], int] = default_visibility) -> dict[str, Any]:
    """The state machine of a valid definition (see `validate.violations`), with queue placeholders.

    `step_agent_types`: {step_id: agent type} for agent_id steps (WorkflowVersion.step_agent_types);
    `visibility_of(agent type or CONTROL)`: that queue's visibility timeout (HeartbeatSeconds is twice it).
    """
    def agent_type(step: WorkflowStep) -> str | None:
        if step.agent_type is not None:
            return step.agent_type
        if step.agent_id is not None:
            if step.step_id not in step_agent_types:
                raise ValueError(f"step {step.step_id!r} runs agent {step.agent_id}, whose type step_agent_types "
                                 f"does not give: validate the definition before compiling it")
            return step_agent_types[step.step_id]
        return None

    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": REPORT_FAILURE}]
    grouped = levels(defn)
    top: list[tuple[str, dict[str, Any]]] = []
    for depth, level in enumerate(grouped):
        if len(level) == 1:
            top.extend((name, {**state, "Catch": catch})
                       for name, state in _step_states(level[0], agent_type(level[0]), visibility_of))
            continue
        branches = []
        for step in level:
            own = _step_states(step, agent_type(step), visibility_of)
            branches.append({"StartAt": own[0][0], "States": _chain(own, None)})
        top.append((f"level:{depth}", {"Type": "Parallel", "Branches": branches, "ResultPath": None,
                                       "Catch": catch}))
    linked = _chain(top, REPORT_SUCCESS)
    linked[REPORT_SUCCESS] = {**_report(messages.FINISHED, {}), "End": True}
    linked[REPORT_FAILURE] = {**_report(messages.FAILED, {"error.$": "$.error"}), "Next": RUN_FAILED}
    linked[RUN_FAILED] = {"Type": "Fail", "Error": ERROR_RUN_FAILED,
                          "Cause": "a step failed; the run's steps say which and why"}
    return {
        "Comment": f"YMERA workflow: {len(defn.steps)} steps in {len(grouped)} levels",
        "StartAt": top[0][0],
        "TimeoutSeconds": defn.timeout_seconds,
        "States": linked,
    }


def _machines(machine: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """A state machine and every nested one (Parallel branches, Map processors), outermost first."""
    yield machine
    for state in machine["States"].values():
        for branch in state.get("Branches", ()):
            yield from _machines(branch)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor is not None:
            yield from _machines(processor)


def states(asl: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, nested ones included."""
    for machine in _machines(asl):
        yield from machine["States"].items()


def token_states(asl: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state that waits for a task token, nested ones included."""
    for name, state in states(asl):
        if state.get("Type") == "Task" and str(state.get("Resource", "")).endswith(".waitForTaskToken"):
            yield name, state


def transitions_on_success(asl: Mapping[str, Any], *, items: int = 1) -> int:
    """States entered by a run in which nothing fails, is retried or skipped; each Map runs `items` items."""
    count = 0
    name: str | None = asl["StartAt"]
    while name is not None:
        state = asl["States"][name]
        count += 1
        count += sum(transitions_on_success(b, items=items) for b in state.get("Branches", ()))
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor is not None:
            count += items * transitions_on_success(processor, items=items)
        name = state.get("Next")
    return count


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def placeholders(asl: Mapping[str, Any]) -> set[str]:
    """The placeholders left in `asl`, as written (`"${ControlQueueUrl}"`, `"${AgentQueueUrl:llm}"`)."""
    return {m.group(0) for text in _strings(asl) for m in _PLACEHOLDER.finditer(text)}


def agent_types(asl: Mapping[str, Any]) -> set[str]:
    """The agent types whose queue URLs `render` needs."""
    prefix = "${AgentQueueUrl:"
    return {p[len(prefix):-1] for p in placeholders(asl) if p.startswith(prefix)}


class MissingQueueUrlError(KeyError):
    """`render` was not given a URL a placeholder needs."""

    def __str__(self) -> str:  # KeyError's own str() is the repr of its argument
        return str(self.args[0])


def render(asl: Mapping[str, Any], *, agent_queue_urls: Mapping[str, str], control_queue_url: str) -> dict[str, Any]:
    """A copy of `asl` with every placeholder replaced by its queue URL (what CreateStateMachine gets)."""
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "ControlQueueUrl":
            return control_queue_url
        if name.startswith("AgentQueueUrl:"):
            agent_type = name.split(":", 1)[1]
            if agent_type not in agent_queue_urls:
                raise MissingQueueUrlError(f"no queue URL given for agent type {agent_type!r} "
                                           f"(placeholder {match.group(0)})")
            return agent_queue_urls[agent_type]
        raise MissingQueueUrlError(f"unknown placeholder {match.group(0)}")

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return _PLACEHOLDER.sub(substitute, value)
        return value  # numbers, booleans, null: immutable

    rendered: dict[str, Any] = walk(asl)
    return rendered
