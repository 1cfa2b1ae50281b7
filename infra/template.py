"""Build the CloudFormation template for everything outside the Chalice app.

The template is generated from `infra.manifest` (never hand-edited) so the
queues the embedded emulator gets from `infra.bootstrap` and the ones AWS gets
from this template cannot drift. Logical IDs are derived from manifest names so
re-generating never renames (and therefore never replaces) a resource.

    python -m infra.template --stage dev --out infra/build/template.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from infra import manifest
from infra.manifest import FunctionSpec, QueueSpec

APP = "ymera"
RUNTIME = "python3.11"
LOG_RETENTION_DAYS = 30
#: AWS guidance for SQS event sources; the build refuses anything tighter.
MIN_VISIBILITY_FACTOR = 6
MIN_RECEIVE_COUNT = 5
KNOWN_NEEDS = frozenset({"db", "sqs:send", "sqs:consume", "sqs:inspect", "sqs:reject", "sqs:peek-dlq",
                         "sns:alerts", "llm", "states:callback", "states:read", "websocket:post"})
#: Workflow state machines are created by the API at a version's first run, named `<prefix>-wf-<version>`.
WORKFLOW_MACHINES = "wf-*"
#: the workflow role's name under the stage prefix (infra/api_policy.py passes exactly this role).
WORKFLOW_ROLE_SUFFIX = "workflow-role"
#: Lambda's floor for an SQS event source's MaximumConcurrency.
MIN_MAX_CONCURRENCY = 2
#: Secret names under ymera/<stage>/ (docs/deploy-security.md). Every function reads the data-store URLs;
#: provider-backed ones also the provider keys (llm/*) and the key that encrypts users' own provider keys.
DATA_STORE_SECRETS = {"YMERA_DATABASE_URL_SECRET_ARN": "database", "YMERA_REDIS_URL_SECRET_ARN": "redis"}
PROVIDER_SECRETS = ("llm/*", "provider-key-encryption")

Json = dict[str, Any]
#: Queues hold undelivered work (DLQs hold the evidence): a stack delete must not drop them.
KEEP = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
#: Log groups are disposable; said explicitly so nobody wonders.
DROP = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}


LLM_ENV: Json = {
    "YMERA_LLM_PROVIDER": {"Ref": "LlmProvider"},
    "YMERA_LLM_MODEL": {"Ref": "LlmModel"},
    "YMERA_LLM_BASE_URL": {"Ref": "LlmBaseUrl"},
    "YMERA_LLM_API_KEY_SECRET_ARN": {"Ref": "LlmApiKeySecretArn"},
    # The operator's endpoint catalog (docs/providers.md), when kept as a secret document; empty = none.
    "YMERA_LLM_ENDPOINTS_SECRET_ARN": {"Ref": "LlmEndpointsSecretArn"},
    "YMERA_LLM_DAILY_TOKEN_BUDGET_PER_USER": {"Ref": "LlmDailyTokenBudgetPerUser"},
    # Decrypts users' own provider keys; the secret exists only once someone stores a key (make deploy creates it).
    "YMERA_PROVIDER_KEY_ENCRYPTION_KEY_SECRET_ARN": {"Fn::Sub": f"{APP}/${{Stage}}/provider-key-encryption"},
}


def _secret_arn(name: str) -> Json:
    """A secret of this stage by name; Secrets Manager appends "-" and six characters to the ARN."""
    suffix = "" if name.endswith("*") else "-??????"
    return {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
                       f"{APP}/${{Stage}}/{name}{suffix}"}


def _deny_plain_transport(actions: str, resources: list[Any]) -> Json:
    """Resource policies refuse any request that did not come over TLS."""
    return {"Sid": "DenyPlainTransport", "Effect": "Deny", "Principal": "*", "Action": actions,
            "Resource": resources, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def logical_id(name: str, kind: str = "") -> str:
    """CamelCase a manifest name: ("agent-validation", "Queue") -> AgentValidationQueue."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) + kind


def _sub(suffix: str) -> Json:
    """A physical name under the stage prefix, resolved by CloudFormation."""
    return {"Fn::Sub": f"{APP}-${{Stage}}-{suffix}"}


def _arn(resource: str) -> Json:
    return {"Fn::GetAtt": [resource, "Arn"]}


