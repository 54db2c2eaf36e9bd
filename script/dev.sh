#!/usr/bin/env bash
# make dev: a local Khachapuri network. Starts anvil, deploys every contract, prints the addresses and
# keeps running until Ctrl-C.
source "$(dirname "$0")/lib.sh"
mkdir -p "$ROOT/.khachapuri"
LOG="$ROOT/.khachapuri/anvil.log"
PORT="${ANVIL_PORT:-8545}"
if "$BIN/cast" chain-id --rpc-url "http://127.0.0.1:$PORT" >/dev/null 2>&1; then
  echo "port $PORT already answers JSON-RPC (another make dev?); using a free port instead" >&2
  PORT=0
fi
trap 'echo; echo "stopping anvil"; kill "${ANVIL_PID:-}" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
start_anvil 31337 "$LOG" "$PORT"
echo "==> anvil at $RPC_URL (chain 31337), log: $LOG"
# Short delays: a local network is for trying the flows, not waiting a day for them.
export WITHDRAWAL_DELAY="${WITHDRAWAL_DELAY:-300}" MIN_COMMITMENT_AGE="${MIN_COMMITMENT_AGE:-2}"
deploy "$RPC_URL"
echo "==> deployed; addresses in deployments/31337.json:"
cat "$ROOT/deployments/31337.json"; echo
echo "==> local network up at $RPC_URL. Ctrl-C stops it."
wait "$ANVIL_PID"
