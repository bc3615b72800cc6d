"""Writes Kestrel's SLAB golden fixtures (models/tests/fixtures/slab/) from slab_ref.py.

Small models (committed): seeded random weights with non-trivial RepBN statistics, saved in the
official checkpoint format (`torch.save({'model': state_dict})`, official key names and order),
a seeded input, the logits (computed in float64 from the float32 weights and input, stored as
float32) and a JSON of the configuration and debugging probes. Every small model is also folded
(FOLDING.md) and must give the same logits.

Full-size SLAB-DeiT-T and SLAB-Swin-T (logits only committed): weights from the torch-free
generator specified in README.md, which Rust reimplements.

    python make_fixtures.py [--out DIR] [--skip-full]
"""

import argparse
import copy
import json
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slab_ref  # noqa: E402
from slab_ref import build, fold_repbn, full_config  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT_DEFAULT = os.path.join(REPO, "models", "tests", "fixtures", "slab")

# name -> (seed, official model it mirrors)
SMALL = {
    "slab_deit_test": (101, "slab_deit_tiny"),
    "deit_prepbn_test": (102, "deit_tiny_prepbn"),
    "slab_swin_test": (103, "slab_swin_tiny"),
    "swin_prepbn_test": (104, "swin_tiny_prepbn"),
    "slab_pvt_test": (105, "slab_pvt_tiny"),
    "pvt_prepbn_test": (106, "pvt_tiny_prepbn"),
    "slab_cswin_test": (107, "slab_cswin_tiny"),
}
# This one gets extra top-level entries like a real release file (epoch, max_accuracy and a
# pickled yacs CfgNode the loader must skip).
WITH_EXTRAS = "slab_swin_test"

FULL = {"slab_deit_tiny": 1, "slab_swin_tiny": 2}
INPUT_SEED = 7
FOLD_TOL = 1e-5


# ----------------------------------------------------------------------------------------------
# Small fixtures: torch-seeded weights
# ----------------------------------------------------------------------------------------------

def fan_in(w):
    return w[0].numel()


@torch.no_grad()
def randomize_small(model, seed):
    """Seeded weights: RepBN running_mean ~ N(0, 0.5), running_var ~ U(0.5, 2), bn weight
    ~ U(0.5, 1.5), bn bias ~ N(0, 0.3), alpha ~ U(0.2, 1.5); linears/convs ~ N(0, 0.25/fan_in)
    (head: N(0, 2.25/fan_in)), which keeps activations O(1) however deep;
    biases ~ N(0, 0.1); positional tensors ~ N(0, 0.3); relative bias table ~ N(0, 0.5).
    Integer buffers: warm 0, iter 0, total_step unchanged, num_batches_tracked 1000;
    relative_position_index and attn_mask stay the architecture's own."""
    g = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * std + mean)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64) * (hi - lo) + lo)

    for key, t in model.state_dict().items():
        last = key.rsplit(".", 1)[-1]
        if t.dtype == torch.int64:
            if last in ("warm", "iter"):
                t.fill_(0)
            elif last == "num_batches_tracked":
                t.fill_(1000)
            continue  # total_step, relative_position_index
        if last == "attn_mask":
            continue
        if last == "running_mean":
            normal(t, 0.5)
        elif last == "running_var":
            uniform(t, 0.5, 2.0)
        elif last == "alpha":
            uniform(t, 0.2, 1.5)
        elif t.dim() == 1 and last == "weight":  # BN or (dead) LayerNorm scale
            uniform(t, 0.5, 1.5)
        elif key.endswith(".bn.bias") or key.endswith("norm1.bias"):
            normal(t, 0.3)
        elif last == "relative_position_bias_table":
            normal(t, 0.5)
        elif last in ("pos_embed", "positional_encoding", "cls_token", "scale") or \
                last.startswith("pos_embed"):
            normal(t, 0.3)
        elif key == "head.weight":
            normal(t, 1.5 * fan_in(t) ** -0.5)
        elif last == "weight":
            normal(t, 0.5 * fan_in(t) ** -0.5)
        elif last == "bias":
            normal(t, 0.1)
        else:
            raise KeyError(key)


