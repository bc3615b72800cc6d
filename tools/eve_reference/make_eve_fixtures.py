#!/usr/bin/env python3
"""Writes Eve's golden fixtures (models/tests/fixtures/eve/) from eve_reference.py.

Requires the pinned venv of models/tests/fixtures/make_clip_fixtures.py (torch 2.15.0,
transformers 5.24.0, torchvision 0.29.2, safetensors, pillow 12.3.0, numpy):
    /tmp/torchvenv/bin/python tools/eve_reference/make_eve_fixtures.py

No real Eve weights exist (the release has none). Outputs:

tiny/   A seeded TINY Eve with the official key names (model.safetensors, config.json with the
        official keys and a `vision_config` object for the tiny CLIP tower,
        preprocessor_config.json). CLIP: 32 px, patch 4 (8x8 patches), width 32, 3 layers,
        4 heads, quick_gelu; layer -2 is the output of layer 2. LDP 32 -> 64 on 8x8 -> 4x4 = 16
        image tokens. LLM: width 64, 4 heads, FFN 96, vocab 256, 12 layers (the official split
        table gives 8 vanilla layers, then 4 augmented), EVF on the even layers (0, 2, …, 10:
        both FFN kinds). Every LayerNorm2d / SE / norm parameter is random (not 1/0), and the
        seed is the first one for which every EVF layer routes tokens to both experts with a
        gate-probability margin of at least 0.02, and every greedy step has a top-1/top-2 logit
        margin of at least 0.01 (both asserted).
        image.png (45x29) -> expand2square with the official mean colour -> CLIPImageProcessor
        (the Pillow one, CLIPImageProcessorPil in transformers 5):
        pixel_values.npy [1, 3, 32, 32]. input_ids.npy (int64): BOS, text, -200, text.
        reference.json: the generated ids (16 greedy steps, full-sequence forward, no stop),
        the expert per token per EVF layer over the final sequence (prompt + 15 fed tokens),
        gate margins. Activations (.npy, f32): vision_features [64, 32] (layer -2, CLS
        dropped), projector [16, 64], hidden_states [12, T, 64] (after each layer over the
        spliced prompt of T positions), logits_last [256], step_logits [16, 256] (the logits
        each generated token was chosen from).
ldp_full.json  The full-width LDP check (1024 -> 2048 on 24x24 -> 144 tokens) on weights and
        input that are not committed: both sides rebuild them with generator
        `kestrel-eve-ldp-synth-v1` (below); only summary values and a strided sample of the
        output are stored.

Generator kestrel-eve-ldp-synth-v1 (the SplitMix64 stream of models/src/slab/synthetic.rs):
entry i (0-based) of LDP_ORDER, with the model seed 17, is filled element by element (row-major)
with f32(lo + (hi - lo) * u) computed in f64, u from `uniform01(17, i)`; [lo, hi): linear and
conv weights +-1/sqrt(fan_in) (fan_in = in_channels * kh * kw), linear/conv biases +-0.1,
LayerNorm weights [0.5, 1.5), LayerNorm biases [-0.2, 0.2). The input features [576, 1024] are
entry 0 of seed 29 in [-2, 2).
"""

import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.ops.misc import SqueezeExcitation
from transformers import CLIPImageProcessorPil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eve_reference import (  # noqa: E402
    IMAGE_TOKEN_INDEX,
    LDP_PREFIX,
    SPLIT,
    EveReference,
    expand2square,
    make_divisible,
    pad_colour,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "models", "tests", "fixtures", "eve")

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=4,
    num_channels=3,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=32,
)
D, HEADS, FFN, VOCAB, LAYERS = 64, 4, 96, 256, 12
MOE_LAYERS = list(range(LAYERS))[::2]
STEPS = 16
PROMPT = [1, 17, 42, 99, 7, IMAGE_TOKEN_INDEX, 13, 200, 31, 77, 5]

# ---------------------------------------------------------------------------------------------
# The tiny model's config and state dict
# ---------------------------------------------------------------------------------------------


