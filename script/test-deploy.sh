#!/usr/bin/env bash
# make test: deploy with the forge script to a fresh anvil, then check deployments/<chainId>.json against
# the chain, a real consume transaction's gas against its 50,000 target, and a second deployment with
# USDC= an existing token, whose assumptions the script checks and prints.
source "$(dirname "$0")/lib.sh"
CHAIN_ID=31338
WORK="$(mktemp -d)"
trap 'kill "${ANVIL_PID:-}" 2>/dev/null || true; rm -rf "$WORK" "$ROOT/deployments/$CHAIN_ID.json"' EXIT

start_anvil "$CHAIN_ID" "$WORK/anvil.log"
deploy "$RPC_URL"
FILE="$ROOT/deployments/$CHAIN_ID.json"
[ -s "$FILE" ] || { echo "FAIL: $FILE was not written" >&2; exit 1; }

fail() { echo "FAIL: $*" >&2; exit 1; }
field() { node -e "const d=require('$FILE'); const v=d['$1']; if (v===undefined) process.exit(3); console.log(v)"; }
cast() { "$BIN/cast" "$@" --rpc-url "$RPC_URL"; }
call() { cast call "$@" | cut -d' ' -f1; } # drops cast's " [8.64e4]" annotation

[ "$(field chainId)" = "$CHAIN_ID" ] || fail "chainId is $(field chainId), expected $CHAIN_ID"
[ "$(field deploymentBlock)" -le "$(cast block-number)" ] || fail "deploymentBlock is after the head"
for name in usdc registry resolverFactory resolverImplementation escrow; do
  addr="$(field "$name")" || fail "$name missing"
  [ "$(cast code "$addr")" != "0x" ] || fail "$name ($addr) has no code"
done
ESCROW="$(field escrow)"; USDC="$(field usdc)"; REGISTRY="$(field registry)"
[ "$(call "$ESCROW" 'token()(address)')" = "$USDC" ] || fail "escrow.token() is not usdc"
[ "$(call "$ESCROW" 'withdrawalDelay()(uint256)')" = "$(field withdrawalDelay)" ] || fail "delay mismatch"
[ "$(call "$REGISTRY" 'minCommitmentAge()(uint256)')" = "$(field minCommitmentAge)" ] || fail "min age mismatch"
[ "$(call "$USDC" 'decimals()(uint8)')" = "6" ] || fail "USDC decimals is not 6"

# A real payer and provider on the chain: the consume transaction's whole gas, from its receipt.
PAYER_KEY="0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
PAYER="$("$BIN/cast" wallet address "$PAYER_KEY")"
PROVIDER_KEY="0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
PROVIDER="$("$BIN/cast" wallet address "$PROVIDER_KEY")"
send() { local key="$1"; shift; cast send --private-key "$key" "$@" --json; }
send "$DEV_KEY" "$USDC" 'mint(address,uint256)' "$PAYER" 100000000 >/dev/null
send "$PAYER_KEY" "$USDC" 'approve(address,uint256)' "$ESCROW" 100000000 >/dev/null
send "$PAYER_KEY" "$ESCROW" 'deposit(address,uint256)' "$PAYER" 100000000 >/dev/null
send "$PAYER_KEY" "$ESCROW" 'reserve(address,uint256,uint256)' "$PROVIDER" 10000 10000000 >/dev/null
send "$PROVIDER_KEY" "$ESCROW" 'consume(address,uint256)' "$PAYER" 10000 >/dev/null # first: earnings 0 -> x
GAS="$(send "$PROVIDER_KEY" "$ESCROW" 'consume(address,uint256)' "$PAYER" 10000 | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(parseInt(JSON.parse(s).gasUsed)))')"
[ "$GAS" -le 50000 ] || fail "consume used $GAS gas on anvil, target 50000"
[ "$(call "$ESCROW" 'earnings(address)(uint256)' "$PROVIDER")" = "20000" ] || fail "earnings not 0.02 USDC"

# USDC= an existing token: the script states what the escrow assumes of it before deploying.
OUT="$(cd "$ROOT" && USDC="$USDC" "$BIN/forge" script script/Deploy.s.sol --rpc-url "$RPC_URL" \
  --private-key "$DEV_KEY" --broadcast --slow 2>&1)" || { echo "$OUT" >&2; fail "deploying with USDC=$USDC"; }
for line in "6 decimals" "permit         EIP-2612" "blacklist      yes" "pause          yes" "assumed exact"; do
  grep -q -- "$line" <<<"$OUT" || { echo "$OUT" >&2; fail "the USDC= deployment does not print '$line'"; }
done
[ "$(field usdc)" = "$USDC" ] || fail "the USDC= deployment did not keep the given token"
[ "$(field testToken)" = "false" ] || fail "the USDC= deployment says testToken"
# A token without 6 decimals stops the deployment, with the reason.
OUT="$(cd "$ROOT" && USDC="$REGISTRY" "$BIN/forge" script script/Deploy.s.sol --rpc-url "$RPC_URL" \
  --private-key "$DEV_KEY" 2>&1)" && fail "deploying with a token that has no decimals() went through"
grep -q "the escrow needs USDC (6 decimals)" <<<"$OUT" || { echo "$OUT" >&2; fail "no reason for the refused token"; }

echo "deployment OK: $FILE checked against chain $CHAIN_ID; consume used $GAS gas (target 50000); USDC= checked"
