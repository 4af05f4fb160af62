# shellcheck shell=bash
# Installing Debian packages for Ferry's scripts, sourced by scripts/setup-host.sh, e2e/lab/lab.sh and
# image/build.sh:
# only what is missing, and nothing started at install time (openssh-server's and docker.io's maintainer
# scripts would start their daemons; the tests start what they need and stop it). The caller defines log.

missing_packages() {
  local p missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  echo "${missing[@]:-}"
}

# Installs the missing ones among PACKAGE... and sets PACKAGES_INSTALLED=1 when there were any. Called as
# a plain command, so that the caller's set -e stops on a failed apt-get (inside `if` or `||` it would not).
install_missing_packages() {
  local missing policy=/usr/sbin/policy-rc.d own_policy=0
  missing=$(missing_packages "$@")
  [ -n "$missing" ] || return 0
  log "installing: $missing"
  apt-get update -qq
  # policy-rc.d's 101 tells invoke-rc.d "not now"; one the machine already has is left as it is.
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # shellcheck disable=SC2086 # a list of package names, split on purpose
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy" && trap - EXIT; fi
  # shellcheck disable=SC2034 # read by the caller
  PACKAGES_INSTALLED=1
}

# The Debian mirror this machine's apt already uses (deb822 sources first, then the one-line format).
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { log "cannot find the machine's Debian mirror in /etc/apt"; return 1; }
  echo "$uri"
}
