# Khachapuri: two commands for people (`make dev`, `make test`), one for benchmarks (`make bench`).
# Every target installs what it needs on first use, from this repository's own pinned files.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN     := $(CURDIR)/node_modules/.bin
FORGE   := $(BIN)/forge
ANVIL   := $(BIN)/anvil
CAST    := $(BIN)/cast
STAMPS  := target/.stamps
VENV    := .venv
CARGO   ?= cargo
export PATH := $(BIN):$(PATH)

.PHONY: help dev test bench toolchain contracts bindings examples peer sdk console \
        test-contracts test-gas test-slither test-deploy test-bindings test-rust test-style test-sdk

help:
	@echo "make dev    start the local network (anvil + contracts) and print what it started"
	@echo "make test   run every test (installs the toolchain on first use)"
	@echo "make bench  run the benchmarks; figures land in target/bench/*.json"

# --------------------------------------------------------------------------------------------
# Toolchain (first use only; each step leaves a stamp)
# --------------------------------------------------------------------------------------------

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	@echo "==> installing the pinned npm toolchain (forge, anvil, cast, solc-js, forge-std, IPFS references)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMPS)/wasm32:
	@mkdir -p $(STAMPS)
	@echo "==> adding the wasm32-wasip1 Rust target"
	rustup target add wasm32-wasip1
	@touch $@

$(STAMPS)/rust-components:
	@mkdir -p $(STAMPS)
	@echo "==> adding rustfmt and clippy to the Rust toolchain (no-ops where present)"
	rustup component add rustfmt clippy
	@touch $@

$(STAMPS)/slither: requirements-dev.txt
	@mkdir -p $(STAMPS)
	@echo "==> installing Slither into $(VENV)"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMPS)/wrk:
	@mkdir -p $(STAMPS)
	@command -v wrk >/dev/null || { echo "==> installing wrk (the benchmarks' HTTP load generator)"; \
	  apt-get update -qq && apt-get install -y -qq wrk; }
	@touch $@

# make bench's peer: the wasmtime CLI from crates.io (`wasmtime serve`), pinned, built once into target/tools.
WASMTIME_CLI_VERSION := 48.0.8
WASMTIME_CLI := target/tools/wasmtime-$(WASMTIME_CLI_VERSION)/bin/wasmtime

$(WASMTIME_CLI):
	@echo "==> installing the wasmtime CLI $(WASMTIME_CLI_VERSION) from crates.io (make bench's peer; about 12 minutes, once)"
	$(CARGO) install wasmtime-cli --version $(WASMTIME_CLI_VERSION) --locked --root target/tools/wasmtime-$(WASMTIME_CLI_VERSION)

$(STAMPS)/wasm32-wasip2:
	@mkdir -p $(STAMPS)
	@echo "==> adding the wasm32-wasip2 Rust target (the wasi:http hello that wasmtime serve runs)"
	rustup target add wasm32-wasip2
	@touch $@

# The browser tests' Chromium: Debian's headless shell (playwright-core drives it; it downloads no browser).
$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	@command -v chromium-headless-shell >/dev/null || { \
	  echo "==> installing Debian's chromium-headless-shell (the web console's browser tests)"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium-headless-shell; }
	@touch $@

toolchain: $(STAMPS)/npm $(STAMPS)/wasm32

# The workspace's crates compile through clippy-driver, with every warning an error: what `cargo clippy`
# does, but with code generation, so one build serves the lints, the tests and `make dev`. Dependencies
# compile with plain rustc, unaffected. (CLIPPY_ARGS is how cargo-clippy hands clippy-driver its flags.)
LINTED := RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

contracts: $(STAMPS)/npm
	$(FORGE) build

examples: $(STAMPS)/wasm32
	@echo "==> building example functions for wasm32-wasip1"
	$(CARGO) build --manifest-path examples/Cargo.toml --target wasm32-wasip1 --release --target-dir examples/target

# --------------------------------------------------------------------------------------------
# make dev: the local network
# --------------------------------------------------------------------------------------------

# The binaries are built as `make test` builds them (the whole workspace, every feature, its lints;
# script/same-graph.sh keeps the two builds' features equal), so `make dev` after `make test` compiles nothing
# again. Should a newer toolchain's lints refuse the code, it builds without them rather than not at all.
dev: toolchain contracts examples console $(STAMPS)/rust-components
	$(LINTED) $(CARGO) build --workspace --all-features --locked --bins || { \
	  echo "==> make test's lints refuse this code on this toolchain (above); building without them"; \
	  $(CARGO) build --workspace --all-features --locked --bins; }
	$${CARGO_TARGET_DIR:-target}/debug/khachapuri dev

# --------------------------------------------------------------------------------------------
# make test: every test
# --------------------------------------------------------------------------------------------

test: test-style test-contracts test-gas test-slither test-deploy test-bindings test-sdk test-rust
	@echo "==> all tests passed"

# The TypeScript SDK (sdk/): compiled with the pinned tsc (the Rust tests run it against a live agent too),
# its own tests run by node's test runner.
sdk: sdk/dist/.built

# (Directories too: a file removed or renamed changes its directory, not the files that remain.)
sdk/dist/.built: $(STAMPS)/npm sdk/tsconfig.json sdk/package.json $(shell find sdk/src sdk/test 2>/dev/null)
	rm -rf sdk/dist
	$(BIN)/tsc -p sdk
	@touch $@

