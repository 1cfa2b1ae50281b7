"""`make deploy` / `make destroy` (infra/deploy.py and its steps) against moto: no real AWS anywhere."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, WaiterError

from infra import artifacts, deploy, manifest, stack, stage_secrets
from infra.template import build_template

REGION = "us-east-1"
DB_URL = "postgresql+psycopg://ymera:db-pass-f00d@db.internal:5432/ymera?sslmode=require"
REDIS_URL = "rediss://:redis-pass-beef@cache.internal:6379/0"
ENV = {"DATABASE_URL": DB_URL, "REDIS_URL": REDIS_URL}
BUCKET = "ymera-test-artifacts"


def _secret_values(sm: Any, stage: str) -> list[str]:
    return [sm.get_secret_value(SecretId=stage_secrets.secret_id(stage, s.name))["SecretString"]
            for s in stage_secrets.SECRETS]


def _assert_no_secret_in(text: str, values: list[str]) -> None:
    """No 12-character piece of any secret value (a prefix, the password, the key) appears in `text`."""
    for value in values:
        for start in range(max(1, len(value) - 11)):
            assert value[start:start + 12] not in text, "a piece of a secret value was printed"


# --- artifact bucket --------------------------------------------------------------------------------------------


def test_the_bucket_is_created_once_versioned_private_and_tls_only(aws_clients: dict[str, Any]) -> None:
    s3 = aws_clients["s3"]
    name = artifacts.bucket_name("dev", "123456789012", REGION)
    assert name == "ymera-dev-artifacts-123456789012-us-east-1"
    assert artifacts.ensure_bucket(s3, name, REGION) is True
    assert artifacts.ensure_bucket(s3, name, REGION) is False  # idempotent
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_a_bucket_outside_us_east_1_gets_its_location(aws_clients: dict[str, Any]) -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    artifacts.ensure_bucket(s3, "ymera-dev-artifacts-x-eu-west-1", "eu-west-1")
    assert s3.get_bucket_location(Bucket="ymera-dev-artifacts-x-eu-west-1")["LocationConstraint"] == "eu-west-1"


def test_an_unchanged_artifact_keeps_its_key_and_is_not_uploaded_again(aws_clients: dict[str, Any]) -> None:
    s3 = aws_clients["s3"]
    artifacts.ensure_bucket(s3, BUCKET, REGION, tls_only=False)
    first = artifacts.upload_once(s3, BUCKET, b"zip bytes", "dev/functions", ".zip")
    again = artifacts.upload_once(s3, BUCKET, b"zip bytes", "dev/functions", ".zip")
    changed = artifacts.upload_once(s3, BUCKET, b"other bytes", "dev/functions", ".zip")
    assert first[1] is True and again == (first[0], False)
    assert changed[0] != first[0] and changed[1] is True
    assert re.fullmatch(r"dev/functions/[0-9a-f]{64}\.zip", first[0])


def test_deleting_the_bucket_removes_every_version_first(aws_clients: dict[str, Any]) -> None:
    s3 = aws_clients["s3"]
    artifacts.ensure_bucket(s3, BUCKET, REGION, tls_only=False)
    for body in (b"1", b"2", b"3"):
        s3.put_object(Bucket=BUCKET, Key="same-key", Body=body)
    s3.delete_object(Bucket=BUCKET, Key="same-key")  # a delete marker
    assert artifacts.empty_and_delete_bucket(s3, BUCKET) == 4
    assert not artifacts.bucket_exists(s3, BUCKET)
    assert artifacts.empty_and_delete_bucket(s3, BUCKET) == 0


# --- secrets ----------------------------------------------------------------------------------------------------


def test_a_first_deploy_without_the_data_store_urls_stops_naming_the_variables(aws_clients: dict[str, Any]) -> None:
    with pytest.raises(stage_secrets.MissingSecretError) as caught:
        stage_secrets.ensure_secrets(aws_clients["secretsmanager"], "dev", {"REDIS_URL": REDIS_URL})
    assert "DATABASE_URL" in str(caught.value) and "ymera/dev/database" in str(caught.value)
    assert "REDIS_URL" not in str(caught.value)
    assert aws_clients["secretsmanager"].list_secrets()["SecretList"] == []  # nothing half-created


def test_secrets_are_created_generated_kept_and_never_printed(aws_clients: dict[str, Any]) -> None:
    sm = aws_clients["secretsmanager"]
    printed: list[str] = []
    arns = stage_secrets.ensure_secrets(sm, "dev", ENV, out=printed.append)
    assert set(arns) == {"YMERA_JWT_SECRET_ARN", "YMERA_DATABASE_URL_SECRET_ARN", "YMERA_REDIS_URL_SECRET_ARN",
                         "YMERA_PROVIDER_KEY_ENCRYPTION_KEY_SECRET_ARN"}
    assert all(arn.startswith("arn:aws:secretsmanager:us-east-1:") for arn in arns.values())
    jwt, database, redis, aes = _secret_values(sm, "dev")
    assert len(jwt) >= 64 and json.loads(database) == {"url": DB_URL} and json.loads(redis) == {"url": REDIS_URL}
    import base64

    assert len(base64.b64decode(aes)) == 32
    # Again, without the URLs: everything kept, the generated keys unchanged.
    again = stage_secrets.ensure_secrets(sm, "dev", {}, out=printed.append)
    assert again == arns and _secret_values(sm, "dev") == [jwt, database, redis, aes]
    _assert_no_secret_in("\n".join(printed), [jwt, DB_URL, REDIS_URL, aes])


def test_a_given_url_replaces_the_stored_one(aws_clients: dict[str, Any]) -> None:
    sm = aws_clients["secretsmanager"]
    stage_secrets.ensure_secrets(sm, "dev", ENV, out=lambda _: None)
    moved = DB_URL.replace("db.internal", "db2.internal")
    stage_secrets.ensure_secrets(sm, "dev", {"DATABASE_URL": moved}, out=lambda _: None)
    assert json.loads(_secret_values(sm, "dev")[1]) == {"url": moved}


def test_the_stored_secrets_are_what_the_platform_reads(aws_clients: dict[str, Any]) -> None:
    from chalicelib.auth.secrets import load_database_url, load_jwt_secret, load_redis_url
    from chalicelib.config import Settings

    arns = stage_secrets.ensure_secrets(aws_clients["secretsmanager"], "dev", ENV, out=lambda _: None)
    settings = Settings(stage="dev", jwt_secret_arn=arns["YMERA_JWT_SECRET_ARN"],
                        database_url_secret_arn=arns["YMERA_DATABASE_URL_SECRET_ARN"],
                        redis_url_secret_arn=arns["YMERA_REDIS_URL_SECRET_ARN"])
    client = aws_clients["secretsmanager"]
    assert load_database_url(settings, client) == DB_URL
    assert load_redis_url(settings, client) == REDIS_URL
    assert len(load_jwt_secret(settings, client)) >= 64


# --- stack outputs -> the API's environment ---------------------------------------------------------------------


def test_every_output_of_the_template_has_a_row_in_the_output_table() -> None:
    """A new Output (the workflow resources, a WebSocket API) needs a row in infra.stack.OUTPUT_ENV."""
    outputs = {key: f"value-of-{key}" for key in build_template("dev")["Outputs"]}
    env, unmapped = stack.env_from_outputs(outputs)
    assert unmapped == []
    # queues are found by name; the workflow role is what the API hands its state machines
    assert env == {"YMERA_ALERT_TOPIC_ARN": "value-of-AlertTopicArn",
                   "YMERA_WORKFLOW_ROLE_ARN": "value-of-WorkflowRoleArn"}


def test_outputs_map_generically_by_pattern() -> None:
    env, unmapped = stack.env_from_outputs({
        "TaskWorkflowStateMachineArn": "arn:sm", "StateMachineExecutionRoleArn": "arn:role",
        "WebSocketUrl": "wss://x", "WorkflowControlQueueUrl": "https://q", "SomethingNew": "?"})
    assert env == {"YMERA_TASK_WORKFLOW_STATE_MACHINE_ARN": "arn:sm",
                   "YMERA_STATE_MACHINE_EXECUTION_ROLE_ARN": "arn:role", "YMERA_WEBSOCKET_URL": "wss://x"}
    assert unmapped == ["SomethingNew"]


def test_the_apis_environment_fits_lambdas_4_kb() -> None:
    from infra.chalice_api import chalice_config

    arns = {s.setting: f"arn:aws:secretsmanager:eu-central-1:123456789012:secret:ymera/prod/{s.name}-AbCdEf"
            for s in stage_secrets.SECRETS}
    outputs = {key: f"arn:aws:sqs:eu-central-1:123456789012:{key}" for key in build_template("prod")["Outputs"]}
    env = deploy.api_environment(arns, outputs, out=lambda _: None)
    config = chalice_config("prod", env)
    assert config.environment_variables["YMERA_JWT_SECRET_ARN"] == arns["YMERA_JWT_SECRET_ARN"]
    assert stack.env_size(config.environment_variables) < stack.LAMBDA_ENV_LIMIT / 2


def test_chalice_gets_the_environment_and_vpc_without_touching_config_json() -> None:
    from infra.chalice_api import ROOT, chalice_config

    before = (ROOT / ".chalice" / "config.json").read_bytes()
    config = chalice_config("dev", {"YMERA_ALERT_TOPIC_ARN": "arn:topic", "YMERA_JWT_SECRET_ARN": "arn:jwt"},
                            subnet_ids=["subnet-1"], security_group_ids=["sg-1"])
    assert config.environment_variables["YMERA_ALERT_TOPIC_ARN"] == "arn:topic"
    assert config.environment_variables["YMERA_JWT_SECRET_ARN"] == "arn:jwt"  # over the committed name
    assert config.environment_variables["YMERA_QUEUE_PREFIX"] == "ymera-dev"  # the stage's own stay
    assert (config.subnet_ids, config.security_group_ids) == (["subnet-1"], ["sg-1"])
    assert (ROOT / ".chalice" / "config.json").read_bytes() == before


# --- the stack: create, no-op update, failure report (moto's CloudFormation, a template it can run) -------------

SMALL = {"AWSTemplateFormatVersion": "2010-09-09",
         "Parameters": {"Stage": {"Type": "String"}},
         "Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::Sub": "ymera-${Stage}-q"}}}},
         "Outputs": {"QQueueUrl": {"Value": {"Ref": "Q"}}}}


def _upload(s3: Any, template: dict[str, Any]) -> str:
    artifacts.ensure_bucket(s3, BUCKET, REGION, tls_only=False)
    key, _ = artifacts.upload_once(s3, BUCKET, json.dumps(template).encode(), "t", ".json")
    return artifacts.object_url(BUCKET, key, REGION)


def test_the_stack_is_created_from_s3_and_an_unchanged_redeploy_is_a_no_op(aws_clients: dict[str, Any]) -> None:
    cfn, printed = aws_clients["cloudformation"], []
    url = _upload(aws_clients["s3"], SMALL)
    outputs = stack.deploy_stack(cfn, "ymera-dev", url, {"Stage": "dev"}, out=printed.append, delay=1)
    assert outputs["QQueueUrl"].endswith("/ymera-dev-q")
    assert stack.deploy_stack(cfn, "ymera-dev", url, {"Stage": "dev"}, out=printed.append, delay=1) == outputs
    assert printed[0].endswith("creating") and printed[-1].endswith("no changes")
    assert stack.delete_stack(cfn, "ymera-dev", delay=1) is True
    assert stack.stack_status(cfn, "ymera-dev") is None
    assert stack.delete_stack(cfn, "ymera-dev", delay=1) is False


class _FailingCfn:
    """A stack whose update rolls back: moto's CloudFormation does not roll back, so this plays AWS's part."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.status = "UPDATE_COMPLETE"

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"Stacks": [{"StackStatus": self.status, "Parameters": [{"ParameterKey": "LlmProvider"}]}]}

    def update_stack(self, **kwargs: Any) -> None:
        self.calls.append("update")
        self.kwargs = kwargs
        self.status = "UPDATE_ROLLBACK_COMPLETE"

    def get_waiter(self, name: str) -> Any:
        class Waiter:
            def wait(self, **_: Any) -> None:
                raise WaiterError(name, "Waiter encountered a terminal failure state", {})
        return Waiter()

    def get_paginator(self, name: str) -> Any:
        now = datetime.now(timezone.utc)

        class Pages:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                return [{"StackEvents": [
                    {"LogicalResourceId": "ymera-dev", "ResourceStatus": "UPDATE_ROLLBACK_COMPLETE", "Timestamp": now},
                    {"LogicalResourceId": "MigrateFunction", "ResourceType": "AWS::Lambda::Function",
                     "ResourceStatus": "UPDATE_FAILED", "ResourceStatusReason": "Resource handler returned "
                     "message: \"Unzipped size must be smaller than 262144000 bytes\"", "Timestamp": now},
                ]}]
        return Pages()


