"""The functions/ CloudFormation stack: create or update from S3, wait, report failures; its outputs as env.

`OUTPUT_ENV` is the one table from stack Outputs to the API's environment variables: a new output needs a
row (tests/infra/test_deploy.py fails on an output no row matches). First match wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError, WaiterError

#: (output key pattern, env var template or None = deliberately not wired). `{name}` is the pattern's
#: `name` group in UPPER_SNAKE case.
OUTPUT_ENV: tuple[tuple[str, str | None], ...] = (
    ("AlertTopicArn", "YMERA_ALERT_TOPIC_ARN"),
    ("(?P<name>.+)StateMachineArn", "YMERA_{name}_STATE_MACHINE_ARN"),
    ("(?P<name>.+)RoleArn", "YMERA_{name}_ROLE_ARN"),
    ("(?P<name>.*)(WebSocket|Websocket)Url", "YMERA_WEBSOCKET_URL"),
    # Not wired: the API finds every queue by name (YMERA_QUEUE_PREFIX + the manifest), and the 52 queue
    # URLs/ARNs would not fit Lambda's 4 KB limit for all environment variables together.
    (".+(Queue|Dlq)(Url|Arn)", None),
)
#: Lambda refuses a function whose environment variables (keys and values) exceed 4 KB.
LAMBDA_ENV_LIMIT = 4096
#: Stack states a new create/update cannot start from.
_BUSY = re.compile(r".*_IN_PROGRESS$")


class StackError(RuntimeError):
    """The stack did not reach a complete state; the message lists the failed resources."""


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", camel).upper()


def env_from_outputs(outputs: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(environment for the API, output keys no row of OUTPUT_ENV matches)."""
    env: dict[str, str] = {}
    unmapped: list[str] = []
    for key, value in sorted(outputs.items()):
        for pattern, template in OUTPUT_ENV:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            if template is not None:
                name = match.groupdict().get("name") or ""
                env[template.format(name=_snake(name))] = value
            break
        else:
            unmapped.append(key)
    return env, unmapped


def env_size(env: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in env.items())


def stack_status(cfn: Any, name: str) -> str | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    return str(stacks[0]["StackStatus"]) if stacks else None


def stack_outputs(cfn: Any, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])}


def failure_events(cfn: Any, name: str, since: datetime | None = None) -> list[str]:
    """The failed resources of the latest operation, oldest first: the first one is usually the cause."""
    lines: list[str] = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=name):
        for event in page["StackEvents"]:  # newest first
            if since is not None and event["Timestamp"] < since:
                return list(reversed(lines))
            if str(event.get("ResourceStatus", "")).endswith("_FAILED"):
                lines.append(f"{event['LogicalResourceId']} ({event.get('ResourceType', '?')}) "
                             f"{event['ResourceStatus']}: {event.get('ResourceStatusReason', '')}")
    return list(reversed(lines))


def _parameters(given: Mapping[str, str], previous: Sequence[str]) -> list[dict[str, Any]]:
    """Given values, and UsePreviousValue for the stack's other parameters (an LLM provider set once with
    --parameter stays set); a parameter new to the template takes its default."""
    params: list[dict[str, Any]] = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())]
    params += [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(previous) if k not in given]
    return params


def deploy_stack(cfn: Any, name: str, template_url: str, parameters: Mapping[str, str], *,
                 out: Callable[[str], None] = print, delay: int = 10, max_attempts: int = 360) -> dict[str, str]:
    """Create or update `name` and wait; returns its outputs. "No updates are to be performed" is success."""
    status = stack_status(cfn, name)
    if status is not None and _BUSY.match(status):
        raise StackError(f"stack {name} is {status}; wait for it to finish, then deploy again")
    if status == "ROLLBACK_COMPLETE":  # a first create that failed: it can only be deleted
        out(f"  stack {name} is ROLLBACK_COMPLETE (its first create failed): deleting it before creating again")
        delete_stack(cfn, name, delay=delay, max_attempts=max_attempts)
        status = None
    previous: list[str] = []
    if status is not None:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        previous = [p["ParameterKey"] for p in stack.get("Parameters", [])]
    started = datetime.now().astimezone()
    common = {"StackName": name, "TemplateURL": template_url,
              "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],  # the workflow role has a fixed name
              "Parameters": _parameters(parameters, previous)}
    waiter_config = {"Delay": delay, "MaxAttempts": max_attempts}
    try:
        if status is None:
            out(f"  stack {name}: creating")
            cfn.create_stack(**common, OnFailure="ROLLBACK", Tags=[{"Key": "app", "Value": "ymera"}])
            cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig=waiter_config)
        else:
            out(f"  stack {name}: updating (was {status})")
            cfn.update_stack(**common)
            cfn.get_waiter("stack_update_complete").wait(StackName=name, WaiterConfig=waiter_config)
    except ClientError as exc:
        if "No updates are to be performed" not in str(exc):
            raise
        out(f"  stack {name}: no changes")
    except WaiterError as exc:
        failed = failure_events(cfn, name, since=started)
        detail = "\n    ".join(failed) or "(no failed resource events; see the CloudFormation console)"
        raise StackError(f"stack {name} ended {stack_status(cfn, name)}:\n    {detail}") from exc
    return stack_outputs(cfn, name)


def delete_stack(cfn: Any, name: str, *, delay: int = 10, max_attempts: int = 360) -> bool:
    """Delete and wait; False when there was no stack. Retained resources (queues) stay behind."""
    if stack_status(cfn, name) is None:
        return False
    cfn.delete_stack(StackName=name)
    try:
        cfn.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": delay,
                                                                                    "MaxAttempts": max_attempts})
    except WaiterError as exc:
        detail = "\n    ".join(failure_events(cfn, name)) or "(see the CloudFormation console)"
        raise StackError(f"deleting stack {name} failed:\n    {detail}") from exc
    return True