def config_json():
    """config.json with the keys the official EveLlavaZhiziConfig + LLaVA training write."""
    return {
        "architectures": ["EvalEveLlavaZhiziForCausalLM"],
        "model_type": "moe_llava_zhizi",
        "bias": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": FFN,
        "max_position_embeddings": 2048,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.37.0",
        "use_cache": True,
        "vocab_size": VOCAB,
        "image_aspect_ratio": "pad",
        "image_projector_type": "ldpnet",
        "mm_hidden_size": VISION["hidden_size"],
        "mm_image_tower": "tiny-clip-32px (vision_config below)",
        "mm_audio_tower": None,
        "mm_projector_lr": None,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": True,
        "use_mm_proj": True,
        "router_aux_loss_coef": 0.01,
        "moe": {
            "moe_enable": True,
            "moe_mode": "sparse",
            "moe_layers_idx": MOE_LAYERS,
            "num_experts": [2] * len(MOE_LAYERS),
            "ep_size": 1,
            "top_k_experts": 1,
            "capacity_factor": 1.5,
            "eval_capacity_factor": 1.0,
            "min_capacity": 4,
            "use_residual": True,
            "router_aux_loss_coef": 0.01,
            "train_modules": ["gate_proj", "gate_proj2", "down_proj", "up_proj", "wg"],
        },
        "vision_config": VISION,
    }