def test_a_rolled_back_update_stops_with_the_failed_resources_and_keeps_other_parameters() -> None:
    cfn = _FailingCfn()
    with pytest.raises(stack.StackError) as caught:
        stack.deploy_stack(cfn, "ymera-dev", "https://b.s3.us-east-1.amazonaws.com/t.json", {"Stage": "dev"},
                           out=lambda _: None)
    assert "UPDATE_ROLLBACK_COMPLETE" in str(caught.value)
    assert "MigrateFunction (AWS::Lambda::Function) UPDATE_FAILED: Resource handler" in str(caught.value)
    assert cfn.kwargs["Capabilities"] == ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"] and "TemplateBody" not in cfn.kwargs
    assert {"ParameterKey": "LlmProvider", "UsePreviousValue": True} in cfn.kwargs["Parameters"]


def test_a_busy_stack_is_not_touched() -> None:
    cfn = _FailingCfn()
    cfn.status = "UPDATE_IN_PROGRESS"
    with pytest.raises(stack.StackError, match="UPDATE_IN_PROGRESS"):
        stack.deploy_stack(cfn, "ymera-dev", "u", {}, out=lambda _: None)
    assert cfn.calls == []


def test_the_real_template_is_over_the_inline_limit_so_it_goes_through_s3() -> None:
    assert len(deploy.template_body("dev")) > 51_200
    assert deploy.template_body("dev") == deploy.template_body("dev")  # same template -> same S3 key


