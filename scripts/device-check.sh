#!/usr/bin/env bash
# One prepared check of Kestrel on a machine with a real GPU (NVIDIA through Vulkan), inside a
# global time budget, from the kit of scripts/device-prepare.sh (no toolchain or network
# needed there). Usage:
#   scripts/device-check.sh OUTDIR [KIT]      (KIT default: target/device-kit)
# Steps, each under a timeout cut to the budget left: `kestrel info`; the kernel tests (every
# configuration of runtime/tests/common, the imitated subgroup layouts included); `kestrel
# bench --json`; `kestrel profile slab-deit-t slab-swin-t --quant f16 --json`; SmolLM2-135M
# greedy decode tok/s (when $KESTREL_TEST_WEIGHTS holds the GGUF of fetch-test-weights.sh;
# skipped, and said so, where it does not: ~94 MiB, more than a device machine's 64 MiB of
# carried files). Every step's output goes to OUTDIR/<step>.*, and OUTDIR/summary.json lists
# each step's status (pass, fail, timeout, skipped), seconds and note; the exit status is 0
# when no step failed or timed out.
#
# On a CPU adapter (lavapipe: the dry run, `scripts/device-check.sh OUTDIR` on a machine
# without a GPU) the steps run quick: the subgroup-reduction and large-tensor tests only,
# `bench --quick`, one profile iteration (KESTREL_CHECK_QUICK=0|1 overrides the choice).
# KESTREL_CHECK_BUDGET sets the budget in seconds (default 480).
set -uo pipefail
out="${1:?usage: scripts/device-check.sh OUTDIR [KIT]}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
kit_arg="${2:-}"
[ -n "$kit_arg" ] && kit_arg="$(cd "$kit_arg" 2>/dev/null && pwd)"
cd "$(dirname "$0")/.."
kit="${kit_arg:-target/device-kit}"
kit="$(cd "$kit" 2>/dev/null && pwd)" || { echo "device-check: no kit at ${2:-target/device-kit}; run scripts/device-prepare.sh first" >&2; exit 2; }
budget="${KESTREL_CHECK_BUDGET:-480}"
start=$SECONDS
steps="$out/steps.tsv"
: >"$steps"

# record NAME STATUS SECONDS NOTE
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$steps"
    echo "device-check: $1: $2 (${3}s) $4" >&2
}

# Seconds left, less what later steps keep back (`reserve`).
reserve=0
left() { echo $((budget - (SECONDS - start) - reserve)); }

# run NAME CAP LOG CMD...: runs CMD with stdout to LOG and stderr to LOG's name with the
# extension .stderr, under min(CAP, budget left).
run() {
    local name="$1" cap="$2" log="$3"
    shift 3
    local limit
    limit=$(left)
    [ "$cap" -lt "$limit" ] && limit=$cap
    if [ "$limit" -le 5 ]; then
        record "$name" timeout 0 "no budget left"
        return 1
    fi
    local t0=$SECONDS rc
    local err="${log%.*}.stderr"
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>"$err"
    rc=$?
    [ -s "$err" ] || rm -f "$err"
    local tail_of="$log"
    [ -s "$err" ] && tail_of="$err"
    local dt=$((SECONDS - t0))
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        record "$name" timeout "$dt" "stopped after ${limit}s"
    elif [ $rc -ne 0 ]; then
        record "$name" fail "$dt" "exit $rc: $(grep -v '^\s*$' "$tail_of" | tail -n 3 | tr '\t\n' '  ' | cut -c1-300)"
    else
        record "$name" pass "$dt" ""
    fi
    return $rc
}

