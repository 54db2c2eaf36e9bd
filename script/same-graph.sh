#!/usr/bin/env bash
# `make dev` runs the binaries a plain `cargo build --workspace --all-features` makes; `make test` builds the
# same crates for its tests. When a dev-dependency turns on a feature of a shared crate that no normal
# dependency does, the two builds resolve different features for it, and `make dev` after `make test`
# compiles that crate and everything above it again. This fails naming such crates, and what to do.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
features() { cargo tree --workspace --all-features --locked -f '{p}|{f}' --prefix none "$@" | sed 's/ (\*)$//' | sort -u; }
features > "$tmp/test"
features -e no-dev > "$tmp/plain"
# A crate may be built twice (for the target and for build scripts): compare each crate's set of builds,
# for the crates both builds have (crates only tests use do not matter).
python3 - "$tmp/test" "$tmp/plain" <<'PY'
import sys
def builds(path):
    out = {}
    for line in open(path):
        crate, _, features = line.rstrip("\n").partition("|")
        out.setdefault(crate, set()).add(features)
    return out
test, plain = builds(sys.argv[1]), builds(sys.argv[2])
differ = sorted(c for c in plain if c in test and test[c] != plain[c])
if differ:
    print("FAIL: a test build and a plain build resolve different features for:", file=sys.stderr)
    for c in differ:
        print(f"  {c}: test {sorted(test[c])}, plain {sorted(plain[c])}", file=sys.stderr)
    print("name those features as normal dependencies (see the end of [dependencies] in "
          "crates/khachapuri-chain/Cargo.toml)", file=sys.stderr)
    sys.exit(1)
print("a test build and a plain build resolve the same features: make dev reuses make test's build")
PY