# --- migrations -------------------------------------------------------------------------------------------------


class _Lambda:
    def __init__(self, payload: Any, error: str | None = None) -> None:
        self.payload, self.error, self.invoked = payload, error, []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        import io

        self.invoked.append(kwargs)
        answer: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.payload).encode())}
        if self.error:
            answer["FunctionError"] = self.error
        return answer


def test_migrations_run_synchronously_and_report_the_revision() -> None:
    from chalicelib.db.migrate import head_revisions

    lam, printed = _Lambda({"from": [], "revision": head_revisions(), "heads": head_revisions()}), []
    assert deploy.run_migrations(lam, "dev", printed.append) == head_revisions()
    assert lam.invoked == [{"FunctionName": "ymera-dev-migrate", "InvocationType": "RequestResponse",
                            "Payload": b"{}"}]
    assert "was empty" in printed[0]


@pytest.mark.parametrize(("payload", "error", "message"), [
    ({"errorType": "OperationalError", "errorMessage": "connection timed out"}, "Unhandled",
     "migration failed .*OperationalError: connection timed out.*API was not updated"),
    ({"from": [], "revision": ["0001_old"], "heads": ["0001_old"]}, None, "not this code"),
])
def test_a_failed_migration_stops_the_deploy(payload: Any, error: str | None, message: str) -> None:
    with pytest.raises(deploy.DeployError, match=message):
        deploy.run_migrations(_Lambda(payload, error), "dev", lambda _: None)


