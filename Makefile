# weft — the two commands a newcomer needs: `make demo` and `make test`.
# Both install what is missing (apt, as root), build, and run.

CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps build release demo test unit e2e bench fmt clippy clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(CARGO) build --bins

release: deps
	$(CARGO) build --release --bins

# A one-node lab: pods ping and talk TCP, the node reaches them, a spoofed
# packet is dropped, and `weft monitor` shows every step. Tears down after.
demo: build
	@bash scripts/demo.sh

# Everything: unit tests, C/Rust layout test, BPF_PROG_TEST_RUN tests and the
# end-to-end tests on real labs (root; they run one at a time).
test: build
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=1

# weft side by side with the limit and the datapaths users would pick
# instead; writes bench/results/latest.{md,png} and the README's table.
bench: release
	target/release/weft-bench --out bench/results --readme README.md

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
