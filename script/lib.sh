#!/usr/bin/env bash
# Shared shell helpers for make dev and the deployment test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/node_modules/.bin"
# anvil's first well-known development key. Never holds value anywhere but a local chain.
DEV_KEY="0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

# start_anvil CHAIN_ID LOGFILE [PORT]: starts anvil in the background; sets ANVIL_PID and RPC_URL.
start_anvil() {
  local chain_id="$1" log="$2" port="${3:-0}"
  "$BIN/anvil" --port "$port" --chain-id "$chain_id" >"$log" 2>&1 &
  ANVIL_PID=$!
  local i
  for i in $(seq 1 100); do
    RPC_URL="$(grep -oE 'Listening on [0-9.]+:[0-9]+' "$log" | head -n1 | sed 's/Listening on /http:\/\//' || true)"
    if [ -n "$RPC_URL" ] && "$BIN/cast" chain-id --rpc-url "$RPC_URL" >/dev/null 2>&1; then
      export RPC_URL ANVIL_PID
      return 0
    fi
    if ! kill -0 "$ANVIL_PID" 2>/dev/null; then
      echo "anvil exited early; its log ($log):" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "anvil did not answer within 10 s; see $log" >&2
  return 1
}

# deploy RPC_URL: runs the forge deployment script against RPC_URL with the dev key.
deploy() {
  mkdir -p "$ROOT/deployments"
  (cd "$ROOT" && "$BIN/forge" script script/Deploy.s.sol --rpc-url "$1" --private-key "$DEV_KEY" \
    --broadcast --slow -q)
}