def check_specs(queue_specs: Sequence[QueueSpec], function_specs: Sequence[FunctionSpec]) -> None:
    """Refuse a manifest that would lose or duplicate messages once deployed.

    A visibility timeout shorter than ~6x the consumer timeout lets SQS hand a
    message to a second consumer while the first still works on it; fewer than
    5 receives sends messages to the DLQ on transient throttling.
    """
    names = {q.suffix for q in queue_specs}
    owned: set[str] = set()
    for q in queue_specs:
        if q.max_receive_count < MIN_RECEIVE_COUNT:
            raise ValueError(f"queue {q.suffix}: max_receive_count {q.max_receive_count} < {MIN_RECEIVE_COUNT}")
        if q.owns_dlq:
            owned.add(q.dlq_suffix)
        elif q.dlq_suffix not in owned:  # the bootstrap creates queues in this order: the DLQ must exist first
            raise ValueError(f"queue {q.suffix}: its DLQ {q.dlq_suffix} is not owned by an earlier queue")
    for f in function_specs:
        unknown = set(f.needs) - KNOWN_NEEDS
        if unknown:
            raise ValueError(f"function {f.name}: unknown needs {sorted(unknown)}")
        if ("sqs:consume" in f.needs) != (f.queue is not None):
            raise ValueError(f"function {f.name}: 'sqs:consume' and a queue go together")
        if "sqs:reject" in f.needs and f.queue is None:
            raise ValueError(f"function {f.name}: 'sqs:reject' sends to its own queue's DLQ: it needs a queue")
        if f.queue is None:
            continue
        if f.queue.suffix not in names:
            raise ValueError(f"function {f.name}: queue {f.queue.suffix} is not in the manifest's queues()")
        if f.queue.visibility_timeout < MIN_VISIBILITY_FACTOR * f.timeout:
            raise ValueError(
                f"queue {f.queue.suffix}: visibility timeout {f.queue.visibility_timeout}s < "
                f"{MIN_VISIBILITY_FACTOR} x {f.name} timeout {f.timeout}s"
            )
        if f.queue.max_receive_count < MIN_RECEIVE_COUNT:
            raise ValueError(f"queue {f.queue.suffix}: max_receive_count < {MIN_RECEIVE_COUNT}")
        if not MIN_MAX_CONCURRENCY <= f.max_concurrency <= 1000:
            raise ValueError(f"function {f.name}: max_concurrency {f.max_concurrency} outside "
                             f"[{MIN_MAX_CONCURRENCY}, 1000]")
    connections = manifest.database_connections(function_specs)
    if connections > manifest.DB_CONNECTION_BUDGET:
        raise ValueError(f"consumers may open {connections} database connections at once, over the budget of "
                         f"{manifest.DB_CONNECTION_BUDGET} (lower max_concurrency in infra/manifest.py)")


def _parameters(stage: str) -> Json:
    nested = {"Type": "CommaDelimitedList", "Default": ""}
    return {
        "Stage": {"Type": "String", "Default": stage, "AllowedPattern": "^[a-z][a-z0-9-]{0,19}$"},
        "ArtifactBucket": {"Type": "String", "Description": "S3 bucket holding functions.zip"},
        "ArtifactKey": {"Type": "String", "Description": "S3 key of the zip built by infra.build"},
        "Architecture": {"Type": "String", "Default": "x86_64", "AllowedValues": ["x86_64", "arm64"]},
        "SubnetIds": {**nested, "Description": "Private subnets; empty = no VPC"},
        "SecurityGroupIds": {**nested, "Description": "Security groups; empty = no VPC"},
        # The stage's language-model provider (agents may name their own); empty = none configured.
        "LlmProvider": {"Type": "String", "Default": "", "AllowedValues": ["", "openai", "bedrock"]},
        "LlmModel": {"Type": "String", "Default": ""},
        "LlmBaseUrl": {"Type": "String", "Default": ""},
        "LlmApiKeySecretArn": {"Type": "String", "Default": "",
                               "Description": "Secrets Manager ARN under ymera/<stage>/llm/ holding the API key"},
        "LlmEndpointsSecretArn": {"Type": "String", "Default": "",
                                  "Description": "Secret under ymera/<stage>/llm/ holding the endpoint catalog (JSON)"},
        "LlmDailyTokenBudgetPerUser": {"Type": "Number", "Default": 0, "MinValue": 0,
                                       "Description": "Tokens per user per UTC day across tasks; 0 = unlimited"},
        "BedrockModelArns": {**nested, "Description": "Model / inference-profile ARNs the provider-backed "
                                                      "consumers may invoke; empty = no Bedrock permission"},
        "WebSocketApiId": {"Type": "String", "Default": "",
                           "Description": "The Chalice WebSocket API's id (after the API's first deploy); "
                                          "empty = the notifier delivers to webhooks only"},
    }


