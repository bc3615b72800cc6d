#!/usr/bin/env bash
# Builds the kit that scripts/device-check.sh runs on a machine with a real GPU but no network
# and no Rust toolchain: the release `kestrel` binary, the kernel test executables (stripped,
# packed with xz, whose large window shares the wgpu code they all link) and the Vulkan loader
# as a .deb (for a machine without libvulkan.so.1). Usage:
#   scripts/device-prepare.sh [KIT]          (default: target/device-kit, ignored by git)
# The kit must travel with the repository tree (a device machine takes 64 MiB in all), so its
# size is checked: at most KESTREL_KIT_MAX_MIB (default 48).
set -euo pipefail
cd "$(dirname "$0")/.."
kit="${1:-target/device-kit}"
max_mib="${KESTREL_KIT_MAX_MIB:-48}"
# The kernel tests run on the device: every op family against its CPU reference, the engine,
# weight textures and the forced-window large tensors (no weight-file tests: they need files).
tests=(attention conv2d elementwise engine gather gemv large_tensors layout matmul norm qmatmul reduce sla softmax texture_weights window_attention)

if [ "$(uname -m)" != x86_64 ]; then
    echo "device-prepare: the device machines are x86-64; build the kit on one (this is $(uname -m))" >&2
    exit 1
fi
rm -rf "$kit"
mkdir -p "$kit/tests" "$kit/debs"

echo "device-prepare: building the release kestrel binary" >&2
cargo build --release -q -p kestrel-cli
cp target/release/kestrel "$kit/kestrel"
strip "$kit/kestrel"

echo "device-prepare: building the kernel tests (${tests[*]})" >&2
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
# The test profile of the normal suite: the executables `cargo test` already built are reused.
cargo test -q -p kestrel --no-run --message-format=json "${args[@]}" >"$kit/cargo.json"
python3 - "$kit/cargo.json" "$kit/tests" <<'PY'
import json, shutil, sys
src, dst = sys.argv[1:]
found = {}
for line in open(src):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        found[m["target"]["name"]] = m["executable"]
for name, exe in sorted(found.items()):
    shutil.copy(exe, f"{dst}/{name}")
print("\n".join(sorted(found)), file=open(f"{dst}/../tests.txt", "w"))
PY
rm "$kit/cargo.json"
for t in "${tests[@]}"; do
    [ -x "$kit/tests/$t" ] || { echo "device-prepare: test executable $t missing" >&2; exit 1; }
done
strip "$kit"/tests/*
tar -C "$kit" -cf - tests | xz -9e -T2 >"$kit/tests.tar.xz"
rm -rf "$kit/tests"

echo "device-prepare: fetching the Vulkan loader package" >&2
download() { (cd "$kit/debs" && apt-get download -qq libvulkan1 >&2); }
download || { apt-get update -qq >&2 && download; } || echo "device-prepare: warning: no libvulkan1 .deb (apt-get download failed); the device must have the loader" >&2

{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- runtime shaders examples models || echo ' (with local changes)')"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
} >"$kit/MANIFEST"
mib=$(( ($(du -sb "$kit" | cut -f1) + (1 << 20) - 1) >> 20 ))
du -ah "$kit" >&2
if [ "$mib" -gt "$max_mib" ]; then
    echo "device-prepare: the kit is $mib MiB, over $max_mib MiB" >&2
    exit 1
fi
echo "device-prepare: $kit ready ($mib MiB); run scripts/device-check.sh OUTDIR $kit" >&2
