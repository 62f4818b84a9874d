# The two commands in the README, plus the gates CI runs.
.PHONY: dev test lint fmt proto-lint bench

# Run Tally: all services in one process, private PostgreSQL, in-process bus.
dev:
	cargo run -p tally-cli --bin tally -- dev

# The whole test suite (starts its own PostgreSQL and Pub/Sub emulator).
test:
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
