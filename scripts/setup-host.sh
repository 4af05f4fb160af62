#!/usr/bin/env bash
# Bring a fresh Debian 12 machine to the state Ferry's agent and tests need:
# runtimes, a CRIU that passes `criu check` on the running kernel, podman and dockerd configured for
# checkpoints. Idempotent: a second run finds everything in place and changes nothing.
set -euo pipefail

FERRY_PREFIX=${FERRY_PREFIX:-/opt/ferry}
CRIU_PREFIX="$FERRY_PREFIX/criu"
CRIU_WRAPPER=/usr/local/sbin/criu
APT_STATE=/var/lib/ferry/apt
# criu's runtime libraries: Debian 13 builds against the same sonames that Debian 12 ships.
CRIU_HOST_LIBS="libbsd0 libgnutls30 libnet1 libnftables1 libnl-3-200 libprotobuf-c1 libuuid1"
# golang-go, sprig and yaml.v3: Helm's template engine (Go text/template + sprig) for the chart tests.
HELM_TEMPLATE_PACKAGES="golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev"
# mmdebstrap builds the container image from Debian 13 packages (image/build.sh, e2e/image.test.ts).
# gcc and libc6-dev build the static gap-detecting workload (e2e/workload); util-linux gives nsenter.
HOST_PACKAGES="runc podman docker.io containerd busybox-static iproute2 iptables uidmap curl tar gcc libc6-dev util-linux openssh-server zstd mmdebstrap $HELM_TEMPLATE_PACKAGES $CRIU_HOST_LIBS"

log() { printf '[setup-host] %s\n' "$*" >&2; }
changed=0

[ "$(id -u)" = 0 ] || { log "must run as root (criu, runc and dockerd need it)"; exit 1; }

# shellcheck source=scripts/lib/packages.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/packages.sh"

install_host_packages() {
  # shellcheck disable=SC2086 # a list of package names, split on purpose
  install_missing_packages $HOST_PACKAGES
  [ "${PACKAGES_INSTALLED:-0}" = 0 ] || changed=1
}

# The command may be a loader line with arguments, so it is split on purpose.
# shellcheck disable=SC2086
criu_works() { $1 check >/dev/null 2>&1; }

# apt options for a private state dir that only knows the next Debian release, so the host's own
# package state is never touched. The mirror is the one the machine already uses.
trixie_apt_opts() {
  echo "-o Dir::State=$APT_STATE -o Dir::State::Lists=$APT_STATE/lists -o Dir::Cache=$APT_STATE/cache \
-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$APT_STATE/sources \
-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null -o APT::Get::List-Cleanup=0 \
-o APT::Sandbox::User=root"
}

write_trixie_source() {
  local uri
  uri=$(debian_mirror)
  mkdir -p "$APT_STATE/lists/partial" "$APT_STATE/cache/archives/partial" "$APT_STATE/sources"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" >"$APT_STATE/sources/trixie.sources"
}

install_private_criu() {
  local opts dl
  opts=$(trixie_apt_opts)
  write_trixie_source
  log "installing CRIU from Debian 13 into $CRIU_PREFIX (Debian 12's does not run on kernel $(uname -r))"
  # shellcheck disable=SC2086
  apt-get $opts update -qq
  dl=$(mktemp -d)
  # shellcheck disable=SC2086
  (cd "$dl" && apt-get $opts download criu libcompel1 libc6 >/dev/null)
  rm -rf "$CRIU_PREFIX.new" && mkdir -p "$CRIU_PREFIX.new"
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$CRIU_PREFIX.new"; done
  rm -rf "$dl" "$CRIU_PREFIX" && mv "$CRIU_PREFIX.new" "$CRIU_PREFIX"
  changed=1
}

# The binary runs through its own prefix's loader because it needs a newer glibc than the host has.
private_criu_cmd() {
  local lib="$CRIU_PREFIX/usr/lib/x86_64-linux-gnu"
  echo "$lib/ld-linux-x86-64.so.2 --library-path $lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu $CRIU_PREFIX/usr/sbin/criu"
}

# True when a leave-running dump of a throwaway process finishes in time. In VMs whose hardware
# breakpoints never fire, criu waits forever for the parasite to trap; CRIU_FAULT=130 makes it single-step.
breakpoints_fire() {
  local criu_cmd=$1 dir pid rc
  dir=$(mktemp -d)
  setsid sleep 600 </dev/null >/dev/null 2>&1 &
  pid=$!
  # shellcheck disable=SC2086
  timeout -s KILL 20 env -u CRIU_FAULT $criu_cmd dump -t "$pid" -D "$dir" --leave-running -o dump.log >/dev/null 2>&1 && rc=0 || rc=$?
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  [ "$rc" = 0 ]
}

write_criu_wrapper() {
  local criu_cmd=$1 fault_line=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp" <<WRAP
#!/bin/sh
# Written by Ferry's scripts/setup-host.sh: runc, podman and docker find CRIU through this wrapper.
$fault_line
exec $criu_cmd "\$@"
WRAP
  chmod 755 "$tmp"
  if ! cmp -s "$tmp" "$CRIU_WRAPPER"; then
    mkdir -p "$(dirname "$CRIU_WRAPPER")"
    mv "$tmp" "$CRIU_WRAPPER"
    log "wrote $CRIU_WRAPPER"
    changed=1
  else
    rm -f "$tmp"
  fi
}

setup_criu() {
  local criu_cmd fault_line=""
  if [ -x /usr/sbin/criu ] && criu_works /usr/sbin/criu; then
    criu_cmd=/usr/sbin/criu
  else
    [ -x "$CRIU_PREFIX/usr/sbin/criu" ] && criu_works "$(private_criu_cmd)" || install_private_criu
    criu_cmd=$(private_criu_cmd)
    # shellcheck disable=SC2086
    criu_works "$criu_cmd" || { log "CRIU from Debian 13 fails 'criu check' too: $($criu_cmd check 2>&1 | tail -3)"; exit 1; }
  fi
  if breakpoints_fire "$criu_cmd"; then
    log "hardware breakpoints fire: CRIU runs with defaults"
  else
    log "hardware breakpoints do not fire here: the wrapper sets CRIU_FAULT=130"
    fault_line="export CRIU_FAULT=130"
  fi
  write_criu_wrapper "$criu_cmd" "$fault_line"
}

# Writes a file only when its content differs, so reruns leave mtimes and services alone.
put_file() {
  local path=$1 content=$2
  if [ "$(cat "$path" 2>/dev/null)" != "$content" ]; then
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" >"$path"
    log "wrote $path"
    changed=1
  fi
}

configure_runtimes() {
  # Podman containers here only start with hard limits no higher than the machine allows.
  put_file /etc/containers/containers.conf '[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]'
  # Checkpoints in the Docker Engine API are an experimental feature.
  put_file /etc/docker/daemon.json '{"experimental": true}'
}

install_host_packages
setup_criu
configure_runtimes
criu --version | head -1 >&2
[ "$changed" = 0 ] && log "nothing to change" || log "done"
