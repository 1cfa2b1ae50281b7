"""Step Functions over boto3: the `StateMachines` port (chalicelib.workflows.ports) the API uses.

The client is built on first use (a boto3 client costs ~50 ms) and honours `aws_endpoint_url`, so the same
code drives AWS, LocalStack and the embedded moto server. Failures that mean "Step Functions cannot be reached
now" (no connection, timeouts, throttling, 5xx) become DependencyUnavailableError, which the API answers as 503;
anything else (a refused definition, a missing permission) is a bug or a misconfiguration and propagates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.errors import DependencyUnavailableError
from chalicelib.workflows.ports import ExecutionState

#: error codes that say "try again later", not "this request is wrong".
_TRANSIENT_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceUnavailable",
                              "InternalFailure", "InternalServerError", "RequestTimeout"})
#: how an endpoint without RedriveExecution answers (moto: HTTP 500 / NotImplementedError in-process).
_UNSUPPORTED_CODES = frozenset({"UnknownOperationException", "InvalidAction", "NotImplemented",
                                "NotImplementedException", "UnsupportedOperation", "InternalFailure",
                                "InternalServerError", "500"})


def make_states_client(region: str, endpoint_url: str | None, timeout: float) -> Any:
    """Gives up fast like the SQS client: a run that cannot start now is failed and answered 503."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("stepfunctions", region_name=region, endpoint_url=endpoint_url, config=config)


def unavailable_error(exc: BaseException, dependency: str = "stepfunctions") -> DependencyUnavailableError | None:
    """A botocore failure that means "cannot be reached now" as a 503 error; anything else None."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):  # connect/read timeouts, refused, DNS
        reason = type(exc).__name__
    elif isinstance(exc, ClientError) and (
            exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
            or int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500):
        reason = str(exc.response.get("Error", {}).get("Code"))
    else:
        return None
    return DependencyUnavailableError(f"the {dependency} service is temporarily unavailable; try again shortly",
                                      {"dependency": dependency, "reason": reason})


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class SfnStateMachines:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(**kwargs)
        except Exception as exc:
            unavailable = unavailable_error(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise

    def ensure_state_machine(self, name: str, definition: dict[str, Any], role_arn: str) -> str:
        """Create it, or find the existing one; then make its definition this one.

        AWS answers StateMachineAlreadyExists when the name exists with another definition; moto returns the
        existing machine's ARN without changing it. Both end with one describe and, only if needed, an update."""
        from botocore.exceptions import ClientError

        body = json.dumps(definition, separators=(",", ":"), sort_keys=True)
        try:
            arn = str(self._call("create_state_machine", name=name, definition=body, roleArn=role_arn,
                                 type="STANDARD")["stateMachineArn"])
        except ClientError as exc:
            if _code(exc) != "StateMachineAlreadyExists":
                raise
            arn = self._arn_of(name, role_arn) or self._find(name)
        current = self._call("describe_state_machine", stateMachineArn=arn)
        if json.loads(current["definition"]) != definition or current.get("roleArn") != role_arn:
            self._call("update_state_machine", stateMachineArn=arn, definition=body, roleArn=role_arn)
        return arn

    def _arn_of(self, name: str, role_arn: str) -> str | None:
        """The machine's ARN from the role's partition and account (the workflow role lives in the account that
        runs the machines), so no ListStateMachines permission (not resource-scopable) is needed."""
        parts = role_arn.split(":")
        if len(parts) < 6 or parts[0] != "arn" or not parts[4]:
            return None
        return f"arn:{parts[1]}:states:{self.client.meta.region_name}:{parts[4]}:stateMachine:{name}"

    def _find(self, name: str) -> str:
        paginator = self.client.get_paginator("list_state_machines")
        try:
            for page in paginator.paginate():
                for machine in page.get("stateMachines", []):
                    if machine["name"] == name:
                        return str(machine["stateMachineArn"])
        except Exception as exc:
            unavailable = unavailable_error(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        raise LookupError(f"state machine {name!r} exists (CreateStateMachine said so) but is not listed")

    def start_execution(self, state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> str:
        response = self._call("start_execution", stateMachineArn=state_machine_arn, name=name,
                              input=json.dumps(execution_input, separators=(",", ":")))
        return str(response["executionArn"])

    def stop_execution(self, execution_arn: str, error: str, cause: str) -> None:
        self._call("stop_execution", executionArn=execution_arn, error=error[:256], cause=cause[:32768])

    def redrive_execution(self, execution_arn: str) -> bool:
        """True only when the endpoint accepted the redrive. An endpoint that lacks the operation (moto: HTTP 500,
        or NotImplementedError when mocked in-process; older endpoints: an unknown operation) is False, and the
        caller starts a new execution instead; a redrive it refuses for a reason (not redrivable) raises."""
        from botocore.exceptions import ClientError

        try:
            self.client.redrive_execution(executionArn=execution_arn)
        except (NotImplementedError, AttributeError):
            return False
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if _code(exc) in _UNSUPPORTED_CODES or status in (404, 501) or status >= 500:
                return False
            raise
        except Exception as exc:
            unavailable = unavailable_error(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        return True

    def describe_execution(self, execution_arn: str) -> ExecutionState:
        response = self._call("describe_execution", executionArn=execution_arn)
        return ExecutionState(status=str(response["status"]), error=response.get("error"),
                              cause=response.get("cause"))

    def history(self, execution_arn: str, max_events: int = 1000) -> list[dict[str, Any]]:
        """Up to `max_events` events, newest first (a failure's error and cause are in the newest). Asked in reverse
        order; sorted by event id too, because moto ignores `reverseOrder` (it then holds the oldest ones)."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while len(events) < max_events:
            kwargs: dict[str, Any] = {"executionArn": execution_arn, "reverseOrder": True,
                                      "maxResults": min(1000, max_events - len(events))}
            if token:
                kwargs["nextToken"] = token
            page = self._call("get_execution_history", **kwargs)
            events.extend(page.get("events", []))
            token = page.get("nextToken")
            if not token:
                break
        return sorted(events, key=lambda e: int(e.get("id", 0)), reverse=True)[:max_events]
