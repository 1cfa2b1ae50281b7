"""`make deploy` / `make destroy`: one stage of YMERA on AWS, in order, idempotently.

    python -m infra.deploy deploy  --stage dev [--region R] [--bucket B] [--dry-run --endpoint-url URL]
    python -m infra.deploy destroy --stage dev [--delete-bucket] [--delete-secrets]

deploy: artifact bucket -> functions bundle (content-hash key) -> secrets -> template to S3 -> stack
(create/update, wait) -> migrate Lambda (stops on failure) -> API policy -> chalice deploy with the stack's
outputs -> gateway responses -> URLs. destroy: the reverse. `--dry-run` needs `--endpoint-url` (the
embedded emulator, LocalStack): moto's CloudFormation cannot run Lambda, so the dry run creates the bucket,
the secrets and the non-Lambda resources (queues, DLQs, topic) with infra.bootstrap and skips the stack,
the migration and chalice, saying so. Secret values are never printed. docs/deploy.md has the details.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import artifacts, manifest, stack, stage_secrets

ROOT = Path(__file__).resolve().parents[1]
APP = "ymera"


class DeployError(RuntimeError):
    """The deploy stopped; the message says at which step and why."""


@dataclass
class Target:
    stage: str
    region: str
    bucket: str | None = None
    endpoint_url: str | None = None
    arch: str = "x86_64"
    subnet_ids: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)  # extra template parameters (Llm*, Bedrock*)
    bundle: Path | None = None  # a zip built earlier (CI); default: build now
    #: the bucket's deny-unless-TLS policy; off only for an emulator (moto ignores the condition, denies all)
    tls_only_bucket: bool = True

    @property
    def prefix(self) -> str:
        return f"{APP}-{self.stage}"


def clients(target: Target) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=target.region)
    # Migrations can take minutes: wait for the synchronous invoke, and never retry one that timed out.
    invoke = Config(read_timeout=manifest.MIGRATE_TIMEOUT_SECONDS + 60, retries={"max_attempts": 0})
    make = {name: session.client(name, endpoint_url=target.endpoint_url)
            for name in ("sts", "s3", "secretsmanager", "cloudformation", "sqs", "sns", "apigateway", "iam")}
    make["lambda"] = session.client("lambda", endpoint_url=target.endpoint_url, config=invoke)
    return make


def build_bundle(target: Target, *, wheels: bool) -> bytes:
    if target.bundle is not None:
        return target.bundle.read_bytes()
    from infra.build import BuildError, build

    with tempfile.TemporaryDirectory(prefix="ymera-deploy-") as tmp:
        out = Path(tmp) / "functions.zip"
        try:
            build(out, target.arch, ROOT / "requirements.txt", wheels=wheels)
        except BuildError as exc:
            raise DeployError(f"building the functions bundle failed: {exc}") from exc
        return out.read_bytes()


def template_body(stage: str) -> bytes:
    from infra.template import build_template

    return (json.dumps(build_template(stage), indent=1, sort_keys=True) + "\n").encode()


def stack_parameters(target: Target, bucket: str, key: str) -> dict[str, str]:
    return {"Stage": target.stage, "ArtifactBucket": bucket, "ArtifactKey": key, "Architecture": target.arch,
            "SubnetIds": ",".join(target.subnet_ids), "SecurityGroupIds": ",".join(target.security_group_ids),
            **target.parameters}


def previous_websocket_api(s3: Any, bucket: str, stage: str) -> dict[str, str]:
    """The stage's WebSocket API as its last `chalice deploy` recorded it ({"id", "url"}), or {} (first deploy).

    Chalice creates the WebSocket API after this stack, so the stack (the notifier's ManageConnections
    permission and Management API endpoint, template parameter WebSocketApiId) and the API's
    YMERA_WEBSOCKET_URL (`GET /status`) learn it from the previous deploy; a first deploy wires it on the next."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=artifacts.CHALICE_STATE_KEY.format(stage=stage))["Body"].read()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in {"404", "NoSuchKey", "NotFound"}:
            return {}
        raise
    for resource in json.loads(body).get("resources", []):
        if resource.get("resource_type") == "websocket_api" and resource.get("websocket_api_id"):
            return {"id": str(resource["websocket_api_id"]), "url": str(resource.get("websocket_api_url", ""))}
    return {}


