#!/usr/bin/env bash
# The weight-loading numbers of BENCHMARKS.md: for both real test files (SmolLM2-135M Q4_1 GGUF,
# all-MiniLM-L6-v2 safetensors; fetched by fetch-test-weights.sh) and every storage choice,
# `kestrel bench-load` converts the source into a Kestrel file and loads that file onto the
# GPU, in one process, medians of 3 runs each. One JSON object per line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kestrel_install_deps
kestrel_runtime_dir
eval "$(scripts/fetch-test-weights.sh | tail -n 1)"
cargo build --release -q -p kestrel-cli
for src in SmolLM2-135M-Instruct.Q4_1.gguf model.safetensors; do
    for quant in f32 f16 w8 w4; do
        target/release/kestrel bench-load "$KESTREL_TEST_WEIGHTS/$src" --quant "$quant" "$@"
    done
done
