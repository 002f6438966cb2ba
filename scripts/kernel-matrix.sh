#!/usr/bin/env bash
# The kernel matrix: boots Debian's stock kernels under QEMU (TCG: software emulation, since
# /dev/kvm may be missing or unable to run stock kernels) and runs sonde's kernel-facing checks
# inside (tests/kernels/guest.sh): `sonde check`, every embedded BPF program through the
# verifier, a Go server (plain and stripped) counted exactly, Python http.server and nginx
# HTTP + HTTPS counted exactly through the syscall/OpenSSL tracer.
#
#   scripts/kernel-matrix.sh 6.1 6.12
#
# A kernel is named by its Debian series: the newest `linux-image-<series>…-amd64` package apt
# knows (6.12 comes from bookworm-backports, which scripts/setup.sh adds). Packages are cached
# under target/kernels/. The guest sees this machine's root read-only over 9p, with a tmpfs
# overlay, so it runs the very binaries built here.
#
# Exit status: 0 only when every check passed on every kernel.
#   KERNEL_MATRIX_SELF_TEST=1  also demand that a known-bad object (tests/kernels/unbounded.bpf.c)
#                              loads: the verifier rejects it, so the matrix must fail.
#   KERNEL_MATRIX_TIMEOUT      seconds per kernel before the guest is killed (default 240)
#   KERNEL_MATRIX_SMP/_MEM     vCPUs (2) and MiB of RAM (1536) of the guest
#   KERNEL_MATRIX_GUEST        the script the guest runs (default tests/kernels/guest.sh; the
#                              bench/kernel-syscall-cost.sh benchmark boots the same way); its
#                              `BENCH …` lines are printed too
#   KERNEL_MATRIX_QEMU_ARGS    extra qemu-system-x86_64 arguments (words), e.g. `-icount shift=3`
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ $# -gt 0 ] || { echo "usage: $0 KERNEL_SERIES... (e.g. 6.1 6.12)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "kernel-matrix: run as root (apt-get download, BPF in the guest)" >&2; exit 2; }
for tool in qemu-system-x86_64 busybox cpio depmod dpkg-deb apt-get clang; do
  command -v "$tool" >/dev/null || { echo "kernel-matrix: $tool missing (run scripts/setup.sh)" >&2; exit 2; }
done

cache=$repo/target/kernels
mkdir -p "$cache"
timeout_s=${KERNEL_MATRIX_TIMEOUT:-240}
guest_script=$(realpath "${KERNEL_MATRIX_GUEST:-tests/kernels/guest.sh}")
[ -f "$guest_script" ] || { echo "kernel-matrix: no guest script $guest_script" >&2; exit 2; }

