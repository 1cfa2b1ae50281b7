"""The TaskCallbacks port over boto3 Step Functions: a task token's outcome (chalicelib.workflows.ports).

A token that is no longer open — its execution timed out the task, finished, or never issued it — is
"late": the outcome is recorded by the caller, never raised (a duplicate or slow completion is normal in an
at-least-once system). Any other error (throttling, the endpoint unreachable) propagates, so the outbox
relay retries it with backoff.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.observability import logger
from chalicelib.workflows.ports import CallbackResult

#: the error codes that mean the token is closed (retrying cannot help).
LATE_CODES = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken", "ExecutionDoesNotExist"})
#: Step Functions' limits on SendTaskFailure's error and cause.
MAX_ERROR, MAX_CAUSE = 256, 32_768


class StepFunctionsCallbacks:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def succeed(self, token: str, output: dict[str, Any]) -> CallbackResult:
        return self._call("send_task_success", taskToken=token, output=json.dumps(output))

    def fail(self, token: str, error: str, cause: str) -> CallbackResult:
        return self._call("send_task_failure", taskToken=token, error=error[:MAX_ERROR], cause=cause[:MAX_CAUSE])

    def heartbeat(self, token: str) -> CallbackResult:
        return self._call("send_task_heartbeat", taskToken=token)

    def _call(self, method: str, **kwargs: Any) -> CallbackResult:
        from botocore.exceptions import ClientError

        try:
            getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in LATE_CODES:
                logger.info("task token no longer open", extra={"call": method, "code": code})
                return "late"
            raise
        return "ok"

