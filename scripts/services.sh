#!/usr/bin/env bash
# Starts and stops the daemons Ferry's tests need, idempotently: a service that already answers is left
# alone (and not stopped later), one this script started is recorded under /run/ferry and stopped by
# `stop`. `start` prints "started" for each service it started, so a caller can stop only those and
# leave alone what another run on the machine started. Usage: scripts/services.sh start|stop|status SERVICE...
set -euo pipefail

STATE_DIR=/run/ferry
log() { printf '[services] %s\n' "$*" >&2; }

docker_answers() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Polls for readiness: dockerd has no readiness notification outside systemd.
wait_until() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      log "$what did not come up within ${seconds}s"
      return 1
    fi
    sleep 0.2
  done
}

start_docker() {
  if docker_answers; then
    log "dockerd already answers; leaving it alone"
    return
  fi
  command -v dockerd >/dev/null || { log "dockerd is not installed: run scripts/setup-host.sh"; exit 1; }
  mkdir -p "$STATE_DIR"
  # dockerd starts its own containerd when none is configured; both log here.
  setsid dockerd >/var/log/ferry-dockerd.log 2>&1 </dev/null &
  echo $! >"$STATE_DIR/dockerd.started"
  if ! wait_until dockerd 60 docker_answers; then
    tail -20 /var/log/ferry-dockerd.log >&2
    exit 1
  fi
  log "dockerd started (pid $(cat "$STATE_DIR/dockerd.started")), log /var/log/ferry-dockerd.log"
  echo started
}

stop_docker() {
  local pidfile=$STATE_DIR/dockerd.started
  if [ ! -f "$pidfile" ]; then
    log "dockerd was not started by this script; leaving it alone"
    return
  fi
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    # Containers left by failed tests would keep dockerd's shutdown waiting on their stop timeouts.
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true
    kill "$pid"
    wait_until "dockerd to exit" 60 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "dockerd stopped"
}

status_docker() {
  if docker_answers; then echo "docker: running"; else echo "docker: not running"; fi
}

action=${1:-}
shift || true
case "$action" in
  start | stop | status) ;;
  *)
    echo "usage: $0 start|stop|status SERVICE..." >&2
    exit 2
    ;;
esac
for service in "$@"; do
  case "$service" in
    docker) "${action}_docker" ;;
    *)
      echo "unknown service: $service (known: docker)" >&2
      exit 2
      ;;
  esac
done
