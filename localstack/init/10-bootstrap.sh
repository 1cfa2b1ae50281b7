#!/bin/bash
# LocalStack ready.d hook: create YMERA's queues, DLQs, alert topic and workflow role from infra/manifest.py
# (the stack minus its Lambdas, which `make run`'s runner replaces). Runs inside the LocalStack container once its services are up.
set -euo pipefail

cd /opt/ymera
export PYTHONPATH=/opt/ymera
export PYTHONDONTWRITEBYTECODE=1  # /opt/ymera/infra is mounted read-only
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

# LocalStack's own virtualenv has boto3; the image's system python3 may not.
PATH="/opt/code/localstack/.venv/bin:${PATH}"

python3 -m infra.bootstrap --prefix ymera-dev --endpoint-url http://localhost:4566
