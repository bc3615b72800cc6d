#!/usr/bin/env bash
# The LLM numbers of BENCHMARKS.md: SmolLM2-135M-Instruct (fetched by fetch-test-weights.sh)
# prefill and decode tok/s at its native Q4_1 and at f16, greedy, with the copy kernel's
# bandwidth measured just before and after (decode's weight bandwidth = linear weight bytes ×
# decode tok/s, as a fraction of copy), each with q/k/v and gate/up stacked (the default) and
# separate (`--separate-projections`), interleaved. One JSON object per line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kestrel_install_deps
kestrel_runtime_dir
eval "$(scripts/fetch-test-weights.sh | tail -n 1)"
cargo build --release -q -p kestrel-cli
model="$KESTREL_TEST_WEIGHTS/SmolLM2-135M-Instruct.Q4_1.gguf"
prompt="Write a short story about a kestrel that learns to hunt above a motorway. It was a cold morning in"
target/release/kestrel bench --op copy --json
for quant in native f16; do
    for projections in stacked separate; do
        flag=""
        [ "$projections" = separate ] && flag="--separate-projections"
        target/release/kestrel generate --model "$model" --prompt "$prompt" --temperature 0 --max-tokens 32 --quant "$quant" $flag --json \
            | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d.pop("text"); d.pop("tokens"); print(json.dumps(d))' \
            | sed "s/^{/{\"quant\": \"$quant\", \"projections\": \"$projections\", /"
    done
done
target/release/kestrel bench --op copy --json
