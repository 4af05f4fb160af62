#!/usr/bin/env bash
# A chain of CRIU pre-dumps with dirty-memory tracking, then the final dump and a restore: what a pre-copy
# migration does, on bare CRIU. Needs a kernel with CONFIG_MEM_SOFT_DIRTY, so run it in the lab:
#
#   e2e/lab/lab.sh -- e2e/lab/predump-smoke.sh
#
# The task is Ferry's workload (e2e/workload) holding 32 MiB and rewriting 1 MiB of it per second. The first
# pre-dump writes every page; the second, a second later and chained to the first (--prev-images-dir), must
# write only what changed since: at most a tenth of the first's pages. The final dump chains to the second
# and stops the task; the restore must bring the counter back and keep it counting. Needs gcc (the host
# setup installs it) to build the workload.
set -euo pipefail

dir=
pid=
fail() {
  echo "predump-smoke: FAIL: $*" >&2
  for l in "$dir"/*/*.log; do [ -f "$l" ] && { echo "--- $l" >&2; tail -n 15 "$l" >&2; }; done
  exit 1
}
criu check --feature mem_dirty_track >/dev/null 2>&1 ||
  { echo "predump-smoke: this kernel does not track dirty memory (run it in e2e/lab/lab.sh)" >&2; exit 1; }

dir=$(mktemp -d /tmp/predump-smoke.XXXXXX)
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
mkdir "$dir/1" "$dir/2" "$dir/3"

# Ferry's own workload (e2e/workload): 32 MiB of memory, 1 MiB of it rewritten per second, a counter kept
# only in memory. Its own session and stdio on /dev/null, so CRIU dumps it without --shell-job.
gcc -O2 -static -o "$dir/ferry-workload" "$(dirname "$0")/../workload/ferry-workload.c" || fail "cannot build the workload"
setsid "$dir/ferry-workload" --rss-mib 32 --dirty-mib-per-s 1 --tick-ms 100 --out "$dir" </dev/null >/dev/null 2>&1 &
pid=$!
sleep 1
count() { cat "$dir/count" 2>/dev/null || echo 0; }

# Prints CRIU's "Memory pages written" for a run that used --display-stats.
# CRIU prints "Memory pages written: 2128 (0x850)".
pages_written() { awk -F: '/Memory pages written/ {split($2, w, "("); gsub(/ /, "", w[1]); print w[1]}' "$1"; }
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }

t=$(now)
criu pre-dump -t "$pid" -D "$dir/1" --track-mem -o pre-dump.log --display-stats >"$dir/1/stats.txt" 2>&1 || fail "first pre-dump"
p1=$(pages_written "$dir/1/stats.txt")
echo "pre-dump 1: $p1 pages written, $(ms "$t") ms"
sleep 1

t=$(now)
criu pre-dump -t "$pid" -D "$dir/2" --prev-images-dir ../1 --track-mem -o pre-dump.log --display-stats \
  >"$dir/2/stats.txt" 2>&1 || fail "second pre-dump"
p2=$(pages_written "$dir/2/stats.txt")
echo "pre-dump 2: $p2 pages written, $(ms "$t") ms"
if [ -z "$p1" ] || [ -z "$p2" ]; then fail "no page counts in CRIU's stats"; fi
[ "$p1" -ge 8192 ] || fail "the first pre-dump wrote $p1 pages, fewer than the workload's 32 MiB"
[ $((p2 * 10)) -le "$p1" ] || fail "the second pre-dump wrote $p2 pages, more than a tenth of the first's $p1"

before=$(count)
t=$(now)
criu dump -t "$pid" -D "$dir/3" --prev-images-dir ../2 --track-mem -o dump.log --display-stats \
  >"$dir/3/stats.txt" 2>&1 || fail "final dump"
echo "dump: $(pages_written "$dir/3/stats.txt") pages written, $(ms "$t") ms"
kill -0 "$pid" 2>/dev/null && fail "the task still runs after the final dump"
{ wait "$pid"; } 2>/dev/null || true
pid=

t=$(now)
criu restore -D "$dir/3" -d -o restore.log --pidfile "$dir/restored.pid" || fail "restore"
pid=$(cat "$dir/restored.pid")
echo "restore: pid $pid, $(ms "$t") ms"
at=$(count)
[ "$at" -ge "$before" ] || fail "the counter went back from $before to $at"
sleep 1
after=$(count)
[ "$after" -gt "$at" ] || fail "the restored task does not count ($at, then $after)"
echo "predump-smoke: OK (counter $before at the dump, $after after the restore)"
