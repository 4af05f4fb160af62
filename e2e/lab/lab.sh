#!/usr/bin/env bash
# Ferry lab: runs one command inside a small VM whose kernel tracks dirty memory (Debian 12's 6.1 kernel,
# CONFIG_MEM_SOFT_DIRTY=y), under qemu with software emulation, and exits with the command's exit code.
#
#   e2e/lab/lab.sh [--timeout S] [--mem MiB] [--cpus N] [--cwd DIR] [--env NAME[=VALUE]]... -- COMMAND...
#   e2e/lab/lab.sh --prepare        # only install qemu and build the cached kernel and initramfs
#
# The guest sees this machine's whole root read-only over virtio-9p, under a RAM overlay: the host's
# node, runc, podman, criu and the checkout are all there, and nothing the guest writes reaches the host.
# The command's stdout and stderr stream to this script's own; 124 means the time limit killed the VM;
# 125 means the lab itself failed (the guest's console is printed). See e2e/lab/README.md.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERRY_LAB_CACHE:-/var/cache/ferry-lab}
# Drivers the initramfs needs before the shared root is mounted (all modules in Debian's kernel).
BASE_MODULES="virtio_pci virtio_console virtio_rng 9pnet_virtio 9p overlay"
# Loaded before the command runs: what `criu check` and Ferry's tests use (see /work/shared/HOST-NOTES.md).
# Anything else the kernel asks for (netfilter matches, qdiscs, link types) is loaded on demand.
GUEST_MODULES="crc32c_generic libcrc32c nfnetlink nf_tables nft_compat xt_comment tun veth bridge
inet_diag tcp_diag udp_diag unix_diag netlink_diag af_packet_diag raw_diag sch_tbf"
# Only these parts of the kernel's module tree are kept in the cache.
KEEP_MODULE_DIRS="arch block crypto fs lib mm net virt drivers/net drivers/virtio drivers/char drivers/block drivers/md"
DROP_MODULE_DIRS="drivers/net/wireless drivers/net/ethernet drivers/net/usb drivers/net/can drivers/net/wwan"
# Environment passed into the guest besides --env; everything else starts clean.
PASS_ENV="PATH HOME LANG LC_ALL LANGUAGE TZ CI NODE_OPTIONS"

timeout=600 mem=2048 cpus=2 cwd=$PWD cgroup=v2 ninep=${FERRY_LAB_9P:-cache=loose} quiet=0 show_console=0 prepare_only=0
extra_env=()

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  cat <<'EOF'
Options:
  --timeout S      stop the VM after S seconds and exit 124 (default 600; 0 = no limit)
  --mem MiB        guest memory (default 2048); /tmp and the root overlay are RAM
  --cpus N         guest CPUs, emulated by one host thread each (default 2)
  --cwd DIR        working directory of the command (default: the current one)
  --env NAME[=V]   pass NAME (from here, or set to V) into the guest; PATH, HOME, LANG, CI, FERRY_* pass anyway
  --cgroup v1|v2   cgroup layout inside the guest (default v2, a Debian 12 machine's)
  --console        stream the guest kernel's console to stderr
  -q, --quiet      no [lab] lines on stderr
  --prepare        install qemu, fetch and cache the kernel, build the initramfs; run nothing
EOF
}

log() { [ "$quiet" = 1 ] || printf '[lab] %s\n' "$*" >&2; }
die() {
  printf '[lab] %s\n' "$*" >&2
  exit 125
}
num() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 needs a whole number, not '$2'"; }

while [ $# -gt 0 ]; do
  case $1 in
  --timeout) num "$1" "${2-}" && timeout=$2 && shift 2 ;;
  --mem) num "$1" "${2-}" && mem=$2 && shift 2 ;;
  --cpus) num "$1" "${2-}" && cpus=$2 && shift 2 ;;
  --cwd) cwd=${2:?--cwd needs a directory} && shift 2 ;;
  --env) extra_env+=("${2:?--env needs NAME or NAME=VALUE}") && shift 2 ;;
  --cgroup) [[ ${2-} =~ ^v[12]$ ]] || die "--cgroup is v1 or v2" && cgroup=$2 && shift 2 ;;
  --console) show_console=1 && shift ;;
  -q | --quiet) quiet=1 && shift ;;
  --prepare) prepare_only=1 && shift ;;
  -h | --help) usage && exit 0 ;;
  --) shift && break ;;
  *) break ;;
  esac
