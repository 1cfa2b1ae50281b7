"""Create the manifest's queues and DLQs (alert topic, workflow role) directly with boto3, idempotently.

Used where CloudFormation is unavailable or overkill: the embedded moto
emulator, LocalStack init hooks and tests. It reads the same `infra.manifest`
as `infra.template`, so local queues match deployed ones. Standard library +
boto3 only: LocalStack's own Python runs it, without our dependencies.

    python -m infra.bootstrap --prefix ymera-dev [--endpoint-url http://localhost:4566]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from infra import manifest

#: AWS answers QueueAlreadyExists when a queue exists with different attributes.
_EXISTS = {"QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"}


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """Create `name` or, when it already exists, converge its attributes; return its URL."""
    try:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in _EXISTS:
            raise
    url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _queue_arn(sqs: Any, url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return str(attrs["QueueArn"])


def bootstrap(sqs_client: Any, prefix: str, *, visibility_timeout: int | None = None) -> dict[str, str]:
    """Create every manifest queue and its DLQ under `prefix`; return {queue name: url}.

    The DLQ is created first because the main queue's RedrivePolicy needs its
    ARN; a bulk lane's DLQ is its agent type's, created with the fast lane
    (listed before it). Re-running converges attributes (create_queue alone
    would refuse a changed visibility timeout). `visibility_timeout` overrides the manifest
    so tests and local runs can see redeliveries in seconds, not minutes.
    """
    urls: dict[str, str] = {}
    for spec in manifest.queues():
        dlq_name = spec.dlq_name(prefix)
        dlq_attrs = {
            "MessageRetentionPeriod": str(manifest.DLQ_RETENTION_SECONDS),
            "SqsManagedSseEnabled": "true",
        }
        if spec.owns_dlq:
            urls[dlq_name] = _ensure_queue(sqs_client, dlq_name, dlq_attrs)
        elif dlq_name not in urls:
            raise ValueError(f"queue {spec.suffix}: its shared DLQ {dlq_name} must come first in manifest.queues()")
        redrive = {
            "deadLetterTargetArn": _queue_arn(sqs_client, urls[dlq_name]),
            "maxReceiveCount": str(spec.max_receive_count),
        }
        attrs = {
            "VisibilityTimeout": str(spec.visibility_timeout if visibility_timeout is None else visibility_timeout),
            "MessageRetentionPeriod": str(spec.retention),
            "SqsManagedSseEnabled": "true",
            "RedrivePolicy": json.dumps(redrive, separators=(",", ":")),
        }
        urls[spec.name(prefix)] = _ensure_queue(sqs_client, spec.name(prefix), attrs)
    return urls


def workflow_role_name(prefix: str) -> str:
    """Matches infra.template's WorkflowRole (`<queue prefix>-workflow-role`)."""
    return f"{prefix}-workflow-role"


def ensure_workflow_role(iam_client: Any, sqs_client: Any, prefix: str) -> str:
    """The role workflow state machines run as (as the template's WorkflowRole): assumable by Step Functions,
    allowed sqs:SendMessage on the agent queues' fast lanes and the workflow control queue only. Returns its ARN."""
    name = workflow_role_name(prefix)
    assume = {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}
    trust = {"Version": "2012-10-17", "Statement": [assume]}
    try:
        arn = str(iam_client.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "EntityAlreadyExists":
            raise
        arn = str(iam_client.get_role(RoleName=name)["Role"]["Arn"])
    targets = [_queue_arn(sqs_client, str(sqs_client.get_queue_url(QueueName=q.name(prefix))["QueueUrl"]))
               for q in (*manifest.agent_queues(), manifest.workflow_control_queue()) if not manifest.is_bulk_lane(q)]
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "SendStepMessages", "Effect": "Allow",
                                                      "Action": ["sqs:SendMessage"], "Resource": targets}]}
    iam_client.put_role_policy(RoleName=name, PolicyName="WorkflowQueues", PolicyDocument=json.dumps(policy))
    return arn


def alert_topic_name(prefix: str) -> str:
    """Matches infra.template's AlertTopic (`ymera-<stage>-alerts` = `<queue prefix>-alerts`)."""
    return f"{prefix}-alerts"


def ensure_alert_topic(sns_client: Any, prefix: str) -> str:
    """Create the alert topic (SNS CreateTopic is idempotent for the same name); return its ARN."""
    return str(sns_client.create_topic(Name=alert_topic_name(prefix))["TopicArn"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="queue name prefix, e.g. ymera-dev")
    parser.add_argument("--endpoint-url", default=None, help="AWS endpoint (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument("--localstack", action="store_true",
                        help="target LocalStack at $LOCALSTACK_HOST (default localhost:4566), via localstack-client")
    parser.add_argument("--visibility-timeout", type=int, default=None, help="override for local runs")
    args = parser.parse_args(argv)

    import boto3  # deferred: `--help` and importers of bootstrap() need no AWS session

    endpoint_url = args.endpoint_url
    if args.localstack and not endpoint_url:
        from localstack_client.config import get_service_endpoint

        endpoint_url = get_service_endpoint("sqs")
    # endpoint_url=None lets boto3 apply AWS_ENDPOINT_URL from the environment itself.
    sqs = boto3.client("sqs", endpoint_url=endpoint_url)
    sns = boto3.client("sns", endpoint_url=endpoint_url)
    iam = boto3.client("iam", endpoint_url=endpoint_url)
    created = {**bootstrap(sqs, args.prefix, visibility_timeout=args.visibility_timeout),
               alert_topic_name(args.prefix): ensure_alert_topic(sns, args.prefix),
               workflow_role_name(args.prefix): ensure_workflow_role(iam, sqs, args.prefix)}
    for name, url in created.items():
        print(f"{name}\t{url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
