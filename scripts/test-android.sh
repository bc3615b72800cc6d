#!/usr/bin/env bash
# The Android JNI layer (android/jni, libkestrel_jni.so) built for the host and driven from the
# host JVM by android/jni/tests/dev/kestrel/HostTest.java through the library's own Java bridge
# (android/kestrel/src/main/java): exported symbols (Java_dev_kestrel_* and the C ABI's
# kestrel_*), 16 KB-aligned LOAD segments, then classification of raw RGBA bytes with the top-1
# of `kestrel classify`, error paths as KestrelException with the C status and message, and —
# with the SmolLM2 GGUF of scripts/fetch-test-weights.sh — streamed generation, a callback stop,
# a callback's exception, a cancel from another thread and profiles.
# Called by scripts/test.sh; alone it needs the environment test.sh prepares (scripts/env.sh
# installs openjdk-17-jdk-headless; VK_DRIVER_FILES for lavapipe; KESTREL_TEST_WEIGHTS). Without
# the GGUF the generation checks are skipped unless KESTREL_REQUIRE_TEST_WEIGHTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CLI apart: its default `video` feature would otherwise put FFmpeg into the JNI library.
cargo build -q -p kestrel-jni -p kestrel-capi --examples --lib
cargo build -q -p kestrel-cli --bins
lib=target/debug/libkestrel_jni.so

echo "== JNI: only Java_dev_kestrel_* and kestrel_* symbols are exported =="
others="$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -Ev '^(Java_dev_kestrel_NativeBridge_|kestrel_)' || true)"
if [ -n "$others" ]; then
    echo "$lib exports other symbols:" >&2
    echo "$others" >&2
    exit 1
fi
echo "== JNI: LOAD segments aligned to 16 KB (Android 15 devices with 16 KB pages) =="
if readelf -lW "$lib" | awk '$1 == "LOAD" {print $NF}' | grep -vx 0x4000; then
    echo "$lib has LOAD segments not aligned to 0x4000" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "== JNI: javac (the library's Java sources and the host test) =="
javac -Xlint:all -Werror -d "$tmp/classes" android/kestrel/src/main/java/dev/kestrel/*.java android/jni/tests/dev/kestrel/*.java

slab="$tmp/slab_deit_test.kestrel"
cargo run -q -p kestrel-capi --example slab_fixture -- "$slab"
photo=models/tests/fixtures/preprocess/chelsea_90x60.bmp
top1="$(target/debug/kestrel classify --model "$slab" "$photo" --json | grep -o '"index":[0-9]*' | head -n 1 | cut -d: -f2)"
gguf="${KESTREL_TEST_WEIGHTS:-target/test-weights}/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
    if [ "${KESTREL_REQUIRE_TEST_WEIGHTS:-}" = 1 ]; then
        echo "error: $gguf is missing (scripts/fetch-test-weights.sh)" >&2
        exit 1
    fi
    echo "warning: $gguf is missing; the JNI generation checks are skipped (scripts/fetch-test-weights.sh)" >&2
    gguf=""
fi
echo "== JNI: host JVM test (kestrel classify's top-1: $top1) =="
java -Xcheck:jni -Djava.awt.headless=true -Djava.library.path=target/debug -cp "$tmp/classes" dev.kestrel.HostTest "$slab" "$photo" "$top1" "$gguf"
