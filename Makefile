# The two commands a founder needs: `make dev` (run it all locally) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# No test or local run may reach AWS: a fixed region, dummy credentials, and no probing of
# the instance metadata address.
export AWS_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= local
export AWS_SECRET_ACCESS_KEY ?= local
export AWS_EC2_METADATA_DISABLED := true
# sam: no telemetry prompt or upload.
export SAM_CLI_TELEMETRY ?= 0

.PHONY: help dev docs test test-tools test-rust test-client test-simulate test-browser test-permissions test-sdk-models lint bench build sam-build validate tools

# The Python tools, each pinned in its own virtualenv under target/tools/ (dev/tools.sh
# makes it on first use, and again when a pin changes): CI installs them the same way,
# by running these targets.
CFN_LINT_PIN := cfn-lint==1.58.0
SAM_PIN := aws-sam-cli==1.170.0
CHECKOV_PIN := checkov==3.3.30
SCHEMATHESIS_PIN := schemathesis==4.32.*
SAM ?= target/tools/sam/bin/sam
CFN_LINT ?= target/tools/cfn-lint/bin/cfn-lint
CHECKOV ?= target/tools/checkov/bin/checkov
SCHEMATHESIS ?= target/tools/schemathesis/bin/schemathesis
CHROMIUM_PATH ?= /usr/bin/chromium
export CHROMIUM_PATH

# The book (docs/, mdBook) and its link check. mdBook is a Rust program: cargo installs the
# pinned version into target/tools/mdbook (first run only; about a minute and a half on 2
# cores), with only its search feature (no `mdbook serve` or `watch`: make dev serves the
# book). linkchecker (PyPI, pinned, a virtualenv like the tools above) then reads the built
# HTML; external links are not fetched.
MDBOOK_VERSION := 0.5.4
MDBOOK := target/tools/mdbook/bin/mdbook
LINKCHECKER_PIN := linkchecker==10.6.0
LINKCHECKER ?= target/tools/linkchecker/bin/linkchecker

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
# The book at /docs/ is target/book: rebuilt here first (in well under a second) when
# mdBook is installed; make docs installs it, and until then /docs/ says so.
dev: ## Run it all locally on http://127.0.0.1:3000 (PORT overrides): demo page, API, webhook, Dodo simulator, this book at /docs/
	@[ ! -x $(MDBOOK) ] || $(MDBOOK) build docs >/dev/null 2>&1 \
	  || echo "make: the book did not build (make docs says why); /docs/ serves the last one built" >&2
	cargo run --locked -p dev -- serve

# linkchecker, run as root, drops its privileges to the user nobody, who may not be able
# to read the checkout (under /root, say): it reads a world-readable copy of the book.
docs: ## Build the book (docs/) into target/book and check every internal link and anchor (the first run installs mdBook and linkchecker into target/tools/)
	@[ "$$($(MDBOOK) --version 2>/dev/null)" = "mdbook v$(MDBOOK_VERSION)" ] || { \
	  echo "make: installing mdbook $(MDBOOK_VERSION) into target/tools/mdbook (first run only)" >&2; \
	  env -u CARGO_TARGET_DIR cargo install --locked --root target/tools/mdbook mdbook \
	    --version $(MDBOOK_VERSION) --no-default-features --features search; }
	@dev/tools.sh venv linkchecker "$(LINKCHECKER_PIN)" linkchecker
	$(MDBOOK) build docs
	@echo '$(LINKCHECKER) --config docs/linkchecker.ini target/book/index.html'; \
	  copy=$$(mktemp -d) && trap 'rm -rf "$$copy"' EXIT && cp -R target/book "$$copy/book" \
	  && chmod -R a+rX "$$copy" && $(LINKCHECKER) --config docs/linkchecker.ini "$$copy/book/index.html"

test: test-tools test-rust test-client test-simulate test-sdk-models test-browser test-permissions ## Every test: Rust (unit, store, Dodo client, handlers, binaries, local server), the TypeScript client, a simulated year, the simulator against Dodo's SDK models, the browser test, then each function's AWS calls against its role

# The npm package dodo-paywall (clients/typescript): its types regenerated from openapi.yaml
# and compared with the committed ones (so the client cannot drift from the API), built
# with tsc, then tested against the real local server, the dev binary cargo builds here.
test-client: ## The TypeScript client (clients/typescript): types checked against openapi.yaml, built, tested against the local server (Node.js 20+; the first run does npm ci)
	cargo build --locked --bins
	@dev/tools.sh npm clients/typescript
	cd clients/typescript && npm test

