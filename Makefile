# The two commands a founder needs: `make dev` (run it all locally) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# No test or local run may reach AWS: a fixed region, dummy credentials, and no probing of
# the instance metadata address.
export AWS_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= local
export AWS_SECRET_ACCESS_KEY ?= local
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help dev test test-rust test-browser test-sdk-models lint bench build sam-build validate

# The CPU architecture to build for: arm64 (the template's default) or x86_64.
ARCH ?= arm64
# The functions' binaries, selected as sam build selects each one (`--bin <name>`, features
# resolved over the workspace's default members), so that `make build` and `make sam-build`
# build the same units and whichever runs second finds them built.
FUNCTIONS := --bin status --bin create-checkout --bin success --bin webhook --bin portal --bin reconcile --bin server --bin access-events

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
	  '{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
	   END { for (i = 1; i <= NR; i++) printf "  make %-" width "s  %s\n", name[i], text[i] }'

# `make dev` and `make test` resolve the same dependency features (see dev/Cargo.toml), so
# whichever runs second reuses the other's build of the dependencies.
dev: ## Run it all locally on http://127.0.0.1:3000 (PORT overrides): demo page, API, webhook, Dodo simulator
	cargo run --locked -p dev -- serve

test: test-rust test-simulate test-browser ## Every test: Rust (unit, store, Dodo client, handlers, binaries, local server), a simulated year, the browser test

test-simulate: ## A year in the life: 200 users x 12 months on the test clock, every invariant checked (seed 1)
	cargo run --locked -q -p dev -- simulate --users 200 --months 12 --seed 1

test-rust: ## Build the binaries, then run the Rust tests
	cargo build --locked --bins
	cargo test --locked --workspace

test-browser: ## Buy access through the demo page in headless Chromium (needs Node.js, /usr/bin/chromium or CHROMIUM_PATH; the first run does npm ci)
	cargo build --locked -p dev --bin dev
	cd dev/e2e && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; } && node --test

# The simulator's answers and webhooks, recorded while its own test and a short simulated
# run use it, judged by Dodo's official Python SDK's typed models (pinned in
# dev/sdk-oracle/requirements.txt, in a virtualenv of its own).
SDK_ORACLE := target/sdk-oracle
test-sdk-models: ## Check the Dodo simulator against dodopayments 1.123.0's models: every route and webhook it serves, strictly
	@[ -x $(SDK_ORACLE)/venv/bin/python ] && $(SDK_ORACLE)/venv/bin/pip freeze | grep -qxF -f dev/sdk-oracle/requirements.txt \
	  || { python3 -m venv $(SDK_ORACLE)/venv && $(SDK_ORACLE)/venv/bin/pip install --quiet --disable-pip-version-check -r dev/sdk-oracle/requirements.txt; }
	rm -rf $(SDK_ORACLE)/recorded
	DODO_SIMULATOR_RECORD_DIR=$(CURDIR)/$(SDK_ORACLE)/recorded cargo test --locked -p dev --test simulator
	DODO_SIMULATOR_RECORD_DIR=$(CURDIR)/$(SDK_ORACLE)/recorded cargo run --locked -q -p dev -- simulate --users 50 --months 3 --seed 1
	$(SDK_ORACLE)/venv/bin/python dev/sdk-oracle/validate.py $(SDK_ORACLE)/recorded

lint: ## Formatting and clippy, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

# BIN_DIR (a folder with one binary per function, named after it) measures binaries built
# elsewhere instead of building target/release: CI links make build's x86_64 bootstraps
# there, the binaries that ship.
bench: ## Release binaries as Lambda runs them: init, cold request, warm latency, size, zipped size, memory; beside the original Python stack (BIN_DIR: measure those instead)
	$(if $(BIN_DIR),,cargo build --locked --release $(FUNCTIONS))
	cargo run --locked -p dev --bin lambda-bench -- --bin-dir $(or $(BIN_DIR),target/release)

build: ## Lambda bootstraps with cargo lambda for ARCH (arm64 | x86_64): target/lambda/<function>/bootstrap
	cargo lambda build --release --locked $(if $(filter x86_64,$(ARCH)),--x86-64,--arm64) $(FUNCTIONS)

sam-build: ## sam build for ARCH: .aws-sam/build/<Function>/bootstrap, ready for sam deploy
	sam build --beta-features --parameter-overrides Architecture=$(ARCH)

# checkov, pinned in its own virtualenv by CI (CHECKOV=target/ci/checkov/bin/checkov).
CHECKOV ?= checkov

# checkov: every finding is fixed or suppressed in template.yaml with its reason (Metadata:
# checkov: skip). --skip-download keeps it offline; a template it cannot parse (which it
# would report as no findings) fails too.
validate: ## Check template.yaml offline: cfn-lint, sam validate --lint, and checkov (no unsuppressed finding)
	cfn-lint template.yaml
	sam validate --lint --region $(AWS_REGION)
	@echo '$(CHECKOV) -f template.yaml --framework cloudformation --compact --quiet --skip-download'; \
	  out=$$($(CHECKOV) -f template.yaml --framework cloudformation --compact --quiet --skip-download 2>&1); \
	  status=$$?; echo "$$out"; \
	  [ $$status = 0 ] || exit $$status; \
	  ! grep -q 'Parsing errors' <<<"$$out" || { echo 'checkov could not parse template.yaml' >&2; exit 1; }