# ----------------------------------------------------------------------------------------------
# Full-size fixtures: the torch-free generator of README.md
# ----------------------------------------------------------------------------------------------

GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1


def _mix(z):
    """SplitMix64 finaliser on a numpy uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def synth_uniform01(seed, index, n):
    """u_j in [0, 1), j = 0..n-1, for tensor `index` of a model generated with `seed`."""
    with np.errstate(over="ignore"):
        key = _mix(np.array([(seed * GOLDEN + index) & M64], dtype=np.uint64))[0]
        j = np.arange(1, n + 1, dtype=np.uint64)
        z = _mix(key + j * np.uint64(GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def synth_range(key, t):
    """(lo, hi) of the uniform range for a float tensor, or None when not generated."""
    last = key.rsplit(".", 1)[-1]
    if last == "attn_mask":
        return None
    if last == "running_var":
        return (0.5, 2.0)
    if last == "running_mean":
        return (-0.5, 0.5)
    if last == "alpha":
        return (0.5, 1.5)
    if last == "weight" and t.dim() == 1:
        return (0.5, 1.5)
    if key.endswith(".bn.bias") or key.endswith("norm1.bias"):
        return (-0.2, 0.2)
    if last == "relative_position_bias_table":
        return (-0.5, 0.5)
    if last.startswith("pos_embed") or last in ("positional_encoding", "cls_token", "scale"):
        return (-0.5, 0.5)
    if key == "head.weight":
        return (-0.1, 0.1)
    if last == "weight" and t.dim() == 4 and t.shape[1] == 1:
        return (-0.2, 0.2)
    if last == "weight":
        return (-0.035, 0.035)
    if last == "bias":
        return (-0.1, 0.1)
    raise KeyError(key)


@torch.no_grad()
def synthesize(model, seed):
    """Fill `model` with the README generator; returns {key: [first value, f64 sum]}."""
    checks = {}
    for i, (key, t) in enumerate(model.state_dict().items()):
        last = key.rsplit(".", 1)[-1]
        if t.dtype == torch.int64:
            if last in ("warm", "iter", "num_batches_tracked"):
                t.fill_(0)
            continue  # total_step: the official step; relative_position_index: computed
        rng = synth_range(key, t)
        if rng is not None:
            lo, hi = rng
            u = synth_uniform01(seed, i, t.numel())
            vals = (lo + (hi - lo) * u).astype(np.float32)
            t.copy_(torch.from_numpy(vals.reshape(tuple(t.shape))))
        flat = t.detach().reshape(-1).to(torch.float64)
        checks[key] = [float(flat[0]), float(flat.sum())]
    return checks


def synth_input(size):
    u = synth_uniform01(INPUT_SEED, 0, 3 * size * size)
    return torch.from_numpy((-2.0 + 4.0 * u).astype(np.float32).reshape(1, 3, size, size))


# ----------------------------------------------------------------------------------------------
# Probes, saving
# ----------------------------------------------------------------------------------------------

PROBE_TYPES = (slab_ref.PatchEmbedDeit, slab_ref.PatchEmbedNorm, slab_ref.DeitBlock,
               slab_ref.SwinBlock, slab_ref.PatchMerging, slab_ref.PVTBlock,
               slab_ref.CSwinBlock, slab_ref.MergeBlock)


@torch.no_grad()
def run_with_probes(model, x):
    """Logits and, for every patch embedding / block / merge and the final norm, the output
    shape, mean, std and first 4 values ([tokens, channels] row-major, batch 1)."""
    probes, hooks = [], []

    def hook(name):
        def f(_m, _i, out):
            o = out.detach().reshape(-1).to(torch.float64)
            probes.append(dict(name=name, shape=list(out.shape[1:]), mean=float(o.mean()),
                               std=float(o.std()), first=[float(v) for v in o[:4]]))
        return f

    for name, m in model.named_modules():
        if isinstance(m, PROBE_TYPES) or name in ("norm", "stage1_conv_embed"):
            hooks.append(m.register_forward_hook(hook(name)))
    logits = model(x)
    for h in hooks:
        h.remove()
    return logits, probes


def describe(model):
    """The unfolded architecture facts of a built model, stage by stage (for the JSON)."""
    R = slab_ref
    if isinstance(model, R.DeiT):
        blk = model.blocks[0]
        dim = blk.mlp.fc1.in_features
        return dict(tokens=model.pos_embed.shape[1], dim=dim, heads=blk.attn.heads,
                    head_dim=dim // blk.attn.heads, depth=len(model.blocks),
                    mixer="sla" if model.sla else "softmax", class_token_used=not model.sla,
                    pool="mean over tokens" if model.sla else "class token",
                    mlp_hidden=blk.mlp.fc1.out_features, final_norm=True)
    stages = []
    if isinstance(model, R.Swin):
        for layer in model.layers:
            b0 = layer.blocks[0]
            dim = b0.mlp.fc1.in_features
            stages.append(dict(
                res=b0.res, dim=dim, heads=b0.attn.heads, head_dim=dim // b0.attn.heads,
                mlp_hidden=b0.mlp.fc1.out_features,
                blocks=[dict(mixer="sla" if b.sla else "window_softmax", window=b.ws, shift=b.shift)
                        for b in layer.blocks],
                patch_merging_after=layer.downsample is not None))
        return dict(stages=stages, final_norm=True, pool="mean over tokens")
    if isinstance(model, R.PVT):
        for i in range(model.n):
            pe = getattr(model, f"patch_embed{i + 1}")
            blocks = getattr(model, f"block{i + 1}")
            a = blocks[0].attn
            dim = blocks[0].mlp.fc1.in_features
            stages.append(dict(
                res=model.res[i], dim=dim, heads=a.heads, head_dim=dim // a.heads,
                patch_conv=dict(kernel=pe.proj.kernel_size[0], stride=pe.proj.stride[0]),
                mlp_hidden=blocks[0].mlp.fc1.out_features, depth=len(blocks),
                mixer="sla" if isinstance(a, R.SlaPVT) else "softmax",
                sr_ratio=1 if isinstance(a, R.SlaPVT) else a.sr_ratio))
        return dict(stages=stages, final_norm=False, pool="mean over tokens")
    if isinstance(model, R.CSWin):
        for i in range(4):
            blocks = getattr(model, f"stage{i + 1}")
            dim = blocks[0].mlp.fc1.in_features
            br = blocks[0].attns
            stages.append(dict(
                res=br[0].res, dim=dim, heads=sum(b.heads for b in br), mlp_hidden=blocks[0].mlp.fc1.out_features,
                depth=len(blocks), merge_before=i > 0,
                mixer="sla+lepe" if isinstance(br[0], R.SlaCSwin) else "softmax+lepe",
                branches=[dict(channels=f"{j * (dim // len(br))}..{(j + 1) * (dim // len(br))}",
                               window_h=b.hs, window_w=b.ws, heads=b.heads,
                               head_dim=(dim // len(br)) // b.heads) for j, b in enumerate(br)]))
        return dict(stem=dict(kernel=7, stride=4, padding=2), stages=stages, final_norm=True,
                    pool="mean over tokens")
    raise TypeError(type(model))


def fake_yacs_cfgnode():
    """A stand-in for yacs.config.CfgNode (a dict subclass), pickled under that global name."""
    if "yacs.config" not in sys.modules:
        pkg, sub = types.ModuleType("yacs"), types.ModuleType("yacs.config")

        class CfgNode(dict):
            pass

        CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
        sub.CfgNode = CfgNode
        pkg.config = sub
        sys.modules["yacs"], sys.modules["yacs.config"] = pkg, sub
    return sys.modules["yacs.config"].CfgNode


def release_extras():
    node = fake_yacs_cfgnode()
    cfg = node(MODEL=node(TYPE="SlabSwinTransformer", NAME="slab_swin_test",
                          SWIN=node(EMBED_DIM=8, DEPTHS=[2, 1, 2, 1], WINDOW_SIZE=16),
                          LA=node(ATTN_TYPE="LLSS")),
               DATA=node(IMG_SIZE=32))
    cfg.__dict__["__immutable__"] = True
    return {"epoch": 299, "max_accuracy": 81.8, "config": cfg}


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr, dtype="<f4"))


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@torch.no_grad()
def make_small(name, seed, official, out):
    model = build(name)
    randomize_small(model, seed)
    sd = model.state_dict()
    payload = {"model": sd}
    if name == WITH_EXTRAS:
        payload.update(release_extras())
    pth = os.path.join(out, f"{name}.pth")
    torch.save(payload, pth)

    # Round trip through the file, then evaluate in float64.
    loaded = torch.load(pth, map_location="cpu", weights_only=False)["model"]
    ref = build(name)
    ref.load_state_dict(loaded, strict=True)
    assert list(loaded.keys()) == list(sd.keys())
    g = torch.Generator().manual_seed(seed + 1000)
    size = full_config(name)["img_size"]
    x = torch.randn(1, 3, size, size, generator=g, dtype=torch.float32)
    ref64 = ref.double()
    logits, probes = run_with_probes(ref64, x.double())

    folded = fold_repbn(ref64)
    assert not any(slab_ref.is_repbn(m) for m in folded.modules())
    err64 = rel_err(folded(x.double()), logits)
    ref32 = build(name)
    ref32.load_state_dict(loaded)
    err32_unfolded = rel_err(ref32(x).double(), logits)
    err32_folded = rel_err(fold_repbn(ref32)(x).double(), logits)
    assert err64 <= FOLD_TOL and err32_folded <= 1e-4, (name, err64, err32_folded)

    save_npy(os.path.join(out, f"{name}.input.npy"), x.numpy())
    save_npy(os.path.join(out, f"{name}.logits.npy"), logits.float().numpy())
    cfg = full_config(name)
    meta = dict(
        config=cfg,
        architecture=describe(ref),
        mirrors=official,
        files=dict(checkpoint=f"{name}.pth", input=f"{name}.input.npy",
                   logits=f"{name}.logits.npy"),
        checkpoint=dict(entries=len(sd), top_level_keys=list(payload.keys()),
                        format="torch.save zip (pickle protocol 2)"),
        seed=seed,
        logits_computed_in="float64 from the float32 weights and input",
        fold=dict(plan=[dict(norm=n, direction=d, into=t) for n, d, t in ref.fold_plan()],
                  rel_err_float64=err64, rel_err_float32_folded=err32_folded,
                  rel_err_float32_unfolded=err32_unfolded),
        sensitivity_max_abs_logit_change=sensitivity(ref64, x.double(), logits),
        probes=probes,
    )
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{name}: {len(sd)} entries, logits {logits.shape[1]}, fold rel err f64 {err64:.2e}, "
          f"f32 folded {err32_folded:.2e}, f32 unfolded {err32_unfolded:.2e}")


@torch.no_grad()
def make_full(name, seed, out):
    model = build(name)
    checks = synthesize(model, seed)
    size = full_config(name)["img_size"]
    x = synth_input(size)
    model64 = model.double()
    logits, probes = run_with_probes(model64, x.double())
    logits32 = logits.float()
    folded_err = rel_err(fold_repbn(model64)(x.double()), logits)
    assert folded_err <= FOLD_TOL
    top = torch.topk(logits32[0], 5)
    save_npy(os.path.join(out, f"{name}_full.logits.npy"), logits32.numpy())
    meta = dict(
        config=full_config(name),
        architecture=describe(model),
        generator="kestrel-slab-synth-v1 (tools/slab_reference/README.md)",
        weight_seed=seed,
        input=dict(seed=INPUT_SEED, tensor_index=0, range=[-2.0, 2.0], shape=[1, 3, size, size],
                   first=[float(v) for v in x.reshape(-1)[:4]],
                   sum=float(x.double().sum())),
        logits_file=f"{name}_full.logits.npy",
        logits_computed_in="float64 from the float32 weights and input",
        top5=[dict(index=int(i), logit=float(v)) for v, i in zip(top.values, top.indices)],
        logits_stats=dict(mean=float(logits.mean()), std=float(logits.std())),
        fold_rel_err_float64=folded_err,
        sensitivity_max_abs_logit_change=sensitivity(model64, x.double(), logits),
        probes=probes,
        tensor_checks={k: dict(first=v[0], sum=v[1]) for k, v in checks.items()},
    )
    with open(os.path.join(out, f"{name}_full.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{name} (full): top5 {[(d['index'], round(d['logit'], 4)) for d in meta['top5']]}, "
          f"logit std {meta['logits_stats']['std']:.3f}, fold rel err {folded_err:.2e}")
    for p in probes:
        print(f"   {p['name']:28s} std {p['std']:.3f}")


# Full-size models whose state-dict signature (key, shape, dtype, in order) is committed as
# `<name>.keys.tsv`: the Rust tests fold and load a checkpoint with exactly these entries.
KEY_LISTS = ["slab_deit_tiny", "slab_swin_tiny", "slab_pvt_tiny", "pvt_tiny_prepbn",
             "slab_cswin_tiny"]


def write_key_list(name, out):
    with open(os.path.join(out, f"{name}.keys.tsv"), "w") as f:
        for key, shape, dtype in slab_ref.state_dict_signature(build(name)):
            f.write(f"{key}\t[{', '.join(map(str, shape))}]\t{dtype}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT_DEFAULT)
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    slab_ref.check_official_keys()
    for name in KEY_LISTS:
        write_key_list(name, args.out)
    for name, (seed, official) in SMALL.items():
        make_small(name, seed, official, args.out)
    if not args.skip_full:
        for name, seed in FULL.items():
            make_full(name, seed, args.out)



# ----------------------------------------------------------------------------------------------
# Sensitivity: how much plausible implementation slips move the logits
# ----------------------------------------------------------------------------------------------

def _scale_keys(model, pred, fn):
    hit = False
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if pred(k):
                t.copy_(fn(t))
                hit = True
    return hit


MUTATIONS = {
    "alpha ignored (0)": lambda m: _scale_keys(m, lambda k: k.endswith(".alpha"),
                                               torch.zeros_like),
    "RepBN eps 1e-6": lambda m: _set_bn_eps(m, 1e-6),
    "dwc removed": lambda m: _scale_keys(m, lambda k: ".dwc." in k, torch.zeros_like),
    "dwc map transposed": lambda m: _scale_keys(m, lambda k: k.endswith(".dwc.weight"),
                                                lambda t: t.transpose(2, 3).contiguous()),
    "positional_encoding removed": lambda m: _scale_keys(
        m, lambda k: k.endswith("positional_encoding"), torch.zeros_like),
    "pos_embed removed": lambda m: _scale_keys(
        m, lambda k: k.rsplit(".", 1)[-1].startswith("pos_embed"), torch.zeros_like),
    "relative bias removed": lambda m: _scale_keys(
        m, lambda k: k.endswith("relative_position_bias_table"), torch.zeros_like),
    "shift mask removed": lambda m: _scale_keys(m, lambda k: k.endswith("attn_mask"),
                                                torch.zeros_like),
    "LePE removed": lambda m: _scale_keys(m, lambda k: ".get_v." in k, torch.zeros_like),
    "no cyclic shift": lambda m: _no_shift(m),
}


def _set_bn_eps(model, eps):
    hit = False
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.eps = eps
            hit = True
    return hit


def _no_shift(model):
    hit = False
    for mod in model.modules():
        if isinstance(mod, slab_ref.SwinBlock) and mod.shift:
            mod.shift = 0
            mod.attn_mask = None
            hit = True
    return hit


@torch.no_grad()
def sensitivity(model, x, logits):
    """{mutation: max |delta logit|} for the mutations that apply to this model."""
    out = {}
    for name, mutate in MUTATIONS.items():
        m = copy.deepcopy(model)
        if mutate(m):
            out[name] = float((m(x) - logits).abs().max())
    return out


if __name__ == "__main__":
    main()
