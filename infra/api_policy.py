"""Render the Chalice API's IAM policy (`.chalice/policy-<stage>.json`) for one account and region.

Chalice reads `iam_policy_file` verbatim (no parameters, no substitution), so a committed file can only
name its resources with `*` for the region and the account, and a pattern like `ymera-dev-agent-*` also
matches the DLQs. Instead the file is generated at deploy time, from the same manifest as the
CloudFormation template, with every ARN fully qualified:

    python -m infra.api_policy --stage dev [--region us-east-1] [--account 123456789012]
    make api-policy STAGE=dev          # the same; then `chalice deploy --stage dev`

Without --account the caller's account is asked from STS (the credentials that will deploy); without
--region, AWS_DEFAULT_REGION. The generated files are not committed (.gitignore).

Secret names the API may read (`ymera/<stage>/...`, Secrets Manager appends `-XXXXXX` to each ARN):
`jwt`, `database`, `redis`, `provider-key-encryption` and everything under `llm/` (the endpoint catalog
and the stage's provider keys).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra import manifest

APP = "ymera"
PARTITION = "aws"
ROOT = Path(__file__).resolve().parents[1]
#: Secrets Manager suffixes every secret's ARN with "-" and six random characters.
SUFFIX = "-??????"
#: the stage's own secrets, by name under ymera/<stage>/ (see docs/deploy-security.md).
STAGE_SECRETS: tuple[str, ...] = ("jwt", "database", "redis", "provider-key-encryption")
LLM_SECRETS = "llm/*"

Json = dict[str, Any]
#: Chalice deploys app.py's WebSocket handlers as functions `<app>-<stage>-websocket_<route>`, with this policy.
WEBSOCKET_FUNCTIONS: tuple[str, ...] = ("websocket_connect", "websocket_message", "websocket_disconnect")


def secret_arns(region: str, account: str, stage: str, names: Sequence[str]) -> list[str]:
    base = f"arn:{PARTITION}:secretsmanager:{region}:{account}:secret:{APP}/{stage}/"
    return [base + (name if name.endswith("*") else name + SUFFIX) for name in names]


#: What AWS's AWSLambdaVPCAccessExecutionRole grants: the network interfaces of a function in a VPC. EC2
#: cannot scope Describe* to a resource, hence "*" (named actions only, never ec2:*).
VPC_ACTIONS = ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
               "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]


def render(stage: str, region: str, account: str, *, workflow_role: str | None = None, vpc: bool = False) -> Json:
    """The API's policy: its own log group, send to the agent queues (never a DLQ), read queue depths,
    receive/delete/move on the DLQs only (admin DLQ operations), run this stage's workflow state machines
    (passing the workflow role only), and read the stage's own secrets.
    `vpc`: the API runs in subnets (make deploy with SUBNET_IDS/SECURITY_GROUP_IDS) and manages its ENIs."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", stage):
        raise ValueError(f"stage {stage!r} must match [a-z][a-z0-9-]{{0,19}}")
    if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", region):
        raise ValueError(f"region {region!r} is not an AWS region name")
    if not re.fullmatch(r"\d{12}", account):
        raise ValueError("the account id must be 12 digits")
    prefix = f"{APP}-{stage}"
    # The stack's WorkflowRole has a fixed name (infra/template.py WORKFLOW_ROLE_SUFFIX).
    workflow_role = workflow_role or f"{prefix}-workflow-role"
    function = prefix  # Chalice names the API function <app_name>-<stage>
    log_group = f"arn:{PARTITION}:logs:{region}:{account}:log-group:/aws/lambda/{function}"
    ws_log_groups = [f"{log_group}-{name}" for name in WEBSOCKET_FUNCTIONS]
    sqs = f"arn:{PARTITION}:sqs:{region}:{account}:"
    # both lanes of every type (the API and its fast-path publish choose one), never the producers' ingress queue
    queues = [sqs + q.name(prefix) for q in manifest.agent_queues()]
    dlqs = list(dict.fromkeys(sqs + q.dlq_name(prefix) for q in manifest.queues()))  # the lanes share one
    states = f"arn:{PARTITION}:states:{region}:{account}:"
    statements: list[Json] = [
        {"Sid": "WriteOwnLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [log_group, f"{log_group}:*", *ws_log_groups, *(f"{g}:*" for g in ws_log_groups)]},
        # The $default handler answers on the connection it came from (subscribe acks). The WebSocket API's id is
        # only known after Chalice created it, hence any API id, but only this stage name and @connections.
        {"Sid": "AnswerWebSocketConnections", "Effect": "Allow", "Action": ["execute-api:ManageConnections"],
         "Resource": [f"arn:{PARTITION}:execute-api:{region}:{account}:*/api/POST/@connections/*"]},
        {"Sid": "SendTasksToAgentQueues", "Effect": "Allow",
         "Action": ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
         "Resource": queues},
        {"Sid": "ReadDeadLetterDepths", "Effect": "Allow",
         "Action": ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
         "Resource": dlqs},
        # GET /admin/dlq peeks (receive, VisibilityTimeout=0) and POST /admin/dlq/{queue}/redrive moves
        # messages back: StartMessageMoveTask, or receive + delete here and SendMessage (above) to the
        # agent queue. Never receive or delete on an agent queue itself: that is the consumers' job.
        {"Sid": "OperateDeadLetterQueues", "Effect": "Allow",
         "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:StartMessageMoveTask",
                    "sqs:ListMessageMoveTasks"],
         "Resource": dlqs},
        # Workflows: the API creates a version's state machine at its first run and starts, stops, redrives
        # and reads its executions: this stage's `<prefix>-wf-*` machines only.
        {"Sid": "RunWorkflowStateMachines", "Effect": "Allow",
         "Action": ["states:CreateStateMachine", "states:UpdateStateMachine", "states:DescribeStateMachine",
                    "states:StartExecution", "states:TagResource"],
         "Resource": [f"{states}stateMachine:{prefix}-wf-*"]},
        {"Sid": "OperateWorkflowExecutions", "Effect": "Allow",
         "Action": ["states:StopExecution", "states:RedriveExecution", "states:DescribeExecution",
                    "states:GetExecutionHistory"],
         "Resource": [f"{states}execution:{prefix}-wf-*:*"]},
        # Approval decisions answer the gate's task token (tokens cannot be scoped by IAM).
        {"Sid": "DecideWorkflowApprovals", "Effect": "Allow",
         "Action": ["states:SendTaskSuccess", "states:SendTaskFailure"], "Resource": "*"},
        # Step Functions runs the machines as the stack's WorkflowRole: the API may hand over that role only.
        {"Sid": "PassWorkflowRole", "Effect": "Allow", "Action": ["iam:PassRole"],
         "Resource": [f"arn:{PARTITION}:iam::{account}:role/{workflow_role}"],
         "Condition": {"StringEquals": {"iam:PassedToService": "states.amazonaws.com"}}},
        {"Sid": "ReadStageSecrets", "Effect": "Allow",
         "Action": ["secretsmanager:GetSecretValue"],
         "Resource": secret_arns(region, account, stage, (*STAGE_SECRETS, LLM_SECRETS))},
    ]
    if vpc:
        statements.append({"Sid": "ManageVpcNetworkInterfaces", "Effect": "Allow", "Action": VPC_ACTIONS,
                           "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def _caller_account() -> str:
    import boto3

    return str(boto3.client("sts").get_caller_identity()["Account"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.api_policy", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--account", help="12-digit account id (default: ask STS)")
    parser.add_argument("--out", type=Path, help="default: .chalice/policy-<stage>.json")
    parser.add_argument("--workflow-role", help="the stack's WorkflowRole name (default: its naming pattern)")
    args = parser.parse_args(argv)
    if not args.region:
        parser.error("--region (or AWS_DEFAULT_REGION) is required")
    policy = render(args.stage, args.region, args.account or _caller_account(), workflow_role=args.workflow_role)
    out = args.out or ROOT / ".chalice" / f"policy-{args.stage}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} (stage {args.stage}, region {args.region})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
