# YMERA developer commands. The two that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e bench lint template build bootstrap migrate clean

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
bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check app.py chalicelib functions infra tests bench
	$(PY) -m mypy chalicelib functions app.py

## CloudFormation for everything outside the Chalice app -> infra/build/template.json
template: $(STAMP)
	$(PY) -m infra.template --stage $(or $(STAGE),dev) --out infra/build/template.json

## The functions/ deployment bundle -> infra/build/functions.zip
build: $(STAMP)
	$(PY) -m infra.build

migrate: $(STAMP)
	$(PY) -m chalicelib.db.migrate

clean:
	rm -rf $(VENV) .ymera infra/build .pytest_cache
