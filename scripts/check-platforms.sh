#!/usr/bin/env bash
# The platforms Kestrel promises but CI cannot run: `cargo check` of the whole workspace
# (libraries, binaries, tests, examples) for macOS (Metal) and Windows (DX12), then the C ABI's
# static library (`cargo rustc -p kestrel-capi --crate-type
# staticlib`) for each mobile target the Android and iOS packages ship: Android arm64-v8a,
# armeabi-v7a, x86_64 and the iOS device and simulator. Neither needs a linker, SDK, NDK or
# device: a static library is an archive of the compiled objects, never linked (android/ and
# ios/ link it with the NDK or Xcode). The staticlibs use the `cross` profile (no optimisation,
# no debug info: the cheapest full code generation). rustup adds the Rust standard library of
# each target when it is missing; where rustup has no prebuilt one (aarch64-apple-ios-sim from
# this machine's mirror), the staticlib is built with a standard library compiled from source
# (`-Zbuild-std` from the `rust-src` component; RUSTC_BOOTSTRAP=1 lets stable cargo take that
# flag, for this build only). A target that can be had neither way is reported and skipped
# (KESTREL_REQUIRE_ALL_TARGETS=1 makes that an error). Shader translation for these back ends is
# the `translate` test of the runtime (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The mobile targets get the C ABI's staticlib below instead of a workspace check: it compiles
# the runtime, the models and the C ABI for them in full (what apps link); their CLI and tests
# are not built for phones. The two checks and the staticlibs keep CI under its 45 minutes.
check_targets=(aarch64-apple-darwin x86_64-pc-windows-msvc)
staticlib_targets=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android aarch64-apple-ios aarch64-apple-ios-sim)
if ! command -v rustup >/dev/null; then
    echo "check-platforms: rustup is needed to add the targets" >&2
    exit 1
fi
installed="$(rustup target list --installed)"
unavailable=()
from_source=()
for t in $(printf '%s\n' "${check_targets[@]}" "${staticlib_targets[@]}" | sort -u); do
    grep -qx "$t" <<<"$installed" && continue
    rustup target add "$t" && continue
    if [[ " ${staticlib_targets[*]} " == *" $t "* ]] && rustup component add rust-src; then
        echo "check-platforms: no prebuilt standard library for $t; it is built from source" >&2
        from_source+=("$t")
    else
        echo "check-platforms: warning: the standard library for $t could not be installed; $t is skipped" >&2
        unavailable+=("$t")
    fi
done
# Whether $1 is in the rest of the arguments.
listed() {
    local want=$1 u
    shift
    for u in "$@"; do
        [ "$u" = "$want" ] && return 0
    done
    return 1
}
available() {
    ! listed "$1" "${unavailable[@]}"
}
echo "== iOS package: the C target (ios/Sources/CKestrel: module map over kestrel.h) compiles as C =="
grep -q 'header "kestrel.h"' ios/Sources/CKestrel/include/module.modulemap
cc -std=c11 -Wall -Werror -fsyntax-only -Iios/Sources/CKestrel/include ios/Sources/CKestrel/abi.c
for t in "${check_targets[@]}"; do
    available "$t" || continue
    echo "== cargo check --target $t =="
    # FFmpeg's libraries are the host's only: the CLI is checked without its `video` feature.
    cargo check --workspace --exclude kestrel-cli --all-targets --target "$t"
    cargo check -p kestrel-cli --no-default-features --all-targets --target "$t"
done
for t in "${staticlib_targets[@]}"; do
    available "$t" || continue
    echo "== staticlib libkestrel_capi.a for $t =="
    start=$SECONDS
    if listed "$t" "${from_source[@]}"; then
        RUSTC_BOOTSTRAP=1 cargo rustc -Zbuild-std=std,panic_abort -p kestrel-capi --lib --crate-type staticlib --profile cross --target "$t"
    else
        cargo rustc -p kestrel-capi --lib --crate-type staticlib --profile cross --target "$t"
    fi
    lib="${CARGO_TARGET_DIR:-target}/$t/cross/libkestrel_capi.a"
    echo "$t: $lib ($(du -h "$lib" | cut -f1), $((SECONDS - start)) s)"
done
if [ ${#unavailable[@]} -gt 0 ]; then
    echo "check-platforms: skipped (no standard library from rustup): ${unavailable[*]}" >&2
    if [ "${KESTREL_REQUIRE_ALL_TARGETS:-}" = 1 ]; then
        exit 1
    fi
fi
