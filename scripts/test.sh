#!/usr/bin/env bash
# Sets up this machine (idempotently) and runs every test Ferry has: typecheck, lint, unit, and the e2e
# suites against real CRIU, runc, podman and docker. Starts the services the tests need and stops what it
# started. Prints a closing line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

log "host setup"
bash scripts/setup-host.sh

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund
fi

log "services"
bash scripts/services.sh start docker
trap 'bash scripts/services.sh stop docker' EXIT

log "typecheck"
npx tsc -p tsconfig.json --noEmit
log "lint"
npx biome check .

log "tests"
out=$(mktemp)
set +e
npx ava --timeout=3m "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# ava prints only the counts that are not zero; a missing line is a zero, not an error.
summary() { grep -oE "^\s*[0-9]+ tests? $1" "$out" | grep -oE '[0-9]+' | tail -1 || true; }
passed=$(summary passed)
failed=$(summary failed)
skipped=$(summary skipped)
rm -f "$out"
[ "$status" = 0 ] || failed=${failed:-1}
echo
echo "ferry tests: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit "$status"
