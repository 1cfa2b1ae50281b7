"""What the workflow engine needs from Step Functions, as two small ports.

`StateMachines` is the API side (create a version's state machine, start/stop/redrive/describe executions);
`TaskCallbacks` is the consumer side (report a task token's outcome). Adapters over boto3 live in
`chalicelib/messaging/states.py` and `chalicelib/messaging/callbacks.py`; tests pass them or fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

#: "ok": accepted; "late": the token is no longer open (TaskTimedOut, TaskDoesNotExist, InvalidToken):
#: the execution moved on, which is recorded (log + step row), never raised.
CallbackResult = Literal["ok", "late"]


class TaskCallbacks(Protocol):
    def succeed(self, token: str, output: dict[str, Any]) -> CallbackResult: ...

    def fail(self, token: str, error: str, cause: str) -> CallbackResult: ...

    def heartbeat(self, token: str) -> CallbackResult: ...


@dataclass(frozen=True)
class ExecutionState:
    status: str  # RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    error: str | None = None
    cause: str | None = None


class StateMachines(Protocol):
    def ensure_state_machine(self, name: str, definition: dict[str, Any], role_arn: str) -> str:
        """The ARN of the state machine `name` with this definition: created if missing (idempotent)."""
        ...

    def start_execution(self, state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> str:
        """The execution ARN. `name` is always given (unique per run and execution)."""
        ...

    def stop_execution(self, execution_arn: str, error: str, cause: str) -> None: ...

    def redrive_execution(self, execution_arn: str) -> bool:
        """True if the endpoint redrove it (AWS); False where RedriveExecution is missing (moto)."""
        ...

    def describe_execution(self, execution_arn: str) -> ExecutionState: ...

    def history(self, execution_arn: str, max_events: int = 1000) -> list[dict[str, Any]]: ...
