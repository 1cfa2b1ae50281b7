"""What the state machines put on the queues, and what the consumers answer through the task token.

Step Functions sends these with `arn:aws:states:::sqs:sendMessage.waitForTaskToken` (token kinds) or plain
`sqs:sendMessage` (run reports). Bodies carry ids only: inputs are resolved from Postgres by the consumer,
and answers (`StepAnswer`) carry ids and statuses only, so no output ever travels inline between states
(Step Functions' 256 KB payload limit never applies; outputs of any size stay in Postgres).

State data during an execution is the execution input (`ExecutionInput`) plus, per for_each step, the
indexes its Map iterates: every token state and every Parallel/Map has `ResultPath: null`, except a FOREACH
token state, whose answer lands at `$.foreach.<step_id>` (the Map's `ItemsPath` is
`$.foreach.<step_id>.indexes`; at most `workflow_foreach_max_items` small integers).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: `kind` of a message Step Functions puts on an agent type's queue: one step (or one for_each item) to run.
STEP = "workflow.step"
#: kinds on the workflow control queue (`<prefix>-workflow-control`, consumed by functions.workflow_control):
APPROVAL = "workflow.approval"  # token: an approval gate is waiting; record the token, mark waiting_approval
FOREACH = "workflow.foreach"  # token: resolve a for_each step's items, answer their indexes (ForEachAnswer)
ENGINE = "workflow.engine"  # token: run an engine step (or one item of it) in-process
FINISHED = "workflow.finished"  # no token: the execution reached its end; the run succeeded
FAILED = "workflow.failed"  # no token: a state failed and was caught at the top level; the run failed

TOKEN_KINDS = (STEP, APPROVAL, FOREACH, ENGINE)

#: error names a consumer fails a token with (`SendTaskFailure(error=...)`), also the ASL Retry/Catch contract:
#: a cancelled run is never retried; every other failure follows the step's retry policy.
ERROR_RUN_CANCELLED = "Ymera.RunCancelled"
ERROR_STEP_FAILED = "Ymera.StepFailed"
ERROR_TOLERANCE_EXCEEDED = "Ymera.ToleranceExceeded"
ERROR_APPROVAL_REJECTED = "Ymera.ApprovalRejected"
#: the reconciler: a run whose StartExecution never happened (not an ASL error; recorded on the run).
ERROR_START_LOST = "Ymera.StartLost"


class ExecutionInput(BaseModel):
    """The input of every execution of a run (a redrive's new execution too)."""

    model_config = ConfigDict(extra="ignore")

    run_id: uuid.UUID
    #: which execution of the run this is: 1 for the first, +1 per redrive that started a new execution.
    execution: int = 1


class TokenMessage(BaseModel):
    """A token-carrying message. `item_index` is set inside a for_each (the Map's `$$.Map.Item.Value`)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["workflow.step", "workflow.approval", "workflow.foreach", "workflow.engine"]
    run_id: uuid.UUID
    step_id: str = Field(max_length=64)
    execution: int = 1
    item_index: int | None = Field(default=None, ge=0)
    #: the agent type whose queue carries it (STEP only): a message on the wrong queue is malformed.
    agent_type: str | None = None
    token: str = Field(min_length=1, max_length=4096)
    #: the attempt of this state, 0 first (`$$.State.RetryCount`): an ASL Retry may reuse the token (moto
    #: does), so the step's task is derived from the token and this.
    retry_count: int = Field(default=0, ge=0)


class RunReport(BaseModel):
    """FINISHED / FAILED: the execution's outcome, sent by its last state (or its top-level Catch)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["workflow.finished", "workflow.failed"]
    run_id: uuid.UUID
    execution: int = 1
    #: FAILED: the caught error (`{"Error": ..., "Cause": ...}` from the Catch's ResultPath).
    error: dict[str, Any] | None = None


class StepAnswer(BaseModel):
    """The output of `SendTaskSuccess` for a step or item: small and fixed-size whatever the step produced."""

    step_id: str
    status: Literal["succeeded", "skipped", "failed_tolerated"]
    task_id: uuid.UUID | None = None
    item_index: int | None = None


class ForEachAnswer(BaseModel):
    """The output of a FOREACH token: the indexes the Map iterates (items themselves stay in Postgres)."""

    step_id: str
    indexes: list[int]