done
[ "$prepare_only" = 1 ] || [ $# -gt 0 ] || {
  usage >&2
  exit 125
}
case $CACHE/ in /tmp/* | /run/* | /dev/* | /proc/* | /sys/*) die "FERRY_LAB_CACHE=$CACHE: the guest mounts a fresh /tmp and /run over the host's, so it would not see the cache" ;; esac
[ "$(id -u)" = 0 ] || die "must run as root (the guest shares / with root's view, and apt installs qemu)"

# ---------------------------------------------------------------- host packages

# shellcheck source=scripts/lib/packages.sh
. "$LAB_DIR/../../scripts/lib/packages.sh"

ensure_packages() {
  install_missing_packages qemu-system-x86 busybox-static
}

# ---------------------------------------------------------------- kernel

# The concrete kernel package behind linux-image-amd64 (e.g. linux-image-6.1.0-56-amd64) and its version.
kernel_package() {
  local pkg=${FERRY_LAB_KERNEL_PACKAGE:-} ver
  if [ -z "$pkg" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || return 1
  ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || return 1
  echo "$pkg $ver"
}

# Downloads the kernel package (never installs it), keeps its vmlinuz, config and the useful part of its
# module tree, and indexes the modules with busybox's depmod (the host may have no kmod).
fetch_kernel() {
  local pkg=$1 ver=$2 dir=$3 tmp deb kver keep
  tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  log "fetching $pkg $ver (not installed; unpacked into $dir)"
  if ! (cd "$tmp" && apt-get -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$tmp" && apt-get -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null) || {
      rm -rf "$tmp"
      die "cannot download $pkg=$ver"
    }
  fi
  deb=$(echo "$tmp"/*.deb)
  mkdir "$tmp/x"
  dpkg-deb -x "$deb" "$tmp/x"
  kver=${pkg#linux-image-}
  [ -f "$tmp/x/boot/vmlinuz-$kver" ] || die "$pkg has no /boot/vmlinuz-$kver"
  grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "$tmp/x/boot/config-$kver" || die "$pkg is built without CONFIG_MEM_SOFT_DIRTY"
  mkdir -p "$tmp/out/modules/kernel/drivers"
  cp "$tmp/x/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
  cp "$tmp/x/boot/config-$kver" "$tmp/out/config"
  extract_vmlinux "$tmp/out"
  echo "$kver" >"$tmp/out/kernel-release"
  local src="$tmp/x/lib/modules/$kver"
  cp "$src"/modules.builtin* "$src/modules.order" "$tmp/out/modules/"
  for keep in $KEEP_MODULE_DIRS; do
    [ -d "$src/kernel/$keep" ] && mv "$src/kernel/$keep" "$tmp/out/modules/kernel/$keep"
  done
  for keep in $DROP_MODULE_DIRS; do rm -rf "$tmp/out/modules/kernel/$keep"; done
  # busybox depmod wants <base>/lib/modules/<release>.
  mkdir -p "$tmp/base/lib/modules"
  ln -s "$tmp/out/modules" "$tmp/base/lib/modules/$kver"
  busybox depmod -b "$tmp/base" "$kver"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  mv "$tmp/out" "$dir"
  rm -rf "$tmp"
}

# qemu boots an uncompressed ELF kernel through its PVH entry point, which skips the firmware's real-mode
# setup and the kernel's own decompression: about 3 s less per boot under emulation. Debian's bzImage
# carries the ELF as one xz stream; where that or CONFIG_PVH is missing, vmlinuz boots as usual.
extract_vmlinux() {
  local dir=$1 off
  grep -q '^CONFIG_PVH=y' "$dir/config" || return 0
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$dir/vmlinuz" | head -1 | cut -d: -f1)
  [ -n "$off" ] || return 0
  # Not a pipe: xz stops after its stream, and tail's SIGPIPE would fail the pipeline.
  if xz -dc --single-stream <(tail -c +$((off + 1)) "$dir/vmlinuz") >"$dir/vmlinux.tmp" 2>/dev/null &&
    [ "$(head -c 4 "$dir/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    mv "$dir/vmlinux.tmp" "$dir/vmlinux"
  else
    rm -f "$dir/vmlinux.tmp"
  fi
}

# ---------------------------------------------------------------- initramfs

declare -A MOD_PATH MOD_DEPS MOD_SEEN
load_module_index() {
  local line path deps name
  while IFS= read -r line; do
    path=${line%%:*}
    deps=${line#*:}
    name=${path##*/}
    name=${name%.ko}
    name=${name//-/_}
    MOD_PATH[$name]=$path
    MOD_DEPS[$path]=$deps
  done <"$1/modules.dep"
}
# Prints the module's dependencies, then the module, each once (modules.dep paths).
module_order() {
  local path=$1 d
  [ -n "${MOD_SEEN[$path]:-}" ] && return
  MOD_SEEN[$path]=1
  for d in ${MOD_DEPS[$path]}; do module_order "$d"; done
  echo "$path"
}

