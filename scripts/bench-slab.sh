#!/usr/bin/env bash
# The SLAB numbers of BENCHMARKS.md. Prints one JSON object per model and run
# (`kestrel profile --json`, without the per-op table):
#   1. per-image latency of SLAB-DeiT-T and SLAB-Swin-T at f32, f16, w8, w4;
#   2. SLA against softmax at equal size: each SLAB model timed interleaved with its PRepBN
#      baseline in one process;
#   3. the model's GFLOP/s against the best matmul of the same process (`--vs-matmul`).
# Arguments go to every `kestrel profile` call (e.g. `--iters 3`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kestrel_install_deps
kestrel_runtime_dir
cargo build --release -q -p kestrel-cli
strip_ops() { python3 -c 'import json,sys; [print(json.dumps({k: v for k, v in json.loads(l).items() if k != "ops"})) for l in sys.stdin]'; }
for quant in f32 f16 w8 w4; do
    target/release/kestrel profile slab-deit-t slab-swin-t --quant "$quant" --json "$@" | strip_ops
done
target/release/kestrel profile slab-deit-t deit-t-prepbn --json "$@" | strip_ops
target/release/kestrel profile slab-swin-t swin-t-prepbn --json "$@" | strip_ops
target/release/kestrel profile slab-deit-t slab-swin-t --json --vs-matmul "$@" | strip_ops
