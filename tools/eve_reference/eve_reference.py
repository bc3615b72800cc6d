"""A plain PyTorch Eve (arXiv 2501.04322, github rangmiao/Eve), written from the official code's
behaviour for Kestrel's golden tests. Nothing here is the official code; the facts it follows:

- Checkpoint keys as the official `EvalEveLlavaZhiziForCausalLM` saves them (transformers 4.37):
  `model.image_tower.image_tower.vision_model.*` (a transformers `CLIPVisionModel`),
  `model.mm_projector.image_spatial_proj.model.*` (the `ldpnet` projector),
  `model.embed_tokens`, `model.layers.{i}.*`, `model.norm`, `lm_head`.
- Vision: `hidden_states[mm_vision_select_layer]` (-2) of the CLIP tower, class token dropped.
- Projector (MobileVLM's LDP): `mlp.1` Linear C->H, GELU (erf), `mlp.3` Linear H->H; the tokens
  as an h x h map (token n = row * h + col); two torchvision MobileNetV3 inverted residuals
  with expand ratio 1, kernel 3, squeeze-excite and Hardswish, LayerNorm over channels (timm's
  LayerNormAct2d without activation, eps 1e-5) as their norm: stride 1 with the residual
  (`mb_block.1`), then stride 2 without it (`mb_block.2`). Each: `block.0` depthwise 3x3 conv
  (padding 1, no bias) + LayerNorm2d + Hardswish; `block.1` SE (mean over the map, `fc1` 1x1
  conv H->S with bias, ReLU, `fc2` S->H, Hardsigmoid, times the input; S = H/4 rounded to a
  multiple of 8 as torchvision's `_make_divisible`); `block.2` pointwise 1x1 conv (no bias) +
  LayerNorm2d.
- LLM ("zhizi", an InternLM with PanGu-pi layers): RMSNorm (`rms_norm_eps`), MHA with q/k/v
  biases and no o bias, rotate-half RoPE (base 10000, `cat(freqs, freqs)`), untied `lm_head`.
  Layers i < split (split from the official table {29: 19, 12: 8, 22: 15}) are "vanilla":
  FFN `down((silu(gate x) + fastgelu(gate2 x)) * up x)`; the others have an augmented
  shortcut `h = x + a + attn_linear.2(fastgelu(attn_linear.0(a)))` (a = attention output after
  o_proj) and a SwiGLU FFN. The official FastGELUMindSpore,
  `x * sigmoid(1.702|x|) * exp(0.851 (x - |x|))`, equals quick_gelu `x * sigmoid(1.702 x)`.
- EVF on `moe.moe_layers_idx`: the layer's FFN (of its kind) becomes a DeepSpeed residual MoE,
  top-1 of 2: `p = softmax(gate.wg(x))` in f32, `e = argmax p` (the first on a tie),
  `y = p[e] * FFN_e(x)` (experts `deepspeed_moe.experts.deepspeed_experts.{0,1}`),
  `c = softmax(mlp.coefficient(x))`, output `c0 * y + c1 * mlp.mlp(x)`. DeepSpeed's expert
  capacity (token dropping) is not modelled: every token reaches its expert.
- The prompt's IMAGE_TOKEN_INDEX (-200) is replaced by the projector's tokens; positions run
  0..T-1 over the spliced sequence.
"""

import math

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

IMAGE_TOKEN_INDEX = -200
SPLIT = {29: 19, 12: 8, 22: 15}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
VISION_PREFIX = "model.image_tower.image_tower."
LDP_PREFIX = "model.mm_projector.image_spatial_proj.model."


