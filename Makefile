# YMERA developer commands. The two that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e bench lint template api-policy build bootstrap migrate admin deploy destroy clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "YMERA needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

## Run the whole platform locally: API on http://127.0.0.1:8000, emulated AWS, SQS consumers.
run: $(STAMP)
	$(PY) -m infra.local $(ARGS)

## Run every test (unit, integration against Postgres/Redis/moto, end to end).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

## Benchmarks (not tests): ratios against baselines measured in the same run.
## FastAPI + Mangum (the comparison in bench/cached_get_task.py) live only in .venv-bench.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: bench/requirements.txt requirements.txt requirements-dev.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@touch $@

bench: $(STAMP) $(BENCH_VENV)/.installed
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check app.py chalicelib functions infra tests bench
	$(PY) -m mypy chalicelib functions app.py

## CloudFormation for everything outside the Chalice app -> infra/build/template.json
template: $(STAMP)
	$(PY) -m infra.template --stage $(or $(STAGE),dev) --out infra/build/template.json

## The API's IAM policy for one account and region -> .chalice/policy-<stage>.json (run before chalice deploy).
## ACCOUNT defaults to the deploying credentials' account (STS), REGION to $$AWS_DEFAULT_REGION.
api-policy: $(STAMP)
	$(PY) -m infra.api_policy --stage $(or $(STAGE),dev) $(if $(REGION),--region $(REGION)) \
		$(if $(ACCOUNT),--account $(ACCOUNT))

## The functions/ deployment bundle -> infra/build/functions.zip
build: $(STAMP)
	$(PY) -m infra.build

## Deploy one stage to AWS (docs/deploy.md): bucket, bundle, secrets, stack, migrations, API. Idempotent.
## Needs AWS credentials and a region (REGION= or $$AWS_DEFAULT_REGION); the first deploy of a stage also
## DATABASE_URL and REDIS_URL (stored in Secrets Manager, never printed). Optional: BUCKET=, ARCH=arm64,
## SUBNET_IDS=a,b SECURITY_GROUP_IDS=sg (functions and API in your VPC), ARGS= (e.g. --parameter K=V, --dry-run).
DEPLOY_FLAGS = --stage $(or $(STAGE),dev) $(if $(REGION),--region $(REGION)) $(if $(BUCKET),--bucket $(BUCKET))
deploy: $(STAMP)
	$(PY) -m infra.deploy deploy $(DEPLOY_FLAGS) $(if $(ARCH),--arch $(ARCH)) \
		$(if $(SUBNET_IDS),--subnet-ids $(SUBNET_IDS)) $(if $(SECURITY_GROUP_IDS),--security-group-ids $(SECURITY_GROUP_IDS)) \
		$(ARGS)

## Tear a stage down in reverse (API, stack). Queues are kept (Retain); ARGS=--delete-secrets / --delete-bucket.
destroy: $(STAMP)
	$(PY) -m infra.deploy destroy $(DEPLOY_FLAGS) $(ARGS)

migrate: $(STAMP)
	$(PY) -m chalicelib.db.migrate

## Create the first admin: make admin ADMIN_USERNAME=root ADMIN_EMAIL=root@example.com
## Password from $$YMERA_ADMIN_PASSWORD or a prompt (never argv). Uses $$DATABASE_URL, else the local
## runtime's embedded Postgres and JWT secret in .ymera/ (started for the command if `make run` is not
## running); migrates the database first.
admin: $(STAMP)
	@test -n "$(ADMIN_USERNAME)" && test -n "$(ADMIN_EMAIL)" || \
		{ echo "usage: make admin ADMIN_USERNAME=name ADMIN_EMAIL=address"; exit 2; }
	@if [ -n "$$DATABASE_URL" ]; then \
		$(PY) -m chalicelib.db.migrate && \
		$(PY) -m chalicelib.admin create-admin --username "$(ADMIN_USERNAME)" --email "$(ADMIN_EMAIL)"; \
	else \
		export YMERA_STAGE="$${YMERA_STAGE:-development}"; \
		export YMERA_JWT_SECRET="$${YMERA_JWT_SECRET:-$$($(PY) -c 'from infra.local.environment import *; \
			print(load_or_create_jwt_secret(prepare_state_dir(".ymera")))')}"; \
		$(PY) -m infra.local.postgres --state-dir .ymera --migrate -- \
			$(PY) -m chalicelib.admin create-admin --username "$(ADMIN_USERNAME)" --email "$(ADMIN_EMAIL)"; \
	fi

clean:
	rm -rf $(VENV) $(BENCH_VENV) .ymera infra/build .pytest_cache