def run_migrations(lam: Any, stage: str, out: Callable[[str], None] = print) -> list[str]:
    """Invoke the migrate function synchronously; DeployError on a FunctionError or an unexpected revision."""
    from chalicelib.db.migrate import head_revisions

    name = f"{APP}-{stage}-{manifest.MIGRATE_FUNCTION}"
    answer = lam.invoke(FunctionName=name, InvocationType="RequestResponse", Payload=b"{}")
    payload = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError"):
        kind = payload.get("errorType", "error") if isinstance(payload, dict) else "error"
        message = payload.get("errorMessage", "") if isinstance(payload, dict) else ""
        raise DeployError(f"migration failed in {name} ({kind}: {message}); the API was not updated. "
                          f"Logs: /aws/lambda/{name}")
    revision = sorted(payload.get("revision", [])) if isinstance(payload, dict) else []
    if revision != head_revisions():
        raise DeployError(f"{name} reports revision {revision}, this checkout's head is {head_revisions()}: "
                          "the deployed bundle is not this code")
    out(f"  database at revision {', '.join(revision)} (was {', '.join(payload.get('from') or ['empty'])})")
    return revision


def api_environment(secret_arns: Mapping[str, str], outputs: Mapping[str, str],
                    out: Callable[[str], None] = print) -> dict[str, str]:
    env, unmapped = stack.env_from_outputs(outputs)
    if unmapped:
        out(f"  note: stack outputs not given to the API (no row in infra.stack.OUTPUT_ENV): {', '.join(unmapped)}")
    env.update(secret_arns)
    return env


def write_api_policy(target: Target, account: str) -> Path:
    from infra.api_policy import render

    policy = render(target.stage, target.region, account, vpc=bool(target.subnet_ids and target.security_group_ids))
    path = ROOT / ".chalice" / f"policy-{target.stage}.json"
    path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
    return path


def deploy_api(target: Target, c: Mapping[str, Any], bucket: str, env: Mapping[str, str]) -> dict[str, str]:
    from infra import chalice_api, gateway_responses

    config = chalice_api.chalice_config(target.stage, env)
    size = stack.env_size(config.environment_variables)
    if size > stack.LAMBDA_ENV_LIMIT:
        raise DeployError(f"the API's environment would be {size} bytes; Lambda allows {stack.LAMBDA_ENV_LIMIT}")
    from chalice.deploy.deployer import ChaliceDeploymentError

    artifacts.download_chalice_state(c["s3"], bucket, target.stage, ROOT)
    try:
        urls = chalice_api.deploy(target.stage, env, subnet_ids=target.subnet_ids,
                                  security_group_ids=target.security_group_ids)
    except ChaliceDeploymentError as exc:  # its message names the AWS call that failed and why
        raise DeployError(f"chalice deploy failed (the stack and the migrations are done; re-run): {exc}") from exc
    finally:  # even a half-finished deploy's record: the next run updates those resources, not new ones
        artifacts.upload_chalice_state(c["s3"], bucket, target.stage, ROOT)
    gateway_responses.apply(c["apigateway"], urls["rest_api_id"], config.api_gateway_stage)
    return urls