def ldp_order(inc, ouc):
    """(name, shape, kind) of the LDP's entries in state-dict order."""
    sq = make_divisible(ouc // 4, 8)
    out = [
        ("mlp.1.weight", [ouc, inc], "w"),
        ("mlp.1.bias", [ouc], "b"),
        ("mlp.3.weight", [ouc, ouc], "w"),
        ("mlp.3.bias", [ouc], "b"),
    ]
    for blk in (1, 2):
        p = f"mb_block.{blk}.block."
        out += [
            (p + "0.0.weight", [ouc, 1, 3, 3], "w"),
            (p + "0.1.weight", [ouc], "ln_w"),
            (p + "0.1.bias", [ouc], "ln_b"),
            (p + "1.fc1.weight", [sq, ouc, 1, 1], "w"),
            (p + "1.fc1.bias", [sq], "b"),
            (p + "1.fc2.weight", [ouc, sq, 1, 1], "w"),
            (p + "1.fc2.bias", [ouc], "b"),
            (p + "2.0.weight", [ouc, ouc, 1, 1], "w"),
            (p + "2.1.weight", [ouc], "ln_w"),
            (p + "2.1.bias", [ouc], "ln_b"),
        ]
    return out


def ffn_shapes(prefix, vanilla):
    out = {prefix + "gate_proj.weight": [FFN, D], prefix + "up_proj.weight": [FFN, D], prefix + "down_proj.weight": [D, FFN]}
    if vanilla:
        out[prefix + "gate_proj2.weight"] = [FFN, D]
    return out


def llm_shapes():
    s = {"model.embed_tokens.weight": [VOCAB, D]}
    split = SPLIT[LAYERS]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        vanilla = i < split
        s[p + "input_layernorm.weight"] = [D]
        s[p + "post_attention_layernorm.weight"] = [D]
        for n in "qkv":
            s[p + f"self_attn.{n}_proj.weight"] = [D, D]
            s[p + f"self_attn.{n}_proj.bias"] = [D]
        s[p + "self_attn.o_proj.weight"] = [D, D]
        s[p + "self_attn.rotary_emb.inv_freq"] = [D // HEADS // 2]
        if not vanilla:
            s[p + "attn_linear.0.weight"] = [128, D]
            s[p + "attn_linear.2.weight"] = [D, 128]
        if i in MOE_LAYERS:
            s[p + "mlp.deepspeed_moe.gate.wg.weight"] = [2, D]
            for e in range(2):
                s.update(ffn_shapes(f"{p}mlp.deepspeed_moe.experts.deepspeed_experts.{e}.", vanilla))
            s.update(ffn_shapes(p + "mlp.mlp.", vanilla))
            s[p + "mlp.coefficient.weight"] = [2, D]
            s[p + "mlp.coefficient.bias"] = [2]
        else:
            s.update(ffn_shapes(p + "mlp.", vanilla))
    s["model.norm.weight"] = [D]
    s["lm_head.weight"] = [VOCAB, D]
    return s


def tiny_state(seed):
    g = torch.Generator().manual_seed(seed)

    def uni(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    def fan(shape, gain=1.0):
        fan_in = math.prod(shape[1:])
        b = gain / math.sqrt(fan_in)
        return uni(shape, -b, b)

    state = {}
    # CLIP tower: the key layout of transformers' CLIPVisionModel under the official prefix.
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = CLIPVisionModel(CLIPVisionConfig(**VISION))
    for k, v in tower.state_dict().items():
        if k.endswith("position_ids"):
            continue
        # transformers 5 drops the `vision_model.` level that 4.37 (the official layout) keeps.
        if not k.startswith("vision_model."):
            k = "vision_model." + k
        shape = list(v.shape)
        if k.endswith("class_embedding") or k.endswith("position_embedding.weight"):
            t = uni(shape, -0.5, 0.5)
        elif len(shape) == 1 and k.endswith("weight"):
            t = uni(shape, 0.5, 1.5)
        elif len(shape) == 1:
            t = uni(shape, -0.1, 0.1)
        else:
            t = fan(shape)
        state["model.image_tower.image_tower." + k] = t
    # LDP: random LayerNorm2d and SE parameters.
    for name, shape, kind in ldp_order(VISION["hidden_size"], D):
        t = {"w": lambda: fan(shape), "b": lambda: uni(shape, -0.1, 0.1), "ln_w": lambda: uni(shape, 0.5, 1.5), "ln_b": lambda: uni(shape, -0.2, 0.2)}[kind]()
        state[LDP_PREFIX + name] = t
    hd = D // HEADS
    for k, shape in llm_shapes().items():
        if k.endswith("inv_freq"):
            t = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        elif k == "model.embed_tokens.weight":
            t = uni(shape, -1.0, 1.0)
        elif k.endswith("layernorm.weight") or k == "model.norm.weight":
            t = uni(shape, 0.6, 1.4)
        elif k.endswith("gate.wg.weight"):
            t = fan(shape, 6.0)
        elif k.endswith("coefficient.weight"):
            t = fan(shape, 2.0)
        elif len(shape) == 1:
            t = uni(shape, -0.1, 0.1)
        elif k == "lm_head.weight":
            t = fan(shape, 3.0)
        else:
            t = fan(shape)
        state[k] = t
    return {k: v.float().contiguous() for k, v in state.items()}


# ---------------------------------------------------------------------------------------------
# Cross-check of the LDP against torchvision's inverted residual
# ---------------------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW map (timm's LayerNormAct2d without activation)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def torchvision_ldp(inc, ouc, state):
    se = lambda c, s: SqueezeExcitation(c, s, scale_activation=nn.Hardsigmoid)  # noqa: E731
    mlp = nn.Sequential(nn.Identity(), nn.Linear(inc, ouc), nn.GELU(), nn.Linear(ouc, ouc))
    mb = nn.Sequential(
        nn.Identity(),
        InvertedResidual(InvertedResidualConfig(ouc, 3, ouc, ouc, True, "HS", 1, 1, 1), LayerNorm2d, se),
        InvertedResidual(InvertedResidualConfig(ouc, 3, ouc, ouc, True, "HS", 2, 1, 1), LayerNorm2d, se),
    )
    m = nn.ModuleDict({"mlp": mlp, "mb_block": mb})
    sd = {k[len(LDP_PREFIX) :]: v for k, v in state.items() if k.startswith(LDP_PREFIX)}
    m.load_state_dict(sd, strict=True)

    def run(x):
        b, n, _ = x.shape
        h = math.isqrt(n)
        y = m["mlp"](x).permute(0, 2, 1).reshape(b, -1, h, h)
        return m["mb_block"](y).flatten(2).permute(0, 2, 1)

    return run


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


def test_image():
    yy, xx = np.mgrid[0:29, 0:45].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 5.0)
    gch = 128 + 90 * np.cos(yy / 4.0)
    b = (xx * 5 + yy * 3) % 256
    return Image.fromarray(np.stack([r, gch, b], axis=-1).clip(0, 255).astype(np.uint8), "RGB")


def save_npy(name, arr):
    np.save(os.path.join(OUT, "tiny", name), np.ascontiguousarray(arr))


def make_tiny():
    os.makedirs(os.path.join(OUT, "tiny"), exist_ok=True)
    cfg = config_json()
    # The Pillow processor: transformers 4.37's CLIPImageProcessor, which the official code ran
    # (transformers 5's default CLIPImageProcessor resizes with torchvision instead).
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    img = test_image()
    img.save(os.path.join(OUT, "tiny", "image.png"))
    square = expand2square(img, pad_colour())
    pixels = proc(images=square, return_tensors="pt")["pixel_values"].float()
    assert tuple(pixels.shape) == (1, 3, 32, 32)
    for seed in range(100):
        state = tiny_state(seed)
        ref = EveReference(cfg, state, VISION)
        feats = ref.vision_features(pixels)
        proj = ref.project(feats)
        # The projector against torchvision's inverted residual on the same weights.
        tv = torchvision_ldp(VISION["hidden_size"], D, state)(feats)
        assert (tv - proj).abs().max() < 1e-5, (tv - proj).abs().max()
        ids, rows = ref.generate(PROMPT, proj[0], STEPS)
        margins = [float(r.topk(2).values[0] - r.topk(2).values[1]) for r in rows]
        x = ref.embed(PROMPT + ids[:-1], proj[0])
        _, _, routing, probs = ref.llm(x)
        gate_margin = min(float((p[:, 0] - p[:, 1]).abs().min()) for p in probs.values())
        both = all(0 < int(e.sum()) < len(e) for e in routing.values())
        if min(margins) >= 0.01 and gate_margin >= 0.02 and both:
            break
        print(f"seed {seed}: greedy margin {min(margins):.4f}, gate margin {gate_margin:.4f}, both experts {both}; next seed")
    else:
        raise SystemExit("no seed in 0..99 meets the margins")
    prompt_x = ref.embed(PROMPT, proj[0])
    hidden, logits, prompt_routing, _ = ref.llm(prompt_x)
    # The causal model routes the prompt's tokens the same with or without the later ones.
    for i, e in prompt_routing.items():
        assert torch.equal(e, routing[i][: len(e)])
    assert all(len(set(e.tolist())) == 2 for e in routing.values()), "every EVF layer must use both experts"
    save_file(state, os.path.join(OUT, "tiny", "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "tiny", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    proc.save_pretrained(os.path.join(OUT, "tiny"))
    save_npy("pixel_values.npy", pixels.numpy())
    save_npy("input_ids.npy", np.array(PROMPT, dtype=np.int64))
    save_npy("vision_features.npy", feats[0].numpy())
    save_npy("projector.npy", proj[0].numpy())
    save_npy("hidden_states.npy", torch.stack(hidden).numpy())
    save_npy("logits_last.npy", logits[-1].numpy())
    save_npy("step_logits.npy", rows.numpy())
    meta = {
        "seed": seed,
        "prompt": PROMPT,
        "spliced_length": int(prompt_x.shape[0]),
        "image_tokens": int(proj.shape[1]),
        "generated": ids,
        "greedy_margin_min": min(margins),
        "gate_margin_min": gate_margin,
        "routing": {str(i): e.tolist() for i, e in routing.items()},
        "routing_positions": "the prompt spliced (image tokens included) followed by the first 15 generated tokens",
    }
    with open(os.path.join(OUT, "tiny", "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"tiny: seed {seed}, generated {ids}, greedy margin {min(margins):.4f}, gate margin {gate_margin:.4f}")


GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1


def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform01(seed, index, n):
    with np.errstate(over="ignore"):
        key = _mix(np.array([(seed * GOLDEN + index) & M64], dtype=np.uint64))[0]
        j = np.arange(1, n + 1, dtype=np.uint64)
        z = _mix(key + j * np.uint64(GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def synth(seed, index, shape, lo, hi):
    u = uniform01(seed, index, math.prod(shape))
    return torch.from_numpy((lo + (hi - lo) * u).astype(np.float32).reshape(shape))


def make_ldp_full():
    inc, ouc, grid = 1024, 2048, 24
    state = {}
    for i, (name, shape, kind) in enumerate(ldp_order(inc, ouc)):
        if kind == "w":
            b = 1.0 / math.sqrt(math.prod(shape[1:]))
            lo, hi = -b, b
        else:
            lo, hi = {"b": (-0.1, 0.1), "ln_w": (0.5, 1.5), "ln_b": (-0.2, 0.2)}[kind]
        state[LDP_PREFIX + name] = synth(17, i, shape, lo, hi)
    feats = synth(29, 0, [1, grid * grid, inc], -2.0, 2.0)
    ref = EveReference.__new__(EveReference)
    ref.s = state
    with torch.no_grad():
        out = ref.project(feats)[0]
        tv = torchvision_ldp(inc, ouc, state)(feats)[0]
    assert (tv - out).abs().max() < 1e-4, (tv - out).abs().max()
    assert tuple(out.shape) == (144, ouc)
    sample = out[::9, ::64]
    o = out.double()
    summary = {
        "generator": "kestrel-eve-ldp-synth-v1",
        "weights_seed": 17,
        "input_seed": 29,
        "shape": list(out.shape),
        "mean": float(o.mean()),
        "mean_abs": float(o.abs().mean()),
        "std": float(o.std()),
        "sample_stride": [9, 64],
        "sample": sample.tolist(),
        "row0_first8": out[0, :8].tolist(),
        "row143_last8": out[143, -8:].tolist(),
    }
    with open(os.path.join(OUT, "ldp_full.json"), "w") as f:
        json.dump(summary, f)
    print(f"ldp_full: mean {summary['mean']:.6f} mean|x| {summary['mean_abs']:.6f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    make_tiny()
    make_ldp_full()
