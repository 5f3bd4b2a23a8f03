# Relais — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE ?= dev
#: Line coverage of chalicelib that `make test` requires (96.2 % on unit + integration when it was set).
COVERAGE_FLOOR := 96

.PHONY: run test lint typecheck unit bench install clean package deploy

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python dependencies into $(VENV) (first run takes a minute)…"
	@# phonenumberslite replaced phonenumbers (one module, two distributions): a venv made before drops both, and
	@# the install below brings phonenumberslite back whole
	@! $(PY) -m pip show --quiet phonenumbers >/dev/null 2>&1 || \
	  $(PY) -m pip uninstall --quiet --disable-pip-version-check -y phonenumbers phonenumberslite
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

## run: the local stack (moto server, chalice local, poller, stand-in national system) until Ctrl-C
run: $(STAMP)
	@$(PY) -m infra.local.stack

## lint: ruff (lint + format check), mypy, and the dead-code check (vulture; vulture_whitelist.py lists what it cannot see)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy chalicelib relais_cli infra app.py bench
	$(VENV)/bin/vulture chalicelib relais_cli infra app.py vulture_whitelist.py --min-confidence 60 \
	  --ignore-decorators "@*.route,@*.on_sqs_message,@*.on_dynamodb_record,@*.schedule"

## test: lint, then every tier of tests (unit, integration with moto, e2e over the local stack, browser), failing
## under COVERAGE_FLOOR % line coverage of chalicelib. Coverage is measured in the pytest process only: the local
## stack's own processes (chalice local, the poller) are not, so the e2e tier counts only for what it runs in-process;
## the floor was set on unit + integration, which run in-process, so the tiers that run elsewhere can only add to it.
test: lint iac-check
	$(VENV)/bin/pytest -q --cov=chalicelib --cov-report=term-missing:skip-covered --cov-fail-under=$(COVERAGE_FLOOR)

## package: the deployable template and zip of a stage in build/package (STAGE=prod unless given), reproducibly:
## Linux wheels from build/wheelhouse (downloaded once per requirements.txt), see infra/package.py
package: $(STAMP)
	@$(PY) -m infra.package --stage $(if $(filter command line environment,$(origin STAGE)),$(STAGE),prod)

## deploy: package, then deploy the stage's stack: make deploy STAGE=prod (AWS credentials; see docs/deploy.md)
deploy:
	@test -n "$(filter command line environment,$(origin STAGE))" || { echo "usage: make deploy STAGE=prod" >&2; exit 2; }
	@$(MAKE) --no-print-directory package STAGE=$(STAGE)
	@infra/deploy.sh $(STAGE)

## iac-check: package, then cfn-lint and checkov (offline) on the template; accepted findings: infra/iac-skips.md
.PHONY: iac-check
iac-check: package
	@cmp -s infra/requirements-iac.txt .venv-iac/.installed || { \
	  echo "installing cfn-lint and checkov into .venv-iac (first run takes a minute)…"; \
	  test -x .venv-iac/bin/python || $(PYTHON) -m venv .venv-iac; \
	  echo '*' > .venv-iac/.gitignore; \
	  .venv-iac/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-iac.txt && \
	  cp infra/requirements-iac.txt .venv-iac/.installed; }
	.venv-iac/bin/cfn-lint --regions eu-west-3 -- build/package/sam.json
	.venv-iac/bin/checkov --quiet --compact --skip-download --framework cloudformation -f build/package/sam.json

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

## chaos: 10,000 results through the local stack with every fault on (CI runs the same test with 1,000); replay a
## failing run with RELAIS_LOCAL_FAULTS_SEED=<seed from its output>
.PHONY: chaos
chaos: $(STAMP)
	RELAIS_CHAOS_RESULTS=$${RELAIS_CHAOS_RESULTS:-10000} $(VENV)/bin/pytest -q -s -p no:cacheprovider tests/e2e/test_chaos.py

## bench: speed, cost and weight figures (not tests; see bench/README.md)
bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .venv-iac .pytest_cache .mypy_cache .ruff_cache .hypothesis build .relais .coverage
