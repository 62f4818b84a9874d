# The two commands in the README, plus the gates CI runs.
.PHONY: dev demo install test lint fmt proto-lint bench image helm-lint compose-validate deploy-check console console-if-stale

# Run Tally: all services in one process, private PostgreSQL, in-process bus.
# ARGS passes options to `tally dev`, e.g. `make demo ARGS=--reset` (start afresh).
dev: console-if-stale
	cargo run -p tally-cli --bin tally -- dev $(ARGS)

# The same, then a month of an AI-inference platform's billing (crates/cli/demo).
demo: console-if-stale
	cargo run -p tally-cli --bin tally -- dev --demo $(ARGS)

# The console's static build (console/out, served by `tally dev`): npm ci + npm run build.
console:
	cd console && npm ci --no-audit --no-fund && npm run build

# The same when console/out is missing or older than its sources; without Node.js,
# `tally dev` runs anyway and its banner says how to build the console.
console-if-stale:
	@if ! command -v npm >/dev/null; then \
	  echo "note: no npm (Node.js 20+) here: the console is not built; tally dev runs without it"; \
	elif [ ! -f console/out/index.html ] || [ -n "$$(find console/src console/package-lock.json console/next.config.mjs proto -newer console/out/index.html -print -quit)" ]; then \
	  $(MAKE) console || echo "warning: the console build failed (see above); tally dev runs without a fresh console"; \
	fi

# Puts `tally` on the PATH (~/.cargo/bin), for the README's `tally …` commands.
install:
	cargo install --path crates/cli --locked

# The whole test suite (starts its own PostgreSQL and Pub/Sub emulator; installs
# Orb's Python SDK into ~/.cache/tally-tools once, for the fake Orb's check), then
# the console's lint, type-check, Vitest and Playwright-in-Chromium tests.
test:
	.ci/test-tools
	cargo test --workspace
	.ci/console-test

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	.ci/deny

fmt:
	cargo fmt --all

proto-lint:
	.ci/buf lint
	.ci/buf build

bench:
	cargo bench -p tally-domain

# Deployment (docs/operations.md): the container image, and the checks CI runs on the
# compose file and the Helm chart (they install their tools under ~/.cache/tally-tools;
# TALLY_BIN=path/to/tally also checks the binary accepts the rendered configuration).
IMAGE ?= tally:local

image:
	docker build -t $(IMAGE) --build-arg VERSION=$$(git describe --tags --always --dirty) \
		--build-arg REVISION=$$(git rev-parse HEAD) .

helm-lint:
	.ci/helm-lint

compose-validate:
	.ci/compose-validate

deploy-check: compose-validate helm-lint
