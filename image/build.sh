#!/usr/bin/env bash
# Builds Ferry's container image, the one the Helm chart runs (agent, controller, their init containers),
# from Debian 13 packages and this checkout: nothing is pulled from an image registry.
#
#   image/build.sh [--tag NAME:TAG] [--output FILE] [--force]
#
# The image: Debian 13 (node 20, CRIU 4, runc, openssl, zstd, iptables for CRIU's network lock), Ferry
# compiled to JavaScript with its production dependencies under /opt/ferry, `ferry` on PATH and as the
# entrypoint, and agent/bin/ferry-runc for the chart's install-ferry-runc init container. Default tag
# ferry:<version in package.json>, the chart's appVersion. The image lands in podman's default store;
# --output also writes it as an OCI archive for a cluster's nodes (`ctr -n k8s.io images import FILE`).
# Idempotent: an image whose label dev.ferry.source matches the sources is kept unless --force.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[image] %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/packages.sh
. scripts/lib/packages.sh

version=$(node -p 'require("./package.json").version')
tag="ferry:$version" output="" force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
    --output) output=${2:?--output needs a file name}; shift 2 ;;
    --force) force=1; shift ;;
    *) log "unknown argument '$1' (usage: image/build.sh [--tag NAME:TAG] [--output FILE] [--force])"; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { log "must run as root (mmdebstrap builds the root file system as root; podman's store is root's)"; exit 1; }

# What goes into the image, besides Debian's packages. A change to any of these makes a new image.
SOURCES=(agent/src cli/src controller/src agent/bin/ferry-runc bin/ferry.js package.json package-lock.json image)
# Debian 13 rather than 12: Debian 12's CRIU fails on recent kernels and its node is 18.
PACKAGES=nodejs,criu,runc,openssl,zstd,iptables,ca-certificates

source_key() {
  { echo "$PACKAGES"; find "${SOURCES[@]}" -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-32
}

key=$(source_key)
install_missing_packages mmdebstrap podman
if [ "$force" = 0 ] && [ "$(podman image inspect "$tag" --format '{{index .Labels "dev.ferry.source"}}' 2>/dev/null)" = "$key" ]; then
  log "$tag is up to date with the sources ($key)"
else
  work=$(mktemp -d /var/tmp/ferry-image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  stage="$work/opt-ferry"
  log "compiling Ferry into $stage"
  npx tsc -p image/tsconfig.json --outDir "$stage/dist"
  mkdir -p "$stage/bin" "$stage/agent/bin"
  cp bin/ferry.js "$stage/bin/" && cp agent/bin/ferry-runc "$stage/agent/bin/" && cp package.json package-lock.json "$stage/"
  # The checkout's node_modules, pruned to production dependencies: no registry needed, and the native
  # module (better-sqlite3) is the one built here, for node 20's ABI, which Debian 13's node 20 shares.
  cp -a node_modules "$stage/"
  (cd "$stage" && npm prune --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)

  mirror=$(debian_mirror)
  log "building the root file system from Debian 13 ($mirror): $PACKAGES"
  # Documentation, manual pages and translations are left out: about a third of the size.
  mmdebstrap --quiet --variant=apt --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='mkdir -p "$1/opt/ferry"' --customize-hook="sync-in $stage /opt/ferry" \
    --customize-hook='chroot "$1" ln -sf /opt/ferry/bin/ferry.js /usr/local/bin/ferry' \
    --customize-hook='chroot "$1" ferry --help >/dev/null' \
    trixie "$work/rootfs.tar" "deb $mirror trixie main"

  log "importing as $tag"
  podman import --quiet \
    --change 'ENTRYPOINT ["/usr/local/bin/ferry"]' --change 'WORKDIR /' \
    --change "LABEL dev.ferry.source=$key" --change "LABEL org.opencontainers.image.version=$version" \
    --change 'LABEL org.opencontainers.image.title=ferry' \
    "$work/rootfs.tar" "$tag" >/dev/null
fi

if [ -n "$output" ]; then
  rm -f "$output"
  podman save --quiet --format oci-archive --output "$output" "$tag"
  log "wrote $output"
fi
podman image inspect "$tag" --format '{{.Id}} {{.Size}}' | awk -v t="$tag" '{printf "%s %s %.0f MiB\n", t, substr($1,1,12), $2/1048576}'
