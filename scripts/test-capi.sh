#!/usr/bin/env bash
# The C ABI's tests (capi/): the header drift check, the exported symbols, then the C tests of
# capi/tests/*.c built with gcc against both the static and the shared library — errors.c
# (every error path; once more under valgrind: no definitely-lost bytes) and acceptance.c
# (SmolLM2 generates "Paris", callback stop, cancellation from a second thread, two models on
# two threads, a photo from raw RGBA bytes with the top-1 of `kestrel classify`, profiles).
# Called by scripts/test.sh; alone it needs the environment test.sh prepares (scripts/env.sh,
# VK_DRIVER_FILES for lavapipe, KESTREL_TEST_WEIGHTS from scripts/fetch-test-weights.sh;
# without the SmolLM2 GGUF acceptance.c is skipped unless KESTREL_REQUIRE_TEST_WEIGHTS=1).
# `scripts/test-capi.sh --bless` rewrites capi/include/kestrel.h from the Rust declarations.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --bless ]; then
    KESTREL_BLESS_HEADER=1 cargo test -q -p kestrel-capi --lib the_checked_in_header_is_current
    exit 0
fi

echo "== C ABI: header drift check =="
cargo test -q -p kestrel-capi --lib
# Apart: built together, the CLI's default `video` feature would put FFmpeg into the C ABI's
# libraries (cargo unifies features across the packages of one build), and the C tests would
# have to link it. The C ABI has no video functions.
cargo build -q -p kestrel-capi --examples --lib
cargo build -q -p kestrel-cli --bins
lib=target/debug
echo "== C ABI: only kestrel_* symbols are exported =="
others="$(nm -D --defined-only "$lib/libkestrel_capi.so" | awk '{print $3}' | grep -v '^kestrel_' || true)"
if [ -n "$others" ]; then
    echo "libkestrel_capi.so exports symbols outside kestrel_*:" >&2
    echo "$others" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "== C ABI: building the C tests (static and shared) =="
g++ -fsyntax-only -Wall -Wextra -Werror -x c++ -Icapi/include - <<<'#include "kestrel.h"'
cflags=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O1 -g -Icapi/include)
for t in errors acceptance; do
    # The static library needs the system libraries Rust's std links (`rustc --print
    # native-static-libs`).
    gcc "${cflags[@]}" "capi/tests/$t.c" "$lib/libkestrel_capi.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$tmp/$t-static"
    gcc "${cflags[@]}" "capi/tests/$t.c" -L"$lib" -lkestrel_capi -Wl,-rpath,"$PWD/$lib" -lpthread -o "$tmp/$t-shared"
done

slab="$tmp/slab_deit_test.kestrel"
cargo run -q -p kestrel-capi --example slab_fixture -- "$slab"
echo "== C ABI: error paths =="
"$tmp/errors-static" "$slab" "$tmp"
"$tmp/errors-shared" "$slab" "$tmp"
echo "== C ABI: error paths under valgrind =="
valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --log-file="$tmp/valgrind.log" \
    "$tmp/errors-shared" "$slab" "$tmp"
if ! grep -Eq "definitely lost: 0 bytes|no leaks are possible|All heap blocks were freed" "$tmp/valgrind.log"; then
    echo "valgrind found definitely-lost bytes:" >&2
    cat "$tmp/valgrind.log" >&2
    exit 1
fi
grep -E "definitely lost|ERROR SUMMARY" "$tmp/valgrind.log"

gguf="${KESTREL_TEST_WEIGHTS:-target/test-weights}/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
    if [ "${KESTREL_REQUIRE_TEST_WEIGHTS:-}" = 1 ]; then
        echo "error: $gguf is missing (scripts/fetch-test-weights.sh)" >&2
        exit 1
    fi
    echo "warning: $gguf is missing; the C acceptance test is skipped (scripts/fetch-test-weights.sh)" >&2
    exit 0
fi
photo=models/tests/fixtures/preprocess/chelsea_90x60.bmp
top1="$("$lib/kestrel" classify --model "$slab" "$photo" --json | grep -o '"index":[0-9]*' | head -n 1 | cut -d: -f2)"
echo "== C ABI: acceptance (kestrel classify's top-1: $top1) =="
"$tmp/acceptance-static" "$slab" "$photo" "$top1" "$gguf"
"$tmp/acceptance-shared" "$slab" "$photo" "$top1" "$gguf"