# The web console (console/): type-checked, bundled with the SDK by esbuild into console/dist, which
# `khachapuri dev` and the gateway (--console) serve at /_console/.
console: console/dist/.built

console/dist/.built: $(STAMPS)/npm console/tsconfig.json console/index.html console/console.css \
                     $(shell find console/src sdk/src 2>/dev/null)
	$(BIN)/tsc -p console
	rm -rf console/dist
	$(BIN)/esbuild console/src/main.ts --bundle --format=esm --target=es2022 --minify --sourcemap \
	  --log-level=warning --outfile=console/dist/console.js
	cp console/index.html console/console.css console/dist/
	@touch $@

# The inputs of the Solidity steps, as far as this list knows them: `script/once.sh` skips a step that
# already passed on exactly these files, these environment variables and the step's command, so a warm
# `make test` after an edit to an agent checks the contracts again only when one of them changed. Add an
# input here when a step starts reading one. `FRESH=1 make test` runs every step anyway.
SOLIDITY := contracts test script tools foundry.toml remappings.txt .env package.json package-lock.json \
            snapshots slither.config.json requirements-dev.txt
# What forge reads from the environment, and what script/Deploy.s.sol reads.
SOLIDITY_ENV := FOUNDRY_|DAPP_|ETH_RPC_URL=|USDC=|WITHDRAWAL_DELAY=|MIN_COMMITMENT_AGE=|MAX_COMMITMENT_AGE=
ONCE := ONCE_ENV='$(SOLIDITY_ENV)' script/once.sh

test-sdk: sdk
	@echo "==> TypeScript SDK: its tests (conformance with test/vectors/protocol.json, the escrow on anvil)"
	$(ONCE) test-sdk $(SOLIDITY) bindings sdk -- node --test sdk/dist/test/*.test.js

test-contracts: contracts
	@echo "==> forge test (ci profile: 10k fuzz runs, invariant depth 64)"
	$(ONCE) test-contracts $(SOLIDITY) -- env FOUNDRY_PROFILE=ci $(FORGE) test

test-gas: contracts
	@echo "==> whole-transaction gas against snapshots/GasTest.json (targets asserted in test/Gas.t.sol)"
	$(ONCE) test-gas $(SOLIDITY) -- env FOUNDRY_PROFILE=gas FORGE_SNAPSHOT_CHECK=true $(FORGE) test

gas-snapshot: contracts
	FOUNDRY_PROFILE=gas $(FORGE) test

test-slither: contracts $(STAMPS)/slither
	@echo "==> slither over contracts/"
	@# slither runs `forge clean` + its own build: keep that away from out/ in a folder of its own.
	$(ONCE) test-slither $(SOLIDITY) -- env FOUNDRY_OUT=target/slither/out FOUNDRY_CACHE_PATH=target/slither/cache \
	  $(VENV)/bin/slither . --config-file slither.config.json

test-deploy: contracts
	@echo "==> forge script deploy against a fresh anvil; checks deployments/<chainId>.json"
	$(ONCE) test-deploy $(SOLIDITY) -- script/test-deploy.sh

test-bindings: contracts
	@echo "==> bindings are current against the contracts"
	$(ONCE) test-bindings $(SOLIDITY) bindings -- script/bindings.sh --check

# One style, enforced: what `cargo fmt` / `forge fmt` would change, and every clippy or rustc warning, fail.
# Clippy lints the workspace while it builds every target (the build `cargo test` then reuses): `cargo
# clippy` would first check every dependency in a pass of its own (954 s of a cold run here; about 360 s
# of it was not shared with the test build).
test-style: toolchain $(STAMPS)/rust-components
	@echo "==> style: cargo fmt, forge fmt; the workspace built with clippy's lints (warnings are errors)"
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path examples/Cargo.toml --all --check
	$(FORGE) fmt --check
	$(LINTED) $(CARGO) build --workspace --all-targets --all-features --locked
	$(CARGO) clippy --manifest-path examples/Cargo.toml --target wasm32-wasip1 --target-dir examples/target \
	  --release -- -D warnings
	script/same-graph.sh

test-rust: toolchain contracts examples sdk console $(STAMPS)/chromium $(STAMPS)/rust-components
	@echo "==> cargo test (workspace)"
	$(LINTED) $(CARGO) test --workspace --all-features --locked

# --------------------------------------------------------------------------------------------
# make bench: figures under target/bench/*.json (never a timed assertion in a test)
# --------------------------------------------------------------------------------------------

# The peer: examples/wasi-http-hello, the hello example as a wasi:http component, for `wasmtime serve`.
peer: $(WASMTIME_CLI) $(STAMPS)/wasm32-wasip2
	$(CARGO) build --manifest-path examples/wasi-http-hello/Cargo.toml --target wasm32-wasip2 --release --locked \
	  --target-dir examples/target

bench: toolchain contracts examples peer $(STAMPS)/wrk
	@mkdir -p target/bench
	KHACHAPURI_WASMTIME_CLI=$(CURDIR)/$(WASMTIME_CLI) $(CARGO) bench --workspace --all-features --locked
	@ls -1 target/bench
