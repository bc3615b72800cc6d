#!/usr/bin/env bash
# Builds and runs the `kestrel` CLI on the best adapter found; with no arguments it runs the
# main job (`kestrel bench`, which names the adapter it ran on). Any arguments go to the CLI,
# e.g. `scripts/kestrel.sh info`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kestrel_install_deps
kestrel_runtime_dir
cargo build --release -q -p kestrel-cli
if [ $# -eq 0 ]; then
    set -- bench
fi
exec target/release/kestrel "$@"