def _conditions() -> Json:
    def given(param: str) -> Json:
        return {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": param}]}, ""]}]}

    return {"InVpc": {"Fn::And": [given("SubnetIds"), given("SecurityGroupIds")]},
            "BedrockAllowed": given("BedrockModelArns"),
            "HasWebSocketApi": {"Fn::Not": [{"Fn::Equals": [{"Ref": "WebSocketApiId"}, ""]}]}}


def _queue_resources(q: QueueSpec) -> Json:
    """The queue, and its DLQ with the DLQ's alarm when the DLQ is its own. A bulk lane's RedrivePolicy names
    its agent type's DLQ (GetAtt: CloudFormation creates that DLQ before either source queue)."""
    qid, did = logical_id(q.suffix, "Queue"), logical_id(q.dlq_suffix)
    out: Json = {}
    if q.owns_dlq:
        out[did] = {
            "Type": "AWS::SQS::Queue",
            **KEEP,
            "Properties": {
                "QueueName": _sub(q.dlq_suffix),
                "MessageRetentionPeriod": manifest.DLQ_RETENTION_SECONDS,
                "SqsManagedSseEnabled": True,
            },
        }
    out[qid] = {
        "Type": "AWS::SQS::Queue",
        **KEEP,
        "Properties": {
            "QueueName": _sub(q.suffix),
            "VisibilityTimeout": q.visibility_timeout,
            "MessageRetentionPeriod": q.retention,
            "SqsManagedSseEnabled": True,
            "RedrivePolicy": {"deadLetterTargetArn": _arn(did), "maxReceiveCount": q.max_receive_count},
        },
    }
    if q.owns_dlq:
        out[logical_id(q.dlq_suffix, "Alarm")] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": _sub(f"{q.dlq_suffix}-not-empty"),
                "AlarmDescription": f"Messages reached the dead-letter queue of {q.suffix}",
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [did, "QueueName"]}}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "AlertTopic"}],
                "OKActions": [{"Ref": "AlertTopic"}],
            },
        }
    # A queue has one policy (a second QueuePolicy naming it would replace the first): the shared DLQ's is
    # its owner's.
    covered = [qid, did] if q.owns_dlq else [qid]
    out[logical_id(q.suffix, "QueuePolicy")] = {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": r} for r in covered],
            "PolicyDocument": {"Version": "2012-10-17",
                               "Statement": [_deny_plain_transport("sqs:*", [_arn(r) for r in covered])]},
        },
    }
    return out


def _alert_topic() -> Json:
    """The alert topic, encrypted with a key of its own: CloudWatch alarms cannot publish to a topic under
    the AWS-managed alias/aws/sns (its key policy cannot name cloudwatch.amazonaws.com)."""
    account_root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    alarms = {"Fn::Sub": "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
                         f"{APP}-${{Stage}}-*"}
    # In a key policy "Resource": "*" means this key. The account (IAM policies) administers and uses it,
    # with the actions listed rather than kms:*; CloudWatch may only encrypt alarm notifications with it.
    administer = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                  "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
                  "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]
    use = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*"]
    return {
        "AlertTopicKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": {"Fn::Sub": f"{APP}-${{Stage}} alert topic"},
                "EnableKeyRotation": True,
                "KeyPolicy": {"Version": "2012-10-17", "Statement": [
                    {"Sid": "AccountAdministersAndUses", "Effect": "Allow", "Principal": {"AWS": account_root},
                     "Action": administer + use, "Resource": "*"},
                    {"Sid": "AlarmsEncryptNotifications", "Effect": "Allow",
                     "Principal": {"Service": "cloudwatch.amazonaws.com"},
                     "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
                     "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}},
                ]},
            },
        },
        "AlertTopicKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": {"Fn::Sub": f"alias/{APP}-${{Stage}}-alerts"},
                           "TargetKeyId": {"Ref": "AlertTopicKey"}},
        },
        "AlertTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": _sub("alerts"), "DisplayName": "YMERA alerts",
                           "KmsMasterKeyId": {"Ref": "AlertTopicKey"}},
        },
        "AlertTopicPolicy": {
            "Type": "AWS::SNS::TopicPolicy",
            "Properties": {
                "Topics": [{"Ref": "AlertTopic"}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                    _deny_plain_transport("sns:Publish", [{"Ref": "AlertTopic"}]),
                    {"Sid": "AlarmsPublish", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
                     "Action": "sns:Publish", "Resource": {"Ref": "AlertTopic"},
                     "Condition": {"ArnLike": {"aws:SourceArn": alarms}}},
                ]},
            },
        },
    }