test-simulate: ## A year in the life: 200 users x 12 months on the test clock, every invariant checked (seed 1)
	cargo run --locked -q -p dev -- simulate --users 200 --months 12 --seed 1

test-rust: ## Build the binaries, then run the Rust tests
	rm -rf target/aws-calls
	cargo build --locked --bins
	cargo test --locked --workspace

# The local engines hold every function's AWS calls to its role in template.yaml and
# record them in target/aws-calls/ (dev/src/iam.rs); this fails on a call a role does not
# grant and on a grant no test made its function use.
test-permissions: ## Each function's AWS calls in the tests against its IAM role in template.yaml, both ways
	cargo run --locked -q -p dev -- permissions

# What the browser test needs, checked before anything is built (so a missing browser
# stops make test at once, not after the Rust tests): Debian's chromium (installed with
# apt when missing and running as root; else make stops and names the command), and
# playwright-core (npm ci, first run only).
test-tools:
	@dev/tools.sh apt chromium chromium $(CHROMIUM_PATH)
	@dev/tools.sh npm dev/e2e

# The React example (examples/react) is built from the client package as it is now, then
# driven on its own origin by dev/e2e/example.test.mjs, which builds nothing itself.
test-browser: test-tools ## Buy access through the demo page and the React example in headless Chromium (Node.js 20+; Debian's chromium, apt-installed when missing and root, or CHROMIUM_PATH; the first run does npm ci)
	cargo build --locked -p dev --bin dev
	dev/tools.sh npm clients/typescript && (cd clients/typescript && npm run build)
	dev/tools.sh npm examples/react && (cd examples/react && npm run build)
	cd dev/e2e && node --test

# The simulator's answers and webhooks, recorded while its own test and a short simulated
# run use it, judged by Dodo's official Python SDK's typed models (pinned in
# dev/sdk-oracle/requirements.txt, in a virtualenv of its own).
SDK_ORACLE := target/sdk-oracle
test-sdk-models: ## Check the Dodo simulator against dodopayments 1.123.0's models: every route and webhook it serves, strictly
	@[ -x $(SDK_ORACLE)/venv/bin/python ] && $(SDK_ORACLE)/venv/bin/pip freeze | grep -qxF -f dev/sdk-oracle/requirements.txt \
	  || { dev/tools.sh python-venv && python3 -m venv $(SDK_ORACLE)/venv && $(SDK_ORACLE)/venv/bin/pip install --quiet --disable-pip-version-check -r dev/sdk-oracle/requirements.txt; }
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

sam-build: ## sam build for ARCH: .aws-sam/build/<Function>/bootstrap, ready for sam deploy (needs cargo-lambda)
	@dev/tools.sh venv sam "$(SAM_PIN)" sam
	$(SAM) build --beta-features --parameter-overrides Architecture=$(ARCH)

# The tools `make validate` runs, and schemathesis (CI's check of openapi.yaml against
# make dev, .ci/local-server): pinned, each in its own virtualenv.
tools: ## Install the pinned Python tools into target/tools/ (make validate does this itself): cfn-lint, sam, checkov, schemathesis
	@dev/tools.sh venv cfn-lint "$(CFN_LINT_PIN)" cfn-lint
	@dev/tools.sh venv sam "$(SAM_PIN)" sam
	@dev/tools.sh venv checkov "$(CHECKOV_PIN)" checkov
	@dev/tools.sh venv schemathesis "$(SCHEMATHESIS_PIN)" schemathesis

# checkov: every finding is fixed or suppressed in template.yaml with its reason (Metadata:
# checkov: skip). --skip-download keeps it offline; a template it cannot parse (which it
# would report as no findings) fails too.
validate: ## Check template.yaml offline: cfn-lint, sam validate --lint, and checkov (no unsuppressed finding; the first run installs them)
	@dev/tools.sh venv cfn-lint "$(CFN_LINT_PIN)" cfn-lint
	@dev/tools.sh venv sam "$(SAM_PIN)" sam
	@dev/tools.sh venv checkov "$(CHECKOV_PIN)" checkov
	$(CFN_LINT) template.yaml
	$(SAM) validate --lint --region $(AWS_REGION)
	@echo '$(CHECKOV) -f template.yaml --framework cloudformation --compact --quiet --skip-download'; \
	  out=$$($(CHECKOV) -f template.yaml --framework cloudformation --compact --quiet --skip-download 2>&1); \
	  status=$$?; echo "$$out"; \
	  [ $$status = 0 ] || exit $$status; \
	  ! grep -q 'Parsing errors' <<<"$$out" || { echo 'checkov could not parse template.yaml' >&2; exit 1; }
