#!/usr/bin/env bash
# The platforms Kestrel promises but CI cannot run: `cargo check` of the whole workspace
# (libraries, binaries, tests, examples) for macOS and iOS (Metal), Windows (DX12) and Android
# (Vulkan, GLES). Type-checking needs no linker, SDK or device; rustup adds the Rust standard
# library of each target when it is missing. Shader translation for these back ends is the
# `translate` test of the runtime (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(aarch64-apple-darwin aarch64-apple-ios x86_64-pc-windows-msvc aarch64-linux-android)
if ! command -v rustup >/dev/null; then
    echo "check-platforms: rustup is needed to add the targets ${targets[*]}" >&2
    exit 1
fi
installed="$(rustup target list --installed)"
missing=()
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || rustup target add "${missing[@]}"
for t in "${targets[@]}"; do
    echo "== cargo check --target $t =="
    cargo check --workspace --all-targets --target "$t"
done
