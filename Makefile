# The two commands: `make run` (local stack) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CDK := npx --no-install cdk
ENV ?= dev
ROLE ?= viewer
TYPES ?= signal.created
SUB ?= local-user
LAST ?= 0
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install run test lint typecheck unit infra integration synth diff preflight deploy token tail bench chaos fuzz clean

install:
	@bash scripts/install.sh

run: install
	$(PY) -m local

test: install lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy app.py stacks lambdas local clients tools

GATES := connections reconnect events batching performance load fuzz chaos faults degradation soak integration security e2e

test-%: install  # one test gate of the specification by name: make test-reconnect (see GATES)
	@case " $(GATES) " in *" $* "*) ;; *) echo "unknown gate '$*'; gates: $(GATES)"; exit 2;; esac
	$(PY) -m pytest -n 2 --dist loadgroup -m $*

unit: install  # the domain on moto; tests/local: the emulator, and what is tested through its parts
	$(PY) -m pytest tests/unit tests/local

infra: install
	$(PY) -m pytest tests/infra

integration: install
	$(PY) -m pytest tests/integration

# The public contract (docs/contract.md): against the local stack it starts, or against a deployed
# stack named by its outputs file: make contract OUTPUTS=cdk.out/outputs-dev.json (tokens: STREAMING_TOKEN_*)
.PHONY: contract
contract: install
	$(PY) -m pytest tests/contract $(if $(OUTPUTS),--outputs-file=$(OUTPUTS)) $(if $(STACK),--stack=$(STACK))

synth: install
	$(CDK) synth --quiet

diff: install
	$(CDK) diff Streaming-$(ENV)

preflight: install  # read-only checks of the account and region for ENV; exits non-zero on a blocker
	$(PY) -m tools.preflight --env $(ENV)

deploy: install preflight
	$(CDK) deploy Streaming-$(ENV) --require-approval broadening --outputs-file cdk.out/outputs-$(ENV).json

token: install
	@$(PY) -m local.token --role $(ROLE) --sub $(SUB)

# The HS256 signing keys (docs/operations.md): ACTION=rotate (default), retire or show; ENV=local for
# `make run`'s stack; OUTPUTS=<outputs file> or SECRET_ARN=<arn> to name the secret another way.
.PHONY: rotate-key
rotate-key: install
	@$(PY) -m tools.rotate_key $(or $(ACTION),rotate) --stack Streaming-$(ENV) \
		$(if $(SECRET_ARN),--secret-arn $(SECRET_ARN),--outputs $(or $(OUTPUTS),$(if $(filter local,$(ENV)),.local/endpoints.json,cdk.out/outputs-$(ENV).json)))

tail: install  # watch `make run` live: make tail ROLE=analyst TYPES=signal.created,risk.alert
	@$(PY) -m clients.tail --role $(ROLE) --types $(TYPES) --last $(LAST)

# Every benchmark, each with --json, into docs/performance.json, docs/performance.md's generated section and
# docs/images/bench-*.png (tests/bench/run.py): `make bench` small (under 5 minutes), bench-full at full scale.
.PHONY: bench-full load
bench: install
	$(PY) -m tests.bench.run

bench-full: install
	$(PY) -m tests.bench.run --full

# Load on `make run`'s stack, or on a deployed one named by OUTPUTS=cdk.out/outputs-dev.json (tokens as for
# make contract): make load CONNECTIONS=200 RATE=20 DURATION=30 TRANSPORT=sse JSON=load.json (tools/load.py)
load: install
	$(PY) -m tools.load $(if $(CONNECTIONS),--connections $(CONNECTIONS)) $(if $(RATE),--rate $(RATE)) \
		$(if $(DURATION),--duration $(DURATION)) $(if $(EVENTS),--events $(EVENTS)) \
		$(if $(TRANSPORT),--transport $(TRANSPORT)) $(if $(OUTPUTS),--outputs $(OUTPUTS)) \
		$(if $(STACK),--stack $(STACK)) $(if $(JSON),--json $(JSON))

fuzz: install  # the fuzz suite with many more examples, random each run (make test runs it small)
	FUZZ_PROFILE=fuzz $(PY) -m pytest -n 2 tests/fuzz

# Against a running `make run`: 52 subscribers, 5,000 events, ~10% of connections cut per second, the
# figures printed (docs/reliability.md, "Chaos"); scale with SUBSCRIBERS=, EVENTS=, CUT_RATE=.
chaos: install
	$(PY) -m tests.chaos --state-dir .local $(if $(SUBSCRIBERS),--subscribers $(SUBSCRIBERS)) \
		$(if $(EVENTS),--events $(EVENTS)) $(if $(CUT_RATE),--cut-rate $(CUT_RATE))

# The soak run (docs/reliability.md, "Soak"; not in `make test`, which runs it for 30 s): MINUTES of
# connection churn and steady publishing on a local stack of its own; writes docs/images/soak-rss.png
# and soak.csv, prints a summary, exits 1 on a leak.
.PHONY: soak
MINUTES ?= 10
soak: install
	$(PY) -m tests.soak --minutes $(MINUTES)

clean:
	rm -rf cdk.out .local .pytest_cache .mypy_cache .ruff_cache
