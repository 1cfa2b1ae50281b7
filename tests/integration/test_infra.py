"""Infrastructure checks: template shape and lint, IAM scope, bootstrap, Chalice config.

All offline: CloudFormation is linted (not deployed) and SQS is moto in-process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra import manifest
from infra.bootstrap import bootstrap
from infra.bootstrap import main as bootstrap_main
from infra.build import BuildError, check_installed
from infra.template import build_template, logical_id

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ymera-test"


@pytest.fixture
def template() -> dict[str, Any]:
    return build_template("dev")


def _resources(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _cfn_lint_command() -> list[str]:
    # cfn-lint 1.58 has no cfnlint/__main__.py, so `python -m cfnlint` fails; use its script.
    script = Path(sys.executable).with_name("cfn-lint")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


# --- template ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_template_passes_cfn_lint_with_no_warnings(stage: str, tmp_path: Path) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(build_template(stage)))
    # --include-checks I: informational findings (e.g. missing DeletionPolicy) fail too.
    result = subprocess.run(
        [*_cfn_lint_command(), "--include-checks", "I", "--", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_writes_the_template(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "template.json"
    result = subprocess.run(
        [sys.executable, "-m", "infra.template", "--stage", "prod", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == build_template("prod")


def test_template_is_deterministic() -> None:
    assert json.dumps(build_template("dev")) == json.dumps(build_template("dev"))
    assert logical_id("agent-validation", "Queue") == "AgentValidationQueue"


def test_every_consumer_has_a_partial_batch_event_source_and_safe_queue(template: dict[str, Any]) -> None:
    consumers = [f for f in manifest.functions() if f.queue is not None]
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping")
    assert len(consumers) == len(manifest.AGENT_CONSUMERS) == len(mappings)
    for spec in consumers:
        assert spec.queue is not None
        fn = template["Resources"][logical_id(spec.name, "Function")]["Properties"]
        queue = template["Resources"][logical_id(spec.queue.suffix, "Queue")]["Properties"]
        esm = mappings[logical_id(spec.name, "EventSourceMapping")]["Properties"]
        assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert esm["EventSourceArn"] == {"Fn::GetAtt": [logical_id(spec.queue.suffix, "Queue"), "Arn"]}
        assert esm["BatchSize"] == spec.batch_size
        assert "MaximumBatchingWindowInSeconds" in esm
        assert fn["Handler"] == "functions.agent_consumer.handler"
        assert fn["Runtime"] == "python3.11"
        assert queue["VisibilityTimeout"] >= 6 * fn["Timeout"]
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
        assert queue["SqsManagedSseEnabled"] is True


def test_functions_get_stage_env_but_no_jwt_secret(template: dict[str, Any]) -> None:
    for fn in _resources(template, "AWS::Lambda::Function").values():
        env = fn["Properties"]["Environment"]["Variables"]
        assert {"YMERA_STAGE", "YMERA_QUEUE_PREFIX", "DATABASE_URL", "REDIS_URL"} <= env.keys()
        assert "YMERA_JWT_SECRET" not in env
        assert "VpcConfig" in fn["Properties"]  # conditional on SubnetIds/SecurityGroupIds
    assert template["Parameters"]["DatabaseUrl"]["NoEcho"] is True
    assert template["Parameters"]["RedisUrl"]["NoEcho"] is True


def test_every_dlq_alarms_to_the_alerts_topic(template: dict[str, Any]) -> None:
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == len(manifest.queues())
    for q in manifest.queues():
        alarm = alarms[logical_id(q.dlq_suffix, "Alarm")]["Properties"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": [logical_id(q.dlq_suffix), "QueueName"]}
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
    topic = template["Resources"]["AlertTopic"]["Properties"]
    assert topic["TopicName"] == {"Fn::Sub": "ymera-${Stage}-alerts"}


def test_scheduled_relay_has_rule_and_invoke_permission(template: dict[str, Any]) -> None:
    rule = template["Resources"]["OutboxRelaySchedule"]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    permission = template["Resources"]["OutboxRelaySchedulePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["OutboxRelaySchedule", "Arn"]}


def test_outputs_expose_queue_urls_arns_and_topic(template: dict[str, Any]) -> None:
    for q in manifest.queues():
        for rid in (logical_id(q.suffix, "Queue"), logical_id(q.dlq_suffix)):
            assert {f"{rid}Url", f"{rid}Arn"} <= template["Outputs"].keys()
    assert "AlertTopicArn" in template["Outputs"]


@pytest.mark.parametrize(
    ("visibility", "receives"),
    [(6 * manifest.CONSUMER_TIMEOUT_SECONDS - 1, 5), (6 * manifest.CONSUMER_TIMEOUT_SECONDS, 4)],
    ids=["visibility-below-6x-timeout", "max-receive-below-5"],
)
def test_build_refuses_unsafe_queue_settings(visibility: int, receives: int) -> None:
    unsafe = replace(manifest.agent_queue("validation"), visibility_timeout=visibility, max_receive_count=receives)
    fn = replace(manifest.functions()[0], queue=unsafe)
    with pytest.raises(ValueError, match="visibility|max_receive_count"):
        build_template("dev", queue_specs=[unsafe], function_specs=[fn])


def test_the_same_settings_at_the_limit_are_accepted() -> None:
    edge = replace(manifest.agent_queue("validation"), visibility_timeout=6 * 60, max_receive_count=5)
    fn = replace(manifest.functions()[0], queue=edge, timeout=60)
    assert "AgentValidationQueue" in build_template("dev", queue_specs=[edge], function_specs=[fn])["Resources"]


# --- IAM -----------------------------------------------------------------------------------


def test_no_iam_statement_grants_every_resource(template: dict[str, Any]) -> None:
    # Logs are scoped to each function's own log group, so nothing needs "*" here.
    for role in _resources(template, "AWS::IAM::Role").values():
        for statement in _statements(role):
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            assert "*" not in resources, statement
            assert not any("*" in a for a in _actions(statement)), statement


def test_consumers_only_consume_their_own_queue(template: dict[str, Any]) -> None:
    for spec in (f for f in manifest.functions() if f.queue is not None):
        assert spec.queue is not None
        own = {"Fn::GetAtt": [logical_id(spec.queue.suffix, "Queue"), "Arn"]}
        for statement in _statements(template["Resources"][logical_id(spec.name, "Role")]):
            assert not {"sqs:SendMessage", "sqs:SendMessageBatch"} & set(_actions(statement))
            if statement["Sid"] == "InspectQueues":  # the monitoring agent reads queue depths, nothing more
                assert set(_actions(statement)) == {"sqs:GetQueueUrl", "sqs:GetQueueAttributes"}
                continue
            if any(a.startswith("sqs:") for a in _actions(statement)):
                assert statement["Resource"] == [own]


def test_only_the_scheduled_monitor_may_publish_to_the_operators_alert_topic(template: dict[str, Any]) -> None:
    publishers = {name for name, role in _resources(template, "AWS::IAM::Role").items()
                  if any("sns:Publish" in _actions(s) for s in _statements(role))}
    assert publishers == {logical_id("monitor", "Role")}  # a user's monitoring task cannot page the operators


def test_relay_sends_only_to_agent_queues(template: dict[str, Any]) -> None:
    sqs = [s for s in _statements(template["Resources"]["OutboxRelayRole"]) if _actions(s)[0].startswith("sqs:")]
    assert len(sqs) == 1
    assert set(_actions(sqs[0])) == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    expected = [{"Fn::GetAtt": [logical_id(q.suffix, "Queue"), "Arn"]} for q in manifest.queues()]
    assert sqs[0]["Resource"] == expected


def test_provider_backed_consumers_take_one_slow_record_and_only_they_reach_bedrock(template: dict[str, Any]) -> None:
    functions = _resources(template, "AWS::Lambda::Function")
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping")
    queues = _resources(template, "AWS::SQS::Queue")
    roles = _resources(template, "AWS::IAM::Role")
    for agent_type in ("llm", "validation"):
        slow = agent_type in manifest.PROVIDER_BACKED
        name = f"agent-{agent_type}"
        fn = functions[logical_id(name, "Function")]["Properties"]
        esm = mappings[logical_id(name, "EventSourceMapping")]["Properties"]
        queue = queues[logical_id(name, "Queue")]["Properties"]
        assert fn["Timeout"] == (300 if slow else 60)
        assert esm["BatchSize"] == (1 if slow else 10)
        assert queue["VisibilityTimeout"] >= 6 * fn["Timeout"]
        assert ("YMERA_LLM_PROVIDER" in fn["Environment"]["Variables"]) is slow
        actions = {a for st in _statements(roles[logical_id(name, "Role")]) for a in _actions(st)}
        assert ("bedrock:InvokeModel" in actions) is slow
        assert ("secretsmanager:GetSecretValue" in actions) is slow


def test_vpc_access_policy_only_when_in_vpc(template: dict[str, Any]) -> None:
    for role in _resources(template, "AWS::IAM::Role").values():
        managed = role["Properties"]["ManagedPolicyArns"]
        assert managed["Fn::If"][0] == "InVpc"
        assert "AWSLambdaVPCAccessExecutionRole" in json.dumps(managed["Fn::If"][1])
        assert managed["Fn::If"][2] == {"Ref": "AWS::NoValue"}


# --- bootstrap (moto) ----------------------------------------------------------------------


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _attributes(sqs: Any, url: str) -> dict[str, str]:
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def test_bootstrap_creates_every_queue_with_redrive_to_its_dlq(sqs: Any) -> None:
    urls = bootstrap(sqs, PREFIX)
    expected = {n for q in manifest.queues() for n in (q.name(PREFIX), q.dlq_name(PREFIX))}
    assert set(urls) == expected
    assert set(sqs.list_queues(QueueNamePrefix=PREFIX)["QueueUrls"]) == set(urls.values())
    for q in manifest.queues():
        main = _attributes(sqs, urls[q.name(PREFIX)])
        dlq = _attributes(sqs, urls[q.dlq_name(PREFIX)])
        redrive = json.loads(main["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == q.max_receive_count
        assert int(main["VisibilityTimeout"]) == q.visibility_timeout
        assert "RedrivePolicy" not in dlq


def test_bootstrap_twice_is_idempotent_and_converges_drift(sqs: Any) -> None:
    first = bootstrap(sqs, PREFIX)
    queue = first[manifest.queues()[0].name(PREFIX)]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "7"})  # someone drifted it
    second = bootstrap(sqs, PREFIX)
    assert second == first
    assert len(sqs.list_queues(QueueNamePrefix=PREFIX)["QueueUrls"]) == len(first)
    assert int(_attributes(sqs, queue)["VisibilityTimeout"]) == manifest.VISIBILITY_TIMEOUT_SECONDS


def test_bootstrap_visibility_override_for_local_runs(sqs: Any) -> None:
    urls = bootstrap(sqs, PREFIX, visibility_timeout=2)
    for q in manifest.queues():
        assert _attributes(sqs, urls[q.name(PREFIX)])["VisibilityTimeout"] == "2"


def test_bootstrap_cli_prints_every_queue_url(sqs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap_main(["--prefix", PREFIX]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert printed.pop(f"{PREFIX}-alerts").endswith(f":{PREFIX}-alerts")  # the SNS alert topic's ARN
    assert printed == bootstrap(sqs, PREFIX)


# --- build, chalice config, localstack -----------------------------------------------------


def test_build_cli_help_works_offline() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.build", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--arch" in result.stdout


def test_build_fails_loudly_when_a_pinned_package_is_missing(tmp_path: Path) -> None:
    (tmp_path / "redis-8.1.0.dist-info").mkdir()
    (tmp_path / "redis-8.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: redis\n")
    check_installed(tmp_path, ["redis"])
    with pytest.raises(BuildError, match="psycopg"):
        check_installed(tmp_path, ["redis", "psycopg"])


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_chalice_config_has_stages_and_no_secrets() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["app_name"] == "ymera"
    assert {"dev", "prod"} <= config["stages"].keys()
    for key, value in _walk(config):
        assert not re.search(r"SECRET|PASSWORD|DATABASE_URL", key, re.IGNORECASE), key
        if isinstance(value, str):
            assert not re.search(r"://[^/\s:@]*:[^/\s@]*@", value), f"{key} holds credentials"
    for stage in ("dev", "prod"):
        settings = config["stages"][stage]
        assert settings["autogen_policy"] is False
        assert settings["environment_variables"] == {"YMERA_STAGE": stage, "YMERA_QUEUE_PREFIX": f"ymera-{stage}"}
        policy = json.loads((ROOT / ".chalice" / settings["iam_policy_file"]).read_text())
        for statement in policy["Statement"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert "*" not in resources
            if any(a.startswith("sqs:") for a in _actions(statement)):
                assert resources == [f"arn:aws:sqs:*:*:ymera-{stage}-agent-*"]


def test_localstack_dir_is_not_an_importable_package() -> None:
    assert not (ROOT / "localstack" / "__init__.py").exists()
    hook = ROOT / "localstack" / "init" / "10-bootstrap.sh"
    assert os.access(hook, os.X_OK)
    assert "infra.bootstrap --prefix ymera-dev" in hook.read_text()
