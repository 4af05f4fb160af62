#!/usr/bin/env bash
# The main job, end to end on this machine: set up the host, start a Ferry agent, start a container that
# counts in memory, checkpoint it (CRIU via runc), restore it, and show that it counts on from where it was.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup-host.sh
[ -d node_modules ] || npm ci --no-audit --no-fund

work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
export FERRY_TOKEN=${FERRY_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
port=${FERRY_DEMO_PORT:-7070}
export FERRY_AGENT="http://127.0.0.1:$port"
ferry() { node "$root/bin/ferry.js" "$@"; }
id=ferry-demo-counter
agent_pid=

cleanup() {
  runc delete --force "$id" >/dev/null 2>&1 || true
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start the agent (state in $work/state, log in $work/agent.log)"
ferry agent --listen "127.0.0.1:$port" --state-dir "$work/state" --runtimes runc >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do curl -fs "$FERRY_AGENT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
ferry node

step "start a busybox container that counts in memory (runc)"
node --import tsx "$root/e2e/support/start-counter.ts" "$id" "$work"
count() { runc exec "$id" cat /tmp/count 2>/dev/null || echo 0; }
until [ "$(count)" -gt 5 ]; do sleep 0.1; done
ferry ls --runtime runc
echo "count before checkpoint: $(count)"

step "checkpoint (the container stops; CRIU's figures below)"
ferry checkpoint "$id" --runtime runc --id demo-checkpoint
echo "container after checkpoint: $(runc state "$id" >/dev/null 2>&1 && echo still there || echo gone)"
ferry checkpoints

step "restore: the count continues from memory, not from 1"
ferry restore demo-checkpoint
first=$(count); sleep 1; second=$(count)
echo "count right after restore: $first, one second later: $second"
[ "$second" -gt "$first" ] && echo "the restored container keeps counting"
