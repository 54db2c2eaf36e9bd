#!/usr/bin/env bash
# Copies the ABI and bytecode of every deployable contract from forge's out/ into bindings/artifacts/,
# which the `khachapuri-bindings` crate reads with alloy's `sol!` and wallet dApps read as plain JSON.
#   script/bindings.sh          regenerate (after changing a contract)
#   script/bindings.sh --check  fail if the committed artifacts differ from the contracts (make test)
source "$(dirname "$0")/lib.sh"
CONTRACTS=(Registry Resolver ResolverFactory Escrow TestUSDC)
DEST="$ROOT/bindings/artifacts"
if [ "${1:-}" = "--check" ]; then DEST="$(mktemp -d)"; trap 'rm -rf "$DEST"' EXIT; fi
mkdir -p "$DEST"
for c in "${CONTRACTS[@]}"; do
  node -e '
    const [src, dst] = process.argv.slice(1);
    const a = require(src);
    const out = { abi: a.abi, bytecode: { object: a.bytecode.object }, deployedBytecode: { object: a.deployedBytecode.object } };
    require("fs").writeFileSync(dst, JSON.stringify(out, null, 2) + "\n");
  ' "$ROOT/out/$c.sol/$c.json" "$DEST/$c.json"
done
if [ "${1:-}" = "--check" ]; then
  if ! diff -r -q "$DEST" "$ROOT/bindings/artifacts" >/dev/null; then
    diff -r -q "$DEST" "$ROOT/bindings/artifacts" >&2 || true
    echo "FAIL: bindings/artifacts is stale against contracts/. Run script/bindings.sh and commit the result." >&2
    exit 1
  fi
  echo "bindings are current (${CONTRACTS[*]})"
fi
