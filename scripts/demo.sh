#!/usr/bin/env bash
# The main job, end to end on this machine: set up the host, then move a running stateful container from
# node a to node b (two network namespaces, a Ferry agent on each, a controller) and print the figures.
# The single-node checkpoint/restore demo is scripts/demo-checkpoint.sh (npm run demo:checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh >/dev/null
[ -d node_modules ] || npm ci --no-audit --no-fund
exec npx tsx e2e/demo/migrate.ts