def _unique(ids: Iterable[str]) -> list[str]:
    """In order, once each: the lanes of a type share one DLQ."""
    return list(dict.fromkeys(ids))


def _statement(sid: str, actions: list[str], resources: list[Any] | Json) -> Json:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}

#: The notifier's Management API endpoint: Chalice's WebSocket API, stage "api" (its api_gateway_stage).
WEBSOCKET_ENV: Json = {
    "YMERA_WEBSOCKET_MANAGEMENT_URL": {"Fn::If": ["HasWebSocketApi", {
        "Fn::Sub": "https://${WebSocketApiId}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api"}, ""]},
}


def _role(f: FunctionSpec, log_group: str, send_to: Sequence[QueueSpec]) -> Json:
    """Least privilege: its own log group, its own queue, or the agent queues it feeds."""
    statements = [
        _statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [_arn(log_group)]),
    ]
    if f.queue is not None:
        # ChangeMessageVisibility: a failed record comes back after its backoff (the consumer finds its queue's
        # URL by name: GetQueueUrl), not after the visibility timeout.
        consume = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueUrl"]
        statements.append(_statement("ConsumeOwnQueue", consume, [_arn(logical_id(f.queue.suffix, "Queue"))]))
    if "sqs:reject" in f.needs and f.queue is not None:
        # Poison messages go to the DLQ at once (not after maxReceiveCount): this DLQ and no other queue.
        own = [_arn(logical_id(f.queue.suffix, "Queue")), _arn(logical_id(f.queue.dlq_suffix))]
        statements.append(_statement("RejectToOwnDlq", ["sqs:SendMessage"], [own[1]]))
        statements.append(_statement("ResolveOwnQueues", ["sqs:GetQueueUrl"], own))
    if "sqs:send" in f.needs:
        # SendMessageBatch is authorised by sqs:SendMessage; IAM has no separate action for it.
        send = ["sqs:SendMessage", "sqs:GetQueueUrl"]
        targets = [_arn(logical_id(q.suffix, "Queue")) for q in send_to]
        statements.append(_statement("SendToAgentQueues", send, targets))
    if "sqs:inspect" in f.needs:
        # Read-only: queue depths for health checks and DLQ alerts (monitoring).
        inspect = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
        watched = [_arn(rid) for rid in _unique(rid for q in send_to
                                                for rid in (logical_id(q.suffix, "Queue"), logical_id(q.dlq_suffix)))]
        statements.append(_statement("InspectQueues", inspect, watched))
    if "sqs:peek-dlq" in f.needs:
        # Receive only: the task reaper reads dead-lettered task messages and leaves them there (no delete).
        peek = ["sqs:GetQueueUrl", "sqs:ReceiveMessage"]
        dlqs = [_arn(rid) for rid in _unique(logical_id(q.dlq_suffix) for q in send_to)]
        statements.append(_statement("PeekDeadLetters", peek, dlqs))
    if "sns:alerts" in f.needs:
        statements.append(_statement("PublishAlerts", ["sns:Publish"], [{"Ref": "AlertTopic"}]))
        # Publishing to the encrypted topic: SNS asks KMS on the publisher's behalf.
        statements.append(_statement("EncryptAlerts", ["kms:GenerateDataKey", "kms:Decrypt"],
                                     [_arn("AlertTopicKey")]))
    if "states:callback" in f.needs:
        # Answers to workflow task tokens. Tokens of service-integration Task states (sqs:sendMessage
        # .waitForTaskToken) cannot be scoped by IAM: these three actions on "*" and nothing else of states.
        callbacks = ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"]
        statements.append(_statement("AnswerWorkflowTaskTokens", callbacks, "*"))  # type: ignore[arg-type]
    if "states:read" in f.needs:
        # The reconciler reads the executions of this stage's workflow state machines only.
        executions = {"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:"
                                 f"{APP}-${{Stage}}-{WORKFLOW_MACHINES}:*"}
        statements.append(_statement("ReadWorkflowExecutions", ["states:DescribeExecution",
                                                                "states:GetExecutionHistory"], [executions]))
    if "websocket:post" in f.needs:
        # The notifier posts to (and drops) connections of this stage's WebSocket API only; the API is Chalice's
        # (deployed after this stack), so its id comes in as a parameter once known (empty: no WebSocket API).
        manage = {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
                             "${WebSocketApiId}/*/*/@connections/*"}
        statement = _statement("ManageWebSocketConnections", ["execute-api:ManageConnections"], [manage])
        statements.append({"Fn::If": ["HasWebSocketApi", statement, {"Ref": "AWS::NoValue"}]})
    statements.append(_statement("ReadDataStoreUrls", ["secretsmanager:GetSecretValue"],
                                 [_secret_arn(name) for name in DATA_STORE_SECRETS.values()]))
    if "llm" in f.needs:
        # Converse is authorised by bedrock:InvokeModel, and only on the models the operator lists.
        bedrock = _statement("InvokeBedrockModels", ["bedrock:InvokeModel"], {"Ref": "BedrockModelArns"})
        statements.append({"Fn::If": ["BedrockAllowed", bedrock, {"Ref": "AWS::NoValue"}]})
        statements.append(_statement("ReadProviderKeys", ["secretsmanager:GetSecretValue"],
                                     [_secret_arn(name) for name in PROVIDER_SECRETS]))
    vpc_policy = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"}
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            },
            "ManagedPolicyArns": {"Fn::If": ["InVpc", [vpc_policy], {"Ref": "AWS::NoValue"}]},
            "Policies": [
                {
                    "PolicyName": f"{logical_id(f.name)}Access",
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    }


def _function_resources(f: FunctionSpec, send_to: Sequence[QueueSpec]) -> Json:
    fid, rid, lid = logical_id(f.name, "Function"), logical_id(f.name, "Role"), logical_id(f.name, "LogGroup")
    env = {
        "YMERA_STAGE": {"Ref": "Stage"},
        "YMERA_QUEUE_PREFIX": {"Fn::Sub": f"{APP}-${{Stage}}"},
        # Bounds the agents' own wall-time budgets below the Lambda's (chalicelib.providers, agents.sandbox).
        "YMERA_FUNCTION_TIMEOUT_SECONDS": str(f.timeout),
        # Names of this stage's secrets (a name is a valid SecretId), read once per container.
        **{var: {"Fn::Sub": f"{APP}/${{Stage}}/{name}"} for var, name in DATA_STORE_SECRETS.items()},
        # AWS_DEFAULT_REGION is reserved: the Lambda runtime sets it itself.
        **({"YMERA_ALERT_TOPIC_ARN": {"Ref": "AlertTopic"}} if "sns:alerts" in f.needs else {}),
        **(LLM_ENV if "llm" in f.needs else {}),
        **(WEBSOCKET_ENV if "websocket:post" in f.needs else {}),
        **f.env,
    }
    vpc = {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
    out: Json = {
        lid: {
            "Type": "AWS::Logs::LogGroup",
            **DROP,
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/{APP}-${{Stage}}-{f.name}"},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        },
        rid: _role(f, lid, send_to),
        fid: {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": _sub(f.name),
                "Runtime": RUNTIME,
                "Architectures": [{"Ref": "Architecture"}],
                "Handler": f.handler,
                "Timeout": f.timeout,
                "MemorySize": f.memory,
                "Code": {"S3Bucket": {"Ref": "ArtifactBucket"}, "S3Key": {"Ref": "ArtifactKey"}},
                "Role": _arn(rid),
                "LoggingConfig": {"LogGroup": {"Ref": lid}},
                "Environment": {"Variables": env},
                "VpcConfig": {"Fn::If": ["InVpc", vpc, {"Ref": "AWS::NoValue"}]},
            },
        },
    }
    if f.queue is not None:
        out[logical_id(f.name, "EventSourceMapping")] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": _arn(logical_id(f.queue.suffix, "Queue")),
                "FunctionName": {"Ref": fid},
                "BatchSize": f.batch_size,
                "MaximumBatchingWindowInSeconds": f.batching_window_seconds,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                # One queue's burst cannot take every Postgres connection (the manifest's budget).
                "ScalingConfig": {"MaximumConcurrency": f.max_concurrency},
                "Enabled": True,
            },
        }
    if f.schedule is not None:
        sid = logical_id(f.name, "Schedule")
        out[sid] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": _sub(f"{f.name}-schedule"),
                "ScheduleExpression": f.schedule,
                "State": "ENABLED",
                "Targets": [{"Id": logical_id(f.name), "Arn": _arn(fid)}],
            },
        }
        out[logical_id(f.name, "SchedulePermission")] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Ref": fid},
                "Principal": "events.amazonaws.com",
                "SourceArn": _arn(sid),
            },
        }
        out[logical_id(f.name, "ErrorsAlarm")] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": _sub(f"{f.name}-errors"),
                "AlarmDescription": f"The scheduled function {f.name} failed",
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": fid}}],
                "Statistic": "Sum",
                "Period": 300,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "AlertTopic"}],
                "OKActions": [{"Ref": "AlertTopic"}],
            },
        }
    return out


