#!/usr/bin/env bash
# Builds libkestrel_jni.so (android/jni) for arm64-v8a, armeabi-v7a and x86_64 with the Android
# NDK and puts it in kestrel/src/main/jniLibs/<abi>/, where Gradle packages it into the AAR.
# Needs ANDROID_NDK_HOME (or ANDROID_NDK_ROOT) pointing at an NDK (r23 or later: LLVM tools).
# The library is linked with 16 KB page alignment (android/jni/build.rs), which is checked here.
#   KESTREL_ANDROID_API   minimum API level of the linked libraries (default 24, minSdk)
#   KESTREL_ANDROID_ABIS  the ABIs to build (default "arm64-v8a armeabi-v7a x86_64")
#   KESTREL_PROFILE       cargo profile (default release)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ndk="${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}"
if [ -z "$ndk" ] || [ ! -d "$ndk/toolchains/llvm/prebuilt" ]; then
    echo "build-jni: set ANDROID_NDK_HOME to an Android NDK (r23 or later)" >&2
    exit 1
fi
bin="$(echo "$ndk"/toolchains/llvm/prebuilt/*/bin)"
api="${KESTREL_ANDROID_API:-24}"
profile="${KESTREL_PROFILE:-release}"
abis=(${KESTREL_ANDROID_ABIS:-arm64-v8a armeabi-v7a x86_64})
cd "$here/.."
for abi in "${abis[@]}"; do
    case "$abi" in
        arm64-v8a) target=aarch64-linux-android clang=aarch64-linux-android ;;
        armeabi-v7a) target=armv7-linux-androideabi clang=armv7a-linux-androideabi ;;
        x86_64) target=x86_64-linux-android clang=x86_64-linux-android ;;
        *) echo "build-jni: unknown ABI $abi" >&2; exit 1 ;;
    esac
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    upper="$(echo "$target" | tr 'a-z-' 'A-Z_')"
    echo "== $abi ($target, API $api) =="
    env "CARGO_TARGET_${upper}_LINKER=$bin/$clang$api-clang" \
        "CC_${target//-/_}=$bin/$clang$api-clang" "AR_${target//-/_}=$bin/llvm-ar" \
        cargo build -p kestrel-jni --lib --profile "$profile" --target "$target"
    dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    out="$dir/$target/$([ "$profile" = dev ] && echo debug || echo "$profile")/libkestrel_jni.so"
    if "$bin/llvm-readelf" -lW "$out" | awk '$1 == "LOAD" {print $NF}' | grep -vx 0x4000; then
        echo "build-jni: $out has LOAD segments not aligned to 16 KB" >&2
        exit 1
    fi
    mkdir -p "$here/kestrel/src/main/jniLibs/$abi"
    cp "$out" "$here/kestrel/src/main/jniLibs/$abi/"
done
