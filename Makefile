# The two commands in the README, plus the gates CI runs.
.PHONY: dev demo install test lint fmt proto-lint bench image helm-lint compose-validate deploy-check

# Run Tally: all services in one process, private PostgreSQL, in-process bus.
# ARGS passes options to `tally dev`, e.g. `make demo ARGS=--reset` (start afresh).
dev:
	cargo run -p tally-cli --bin tally -- dev $(ARGS)

# The same, then a month of an AI-inference platform's billing (crates/cli/demo).
demo:
	cargo run -p tally-cli --bin tally -- dev --demo $(ARGS)

# Puts `tally` on the PATH (~/.cargo/bin), for the README's `tally …` commands.
install:
	cargo install --path crates/cli --locked

# The whole test suite (starts its own PostgreSQL and Pub/Sub emulator; installs
# Orb's Python SDK into ~/.cache/tally-tools once, for the fake Orb's check).
test:
	.ci/test-tools
	cargo test --workspace

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

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
