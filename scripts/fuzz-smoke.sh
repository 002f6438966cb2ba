#!/usr/bin/env bash
# A short bounded run of every fuzz target in fuzz/ (cargo-fuzz, libFuzzer): SECONDS each
# (10 by default). CI runs it after the unit tests; a crash fails it and leaves the input
# in fuzz/artifacts/<target>/ (add it as a regression unit test, then fix).
#
# cargo-fuzz wants a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one here use the
# flags it needs. Seeds: the small committed corpus in fuzz/corpus/, plus, when the Go test
# servers are built (target/go-targets), real sections cut from one of them at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

# AddressSanitizer when its runtime links, plain libFuzzer otherwise; debug assertions on, so
# an integer overflow is a crash, not a silent wrap.
SANITIZER="${FUZZ_SANITIZER:-address}"
cd fuzz
echo "== cargo fuzz build (sanitizer: $SANITIZER)"
if ! cargo fuzz build -O --debug-assertions --sanitizer "$SANITIZER" 2>/tmp/sonde-fuzz-build.log; then
    if [ "$SANITIZER" = address ]; then
        echo "ASan build failed; retrying without a sanitizer. Its last lines:"
        grep -E "^error" /tmp/sonde-fuzz-build.log | head -n 5 || tail -n 5 /tmp/sonde-fuzz-build.log
        SANITIZER=none
        cargo fuzz build -O --debug-assertions --sanitizer none
    else
        cat /tmp/sonde-fuzz-build.log
        exit 1
    fi
fi

# Run-time seeds, outside the committed corpus (a Go binary is megabytes).
RUNTIME=target/seeds
rm -rf "$RUNTIME"
mkdir -p "$RUNTIME"
GO_BIN="$(ls ../target/go-targets/httpserver-*-static-stripped 2>/dev/null | head -n 1 || true)"
if [ -n "$GO_BIN" ] && command -v objcopy >/dev/null; then
    mkdir -p "$RUNTIME/inspect_elf" "$RUNTIME/pclntab" "$RUNTIME/buildinfo"
    cp "$GO_BIN" "$RUNTIME/inspect_elf/real"
    objcopy -O binary --only-section=.gopclntab "$GO_BIN" "$RUNTIME/pclntab/real"
    objcopy -O binary --only-section=.go.buildinfo "$GO_BIN" "$RUNTIME/buildinfo/real"
fi
# The dwarf target's layout (see fuzz_targets/dwarf.rs) from an unstripped server's sections,
# decompressed first (Go 1.20+ compresses them).
GO_DWARF="$(ls ../target/go-targets/httpserver-1.2[1-9]*-static-plain 2>/dev/null | head -n 1 || true)"
if [ -n "$GO_DWARF" ] && command -v objcopy >/dev/null; then
    d="$RUNTIME/dwarf-sections"; mkdir -p "$d" "$RUNTIME/dwarf"
    objcopy --decompress-debug-sections "$GO_DWARF" "$d/bin"
    # Non-allocated sections are dumped, not copied with -O binary (that writes nothing);
    # Go writes its strings inline, so `.debug_str` is often absent.
    : >"$d/str"
    for s in abbrev str info; do
        objcopy --dump-section ".debug_$s=$d/$s" "$d/bin" /dev/null 2>/dev/null || true
    done
    python3 - "$d" "$RUNTIME/dwarf/real" <<'PY'
import struct, sys
d, out = sys.argv[1], sys.argv[2]
abbrev, strs, info = (open(f"{d}/{s}", "rb").read() for s in ("abbrev", "str", "info"))
open(out, "wb").write(struct.pack("<II", len(abbrev), len(strs)) + abbrev + strs + info)
PY
    rm -rf "$d"
fi

failed=0
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    work="target/work/$t"
    mkdir -p "$work"
    seeds=("corpus/$t")
    [ -d "$RUNTIME/$t" ] && seeds+=("$RUNTIME/$t")
    # Inputs that once crashed (each has a unit test too): mutations start from them again.
    [ -d "regressions/$t" ] && seeds+=("regressions/$t")
    echo "== fuzz $t for ${SECONDS_EACH}s"
    # New inputs go to a scratch folder, so the committed corpus stays small; -max_len keeps
    # whole-binary mutations affordable; one input over 20 s is a hang.
    if ! cargo fuzz run -O --debug-assertions --sanitizer "$SANITIZER" "$t" "$work" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 \
        -max_len=$((8 << 20)) -print_final_stats=1 >"target/$t.log" 2>&1; then
        echo "FAIL $t (log: fuzz/target/$t.log, input: fuzz/artifacts/$t/)"
        tail -n 30 "target/$t.log"
        failed=1
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "target/$t.log" | tr '\n' ' '
        echo
    fi
done
exit "$failed"