def make_divisible(v, divisor=8):
    """torchvision's `_make_divisible` (no min_value)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def expand2square(img, background):
    """Pads a PIL image to a square with `background`, the original centred (offset floored)."""
    from PIL import Image

    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def pad_colour():
    """The official background: `tuple(int(x * 255) for x in image_mean)`."""
    return tuple(int(x * 255) for x in CLIP_MEAN)


class EveReference:
    """Eve from a config dict (config.json) and a state dict of float32 tensors."""

    def __init__(self, config, state, vision_config):
        self.c = config
        self.s = state
        self.layers = config["num_hidden_layers"]
        self.split = SPLIT[self.layers]
        self.moe_layers = set(config["moe"]["moe_layers_idx"])
        self.heads = config["num_attention_heads"]
        self.hidden = config["hidden_size"]
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.select_layer = config.get("mm_vision_select_layer", -2)
        self.vision = CLIPVisionModel(CLIPVisionConfig(**vision_config)).eval()
        vstate = {k[len(VISION_PREFIX) :]: v for k, v in state.items() if k.startswith(VISION_PREFIX)}
        # The official keys (transformers 4.37) keep `vision_model.`; transformers 5 drops it.
        expected = self.vision.state_dict().keys()
        if not any(k.startswith("vision_model.") for k in expected):
            vstate = {k.removeprefix("vision_model."): v for k, v in vstate.items()}
        missing, unexpected = self.vision.load_state_dict(vstate, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        assert not missing and not unexpected, (missing, unexpected)

    def w(self, name):
        return self.s[name]

    # ---- vision -----------------------------------------------------------------------------

    @torch.no_grad()
    def vision_features(self, pixels):
        """[B, N, C]: hidden_states[select_layer] without the class token."""
        out = self.vision(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]

    # ---- projector --------------------------------------------------------------------------

    def layer_norm_2d(self, x, prefix):
        y = x.permute(0, 2, 3, 1)
        y = F.layer_norm(y, (y.shape[-1],), self.w(prefix + ".weight"), self.w(prefix + ".bias"), 1e-5)
        return y.permute(0, 3, 1, 2)

    def inverted_residual(self, x, prefix, stride):
        ch = x.shape[1]
        y = F.conv2d(x, self.w(prefix + "block.0.0.weight"), None, stride, 1, 1, ch)
        y = F.hardswish(self.layer_norm_2d(y, prefix + "block.0.1"))
        s = y.mean(dim=(2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.w(prefix + "block.1.fc1.weight"), self.w(prefix + "block.1.fc1.bias")))
        s = F.hardsigmoid(F.conv2d(s, self.w(prefix + "block.1.fc2.weight"), self.w(prefix + "block.1.fc2.bias")))
        y = y * s
        y = F.conv2d(y, self.w(prefix + "block.2.0.weight"))
        y = self.layer_norm_2d(y, prefix + "block.2.1")
        return y + x if stride == 1 else y

    @torch.no_grad()
    def project(self, feats):
        """[B, N, C] -> [B, ceil(h/2)^2, H], h = sqrt(N)."""
        p = LDP_PREFIX
        b, n, _ = feats.shape
        h = math.isqrt(n)
        assert h * h == n
        x = F.linear(feats, self.w(p + "mlp.1.weight"), self.w(p + "mlp.1.bias"))
        x = F.linear(F.gelu(x), self.w(p + "mlp.3.weight"), self.w(p + "mlp.3.bias"))
        x = x.permute(0, 2, 1).reshape(b, -1, h, h)
        x = self.inverted_residual(x, p + "mb_block.1.", 1)
        x = self.inverted_residual(x, p + "mb_block.2.", 2)
        return x.flatten(2).permute(0, 2, 1)

    # ---- LLM --------------------------------------------------------------------------------

    def rms(self, x, name):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.w(name) * (x * torch.rsqrt(var + self.eps))

    def attention(self, x, pre):
        t = x.shape[0]
        d = self.hidden
        hd = d // self.heads
        q = F.linear(x, self.w(pre + "self_attn.q_proj.weight"), self.w(pre + "self_attn.q_proj.bias"))
        k = F.linear(x, self.w(pre + "self_attn.k_proj.weight"), self.w(pre + "self_attn.k_proj.bias"))
        v = F.linear(x, self.w(pre + "self_attn.v_proj.weight"), self.w(pre + "self_attn.v_proj.bias"))
        q, k, v = (z.view(t, self.heads, hd).transpose(0, 1) for z in (q, k, v))
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos().float(), emb.sin().float()

        def rot(z):
            half = z.shape[-1] // 2
            return torch.cat((-z[..., half:], z[..., :half]), dim=-1)

        q = q * cos + rot(q) * sin
        k = k * cos + rot(k) * sin
        scores = q @ k.transpose(1, 2) / math.sqrt(hd)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        scores = scores.masked_fill(mask, float("-inf"))
        a = torch.softmax(scores, dim=-1) @ v
        a = a.transpose(0, 1).reshape(t, d)
        return F.linear(a, self.w(pre + "self_attn.o_proj.weight"))

    def ffn(self, x, pre, vanilla):
        g = F.silu(F.linear(x, self.w(pre + "gate_proj.weight")))
        if vanilla:
            g = g + quick_gelu(F.linear(x, self.w(pre + "gate_proj2.weight")))
        return F.linear(g * F.linear(x, self.w(pre + "up_proj.weight")), self.w(pre + "down_proj.weight"))

    def moe(self, x, pre, vanilla):
        """The EVF FFN; returns (output, expert index per token)."""
        logits = F.linear(x.float(), self.w(pre + "deepspeed_moe.gate.wg.weight"))
        p = torch.softmax(logits, dim=-1)
        e = torch.argmax(p, dim=-1)
        pe = p.gather(1, e[:, None])
        experts = [self.ffn(x, f"{pre}deepspeed_moe.experts.deepspeed_experts.{j}.", vanilla) for j in range(p.shape[1])]
        y = torch.stack(experts, dim=1).gather(1, e[:, None, None].expand(-1, 1, x.shape[1]))[:, 0] * pe
        coef = torch.softmax(F.linear(x, self.w(pre + "coefficient.weight"), self.w(pre + "coefficient.bias")), dim=-1)
        out = y * coef[:, 0:1] + self.ffn(x, pre + "mlp.", vanilla) * coef[:, 1:2]
        return out, e, p

    @torch.no_grad()
    def llm(self, x):
        """x: [T, d] input embeddings. Returns (hidden state after each layer, logits [T, vocab],
        {moe layer: expert per token}, {moe layer: gate probabilities})."""
        hidden, routing, probs = [], {}, {}
        for i in range(self.layers):
            pre = f"model.layers.{i}."
            vanilla = i < self.split
            a = self.attention(self.rms(x, pre + "input_layernorm.weight"), pre)
            if vanilla:
                x = x + a
            else:
                r = F.linear(quick_gelu(F.linear(a, self.w(pre + "attn_linear.0.weight"))), self.w(pre + "attn_linear.2.weight"))
                x = x + a + r
            h = self.rms(x, pre + "post_attention_layernorm.weight")
            if i in self.moe_layers:
                m, routing[i], probs[i] = self.moe(h, pre + "mlp.", vanilla)
            else:
                m = self.ffn(h, pre + "mlp.", vanilla)
            x = x + m
            hidden.append(x)
        logits = F.linear(self.rms(x, "model.norm.weight"), self.w("lm_head.weight"))
        return hidden, logits, routing, probs

    def embed(self, ids, image_tokens):
        """The spliced input embeddings: each IMAGE_TOKEN_INDEX replaced by `image_tokens` [n, d]."""
        table = self.w("model.embed_tokens.weight")
        rows = []
        for t in ids:
            rows.append(image_tokens if t == IMAGE_TOKEN_INDEX else table[t][None, :])
        return torch.cat(rows, dim=0)

    @torch.no_grad()
    def generate(self, ids, image_tokens, steps):
        """Greedy decoding with the full-sequence forward at every step (as the released code
        runs). Returns the new ids and the logits each was chosen from ([steps, vocab])."""
        table = self.w("model.embed_tokens.weight")
        x = self.embed(ids, image_tokens)
        out, rows = [], []
        for _ in range(steps):
            _, logits, _, _ = self.llm(x)
            nxt = int(torch.argmax(logits[-1]))
            out.append(nxt)
            rows.append(logits[-1])
            x = torch.cat([x, table[nxt][None, :]], dim=0)
        return out, torch.stack(rows)