def test_the_manifest_has_a_migrate_function_the_template_deploys() -> None:
    spec = next(f for f in manifest.functions() if f.name == manifest.MIGRATE_FUNCTION)
    assert spec.handler == "functions.migrate.handler" and spec.queue is None and spec.schedule is None
    fn = build_template("dev")["Resources"]["MigrateFunction"]["Properties"]
    assert fn["Timeout"] == manifest.MIGRATE_TIMEOUT_SECONDS <= 900
    assert "YMERA_DATABASE_URL_SECRET_ARN" in fn["Environment"]["Variables"]


def test_the_migrate_handler_brings_a_database_to_head(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against this machine's Postgres: the session database is already at head, so from == revision."""
    from chalicelib.config import get_settings
    from chalicelib.db.migrate import head_revisions

    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("YMERA_STAGE", "test")
    monkeypatch.delenv("YMERA_DATABASE_URL_SECRET_ARN", raising=False)
    get_settings.cache_clear()
    try:
        from functions.migrate import handler

        result = handler({}, _Context())
    finally:
        get_settings.cache_clear()
    assert result["revision"] == result["heads"] == head_revisions() == result["from"]


class _Context:
    function_name = "ymera-test-migrate"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ymera-test-migrate"
    aws_request_id = "req-1"


# --- the whole deploy, in order ---------------------------------------------------------------------------------


def _target(tmp_path: Path) -> deploy.Target:
    bundle = tmp_path / "functions.zip"
    bundle.write_bytes(b"PK fake bundle")
    return deploy.Target(stage="dev", region=REGION, bundle=bundle, tls_only_bucket=False)  # moto: see artifacts


def test_migrations_run_before_the_api_and_a_failure_leaves_the_api_alone(
        aws_clients: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    monkeypatch.setattr(stack, "deploy_stack", lambda *a, **k: steps.append("stack") or {"AlertTopicArn": "arn:t"})

    def migrate(*_: Any) -> list[str]:
        steps.append("migrate")
        raise deploy.DeployError("migration failed in ymera-dev-migrate")

    monkeypatch.setattr(deploy, "run_migrations", migrate)
    monkeypatch.setattr(deploy, "deploy_api", lambda *a: steps.append("api") or {})
    with pytest.raises(deploy.DeployError, match="migration failed"):
        deploy.deploy(_target(tmp_path), environ=ENV, out=lambda _: None, c=aws_clients)
    assert steps == ["stack", "migrate"]


def test_a_full_deploy_wires_outputs_and_secrets_into_the_api_and_prints_its_url(
        aws_clients: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_stack(cfn: Any, name: str, url: str, params: dict[str, str], **_: Any) -> dict[str, str]:
        seen.update(name=name, url=url, params=params)
        return {"AlertTopicArn": "arn:topic", "AgentLlmQueueUrl": "https://q"}

    monkeypatch.setattr(stack, "deploy_stack", fake_stack)
    monkeypatch.setattr(deploy, "run_migrations", lambda *a: ["head"])
    monkeypatch.setattr(deploy, "write_api_policy", lambda *a: tmp_path / "policy.json")
    url = "https://abc123.execute-api.us-east-1.amazonaws.com/api/"
    monkeypatch.setattr(deploy, "deploy_api",
                        lambda t, c, b, env: seen.update(env=env) or {"rest_api_id": "abc123", "rest_api_url": url})
    printed: list[str] = []
    deploy.deploy(_target(tmp_path), environ=ENV, out=printed.append, c=aws_clients)
    bucket = "ymera-dev-artifacts-123456789012-us-east-1"
    assert seen["name"] == "ymera-dev"
    assert seen["url"].startswith(f"https://{bucket}.s3.us-east-1.amazonaws.com/dev/templates/")
    assert seen["params"]["ArtifactBucket"] == bucket and seen["params"]["ArtifactKey"].startswith("dev/functions/")
    assert seen["env"]["YMERA_ALERT_TOPIC_ARN"] == "arn:topic"
    assert seen["env"]["YMERA_JWT_SECRET_ARN"].startswith("arn:aws:secretsmanager:")
    assert f"API        {url}" in printed
    _assert_no_secret_in("\n".join(printed), [*_secret_values(aws_clients["secretsmanager"], "dev"), DB_URL])


def test_a_redeploy_wires_the_previous_websocket_api_into_the_stack_and_the_api(
        aws_clients: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chalice creates the WebSocket API after the stack: the first deploy says to deploy again; the next one
    passes its id to the stack (the notifier's permission and endpoint) and its URL to the API (GET /status)."""
    from infra import artifacts

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(stack, "deploy_stack", lambda cfn, name, url, params, **_: seen.append(
        {"params": params}) or {"AlertTopicArn": "arn:topic"})
    monkeypatch.setattr(deploy, "run_migrations", lambda *a: ["head"])
    monkeypatch.setattr(deploy, "write_api_policy", lambda *a: tmp_path / "policy.json")
    wss = "wss://ws123.execute-api.us-east-1.amazonaws.com/api/"
    urls = {"rest_api_id": "abc", "rest_api_url": "https://abc.execute-api.us-east-1.amazonaws.com/api/",
            "websocket_api_url": wss}
    monkeypatch.setattr(deploy, "deploy_api", lambda t, c, b, env: seen[-1].update(env=env) or dict(urls))
    printed: list[str] = []
    deploy.deploy(_target(tmp_path), environ=ENV, out=printed.append, c=aws_clients)
    assert "WebSocketApiId" not in seen[0]["params"] and "YMERA_WEBSOCKET_URL" not in seen[0]["env"]
    assert any("run the deploy again" in line for line in printed)

    bucket = "ymera-dev-artifacts-123456789012-us-east-1"  # what chalice recorded (infra.artifacts keeps it)
    aws_clients["s3"].put_object(Bucket=bucket, Key=artifacts.CHALICE_STATE_KEY.format(stage="dev"), Body=json.dumps(
        {"resources": [{"resource_type": "websocket_api", "websocket_api_id": "ws123", "websocket_api_url": wss}]}))
    printed.clear()
    deploy.deploy(_target(tmp_path), environ=ENV, out=printed.append, c=aws_clients)
    assert seen[1]["params"]["WebSocketApiId"] == "ws123"
    assert seen[1]["env"]["YMERA_WEBSOCKET_URL"] == wss
    assert f"WebSocket  {wss}" in printed and not any("run the deploy again" in line for line in printed)


# --- the dry run against the embedded emulator (moto server), through the CLI -----------------------------------


def test_the_dry_run_creates_bucket_secrets_queues_topic_and_workflow_role_and_skips_the_rest(
        moto_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    argv = ["deploy", "--stage", "dev", "--dry-run", "--endpoint-url", moto_server]
    assert deploy.main(argv) == 0
    first = capsys.readouterr().out
    assert deploy.main(argv) == 0  # idempotent
    second = capsys.readouterr().out

    def client(name: str) -> Any:
        return boto3.client(name, region_name=REGION, endpoint_url=moto_server)

    bucket = "ymera-dev-artifacts-123456789012-us-east-1"
    assert [b["Name"] for b in client("s3").list_buckets()["Buckets"]] == [bucket]
    keys = [o["Key"] for o in client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert len([k for k in keys if k.startswith("dev/functions/")]) == 1  # same bundle -> same key
    assert "unchanged (already uploaded)" in second
    names = sorted(s["Name"] for s in client("secretsmanager").list_secrets()["SecretList"])
    assert names == sorted(f"ymera/dev/{s.name}" for s in stage_secrets.SECRETS)
    queues = client("sqs").list_queues(QueueNamePrefix="ymera-dev")["QueueUrls"]
    assert len(queues) == len(manifest.queues()) + len([q for q in manifest.queues() if q.owns_dlq])  # lanes share DLQs
    assert [t["TopicArn"].rsplit(":", 1)[1] for t in client("sns").list_topics()["Topics"]] == ["ymera-dev-alerts"]
    role = client("iam").get_role(RoleName="ymera-dev-workflow-role")["Role"]
    assert "states.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])
    assert "stack: skipped (dry run" in first and "API: skipped (dry run" in first
    _assert_no_secret_in(first + second, [*_secret_values(client("secretsmanager"), "dev"), DB_URL, REDIS_URL])

    destroy = ["destroy", "--stage", "dev", "--dry-run", "--endpoint-url", moto_server]
    assert deploy.main([*destroy, "--delete-bucket", "--delete-secrets"]) == 0
    assert client("s3").list_buckets()["Buckets"] == []
    with pytest.raises(ClientError):
        client("secretsmanager").get_secret_value(SecretId="ymera/dev/jwt")  # scheduled for deletion


def test_the_first_dry_run_without_database_url_stops_with_a_clear_message(
        moto_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy.main(["deploy", "--stage", "dev", "--dry-run", "--endpoint-url", moto_server]) == 1
    err = capsys.readouterr().err
    assert "DEPLOY STOPPED: set DATABASE_URL (for ymera/dev/database), REDIS_URL (for ymera/dev/redis)" in err


def test_a_dry_run_needs_an_emulator(aws_env: None) -> None:
    with pytest.raises(SystemExit):
        deploy.parse(["deploy", "--stage", "dev", "--dry-run"])
    with pytest.raises(SystemExit):
        deploy.parse(["deploy", "--stage", "dev", "--subnet-ids", "subnet-1"])  # security groups missing


class _ApiGateway:
    def __init__(self) -> None:
        self.responses: list[str] = []
        self.deployments: list[dict[str, Any]] = []

    def put_gateway_response(self, **kwargs: Any) -> None:
        self.responses.append(kwargs["responseType"])

    def create_deployment(self, **kwargs: Any) -> None:
        self.deployments.append(kwargs)


def test_the_api_step_keeps_chalices_state_in_the_bucket_and_applies_gateway_responses(
        aws_clients: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra import chalice_api

    project = tmp_path / "project"
    monkeypatch.setattr(deploy, "ROOT", project)
    s3 = aws_clients["s3"]
    artifacts.ensure_bucket(s3, BUCKET, REGION, tls_only=False)
    s3.put_object(Bucket=BUCKET, Key="chalice/deployed/dev.json", Body=b'{"resources": ["earlier"]}')

    def fake_chalice_deploy(stage: str, env: dict[str, str], **_: Any) -> dict[str, str]:
        state = project / ".chalice" / "deployed" / "dev.json"
        assert state.read_bytes() == b'{"resources": ["earlier"]}'  # chalice updates the API it made before
        state.write_bytes(b'{"resources": ["now"]}')
        return {"rest_api_id": "abc123", "rest_api_url": "https://abc123.example/api/"}

    monkeypatch.setattr(chalice_api, "deploy", fake_chalice_deploy)
    gateway = _ApiGateway()
    urls = deploy.deploy_api(_target(tmp_path), {"s3": s3, "apigateway": gateway}, BUCKET, {"YMERA_X": "1"})
    assert urls["rest_api_id"] == "abc123"
    assert s3.get_object(Bucket=BUCKET, Key="chalice/deployed/dev.json")["Body"].read() == b'{"resources": ["now"]}'
    assert "MISSING_AUTHENTICATION_TOKEN" in gateway.responses
    assert gateway.deployments == [{"restApiId": "abc123", "stageName": "api",
                                    "description": "gateway responses in the YMERA error envelope"}]


def test_an_environment_over_lambdas_limit_stops_before_chalice(aws_clients: dict[str, Any], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from infra import chalice_api

    monkeypatch.setattr(chalice_api, "deploy", lambda *a, **k: pytest.fail("chalice must not run"))
    with pytest.raises(deploy.DeployError, match="Lambda allows 4096"):
        deploy.deploy_api(_target(tmp_path), aws_clients, BUCKET, {"YMERA_BIG": "x" * 5000})
