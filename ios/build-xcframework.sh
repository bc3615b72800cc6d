#!/usr/bin/env bash
# Builds KestrelFFI.xcframework (used by Package.swift as a binary target): Kestrel's C ABI as
# a static library (libkestrel_capi.a, crate kestrel-capi) for the iOS device (aarch64-apple-ios),
# the iOS simulator on Apple silicon (aarch64-apple-ios-sim) and macOS (aarch64-apple-darwin).
# Runs on macOS with Xcode (xcodebuild, Apple's linker) and rustup; `swift build` or Xcode then
# builds the package. The header and module map come from the CKestrel target, not from here.
#   KESTREL_PROFILE  cargo profile (default release)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
if [ "$(uname -s)" != Darwin ] || ! command -v xcodebuild >/dev/null; then
    echo "build-xcframework: needs macOS with Xcode (xcodebuild)" >&2
    exit 1
fi
profile="${KESTREL_PROFILE:-release}"
targets=(aarch64-apple-ios aarch64-apple-ios-sim aarch64-apple-darwin)
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"
export MACOSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-12.0}"
dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
args=()
for t in "${targets[@]}"; do
    echo "== $t =="
    cargo rustc -p kestrel-capi --lib --crate-type staticlib --profile "$profile" --target "$t"
    args+=(-library "$dir/$t/$([ "$profile" = dev ] && echo debug || echo "$profile")/libkestrel_capi.a")
done
rm -rf "$here/KestrelFFI.xcframework"
xcodebuild -create-xcframework "${args[@]}" -output "$here/KestrelFFI.xcframework"
echo "built $here/KestrelFFI.xcframework"