build_initrd() {
  local kdir=$1 out=$2 stage m p
  stage=$(mktemp -d "$CACHE/.initrd.XXXXXX")
  mkdir -p "$stage"/{bin,dev,proc,sys,lib/modules}
  cp /bin/busybox "$stage/bin/busybox"
  cp "$LAB_DIR/guest/init" "$stage/init"
  chmod 755 "$stage/init"
  mknod -m 600 "$stage/dev/console" c 5 1
  load_module_index "$kdir/modules"
  for m in $BASE_MODULES; do
    p=${MOD_PATH[${m//-/_}]:-}
    [ -n "$p" ] || die "module $m is not in the kernel's tree"
    module_order "$p"
  done >"$stage/modules.load"
  while read -r p; do
    mkdir -p "$stage/lib/modules/$(dirname "$p")"
    cp "$kdir/modules/$p" "$stage/lib/modules/$p"
  done <"$stage/modules.load"
  (cd "$stage" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -6 >"$out.tmp")
  mv "$out.tmp" "$out"
  rm -rf "$stage"
}

# Sets KDIR (vmlinuz, config, modules/) and INITRD, building what is missing. Serialized by a lock so that
# parallel runs share one cache.
prepare() {
  local kp pkg ver hash
  mkdir -p "$CACHE/runs"
  exec 9>"$CACHE/.lock"
  flock 9
  ensure_packages
  # apt-cache takes a second: its answer is kept until apt's lists change.
  if [ -z "${FERRY_LAB_KERNEL_PACKAGE:-}" ] && [ -s "$CACHE/kernel-package" ] && [ "$CACHE/kernel-package" -nt /var/lib/apt/lists ]; then
    kp=$(cat "$CACHE/kernel-package")
  elif kp=$(kernel_package); then
    [ -n "${FERRY_LAB_KERNEL_PACKAGE:-}" ] || echo "$kp" >"$CACHE/kernel-package"
  else
    kp=
  fi
  if [ -n "$kp" ]; then
    read -r pkg ver <<<"$kp"
    KDIR="$CACHE/kernel/${pkg}_$ver"
    # (if, not ||: set -e must stay in force inside the function)
    if [ ! -f "$KDIR/kernel-release" ]; then fetch_kernel "$pkg" "$ver" "$KDIR"; fi
  else
    # Offline, or no apt lists: the newest kernel already cached will do.
    KDIR=$(find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name kernel-release 2>/dev/null | sort -V | tail -1)
    KDIR=${KDIR%/kernel-release}
    [ -n "$KDIR" ] || die "apt knows no linux-image-amd64 and nothing is cached (apt-get update?)"
  fi
  # Keyed on everything that goes into it.
  KIMG=$KDIR/vmlinuz
  [ -f "$KDIR/vmlinux" ] && KIMG=$KDIR/vmlinux
  hash=$(cat "$LAB_DIR/guest/init" /bin/busybox <(echo "$BASE_MODULES") | sha256sum | cut -c1-16)
  INITRD="$KDIR/initrd-$hash.cpio.gz"
  if [ ! -f "$INITRD" ]; then
    log "building $INITRD"
    build_initrd "$KDIR" "$INITRD"
    # Other checkouts may use other versions of the init script: the three newest stay.
    find "$KDIR" -maxdepth 1 -name 'initrd-*.cpio.gz' -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -f
  fi
  flock -u 9
  exec 9>&-
}

t0=$(date +%s.%N)
prepare
[ "$prepare_only" = 1 ] && {
  log "ready: kernel $(cat "$KDIR/kernel-release") in $KDIR, initramfs $INITRD"
  exit 0
}

# ---------------------------------------------------------------- one run

dir=$(cd "$cwd" 2>/dev/null && pwd -P) || die "no such directory: $cwd"
cwd=$dir
case $cwd/ in
/run/* | /dev/* | /proc/* | /sys/* | /var/lib/containers/* | /var/lib/docker/* | /var/lib/containerd/* | /var/lib/cni/*)
  die "--cwd $cwd: that path is a fresh, empty mount inside the guest; use a directory elsewhere" ;;
esac

RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
pids=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${FERRY_LAB_KEEP:-}" ]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

{
  echo "# Ferry lab run: the command and its environment (written by e2e/lab/lab.sh)"
  # Tests may look for it, e.g. to allow for emulation's slowness.
  echo "export FERRY_LAB=1"
  for name in $PASS_ENV $(compgen -e | grep '^FERRY_' || true); do
    [ -n "${!name+x}" ] && printf 'export %s=%q\n' "$name" "${!name}"
  done
  for e in "${extra_env[@]}"; do
    if [[ $e == *=* ]]; then printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; else printf 'export %s=%q\n' "$e" "${!e-}"; fi
  done
  printf 'cd %q || exit 125\n' "$cwd"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$RUN/cmd.sh"
{
  printf 'LAB_HOSTNAME=ferry-lab\nCGROUP=%s\nTMP_SIZE=90%%\n' "$cgroup"
  printf 'LAB_CWD=%q\n' "$cwd"
  printf 'MODULES_TREE=%q\n' "$KDIR/modules"
  printf 'MODULES=%q\n' "${GUEST_MODULES//$'\n'/ }"
} >"$RUN/config"
cp "$LAB_DIR/guest/stage2" "$RUN/stage2"

# qemu writes each virtio port into a FIFO; cat copies it to this script's stdout/stderr, whatever they
# are (a terminal, a file, a pipe or a socket from a parent process).
mkfifo "$RUN/out" "$RUN/err"
cat "$RUN/out" &
pids+=($!)
cat "$RUN/err" >&2 &
pids+=($!)
if [ "$show_console" = 1 ]; then
  mkfifo "$RUN/console"
  cat "$RUN/console" >&2 &
  pids+=($!)
  console_path=$RUN/console
else
  console_path=$RUN/console.log
fi

append="console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off init_on_alloc=0 apparmor=0 rdinit=/init"
append+=" ferry_lab.run=$RUN ferry_lab.9p=$ninep ${FERRY_LAB_KERNEL_ARGS:-}"
# SC2054: qemu's own option syntax has the commas; SC2206: FERRY_LAB_ACCEL is split into words on purpose.
# shellcheck disable=SC2054,SC2206
qemu=(
  qemu-system-x86_64 -name ferry-lab -nodefaults -no-user-config -display none -no-reboot
  -machine pc ${FERRY_LAB_ACCEL:--accel tcg,thread=multi} -cpu "${FERRY_LAB_CPU:-Nehalem}" -smp "$cpus" -m "$mem"
  -kernel "$KIMG" -initrd "$INITRD" -append "$append"
  -chardev "file,id=console,path=$console_path" -serial chardev:console
  -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -device virtio-rng-pci
  -device virtio-serial-pci,id=ports
  -chardev "file,id=out,path=$RUN/out" -device virtserialport,bus=ports.0,chardev=out,name=ferry-lab.out
  -chardev "file,id=err,path=$RUN/err" -device virtserialport,bus=ports.0,chardev=err,name=ferry-lab.err
  -chardev "file,id=status,path=$RUN/status" -device virtserialport,bus=ports.0,chardev=status,name=ferry-lab.status
)
t1=$(date +%s.%N)
if [ "$timeout" = 0 ]; then
  "${qemu[@]}" </dev/null >"$RUN/qemu.log" 2>&1 &
else
  timeout -k 10 "$timeout" "${qemu[@]}" </dev/null >"$RUN/qemu.log" 2>&1 &
fi
qpid=$!
# Interrupted (Ctrl-C, a CI job cancelled): stop the VM rather than leave it running to its time limit.
signal=
for sig in INT TERM HUP; do trap 'signal='"$sig"'; kill -TERM "$qpid" 2>/dev/null' "$sig"; done
set +e
wait "$qpid"
qrc=$?
while kill -0 "$qpid" 2>/dev/null; do
  wait "$qpid"
  qrc=$?
done
set -e
trap - INT TERM HUP
t2=$(date +%s.%N)
# A FIFO that qemu never opened still has its cat waiting for a writer: open and close it once.
for f in "$RUN/out" "$RUN/err" "$RUN/console"; do [ -p "$f" ] && : 1<>"$f"; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
ready=$(awk '$1 == "ready" {print $2}' "$RUN/status" 2>/dev/null || true)
read -r _ rc finished < <(grep '^exit ' "$RUN/status" 2>/dev/null | tail -1) || true
timing="wall $(secs "$t1" "$t2") s (prepare $(secs "$t0" "$t1") s)"
[ -n "$ready" ] && timing+=", guest ready at ${ready} s of guest uptime"
[ -n "${finished:-}" ] && timing+=", command $(secs "$ready" "$finished") s"

show_diagnostics() {
  sed 's/^/[lab] qemu: /' "$RUN/qemu.log" >&2 || true
  if [ -f "$RUN/console.log" ]; then tail -n 40 "$RUN/console.log" | sed 's/^/[lab] console: /' >&2; fi
  sed -n 's/^init /[lab] guest: /p' "$RUN/status" >&2 2>/dev/null || true
}

if [ -n "$signal" ]; then
  log "stopped by SIG$signal; $timing"
  exit $((128 + $(kill -l "$signal")))
elif [ -n "${rc:-}" ]; then
  log "exit $rc; $timing"
  exit "$rc"
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  show_diagnostics
  log "timed out after $timeout s; $timing"
  exit 124
else
  show_diagnostics
  log "the VM stopped without the command's exit code (qemu exited $qrc); $timing"
  exit 125
fi
