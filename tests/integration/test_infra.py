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
from infra.bootstrap import bootstrap, ensure_workflow_role, workflow_role_name
from infra.bootstrap import main as bootstrap_main
from infra.build import BuildError, check_installed
from infra.template import build_template, logical_id

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ymera-test"
#: the only actions allowed on "*" besides key policies: answering workflow task tokens.
TOKEN_ACTIONS = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}


@pytest.fixture
def template() -> dict[str, Any]:
    return build_template("dev")


def _resources(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """A role's statements; a conditional one ({"Fn::If": [cond, statement, NoValue]}) as if its condition held."""
    out = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    return [s["Fn::If"][1] if "Fn::If" in s else s for s in out]


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
    # two lanes per agent type (fast, bulk) + the ingress consumer and the workflow control consumer
    assert len(consumers) == 2 * len(manifest.AGENT_CONSUMERS) + 2 == len(mappings)
    for spec in consumers:
        assert spec.queue is not None
        fn = template["Resources"][logical_id(spec.name, "Function")]["Properties"]
        queue = template["Resources"][logical_id(spec.queue.suffix, "Queue")]["Properties"]
        esm = mappings[logical_id(spec.name, "EventSourceMapping")]["Properties"]
        assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert esm["EventSourceArn"] == {"Fn::GetAtt": [logical_id(spec.queue.suffix, "Queue"), "Arn"]}
        assert esm["BatchSize"] == spec.batch_size
        assert "MaximumBatchingWindowInSeconds" in esm
        handlers = {"ingress-consumer": "functions.ingress_consumer.handler",
                    "workflow-control": "functions.workflow_control.handler"}
        assert fn["Handler"] == handlers.get(spec.name, "functions.agent_consumer.handler")
        assert fn["Runtime"] == "python3.11"
        assert queue["VisibilityTimeout"] >= 6 * fn["Timeout"]
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
        assert queue["SqsManagedSseEnabled"] is True


def test_functions_get_stage_env_but_no_jwt_secret(template: dict[str, Any]) -> None:
    for fn in _resources(template, "AWS::Lambda::Function").values():
        env = fn["Properties"]["Environment"]["Variables"]
        assert {"YMERA_STAGE", "YMERA_QUEUE_PREFIX"} <= env.keys()
        assert "YMERA_JWT_SECRET" not in env and "YMERA_JWT_SECRET_ARN" not in env
        assert "VpcConfig" in fn["Properties"]  # conditional on SubnetIds/SecurityGroupIds
        # agents' wall budgets are capped below the function's own timeout, so each function must know it
        assert env["YMERA_FUNCTION_TIMEOUT_SECONDS"] == str(fn["Properties"]["Timeout"])


def test_every_dlq_alarms_to_the_alerts_topic(template: dict[str, Any]) -> None:
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    scheduled = [f for f in manifest.functions() if f.schedule]
    owners = [q for q in manifest.queues() if q.owns_dlq]  # a bulk lane shares its agent type's DLQ (and alarm)
    assert len(owners) == len(manifest.AGENT_CONSUMERS) + 2
    assert len(alarms) == len(owners) + len(scheduled)
    for q in manifest.queues():
        alarm = alarms[logical_id(q.dlq_suffix, "Alarm")]["Properties"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": [logical_id(q.dlq_suffix), "QueueName"]}
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
    topic = template["Resources"]["AlertTopic"]["Properties"]
    assert topic["TopicName"] == {"Fn::Sub": "ymera-${Stage}-alerts"}


def test_each_agent_type_has_a_bulk_lane_dead_lettering_into_the_fast_lanes_dlq(template: dict[str, Any]) -> None:
    queues = _resources(template, "AWS::SQS::Queue")
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping")
    policies = _resources(template, "AWS::SQS::QueuePolicy")
    for agent_type in manifest.AGENT_CONSUMERS:
        fast, bulk = f"agent-{agent_type}", f"agent-{agent_type}-bulk"
        dlq = logical_id(f"{fast}-dlq")
        fast_q = queues[logical_id(fast, "Queue")]["Properties"]
        bulk_q = queues[logical_id(bulk, "Queue")]["Properties"]
        assert bulk_q["QueueName"] == {"Fn::Sub": f"ymera-${{Stage}}-{bulk}"}
        redrive = {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": manifest.MAX_RECEIVE_COUNT}
        assert bulk_q["RedrivePolicy"] == fast_q["RedrivePolicy"] == redrive
        assert bulk_q["VisibilityTimeout"] == fast_q["VisibilityTimeout"]
        assert logical_id(f"{bulk}-dlq") not in queues  # no DLQ of its own
        # the same handler on each lane, each consuming its own queue; the fast lane at Lambda's floor
        fast_esm = mappings[logical_id(fast, "EventSourceMapping")]["Properties"]
        bulk_esm = mappings[logical_id(bulk, "EventSourceMapping")]["Properties"]
        assert bulk_esm["EventSourceArn"] == {"Fn::GetAtt": [logical_id(bulk, "Queue"), "Arn"]}
        assert fast_esm["ScalingConfig"]["MaximumConcurrency"] == 2 <= bulk_esm["ScalingConfig"]["MaximumConcurrency"]
        assert (fast_esm["ScalingConfig"]["MaximumConcurrency"] + bulk_esm["ScalingConfig"]["MaximumConcurrency"]
                == manifest.agent_max_concurrency(agent_type))
        # each lane's consumer may consume its own queue only
        for name in (fast, bulk):
            by_sid = {st["Sid"]: st for st in _statements(template["Resources"][logical_id(name, "Role")])}
            assert by_sid["ConsumeOwnQueue"]["Resource"] == [{"Fn::GetAtt": [logical_id(name, "Queue"), "Arn"]}]
        # one policy per queue: the shared DLQ's belongs to the fast lane's
        assert policies[logical_id(bulk, "QueuePolicy")]["Properties"]["Queues"] == [{"Ref": logical_id(bulk, "Queue")}]
        assert {"Ref": dlq} in policies[logical_id(fast, "QueuePolicy")]["Properties"]["Queues"]


def test_a_queue_sharing_a_dlq_nobody_created_before_it_is_refused() -> None:
    orphan = manifest.bulk_queue("validation")
    with pytest.raises(ValueError, match="not owned by an earlier queue"):
        build_template("dev", queue_specs=[orphan, manifest.agent_queue("validation")], function_specs=[])


def test_scheduled_relay_has_rule_and_invoke_permission(template: dict[str, Any]) -> None:
    rule = template["Resources"]["OutboxRelaySchedule"]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    permission = template["Resources"]["OutboxRelaySchedulePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["OutboxRelaySchedule", "Arn"]}


def test_outputs_expose_queue_urls_arns_and_topic(template: dict[str, Any]) -> None:
    for q in manifest.queues():
        for rid in (logical_id(q.suffix, "Queue"), logical_id(q.dlq_suffix)):  # a bulk lane: its shared DLQ's
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
            if set(_actions(statement)) <= TOKEN_ACTIONS:
                continue  # task tokens of service integrations cannot be scoped by IAM (test_workflow_infra)
            assert "*" not in resources, statement
            assert not any("*" in a for a in _actions(statement)), statement


def test_consumers_only_consume_their_own_queue(template: dict[str, Any]) -> None:
    for spec in (f for f in manifest.functions() if f.queue is not None and f.name != "ingress-consumer"):
        assert spec.queue is not None
        own = {"Fn::GetAtt": [logical_id(spec.queue.suffix, "Queue"), "Arn"]}
        for statement in _statements(template["Resources"][logical_id(spec.name, "Role")]):
            assert not {"sqs:SendMessage", "sqs:SendMessageBatch"} & set(_actions(statement))
            if statement["Sid"] == "InspectQueues":  # the monitoring agent reads queue depths, nothing more
                assert set(_actions(statement)) == {"sqs:GetQueueUrl", "sqs:GetQueueAttributes"}
                continue
            if any(a.startswith("sqs:") for a in _actions(statement)):
                assert statement["Resource"] == [own]


def test_only_scheduled_functions_may_publish_to_the_operators_alert_topic(template: dict[str, Any]) -> None:
    publishers = {name for name, role in _resources(template, "AWS::IAM::Role").items()
                  if any("sns:Publish" in _actions(s) for s in _statements(role))}
    # a user's monitoring task cannot page the operators; the relay pages about parked outbox messages
    assert publishers == {logical_id("monitor", "Role"), logical_id("outbox-relay", "Role")}


def test_relay_sends_only_to_agent_queues(template: dict[str, Any]) -> None:
    sqs = [s for s in _statements(template["Resources"]["OutboxRelayRole"]) if _actions(s)[0].startswith("sqs:")]
    assert len(sqs) == 1
    assert set(_actions(sqs[0])) == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    expected = [{"Fn::GetAtt": [logical_id(q.suffix, "Queue"), "Arn"]} for q in manifest.agent_queues()]
    assert sqs[0]["Resource"] == expected


def test_the_ingress_consumer_sends_only_to_agent_queues_and_its_own_dlq(template: dict[str, Any]) -> None:
    """Poison messages go to the ingress DLQ at once: that DLQ is the only extra queue it may send to."""
    resources = template["Resources"]
    esm = resources["IngressConsumerEventSourceMapping"]["Properties"]
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"]["MaximumConcurrency"] == manifest.INGRESS_MAX_CONCURRENCY
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["IngressQueue", "Arn"]}
    assert resources["IngressQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["IngressDlq", "Arn"]}
    by_sid = {st["Sid"]: st for st in _statements(resources["IngressConsumerRole"])}
    assert by_sid["RejectToOwnDlq"]["Resource"] == [{"Fn::GetAtt": ["IngressDlq", "Arn"]}]
    assert by_sid["ConsumeOwnQueue"]["Resource"] == [{"Fn::GetAtt": ["IngressQueue", "Arn"]}]
    agent = [{"Fn::GetAtt": [logical_id(q.suffix, "Queue"), "Arn"]} for q in manifest.agent_queues()]
    assert by_sid["SendToAgentQueues"]["Resource"] == agent
    senders = [st for st in by_sid.values() if "sqs:SendMessage" in _actions(st)]
    assert {json.dumps(r) for st in senders for r in st["Resource"]} == {
        json.dumps(r) for r in [*agent, {"Fn::GetAtt": ["IngressDlq", "Arn"]}]}


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
        sids = {st["Sid"] for st in _statements(roles[logical_id(name, "Role")])}
        assert ("ReadProviderKeys" in sids) is slow


def test_vpc_access_policy_only_when_in_vpc(template: dict[str, Any]) -> None:
    for rid, role in _resources(template, "AWS::IAM::Role").items():
        if rid == "WorkflowRole":  # assumed by Step Functions, never in a VPC
            continue
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


def test_bootstrap_gives_each_bulk_lane_its_agent_types_dlq_and_steps_the_fast_lane_only(sqs: Any) -> None:
    urls = bootstrap(sqs, PREFIX)
    iam = boto3.client("iam", region_name="us-east-1")
    ensure_workflow_role(iam, sqs, PREFIX)
    for agent_type in manifest.AGENT_CONSUMERS:
        fast, bulk = f"{PREFIX}-agent-{agent_type}", f"{PREFIX}-agent-{agent_type}-bulk"
        dlq_arn = _attributes(sqs, urls[f"{fast}-dlq"])["QueueArn"]
        assert json.loads(_attributes(sqs, urls[bulk])["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn
        assert json.loads(_attributes(sqs, urls[fast])["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn
    assert not any(url.endswith("-bulk-dlq") for url in urls.values())
    document = iam.get_role_policy(RoleName=workflow_role_name(PREFIX), PolicyName="WorkflowQueues")["PolicyDocument"]
    targets = document["Statement"][0]["Resource"]
    assert len(targets) == len(manifest.AGENT_CONSUMERS) + 1  # the fast lanes and the control queue
    assert not any(arn.endswith("-bulk") for arn in targets)


def test_the_template_lets_workflow_steps_reach_the_fast_lanes_only(template: dict[str, Any]) -> None:
    [statement] = _statements(template["Resources"]["WorkflowRole"])
    targets = [r["Fn::GetAtt"][0] for r in statement["Resource"]]
    assert targets == [*(logical_id(f"agent-{t}", "Queue") for t in manifest.AGENT_CONSUMERS),
                       logical_id(manifest.WORKFLOW_CONTROL_SUFFIX, "Queue")]


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
    assert printed.pop(f"{PREFIX}-workflow-role").endswith(f":role/{PREFIX}-workflow-role")  # workflows run as it
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
        # Only the *names* of secrets (YMERA_..._SECRET_ARN = ymera/<stage>/...) may appear, never a value.
        if not key.endswith("_SECRET_ARN"):
            assert not re.search(r"SECRET|PASSWORD|DATABASE_URL", key, re.IGNORECASE), key
        if isinstance(value, str):
            assert not re.search(r"://[^/\s:@]*:[^/\s@]*@", value), f"{key} holds credentials"
    for stage in ("dev", "prod"):
        settings = config["stages"][stage]
        assert settings["autogen_policy"] is False
        assert settings["iam_policy_file"] == f"policy-{stage}.json"  # rendered by `make api-policy`
        assert settings["environment_variables"] == {
            "YMERA_STAGE": stage, "YMERA_QUEUE_PREFIX": f"ymera-{stage}",
            "YMERA_JWT_SECRET_ARN": f"ymera/{stage}/jwt", "YMERA_DATABASE_URL_SECRET_ARN": f"ymera/{stage}/database",
            "YMERA_REDIS_URL_SECRET_ARN": f"ymera/{stage}/redis",
            "YMERA_PROVIDER_KEY_ENCRYPTION_KEY_SECRET_ARN": f"ymera/{stage}/provider-key-encryption"}


def test_localstack_dir_is_not_an_importable_package() -> None:
    assert not (ROOT / "localstack" / "__init__.py").exists()
    hook = ROOT / "localstack" / "init" / "10-bootstrap.sh"
    assert os.access(hook, os.X_OK)
    assert "infra.bootstrap --prefix ymera-dev" in hook.read_text()


# --- issue 7 §6: infrastructure hygiene ------------------------------------------------------------------------


def test_data_store_urls_reach_the_functions_from_secrets_manager_not_parameters(template: dict[str, Any]) -> None:
    assert not {"DatabaseUrl", "RedisUrl"} & template["Parameters"].keys()
    for name, fn in _resources(template, "AWS::Lambda::Function").items():
        env = fn["Properties"]["Environment"]["Variables"]
        assert not {"DATABASE_URL", "REDIS_URL"} & env.keys()
        assert env["YMERA_DATABASE_URL_SECRET_ARN"] == {"Fn::Sub": "ymera/${Stage}/database"}
        assert env["YMERA_REDIS_URL_SECRET_ARN"] == {"Fn::Sub": "ymera/${Stage}/redis"}
        role = template["Resources"][name.removesuffix("Function") + "Role"]
        reads = [s for s in _statements(role) if s["Sid"] == "ReadDataStoreUrls"]
        assert [r["Fn::Sub"].rsplit(":secret:", 1)[1] for r in reads[0]["Resource"]] == [
            "ymera/${Stage}/database-??????", "ymera/${Stage}/redis-??????"]


def test_only_provider_backed_functions_read_llm_secrets_and_bedrock_only_on_listed_models(
        template: dict[str, Any]) -> None:
    assert template["Parameters"]["BedrockModelArns"] == {
        "Type": "CommaDelimitedList", "Default": "", "Description": template["Parameters"]["BedrockModelArns"][
            "Description"]}
    for spec in manifest.functions():
        role = template["Resources"][logical_id(spec.name, "Role")]
        raw = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
        secrets = sorted(r["Fn::Sub"].rsplit(":secret:", 1)[1] for st in _statements(role)
                         if "secretsmanager:GetSecretValue" in _actions(st) for r in st["Resource"])
        bedrock = [s for s in raw if "Fn::If" in s and s["Fn::If"][0] == "BedrockAllowed"]
        if "llm" in spec.needs:
            assert secrets == ["ymera/${Stage}/database-??????", "ymera/${Stage}/llm/*",
                               "ymera/${Stage}/provider-key-encryption-??????", "ymera/${Stage}/redis-??????"]
            # No model listed -> no statement at all (the condition's false branch is AWS::NoValue).
            assert bedrock == [{"Fn::If": ["BedrockAllowed", bedrock[0]["Fn::If"][1], {"Ref": "AWS::NoValue"}]}]
            assert bedrock[0]["Fn::If"][1]["Resource"] == {"Ref": "BedrockModelArns"}
            assert _actions(bedrock[0]["Fn::If"][1]) == ["bedrock:InvokeModel"]
        else:
            assert secrets == ["ymera/${Stage}/database-??????", "ymera/${Stage}/redis-??????"]
            assert bedrock == []
    assert "BedrockAllowed" in template["Conditions"]


def test_the_alert_topic_is_encrypted_with_a_key_alarms_and_publishers_may_use(template: dict[str, Any]) -> None:
    topic = template["Resources"]["AlertTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlertTopicKey"}
    key = template["Resources"]["AlertTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    principals = {json.dumps(st["Principal"]) for st in key["KeyPolicy"]["Statement"]}
    assert json.dumps({"Service": "cloudwatch.amazonaws.com"}) in principals
    for spec in (f for f in manifest.functions() if "sns:alerts" in f.needs):
        statements = _statements(template["Resources"][logical_id(spec.name, "Role")])
        encrypt = [s for s in statements if "kms:GenerateDataKey" in _actions(s)]
        assert encrypt and encrypt[0]["Resource"] == [{"Fn::GetAtt": ["AlertTopicKey", "Arn"]}]


def _deny_plain_transport(policy: dict[str, Any]) -> list[Any]:
    """The resources a policy document denies to requests that are not over TLS."""
    out: list[Any] = []
    for st in policy["Statement"]:
        if st["Effect"] == "Deny" and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
            assert st["Principal"] == "*"
            out += st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
    return out


def test_every_queue_and_the_topic_refuse_plain_transport(template: dict[str, Any]) -> None:
    denied = [r for p in _resources(template, "AWS::SQS::QueuePolicy").values()
              for r in _deny_plain_transport(p["Properties"]["PolicyDocument"])]
    queues = _resources(template, "AWS::SQS::Queue")
    assert len(queues) == len(manifest.queues()) + len([q for q in manifest.queues() if q.owns_dlq])
    assert sorted(json.dumps(r) for r in denied) == sorted(json.dumps({"Fn::GetAtt": [q, "Arn"]}) for q in queues)
    for policy in _resources(template, "AWS::SQS::QueuePolicy").values():
        actions = [a for st in policy["Properties"]["PolicyDocument"]["Statement"] for a in _actions(st)]
        assert actions == ["sqs:*"]  # a Deny: every action, over plain HTTP
    topic_policy = template["Resources"]["AlertTopicPolicy"]["Properties"]
    assert topic_policy["Topics"] == [{"Ref": "AlertTopic"}]
    assert _deny_plain_transport(topic_policy["PolicyDocument"]) == [{"Ref": "AlertTopic"}]


def test_every_scheduled_function_has_an_errors_alarm(template: dict[str, Any]) -> None:
    scheduled = [f for f in manifest.functions() if f.schedule]
    assert {"outbox-relay", "lease-reaper", "task-reaper", "monitor", "learning-sweep"} <= {f.name for f in scheduled}
    for spec in scheduled:
        alarm = template["Resources"][logical_id(spec.name, "ErrorsAlarm")]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": logical_id(spec.name, "Function")}}]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]


def test_consumers_cap_their_concurrency_from_the_manifest(template: dict[str, Any]) -> None:
    for spec in (f for f in manifest.functions() if f.queue is not None):
        esm = template["Resources"][logical_id(spec.name, "EventSourceMapping")]["Properties"]
        assert esm["ScalingConfig"] == {"MaximumConcurrency": spec.max_concurrency}
        assert spec.max_concurrency >= 2
    assert manifest.database_connections(manifest.functions()) <= manifest.DB_CONNECTION_BUDGET


@pytest.mark.parametrize(("concurrency", "match"), [(1, "max_concurrency 1 outside"),
                                                    (200, "database connections")])
def test_build_refuses_a_concurrency_below_lambdas_floor_or_over_the_connection_budget(concurrency: int,
                                                                                        match: str) -> None:
    fn = replace(manifest.functions()[0], max_concurrency=concurrency)
    with pytest.raises(ValueError, match=match):
        build_template("dev", queue_specs=[manifest.agent_queue("validation")], function_specs=[fn])


def _allow_statements(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource in template["Resources"].values():
        props = resource["Properties"]
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        documents += [props[k] for k in ("PolicyDocument", "KeyPolicy") if k in props]
        for doc in documents:
            for st in doc["Statement"]:
                st = st["Fn::If"][1] if "Fn::If" in st else st
                if st["Effect"] == "Allow":
                    yield st


def _is_wildcard_action(action: str) -> bool:
    return action == "*" or action.endswith(":*")


def test_no_policy_allows_a_wildcard_action_on_a_wildcard_resource(template: dict[str, Any]) -> None:
    """Roles, key and resource policies of the template and the rendered API policy. A key policy's
    "Resource": "*" means the key itself, so there the actions are listed one by one instead of kms:*."""
    from infra.api_policy import render

    statements = [*_allow_statements(template), *render("dev", "eu-west-1", "111122223333")["Statement"]]
    assert len(statements) > 20
    for st in statements:
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert not any(_is_wildcard_action(a) for a in _actions(st)), st
        if "*" in resources and set(_actions(st)) <= TOKEN_ACTIONS:
            continue  # answering workflow task tokens (test_workflow_infra checks these statements)
        if "*" in resources:
            assert all(a.startswith("kms:") for a in _actions(st)) and "Principal" in st, st


# --- the API's policy, rendered per account and region ----------------------------------------------------------


def _arns(statement: dict[str, Any]) -> list[str]:
    resources = statement["Resource"]
    return resources if isinstance(resources, list) else [resources]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_api_policy_names_its_account_and_region_and_only_its_own_resources(stage: str) -> None:
    from infra.api_policy import render

    policy = render(stage, "eu-west-1", "111122223333")
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    for st in policy["Statement"]:
        if set(_actions(st)) <= TOKEN_ACTIONS:
            continue  # approval decisions answer task tokens (no resource to name)
        for arn in _arns(st):
            if arn.startswith("arn:aws:iam::"):  # IAM is global: no region
                assert arn.split(":")[4] == "111122223333", arn
                continue
            assert arn.split(":")[3:5] == ["eu-west-1", "111122223333"], arn
    # Only the API's own log groups (Chalice names the function ymera-<stage>, and each WebSocket handler
    # ymera-<stage>-websocket_<route>), not every ymera-<stage>-* group.
    group = f"arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/ymera-{stage}"
    ws_groups = [f"{group}-websocket_connect", f"{group}-websocket_message", f"{group}-websocket_disconnect"]
    assert _arns(by_sid["WriteOwnLogs"]) == [group, f"{group}:*", *ws_groups, *(f"{g}:*" for g in ws_groups)]
    # The $default handler answers on its own connection: ManageConnections, POST on @connections of stage "api".
    assert _actions(by_sid["AnswerWebSocketConnections"]) == ["execute-api:ManageConnections"]
    assert _arns(by_sid["AnswerWebSocketConnections"]) == [
        "arn:aws:execute-api:eu-west-1:111122223333:*/api/POST/@connections/*"]
    sends = [st for st in policy["Statement"] if "sqs:SendMessage" in _actions(st)]
    assert len(sends) == 1
    assert _arns(sends[0]) == [f"arn:aws:sqs:eu-west-1:111122223333:ymera-{stage}-agent-{t}{lane}"
                               for t in manifest.AGENT_CONSUMERS
                               for lane in ("", "-bulk")]  # both lanes, not the ingress queue: producers send there
    assert not any(arn.endswith("-dlq") for arn in _arns(sends[0]))
    assert all(arn.endswith("-dlq") for arn in _arns(by_sid["ReadDeadLetterDepths"]))
    assert set(_actions(by_sid["ReadDeadLetterDepths"])) == {"sqs:GetQueueUrl", "sqs:GetQueueAttributes"}
    # Admin DLQ operations: receive/delete/move on the DLQs only; nothing consumes from an agent queue.
    assert _arns(by_sid["OperateDeadLetterQueues"]) == _arns(by_sid["ReadDeadLetterDepths"])
    assert set(_actions(by_sid["OperateDeadLetterQueues"])) == {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks"}
    receives = [st for st in policy["Statement"] if {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & set(_actions(st))]
    assert receives == [by_sid["OperateDeadLetterQueues"]]
    secrets = [arn.split(":secret:", 1)[1] for arn in _arns(by_sid["ReadStageSecrets"])]
    assert secrets == [f"ymera/{stage}/{n}" for n in ("jwt-??????", "database-??????", "redis-??????",
                                                      "provider-key-encryption-??????", "llm/*")]


def test_the_api_policy_refuses_a_malformed_account_or_region() -> None:
    from infra.api_policy import render

    with pytest.raises(ValueError, match="12 digits"):
        render("dev", "us-east-1", "*")
    with pytest.raises(ValueError, match="region"):
        render("dev", "*", "111122223333")


def test_the_api_policy_cli_writes_the_file_chalice_reads(tmp_path: Path) -> None:
    from infra.api_policy import render

    out = tmp_path / "policy-dev.json"
    result = subprocess.run(
        [sys.executable, "-m", "infra.api_policy", "--stage", "dev", "--region", "us-west-2",
         "--account", "123456789012", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == render("dev", "us-west-2", "123456789012")
    # The committed tree holds no policy with a wildcard account/region: the files are generated.
    tracked = subprocess.run(["git", "ls-files", ".chalice"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert not [f for f in tracked.stdout.split() if "policy-" in f]


def test_a_local_run_never_takes_the_deployed_stages_secret_names(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.local.environment import apply_chalice_config_env

    for var in ("YMERA_JWT_SECRET_ARN", "YMERA_DATABASE_URL_SECRET_ARN", "YMERA_REDIS_URL_SECRET_ARN",
                "YMERA_QUEUE_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    applied = apply_chalice_config_env(ROOT)
    assert "YMERA_QUEUE_PREFIX" in applied
    assert not [name for name in applied if name.endswith("_SECRET_ARN")]
    assert "YMERA_DATABASE_URL_SECRET_ARN" not in os.environ


def test_only_the_notifier_may_post_to_websocket_connections_and_only_on_its_api(template: dict[str, Any]) -> None:
    """execute-api:ManageConnections on the stage's WebSocket API (a parameter: Chalice deploys it after this
    stack), nothing when it is not given; the management URL reaches the notifier the same way."""
    assert template["Parameters"]["WebSocketApiId"]["Default"] == ""
    for spec in manifest.functions():
        role = template["Resources"][logical_id(spec.name, "Role")]
        raw = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
        manage = [s["Fn::If"] for s in raw if "Fn::If" in s and s["Fn::If"][0] == "HasWebSocketApi"]
        env = template["Resources"][logical_id(spec.name, "Function")]["Properties"]["Environment"]["Variables"]
        if spec.name == "notifier":
            assert len(manage) == 1 and manage[0][2] == {"Ref": "AWS::NoValue"}
            assert _actions(manage[0][1]) == ["execute-api:ManageConnections"]
            assert manage[0][1]["Resource"][0]["Fn::Sub"].endswith(":${WebSocketApiId}/*/*/@connections/*")
            assert "YMERA_WEBSOCKET_MANAGEMENT_URL" in env
        else:
            assert manage == [] and "YMERA_WEBSOCKET_MANAGEMENT_URL" not in env