def deploy(target: Target, *, dry_run: bool = False, environ: Mapping[str, str] = os.environ,
           out: Callable[[str], None] = print, c: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every step in order; returns what it printed at the end (URLs, or the dry run's resources)."""
    c = c or clients(target)
    account = str(c["sts"].get_caller_identity()["Account"])
    bucket = target.bucket or artifacts.bucket_name(target.stage, account, target.region)
    out(f"[1/7] artifact bucket {bucket}")
    created = artifacts.ensure_bucket(c["s3"], bucket, target.region, tls_only=target.tls_only_bucket)
    out(("  created" if created else "  exists (settings converged)")
        + ("" if target.tls_only_bucket else "; no TLS-only policy (emulator)"))
    out("[2/7] functions bundle" + (" (dry run: sources only, no wheels)" if dry_run else ""))
    key, uploaded = artifacts.upload_once(c["s3"], bucket, build_bundle(target, wheels=not dry_run),
                                          f"{target.stage}/functions", ".zip")
    out(f"  s3://{bucket}/{key} " + ("uploaded" if uploaded else "unchanged (already uploaded)"))
    out("[3/7] secrets")
    try:
        arns = stage_secrets.ensure_secrets(c["secretsmanager"], target.stage, environ, out=out)
    except stage_secrets.MissingSecretError as exc:
        raise DeployError(str(exc)) from exc
    out("[4/7] template")
    template_key, _ = artifacts.upload_once(c["s3"], bucket, template_body(target.stage),
                                            f"{target.stage}/templates", ".json")
    out(f"  s3://{bucket}/{template_key}")
    if dry_run:
        return _dry_run_resources(target, c, out)
    out(f"[5/7] stack {target.prefix}")
    websocket_api = previous_websocket_api(c["s3"], bucket, target.stage)
    parameters = stack_parameters(target, bucket, key)
    if websocket_api:
        parameters.setdefault("WebSocketApiId", websocket_api["id"])
    try:
        outputs = stack.deploy_stack(c["cloudformation"], target.prefix,
                                     artifacts.object_url(bucket, template_key, target.region),
                                     parameters, out=out)
    except stack.StackError as exc:
        raise DeployError(str(exc)) from exc
    out("[6/7] database migrations (before the API changes)")
    run_migrations(c["lambda"], target.stage, out)
    out(f"[7/7] API (chalice deploy --stage {target.stage})")
    write_api_policy(target, account)
    env = api_environment(arns, outputs, out)
    if websocket_api.get("url"):
        env.setdefault("YMERA_WEBSOCKET_URL", websocket_api["url"])  # what GET /status reports
    urls = deploy_api(target, c, bucket, env)
    websocket = urls.get("websocket_api_url") or env.get("YMERA_WEBSOCKET_URL")
    if websocket and not websocket_api:
        out("  note: first deploy of the WebSocket API; run the deploy again so the notifier may post to it "
            "(stack parameter WebSocketApiId) and GET /status reports it")
    out("")
    out(f"API        {urls['rest_api_url']}")
    if websocket:
        urls["websocket_url"] = websocket
        out(f"WebSocket  {websocket}")
    out(f"Smoke check: curl {urls['rest_api_url'].rstrip('/')}/health   (more in README, Deploying to AWS)")
    return urls


def _dry_run_resources(target: Target, c: Mapping[str, Any], out: Callable[[str], None]) -> dict[str, str]:
    from infra.bootstrap import bootstrap, ensure_alert_topic, ensure_workflow_role, workflow_role_name

    out("[5/7] stack: skipped (dry run; moto's CloudFormation has no Lambda). Creating its non-Lambda "
        "resources with infra.bootstrap instead:")
    made = bootstrap(c["sqs"], target.prefix)
    made[f"{target.prefix}-alerts"] = ensure_alert_topic(c["sns"], target.prefix)
    made[workflow_role_name(target.prefix)] = ensure_workflow_role(c["iam"], c["sqs"], target.prefix)
    out(f"  {len(made)} queues/topic/workflow role under {target.prefix} (workflow state machines are made per "
        "workflow version at its first run, by the API)")
    out("[6/7] migrations: skipped (dry run; no migrate Lambda)")
    out("[7/7] API: skipped (dry run; chalice deploy needs Lambda and API Gateway)")
    return made


def destroy(target: Target, *, delete_bucket: bool = False, delete_secrets: bool = False, dry_run: bool = False,
            out: Callable[[str], None] = print, c: Mapping[str, Any] | None = None) -> None:
    from infra import chalice_api

    c = c or clients(target)
    account = str(c["sts"].get_caller_identity()["Account"])
    bucket = target.bucket or artifacts.bucket_name(target.stage, account, target.region)
    have_bucket = artifacts.bucket_exists(c["s3"], bucket)
    if dry_run:
        out("[1/4] API and [2/4] stack: skipped (dry run)")
    else:
        out(f"[1/4] API (chalice delete --stage {target.stage})")
        if have_bucket:
            artifacts.download_chalice_state(c["s3"], bucket, target.stage, ROOT)
        if chalice_api.delete(target.stage):
            if have_bucket:
                artifacts.delete_chalice_state(c["s3"], bucket, target.stage)
        else:
            out("  no deployment recorded")
        out(f"[2/4] stack {target.prefix}")
        try:
            out("  deleted" if stack.delete_stack(c["cloudformation"], target.prefix) else "  no stack")
        except stack.StackError as exc:
            raise DeployError(str(exc)) from exc
        out(f"  kept (DeletionPolicy Retain): the queues and DLQs {target.prefix}-* and the alert topic's KMS key")
    out("[3/4] secrets")
    if delete_secrets:
        stage_secrets.delete_secrets(c["secretsmanager"], target.stage, out=out)
    else:
        out(f"  kept: {APP}/{target.stage}/* (--delete-secrets removes them)")
    out(f"[4/4] artifact bucket {bucket}")
    if delete_bucket and have_bucket:
        out(f"  deleted ({artifacts.empty_and_delete_bucket(c['s3'], bucket)} object versions)")
    else:
        out("  kept (--delete-bucket empties and deletes it)" if have_bucket else "  none")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "destroy"])
    parser.add_argument("--stage", required=True, help="dev, prod, ... (names become ymera-<stage>-...)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--bucket", help="artifact bucket (default ymera-<stage>-artifacts-<account>-<region>)")
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    parser.add_argument("--dry-run", action="store_true", help="against --endpoint-url: no stack, no chalice")
    parser.add_argument("--arch", choices=["x86_64", "arm64"], default="x86_64")
    parser.add_argument("--bundle", type=Path, help="a functions.zip built earlier (default: build it now)")
    parser.add_argument("--subnet-ids", type=_csv, default=_csv(os.environ.get("YMERA_SUBNET_IDS", "")))
    parser.add_argument("--security-group-ids", type=_csv,
                        default=_csv(os.environ.get("YMERA_SECURITY_GROUP_IDS", "")))
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="another template parameter (LlmProvider=bedrock, BedrockModelArns=...)")
    parser.add_argument("--delete-bucket", action="store_true", help="destroy: empty and delete the bucket")
    parser.add_argument("--delete-secrets", action="store_true", help="destroy: schedule the secrets' deletion")
    args = parser.parse_args(argv)
    if not args.region:
        parser.error("--region (or AWS_DEFAULT_REGION / AWS_REGION) is required")
    if args.dry_run and not args.endpoint_url:
        parser.error("--dry-run needs --endpoint-url: on AWS it would create queues outside the stack")
    if bool(args.subnet_ids) != bool(args.security_group_ids):
        parser.error("give both --subnet-ids and --security-group-ids (or neither)")
    bad = [p for p in args.parameter if "=" not in p]
    if bad:
        parser.error(f"--parameter takes KEY=VALUE, not {bad[0]!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    target = Target(stage=args.stage, region=args.region, bucket=args.bucket, endpoint_url=args.endpoint_url,
                    arch=args.arch, subnet_ids=args.subnet_ids, security_group_ids=args.security_group_ids,
                    parameters=dict(p.split("=", 1) for p in args.parameter), bundle=args.bundle,
                    tls_only_bucket=not (args.endpoint_url or "").startswith("http://"))
    if args.endpoint_url and not args.dry_run:  # chalice makes its own botocore session; it reads the variable
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    try:
        if args.command == "deploy":
            deploy(target, dry_run=args.dry_run)
        else:
            destroy(target, delete_bucket=args.delete_bucket, delete_secrets=args.delete_secrets,
                    dry_run=args.dry_run)
    except (DeployError, artifacts.ArtifactError) as exc:
        print(f"\n{args.command.upper()} STOPPED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
