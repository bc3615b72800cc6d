#!/usr/bin/env bash
# The whole test suite: every kernel against its CPU reference on Vulkan (lavapipe: f16,
# subgroups, timestamps), then again on GL (llvmpipe: no f16, no subgroups — the fallbacks).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kestrel_install_deps
kestrel_runtime_dir
export VK_DRIVER_FILES="$(kestrel_lavapipe_icd)"
echo "== Vulkan (lavapipe) =="
WGPU_BACKEND=vulkan cargo test --workspace
echo "== GL (llvmpipe): fallback paths =="
WGPU_BACKEND=gl cargo test --workspace