echo "== kernel matrix: building sonde and the guest's inputs"
cargo build --quiet --bin sonde
sonde=$repo/target/debug/sonde
go_dir=$repo/target/go-targets
# The newest static pair scripts/build-go-targets.sh made (CI builds them all first); without
# any, one pair with Debian's Go, named the same way.
go_plain=$(ls "$go_dir"/httpserver-*-static-plain 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$go_plain" ]; then
  mkdir -p "$go_dir"
  v=$(go version | awk '{print $3}' | sed 's/^go//')
  for strip in plain stripped; do
    ldflags=""
    [ $strip = stripped ] && ldflags="-s -w"
    (cd tests/go/httpserver && GOTOOLCHAIN=local GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
      GOPATH="$go_dir/.gopath" GOCACHE="$go_dir/.gocache" \
      go build -ldflags="$ldflags" -o "$go_dir/httpserver-$v-static-$strip" .)
  done
  go_plain=$go_dir/httpserver-$v-static-plain
fi
go_stripped=${go_plain%-plain}-stripped
[ -x "$go_stripped" ] || { echo "kernel-matrix: $go_stripped missing" >&2; exit 2; }
# The deliberately bad object: the 6.1 verifier's lost bound, kept as a regression sample.
bad_obj=$cache/unbounded.bpf.o
clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I/usr/include/x86_64-linux-gnu \
  -c tests/kernels/unbounded.bpf.c -o "$bad_obj"

# The package of a series: the newest linux-image-<series>.*-amd64 that is a real kernel
# (not -cloud: no 9p; not -rt, -dbg, -unsigned, nor the meta-package).
package_of() {
  local series=$1 re
  re="^linux-image-${series//./\\.}[.-][0-9][^ ]*-amd64\$"
  apt-cache search --names-only "$re" | awk '{print $1}' \
    | grep -Ev -- '-(cloud|rt)-amd64$' | sort -V | tail -n 1
}

# Extracts the package into $cache/<package>/ (once) and builds its initramfs.
prepare() {
  local pkg=$1 dir=$cache/$1
  if [ ! -f "$dir/.ready" ]; then
    rm -rf "$dir" && mkdir -p "$dir/tree"
    (cd "$dir" && apt-get download -q "$pkg" >/dev/null 2>&1) \
      || { echo "kernel-matrix: apt-get download $pkg failed" >&2; return 1; }
    dpkg-deb -x "$dir"/*.deb "$dir/tree"
    rm -f "$dir"/*.deb
    local kver
    kver=$(ls "$dir/tree/lib/modules")
    depmod -b "$dir/tree" "$kver"
    touch "$dir/.ready"
  fi
  # Cheap (a few modules): rebuilt whenever tests/kernels/init changed.
  if [ ! "$dir/initramfs.gz" -nt tests/kernels/init ]; then
    build_initramfs "$dir" "$(ls "$dir/tree/lib/modules")"
  fi
}

# A busybox initramfs with the modules a 9p + overlay root needs, in load order.
build_initramfs() {
  local dir=$1 kver=$2 root
  root=$dir/initramfs
  local mods=$dir/tree/lib/modules/$kver
  rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,lower,rw,newroot,mods}
  cp /usr/bin/busybox "$root/bin/busybox"
  : >"$root/mods/order"
  local m dep
  for m in virtio_pci 9pnet_virtio 9p overlay; do
    # modules.dep lists a module's dependencies, deepest last: load them in reverse.
    local line
    line=$(grep -E "/$m\.ko(\.xz|\.zst)?:" "$mods/modules.dep" || true)
    [ -n "$line" ] || continue # built into this kernel
    for dep in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
      local base
      base=$(basename "$dep")
      base=${base%.xz}
      base=${base%.zst}
      grep -qx "$base" "$root/mods/order" && continue
      case $dep in
        *.xz) xz -dc "$mods/$dep" >"$root/mods/$base" ;;
        *.zst) zstd -qdc "$mods/$dep" >"$root/mods/$base" ;;
        *) cp "$mods/$dep" "$root/mods/$base" ;;
      esac
      echo "$base" >>"$root/mods/order"
    done
  done
  cp tests/kernels/init "$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initramfs.gz"
}

run_kernel() {
  local series=$1 pkg dir log start rc
  pkg=$(package_of "$series")
  if [ -z "$pkg" ]; then
    # No apt list for it here: use a cached one.
    pkg=$(ls "$cache" | grep -E "^linux-image-${series//./\\.}[.-][0-9]" | sort -V | tail -n 1 || true)
  fi
  [ -n "$pkg" ] || { echo "kernel-matrix: no Debian package for kernel $series" >&2; return 1; }
  prepare "$pkg" || return 1
  dir=$cache/$pkg
  log=$cache/$series.log
  start=$(date +%s)
  local self_test=
  [ "${KERNEL_MATRIX_SELF_TEST:-0}" = 1 ] && self_test=$bad_obj
  set +e
  timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max \
    -smp "${KERNEL_MATRIX_SMP:-2}" -m "${KERNEL_MATRIX_MEM:-1536}" \
    -nographic -no-reboot -nic none -monitor none -serial stdio ${KERNEL_MATRIX_QEMU_ARGS:-} \
    -kernel "$dir"/tree/boot/vmlinuz-* -initrd "$dir/initramfs.gz" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 sonde.repo=$repo sonde.script=$guest_script sonde.bin=$sonde sonde.go_plain=$go_plain sonde.go_stripped=$go_stripped sonde.bad=$bad_obj sonde.self_test=$self_test" \
    </dev/null >"$log" 2>&1
  rc=$?
  set -e
  local secs=$(($(date +%s) - start))
  tr -d '\r' <"$log" | grep -E '^(PASS|FAIL|BENCH) ' | sed "s/^/  $series: /" || true
  local passed failed
  passed=$(tr -d '\r' <"$log" | grep -c '^PASS ' || true)
  failed=$(tr -d '\r' <"$log" | grep -c '^FAIL ' || true)
  local kernel
  kernel=$(tr -d '\r' <"$log" | sed -n 's/.*KERNEL //p' | head -n 1)
  if ! tr -d '\r' <"$log" | grep -q '^GUEST DONE'; then
    echo "  $series: FAIL guest did not finish (qemu exit $rc after ${secs}s); last lines of $log:"
    tr -d '\r' <"$log" | tail -n 20 | sed 's/^/    /'
    failed=$((failed + 1))
  fi
  # What the verifier refused, when it refused something that must load.
  [ "$failed" = 0 ] || tr -d '\r' <"$log" | grep -E '^    \| .*: rejected: ' | grep -v 'unbounded.bpf.o/' \
    | sed "s/^    | /  $series:   /" || true
  if [ "$self_test" ] && [ "$failed" != 0 ]; then
    tr -d '\r' <"$log" | grep -E '^    \| unbounded.bpf.o/.*: rejected: ' | sed "s/^    | /  $series:   /" || true
  fi
  if [ "$passed" = 0 ]; then
    failed=$((failed + 1))
  fi
  summary+=("$(printf '%-5s %-34s %2d passed, %d failed  %4ds' "$series" "${kernel:-$pkg}" "$passed" "$failed" "$secs")")
  [ "$failed" = 0 ]
}

summary=()
status=0
total_start=$(date +%s)
for series in "$@"; do
  echo "== kernel $series"
  if ! run_kernel "$series"; then
    status=1
    echo "  $series: details in target/kernels/$series.log"
  fi
done
echo "== kernel matrix summary ($(($(date +%s) - total_start))s)"
printf '%s\n' "${summary[@]}"
if [ $status = 0 ]; then
  echo "kernel matrix: every check passed"
else
  echo "kernel matrix: FAILED"
fi
exit $status
