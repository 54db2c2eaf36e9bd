#!/usr/bin/env bash
# once.sh STEP INPUT... -- COMMAND...
#
# Runs COMMAND unless it already passed on exactly these inputs: the names and contents of the files
# under the INPUT paths (tracked or new, not ignored), COMMAND itself, the environment variables whose
# names match $ONCE_ENV (a regular expression), and the versions of node and python3. A pass leaves the
# digest in target/.stamps/passed/STEP; any change to an input, or a failure, runs it again. `FRESH=1`
# runs it anyway (.ci/run sets it), and a clean clone has no stamps.
#
# `make test` uses it for the steps whose inputs are few and slow to check again (the Solidity suites,
# Slither, the SDK's tests): a warm `make test` after an edit to an agent runs only what the edit touches.
set -euo pipefail
cd "$(dirname "$0")/.."

step=$1
shift
inputs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  inputs+=("$1")
  shift
done
[ "${1:-}" = "--" ] || { echo "usage: script/once.sh STEP INPUT... -- COMMAND..." >&2; exit 2; }
shift

stamp=target/.stamps/passed/$step
digest=
if git rev-parse --git-dir >/dev/null 2>&1; then
  digest=$({
    printf '%s\0' "$@"
    env | grep -E "^(${ONCE_ENV:-^$})" | sort || true
    node --version 2>&1 || true
    python3 --version 2>&1 || true
    # A file named outright counts even when ignored (.env); a file deleted but still in the index drops
    # out of the list (its name no longer hashed).
    {
      git ls-files -z -co --exclude-standard -- "${inputs[@]}"
      for input in "${inputs[@]}"; do [ ! -f "$input" ] || printf '%s\0' "$input"; done
    } | sort -zu |
      while IFS= read -rd '' file; do if [ -f "$file" ]; then printf '%s\0' "$file"; fi; done |
      xargs -0r sha256sum --
  } | sha256sum | cut -d' ' -f1)
fi

if [ -n "$digest" ] && [ "${FRESH:-0}" != 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then
  echo "    (skipped: passed before on these same inputs: ${inputs[*]}; FRESH=1 runs it again)"
  exit 0
fi

rm -f "$stamp"
"$@"
if [ -n "$digest" ]; then
  mkdir -p "$(dirname "$stamp")"
  echo "$digest" >"$stamp"
fi