def _workflow_role(queue_specs: Sequence[QueueSpec]) -> Json:
    """The role every workflow state machine runs as: it may send to the agent queues' fast lanes (steps never
    take the bulk lane) and the workflow control queue, and nothing else (no Lambda, no other service, no DLQ)."""
    targets = [_arn(logical_id(q.suffix, "Queue")) for q in queue_specs
               if (q.suffix.startswith("agent-") and not manifest.is_bulk_lane(q))
               or q.suffix == manifest.WORKFLOW_CONTROL_SUFFIX]
    return {"WorkflowRole": {
        "Type": "AWS::IAM::Role",
        "Properties": {
            # A fixed name, so the API's iam:PassRole names exactly this role (deploy with CAPABILITY_NAMED_IAM).
            "RoleName": _sub(WORKFLOW_ROLE_SUFFIX),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                               "Action": "sts:AssumeRole",
                               # confused deputy: only this account's state machines may assume it
                               "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}],
            },
            "Policies": [{
                "PolicyName": "WorkflowQueues",
                "PolicyDocument": {"Version": "2012-10-17",
                                   "Statement": [_statement("SendStepMessages", ["sqs:SendMessage"], targets)]},
            }],
        },
    }}


def _outputs(queue_specs: Sequence[QueueSpec]) -> Json:
    def output(value: Json, key: str) -> Json:
        return {"Value": value, "Export": {"Name": {"Fn::Sub": f"${{AWS::StackName}}-{key}"}}}

    out: Json = {}
    for q in queue_specs:
        for rid in (logical_id(q.suffix, "Queue"), *([logical_id(q.dlq_suffix)] if q.owns_dlq else [])):
            out[f"{rid}Url"] = output({"Ref": rid}, f"{rid}Url")
            out[f"{rid}Arn"] = output(_arn(rid), f"{rid}Arn")
    out["AlertTopicArn"] = output({"Ref": "AlertTopic"}, "AlertTopicArn")
    if any(q.suffix == manifest.WORKFLOW_CONTROL_SUFFIX for q in queue_specs):
        # The API's YMERA_WORKFLOW_ROLE_ARN (WorkflowControlQueueUrl is among the queue outputs above).
        out["WorkflowRoleArn"] = output(_arn("WorkflowRole"), "WorkflowRoleArn")
    return out


