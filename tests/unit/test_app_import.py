"""`chalice deploy` imports app.py with no runtime configuration; a Lambda cold start must refuse a bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRUB = {"DATABASE_URL", "REDIS_URL", "YMERA_JWT_SECRET", "YMERA_STAGE", "AWS_LAMBDA_FUNCTION_NAME",
         "YMERA_CHECK_SETTINGS_AT_IMPORT"}


def import_app(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SCRUB}
    return subprocess.run([sys.executable, "-c", "import app; print(len(app.app.routes))"], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_deploy_tooling_can_import_the_app_without_configuration() -> None:
    result = import_app()
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 6


def test_a_lambda_cold_start_with_a_short_secret_outside_development_fails() -> None:
    result = import_app(AWS_LAMBDA_FUNCTION_NAME="ymera-api", DATABASE_URL="sqlite://", YMERA_STAGE="prod",
                        YMERA_JWT_SECRET="too-short")
    assert result.returncode != 0
    assert "YMERA_JWT_SECRET must be at least 32 bytes" in result.stderr


def test_a_lambda_cold_start_with_good_settings_imports() -> None:
    result = import_app(AWS_LAMBDA_FUNCTION_NAME="ymera-api", DATABASE_URL="sqlite://", YMERA_STAGE="prod",
                        YMERA_JWT_SECRET="s" * 40)
    assert result.returncode == 0, result.stderr


def test_the_api_cold_start_requires_a_token_secret() -> None:
    result = import_app(AWS_LAMBDA_FUNCTION_NAME="ymera-api", DATABASE_URL="sqlite://", YMERA_STAGE="prod")
    assert result.returncode != 0
    assert "YMERA_JWT_SECRET or YMERA_JWT_SECRET_ARN is required" in result.stderr


def test_consumers_and_schedules_start_without_a_token_secret() -> None:
    """The CloudFormation functions get no JWT secret: they never sign or verify tokens."""
    clean = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env = {**clean, "AWS_LAMBDA_FUNCTION_NAME": "ymera-prod-agent-validation", "DATABASE_URL": "sqlite://",
           "YMERA_STAGE": "prod"}
    code = ("from chalicelib.config import get_settings; import functions.agent_consumer, functions.outbox_relay;"
            " print(get_settings().stage)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "prod"


def test_a_lambda_cold_start_builds_the_sqs_client_the_first_post_publishes_with() -> None:
    """The client is built in the init phase (boto3 loads the SQS service model), not by the first POST /tasks;
    deploy tooling, with no runtime configuration, builds nothing."""
    probe = ("import app; from chalicelib import container; c = container._container; "
             "print(c is not None and 'publisher' in c.__dict__ and c.publisher._client is not None)")
    clean = {k: v for k, v in os.environ.items() if k not in SCRUB}
    lambda_env = {"AWS_LAMBDA_FUNCTION_NAME": "ymera-api", "DATABASE_URL": "sqlite://", "YMERA_STAGE": "prod",
                  "YMERA_JWT_SECRET": "s" * 40, "AWS_DEFAULT_REGION": "us-east-1"}
    for env, built in ((lambda_env, "True"), ({}, "False")):
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**clean, **env},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == built, (env, result.stdout)
