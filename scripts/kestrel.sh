#!/usr/bin/env bash
# Builds and runs the `kestrel` CLI on the best adapter found; with no arguments it runs the
# main job: `kestrel profile slab-swin-t --iters 3` (SLAB-Swin-T on seeded weights: per-op GPU
# table, end-to-end latency, and a Chrome/Perfetto trace in target/slab-swin-t.trace.json). Any
# arguments go to the CLI instead, e.g. `scripts/kestrel.sh info`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kestrel_install_deps
kestrel_runtime_dir
cargo build --release -q -p kestrel-cli
if [ $# -eq 0 ]; then
    set -- profile slab-swin-t --iters 3 --trace target/slab-swin-t.trace.json
fi
exec target/release/kestrel "$@"