def build_template(
    stage: str,
    *,
    queue_specs: Sequence[QueueSpec] | None = None,
    function_specs: Sequence[FunctionSpec] | None = None,
) -> Json:
    """The whole template as a dict; specs default to the manifest (tests pass their own)."""
    qs = list(manifest.queues() if queue_specs is None else queue_specs)
    fs = list(manifest.functions() if function_specs is None else function_specs)
    check_specs(qs, fs)
    agent_queues = [q for q in qs if q.suffix.startswith("agent-")]
    resources: Json = _alert_topic()
    if any(q.suffix == manifest.WORKFLOW_CONTROL_SUFFIX for q in qs):
        resources.update(_workflow_role(qs))
    parts = [_queue_resources(q) for q in qs] + [_function_resources(f, agent_queues) for f in fs]
    for part in parts:
        clash = resources.keys() & part.keys()
        if clash:  # two manifest names CamelCase to the same ID: one would silently vanish
            raise ValueError(f"duplicate logical IDs {sorted(clash)}")
        resources.update(part)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "YMERA functions/ deploy unit: agent queues, DLQs, consumers, outbox relay, workflow "
                       "role and control queue, alarms.",
        "Parameters": _parameters(stage),
        "Conditions": _conditions(),
        "Resources": resources,
        "Outputs": _outputs(qs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.template", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev", help="stage name; queue prefix becomes ymera-<stage>")
    parser.add_argument("--out", type=Path, default=Path("infra/build/template.json"))
    args = parser.parse_args(argv)
    template = build_template(args.stage)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(template['Resources'])} resources, stage {args.stage})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