# --- Environment: the Vulkan loader and a driver manifest -------------------------------------
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    if [ "$(id -u)" -eq 0 ] && ls "$kit"/debs/*.deb >/dev/null 2>&1; then
        for f in "$kit"/debs/*.deb; do dpkg -x "$f" /; done
        ldconfig
        echo "device-check: Vulkan loader unpacked from the kit" >&2
    else
        echo "device-check: warning: no libvulkan.so.1 and no loader .deb to unpack" >&2
    fi
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -z "${VK_ICD_FILENAMES:-}" ]; then
    for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
        if [ -f "$icd" ]; then
            export VK_DRIVER_FILES="$icd"
            break
        fi
    done
fi
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
kestrel="$kit/kestrel"

# --- info -------------------------------------------------------------------------------------
run info 30 "$out/info.txt" "$kestrel" info
timeout 30 "$kestrel" info --json >"$out/info.json" 2>/dev/null
chosen() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chosen"][sys.argv[2]])' "$out/info.json" "$1" 2>/dev/null || echo unknown; }
device_type="$(chosen device_type)"
adapter="$(chosen name)"
quick="${KESTREL_CHECK_QUICK:-}"
[ -z "$quick" ] && { [ "$device_type" = Cpu ] && quick=1 || quick=0; }
echo "device-check: adapter $adapter ($device_type), quick=$quick, budget ${budget}s" >&2

# --- kernel tests -----------------------------------------------------------------------------
mkdir -p "$out/tests"
# Python's lzma where there is no xz.
if tar -C "$work" -xJf "$kit/tests.tar.xz" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$kit/tests.tar.xz" "$work"; then
    if [ $quick -eq 1 ]; then
        # The subgroup reductions under every configuration, the imitated layouts included,
        # and the forced-window large tensors.
        selection=("matmul gemv_variants_match_reference" "qmatmul qgemv_every_scheme_awkward_shapes"
            "norm rms_norm_matches_reference" "softmax plain_and_scaled_softmax_match_reference"
            "reduce argmax_returns_the_first_maximum" "attention decode_matches_reference" "large_tensors")
    else
        selection=()
        while read -r t; do selection+=("$t"); done <"$kit/tests.txt"
    fi
    # bench, profile and decode keep 180 s.
    reserve=180
    for entry in "${selection[@]}"; do
        read -r t filter <<<"$entry"
        run "test-$t" 240 "$out/tests/$t.log" "$work/tests/$t" ${filter:+"$filter"}
        summary="$(grep -E '^test result:' "$out/tests/$t.log" 2>/dev/null | tail -n 1)"
        [ -n "$summary" ] && sed -i "\$s|\t[^\t]*\$|\t$summary|" "$steps"
    done
    reserve=0
else
    record tests fail 0 "cannot unpack $kit/tests.tar.xz"
fi

# --- bench and profile ------------------------------------------------------------------------
if [ $quick -eq 1 ]; then
    run bench 120 "$out/bench.jsonl" "$kestrel" bench --json --quick
    run profile 150 "$out/profile.jsonl" "$kestrel" profile slab-deit-t slab-swin-t --quant f16 --json --iters 1
else
    run bench 120 "$out/bench.jsonl" "$kestrel" bench --json
    run profile 120 "$out/profile.jsonl" "$kestrel" profile slab-deit-t slab-swin-t --quant f16 --json
fi

# --- SmolLM2 decode ---------------------------------------------------------------------------
gguf="${KESTREL_TEST_WEIGHTS:-target/test-weights}/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$gguf" ]; then
    prompt="Write a short story about a kestrel that learns to hunt above a motorway. It was a cold morning in"
    if run decode 120 "$out/decode.json" "$kestrel" generate --model "$gguf" --prompt "$prompt" --temperature 0 --max-tokens 32 --json; then
        tok_s="$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print("prefill %.1f tok/s, decode %.1f tok/s" % (d["prefill_tok_s"], d["decode_tok_s"]))' "$out/decode.json" 2>/dev/null)"
        [ -n "$tok_s" ] && sed -i "\$s|\t[^\t]*\$|\t$tok_s|" "$steps"
    fi
else
    record decode skipped 0 "no $gguf: the SmolLM2 GGUF (~94 MiB) does not fit the files a device machine is sent; set KESTREL_TEST_WEIGHTS where it exists"
fi

# --- summary ----------------------------------------------------------------------------------
python3 - "$steps" "$out/summary.json" "$adapter" "$device_type" "$quick" "$budget" $((SECONDS - start)) "$(head -n 1 "$kit/MANIFEST" 2>/dev/null)" <<'PY'
import json, sys
steps_file, dst, adapter, device_type, quick, budget, elapsed, kit = sys.argv[1:]
steps = []
for line in open(steps_file):
    name, status, seconds, note = line.rstrip("\n").split("\t", 3)
    steps.append({"step": name, "status": status, "seconds": int(seconds), "note": note})
ok = all(s["status"] in ("pass", "skipped") for s in steps)
summary = {"ok": ok, "adapter": adapter, "device_type": device_type, "quick": quick == "1", "budget_s": int(budget),
           "elapsed_s": int(elapsed), "kit": kit, "steps": steps}
json.dump(summary, open(dst, "w"), indent=1)
print(json.dumps({"ok": ok, "elapsed_s": int(elapsed), "failed": [s["step"] for s in steps if s["status"] not in ("pass", "skipped")]}))
sys.exit(0 if ok else 1)
PY
