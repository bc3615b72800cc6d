"""Kestrel's PyTorch reference for the SLAB vision transformers and their PRepBN baselines.

Written for Kestrel from the published formulas; inference only (every norm uses running
statistics, dropout and drop-path are absent). The module attribute names are chosen so that
`state_dict()` yields exactly the key names, shapes, dtypes and order of the official release
checkpoints (`torch.save({'model': state_dict})`), which `check_official_keys` asserts against
/work/shared/reference/slab_official_keys.tsv (or a path given on the command line).

Families: DeiT (`DeiT`), Swin (`Swin`), PVT (`PVT`), CSWin (`CSWin`); `build(name)` makes any
configuration listed in `CONFIGS`. `fold_repbn(model)` folds every RepBN into a neighbouring
linear or conv (the plan in FOLDING.md) and replaces it by an identity.

    python slab_ref.py [--tsv PATH]   # key check for the four listed models + fold check
"""

import argparse
import copy
import inspect
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
SLA_EPS = 1e-6
TSV_DEFAULT = "/work/shared/reference/slab_official_keys.tsv"


# ----------------------------------------------------------------------------------------------
# Normalisation: RepBN and the PRepBN wrapper (LinearNorm)
# ----------------------------------------------------------------------------------------------

class RepBN(nn.Module):
    """BN(x) + alpha * x per channel, x laid out [..., C] (BatchNorm over the channel axis)."""

    def __init__(self, dim):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(dim, eps=BN_EPS)

    def affine(self):
        """(a, c) with RepBN(x) = a * x + c per channel (inference)."""
        bn = self.bn
        inv = torch.rsqrt(bn.running_var + bn.eps)
        a = bn.weight * inv + self.alpha
        c = bn.bias - bn.weight * bn.running_mean * inv
        return a, c

    def forward(self, x):
        bn = self.bn
        y = (x - bn.running_mean) * torch.rsqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        return y + self.alpha * x


class LinearNorm(nn.Module):
    """PRepBN: LayerNorm (`norm1`, training only) blended into RepBN (`norm2`).

    At inference only `norm2` acts. The int64 buffers `warm`, `iter`, `total_step` drive the
    training-time blend and are dead at inference.
    """

    def __init__(self, dim, ln_eps, step):
        super().__init__()
        self.register_buffer("warm", torch.tensor(0))
        self.register_buffer("iter", torch.tensor(step))
        self.register_buffer("total_step", torch.tensor(step))
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.norm2 = RepBN(dim)

    def affine(self):
        return self.norm2.affine()

    def forward(self, x):
        return self.norm2(x)


def norm_factory(scheme, ln_eps=1e-6, step=300000):
    """Norm constructor for a key scheme: 'nested' (LinearNorm) or 'direct' (RepBN)."""
    if scheme == "nested":
        return lambda dim: LinearNorm(dim, ln_eps, step)
    if scheme == "direct":
        return lambda dim: RepBN(dim)
    raise ValueError(scheme)


def is_repbn(m):
    return isinstance(m, (RepBN, LinearNorm))


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------

class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


def heads_split(x, heads):
    """[B, N, C] -> [B*heads, N, C/heads]; channel c = h*(C/heads) + i ("(h c)")."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3).reshape(b * heads, n, c // heads)


def heads_merge(x, heads):
    """Inverse of heads_split."""
    bh, n, d = x.shape
    return x.reshape(bh // heads, heads, n, d).permute(0, 2, 1, 3).reshape(bh // heads, n, heads * d)


def tokens_to_map(x, h, w):
    """[B, h*w, C] (raster order) -> [B, C, h, w]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def map_to_tokens(x):
    """[B, C, h, w] -> [B, h*w, C]."""
    return x.flatten(2).transpose(1, 2)


def linear_attention(q, k, v, heads, dwc, hw):
    """SLA core on ReLU'd q, k (already offset by the positional encoding) and raw v.

    q, k, v: [B, N, C]. Per head: out_i = q_i (sum_j k_j^T v_j) / (q_i . sum_j k_j + 1e-6),
    plus dwc (depthwise conv, d channels shared by all heads) over v laid out h x w.
    Returns [B*heads, N, d] (heads not merged).
    """
    q, k, v = (heads_split(t, heads) for t in (q, k, v))
    n_q, n_k, c, d = q.shape[1], k.shape[1], k.shape[2], v.shape[2]
    z = 1.0 / (torch.einsum("bic,bc->bi", q, k.sum(dim=1)) + SLA_EPS)
    if n_q * n_k * (c + d) > c * d * (n_q + n_k):  # the cheaper association, as officially
        out = torch.einsum("bic,bcd->bid", q, torch.einsum("bjc,bjd->bcd", k, v))
    else:
        out = torch.einsum("bij,bjd->bid", torch.einsum("bic,bjc->bij", q, k), v)
    out = out * z.unsqueeze(-1)
    h, w = hw
    out = out + map_to_tokens(dwc(tokens_to_map(v, h, w)))
    return out


def softmax_attention(q, k, v, heads, bias=None):
    """Scaled dot-product attention per head; q,k,v [B, N, C] -> [B, N, C]."""
    q, k, v = (heads_split(t, heads) for t in (q, k, v))
    att = torch.einsum("bic,bjc->bij", q * (q.shape[-1] ** -0.5), k)
    if bias is not None:
        att = att + bias
    return heads_merge(torch.softmax(att, dim=-1) @ v, heads)


def dwconv(channels, kernel):
    return nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)


# ----------------------------------------------------------------------------------------------
# DeiT (SLAB-DeiT and the DeiT PRepBN baseline)
# ----------------------------------------------------------------------------------------------

class SlaQKV(nn.Module):
    """SLA with a fused qkv linear (DeiT and Swin). Tokens form a side x side map."""

    def __init__(self, dim, heads, tokens, kernel=5):
        super().__init__()
        self.heads = heads
        self.side = math.isqrt(tokens)
        assert self.side * self.side == tokens
        self.positional_encoding = nn.Parameter(torch.zeros(1, tokens, dim))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dwc = dwconv(dim // heads, kernel)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k = k + self.positional_encoding
        out = linear_attention(F.relu(q), F.relu(k), v, self.heads, self.dwc, (self.side, self.side))
        return self.proj(heads_merge(out, self.heads))


class SoftmaxQKV(nn.Module):
    """Global softmax attention (DeiT baseline)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(softmax_attention(q, k, v, self.heads))


class DeitBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, tokens, norm, sla):
        super().__init__()
        self.norm1 = norm(dim)
        self.attn = SlaQKV(dim, heads, tokens) if sla else SoftmaxQKV(dim, heads)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbedDeit(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x):
        return map_to_tokens(self.proj(x))


class DeiT(nn.Module):
    """SLAB-DeiT (attn='sla': no class token used, mean-pooled head) or the PRepBN DeiT
    baseline (attn='softmax': class token prepended, head on the class token)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, dim=192,
                 depth=12, heads=3, mlp_ratio=4.0, attn="sla", norm=None):
        super().__init__()
        self.sla = attn == "sla"
        grid = img_size // patch_size
        tokens = grid * grid
        self.patch_embed = PatchEmbedDeit(patch_size, in_chans, dim)
        # SLAB-DeiT keeps an (unused) class token parameter; its pos_embed covers patches only.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + (0 if self.sla else 1), dim))
        self.blocks = nn.Sequential(*[DeitBlock(dim, heads, mlp_ratio, tokens, norm, self.sla)
                                      for _ in range(depth)])
        self.norm = norm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        if not self.sla:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embed)
        x = self.norm(x)
        x = x.mean(dim=1) if self.sla else x[:, 0]
        return self.head(x)

    def fold_plan(self):
        plan = []
        for i in range(len(self.blocks)):
            plan.append((f"blocks.{i}.norm1", "next", [f"blocks.{i}.attn.qkv"]))
            plan.append((f"blocks.{i}.norm2", "next", [f"blocks.{i}.mlp.fc1"]))
        plan.append(("norm", "next", ["head"]))  # after mean pool / class-token pick
        return plan


# ----------------------------------------------------------------------------------------------
# Swin (SLAB-Swin "LLSS" and the Swin PRepBN baseline)
# ----------------------------------------------------------------------------------------------

def window_partition(x, ws):
    """[B, H, W, C] -> [B*nW, ws*ws, C], windows in raster order, tokens raster within."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_merge(x, ws, h, w):
    """Inverse of window_partition -> [B, H, W, C]."""
    c = x.shape[-1]
    b = x.shape[0] // ((h // ws) * (w // ws))
    x = x.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(ws):
    """[T, T] int64: (dy + ws - 1) * (2ws - 1) + (dx + ws - 1), d = p_i - p_j."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def shift_mask(h, w, ws, shift):
    """[nW, T, T] float32: 0 where both tokens come from the same region of the rolled map,
    -100 otherwise (regions: [0, H-ws), [H-ws, H-shift), [H-shift, H) per axis)."""
    def band(n):
        lab = torch.zeros(n, dtype=torch.long)
        lab[n - ws:n - shift] = 1
        lab[n - shift:] = 2
        return lab
    region = (band(h)[:, None] * 3 + band(w)[None, :]).to(torch.float32)
    win = window_partition(region.reshape(1, h, w, 1), ws).squeeze(-1)  # [nW, T]
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, ws):
        super().__init__()
        self.heads = heads
        self.ws = ws
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        t = self.ws * self.ws
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(t, t, self.heads).permute(2, 0, 1)  # [heads, T, T]
        bw = x.shape[0]
        bias = bias.unsqueeze(0).expand(bw, -1, -1, -1)
        if mask is not None:
            nw = mask.shape[0]
            bias = bias + mask.unsqueeze(1).repeat(bw // nw, 1, 1, 1)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(softmax_attention(q, k, v, self.heads, bias.reshape(-1, t, t)))


class SwinBlock(nn.Module):
    def __init__(self, dim, res, heads, ws, shift, mlp_ratio, norm, sla):
        super().__init__()
        if res <= ws:  # window covers the map: no partition, no shift
            ws, shift = res, 0
        self.res, self.ws, self.shift, self.sla = res, ws, shift, sla
        self.norm1 = norm(dim)
        self.attn = SlaQKV(dim, heads, ws * ws) if sla else WindowAttention(dim, heads, ws)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift > 0:
            self.register_buffer("attn_mask", shift_mask(res, res, ws, shift))
        else:
            self.attn_mask = None

    def forward(self, x):
        b, n, c = x.shape
        h = self.norm1(x).reshape(b, self.res, self.res, c)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(h, self.ws)
        win = self.attn(win) if self.sla else self.attn(win, self.attn_mask)
        h = window_merge(win, self.ws, self.res, self.res)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, res, dim, norm):
        super().__init__()
        self.res = res
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm(4 * dim)

    def forward(self, x):
        b, n, c = x.shape
        x = x.reshape(b, self.res, self.res, c)
        # channel blocks: (row 2i, col 2j), (2i+1, 2j), (2i, 2j+1), (2i+1, 2j+1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class SwinLayer(nn.Module):
    def __init__(self, dim, res, depth, heads, ws, mlp_ratio, norm, sla, downsample):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, res, heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio, norm, sla)
            for i in range(depth)])
        self.downsample = PatchMerging(res, dim, norm) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbedNorm(nn.Module):
    """Conv patch embedding followed by a RepBN (Swin, PVT)."""

    def __init__(self, patch, in_chans, dim, norm):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = norm(dim)

    def forward(self, x):
        return self.norm(map_to_tokens(self.proj(x)))


class Swin(nn.Module):
    """attn_type: one letter per stage, 'L' = SLA (window `window_size`, clipped to the map),
    'S' = softmax window attention (window `sa_window`; official rule: 7 if window_size <= 56
    else 12). The baseline is attn_type 'SSSS' with sa_window = window_size = 7."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window_size=56, sa_window=None,
                 mlp_ratio=4.0, attn_type="LLSS", norm=None):
        super().__init__()
        if sa_window is None:
            sa_window = 7 if window_size <= 56 else 12
        res = img_size // patch_size
        self.patch_embed = PatchEmbedNorm(patch_size, in_chans, embed_dim, norm)
        self.layers = nn.ModuleList()
        n = len(depths)
        for i in range(n):
            sla = attn_type[i] == "L"
            self.layers.append(SwinLayer(embed_dim * 2 ** i, res // 2 ** i, depths[i], heads[i],
                                         window_size if sla else sa_window, mlp_ratio, norm, sla,
                                         i < n - 1))
        self.num_features = embed_dim * 2 ** (n - 1)
        self.norm = norm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))

    def fold_plan(self):
        plan = [("patch_embed.norm", "prev", ["patch_embed.proj"])]
        for i, layer in enumerate(self.layers):
            for j, _ in enumerate(layer.blocks):
                p = f"layers.{i}.blocks.{j}"
                plan.append((f"{p}.norm1", "next", [f"{p}.attn.qkv"]))
                plan.append((f"{p}.norm2", "next", [f"{p}.mlp.fc1"]))
            if layer.downsample is not None:
                plan.append((f"layers.{i}.downsample.norm", "next",
                             [f"layers.{i}.downsample.reduction"]))
        plan.append(("norm", "next", ["head"]))
        return plan


# ----------------------------------------------------------------------------------------------
# PVT (SLAB-PVT and the PVT PRepBN baseline)
# ----------------------------------------------------------------------------------------------

class SlaPVT(nn.Module):
    """SLA with separate q and kv linears (spatial-reduction ratio 1)."""

    def __init__(self, dim, heads, tokens, kernel=5):
        super().__init__()
        self.heads = heads
        self.side = math.isqrt(tokens)
        assert self.side * self.side == tokens
        self.positional_encoding = nn.Parameter(torch.zeros(1, tokens, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dwc = dwconv(dim // heads, kernel)

    def forward(self, x, h, w):
        q = self.q(x)
        k, v = self.kv(x).chunk(2, dim=-1)
        k = k + self.positional_encoding
        out = linear_attention(F.relu(q), F.relu(k), v, self.heads, self.dwc, (h, w))
        return self.proj(heads_merge(out, self.heads))


class SoftmaxPVT(nn.Module):
    """Spatial-reduction softmax attention: k, v from an sr x sr stride-sr conv + RepBN."""

    def __init__(self, dim, heads, sr, norm):
        super().__init__()
        self.heads = heads
        self.sr_ratio = sr
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, stride=sr)
            self.norm = norm(dim)

    def forward(self, x, h, w):
        q = self.q(x)
        y = x
        if self.sr_ratio > 1:
            y = self.norm(map_to_tokens(self.sr(tokens_to_map(x, h, w))))
        k, v = self.kv(y).chunk(2, dim=-1)
        return self.proj(softmax_attention(q, k, v, self.heads))


class PVTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, tokens, sr, norm, sla):
        super().__init__()
        self.norm1 = norm(dim)
        self.attn = SlaPVT(dim, heads, tokens) if sla else SoftmaxPVT(dim, heads, sr, norm)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x))


class PVT(nn.Module):
    """attn_type 'LLLL' = SLAB-PVT (SLA, sr 1), 'SSSS' = PRepBN baseline (softmax, sr_ratios).
    Stage 1 embeds with a patch_size conv, later stages with a 2x2 stride-2 conv. No final norm:
    the head reads the token mean of stage 4."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000,
                 embed_dims=(64, 128, 320, 512), heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                 depths=(2, 2, 2, 2), sr_ratios=(8, 4, 2, 1), attn_type="LLLL", norm=None):
        super().__init__()
        self.n = len(depths)
        res = img_size // patch_size
        self.res = []
        for i in range(self.n):
            r = res // 2 ** i
            self.res.append(r)
            setattr(self, f"patch_embed{i + 1}",
                    PatchEmbedNorm(patch_size if i == 0 else 2,
                                   in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], norm))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, r * r, embed_dims[i])))
            sla = attn_type[i] == "L"
            setattr(self, f"block{i + 1}", nn.ModuleList([
                PVTBlock(embed_dims[i], heads[i], mlp_ratios[i], r * r, 1 if sla else sr_ratios[i],
                         norm, sla) for _ in range(depths[i])]))
        self.head = nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x):
        for i in range(self.n):
            r = self.res[i]
            x = getattr(self, f"patch_embed{i + 1}")(x) + getattr(self, f"pos_embed{i + 1}")
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, r, r)
            if i < self.n - 1:
                x = tokens_to_map(x, r, r)
        return self.head(x.mean(dim=1))

    def fold_plan(self):
        plan = []
        for i in range(self.n):
            plan.append((f"patch_embed{i + 1}.norm", "prev", [f"patch_embed{i + 1}.proj"]))
            for j, blk in enumerate(getattr(self, f"block{i + 1}")):
                p = f"block{i + 1}.{j}"
                if isinstance(blk.attn, SoftmaxPVT) and blk.attn.sr_ratio > 1:
                    plan.append((f"{p}.norm1", "next", [f"{p}.attn.q", f"{p}.attn.sr"]))
                    plan.append((f"{p}.attn.norm", "next", [f"{p}.attn.kv"]))
                else:
                    plan.append((f"{p}.norm1", "next", [f"{p}.attn.q", f"{p}.attn.kv"]))
                plan.append((f"{p}.norm2", "next", [f"{p}.mlp.fc1"]))
        return plan


# ----------------------------------------------------------------------------------------------
# CSWin (SLAB-CSWin)
# ----------------------------------------------------------------------------------------------

def stripes(x, res, hs, ws):
    """[B, res*res, C] -> [B*nW, hs*ws, C] (hs x ws windows, raster order)."""
    b, n, c = x.shape
    return window_partition_rect(x.reshape(b, res, res, c), hs, ws)


def window_partition_rect(x, hs, ws):
    b, h, w, c = x.shape
    x = x.reshape(b, h // hs, hs, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, hs * ws, c)


def window_merge_rect(x, hs, ws, h, w):
    c = x.shape[-1]
    b = x.shape[0] // ((h // hs) * (w // ws))
    x = x.reshape(b, h // hs, w // ws, hs, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * w, c)


class CSwinBranchBase(nn.Module):
    def setup_geometry(self, res, idx, split):
        if idx == -1:
            self.hs, self.ws = res, res
        elif idx == 0:
            self.hs, self.ws = res, split  # vertical stripes: full height, `split` wide
        else:
            self.hs, self.ws = split, res  # horizontal stripes
        self.res = res

    def lepe(self, v):
        """v windows [B', T, C] -> get_v (depthwise 3x3, zero padded inside each window)."""
        return map_to_tokens(self.get_v(tokens_to_map(v, self.hs, self.ws)))


class SlaCSwin(CSwinBranchBase):
    """SLA inside hs x ws windows (official configs: one window = the whole map) + LePE."""

    def __init__(self, dim, res, idx, split, heads, kernel=5):
        super().__init__()
        self.setup_geometry(res, idx, split)
        self.heads = heads
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.dwc = dwconv(dim // heads, kernel)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))  # present in checkpoints, unused
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.hs * self.ws, dim))

    def forward(self, q, k, v):
        r, hs, ws = self.res, self.hs, self.ws
        q, k, v = stripes(q, r, hs, ws), stripes(k, r, hs, ws), stripes(v, r, hs, ws)
        lepe = self.lepe(v)
        k = k + self.positional_encoding
        out = linear_attention(F.relu(q), F.relu(k), v, self.heads, self.dwc, (hs, ws))
        out = heads_merge(out, self.heads) + lepe
        return window_merge_rect(out, hs, ws, r, r)


class LePEAttention(CSwinBranchBase):
    """Softmax attention inside hs x ws windows + LePE."""

    def __init__(self, dim, res, idx, split, heads):
        super().__init__()
        self.setup_geometry(res, idx, split)
        self.heads = heads
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, q, k, v):
        r, hs, ws = self.res, self.hs, self.ws
        q, k, v = stripes(q, r, hs, ws), stripes(k, r, hs, ws), stripes(v, r, hs, ws)
        out = softmax_attention(q, k, v, self.heads) + self.lepe(v)
        return window_merge_rect(out, hs, ws, r, r)


class CSwinBlock(nn.Module):
    def __init__(self, dim, res, heads, split, mlp_ratio, norm, sla, last_stage):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm1 = norm(dim)
        single = last_stage or res == split
        self.proj = nn.Linear(dim, dim)
        branch = SlaCSwin if sla else LePEAttention
        if single:
            self.attns = nn.ModuleList([branch(dim, res, -1, split, heads)])
        else:
            self.attns = nn.ModuleList([branch(dim // 2, res, i, split, heads // 2)
                                        for i in range(2)])
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = norm(dim)

    def forward(self, x):
        c = x.shape[-1]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        if len(self.attns) == 1:
            y = self.attns[0](q, k, v)
        else:
            h = c // 2
            y = torch.cat([self.attns[0](q[..., :h], k[..., :h], v[..., :h]),
                           self.attns[1](q[..., h:], k[..., h:], v[..., h:])], dim=-1)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


class MergeBlock(nn.Module):
    def __init__(self, dim, dim_out, norm):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = norm(dim_out)

    def forward(self, x):
        r = math.isqrt(x.shape[1])
        return self.norm(map_to_tokens(self.conv(tokens_to_map(x, r, r))))


class ToTokens(nn.Module):
    def forward(self, x):
        return map_to_tokens(x)


class CSWin(nn.Module):
    """attn_type per stage: 'L' = SLA windows of la_split[i] (official: the whole map) with LePE,
    'S' = softmax + LePE in cross-shaped stripes of width split_size[i] (two half-channel
    branches; one full window in the last stage)."""

    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=64,
                 depths=(2, 4, 18, 1), heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7),
                 la_split=(56, 28, 14, 7), mlp_ratio=4.0, attn_type="LLSS", norm=None):
        super().__init__()
        self.stage1_conv_embed = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim, 7, stride=4, padding=2), ToTokens(), norm(embed_dim))
        dim = embed_dim
        for i in range(4):
            res = img_size // (4 * 2 ** i)
            sla = attn_type[i] == "L"
            split = la_split[i] if sla else split_size[i]
            if i > 0:
                setattr(self, f"merge{i}", MergeBlock(dim, dim * 2, norm))
                dim *= 2
            setattr(self, f"stage{i + 1}", nn.ModuleList([
                CSwinBlock(dim, res, heads[i], split, mlp_ratio, norm, sla, i == 3)
                for _ in range(depths[i])]))
        self.norm = norm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.stage1_conv_embed(x)
        for i in range(4):
            if i > 0:
                x = getattr(self, f"merge{i}")(x)
            for blk in getattr(self, f"stage{i + 1}"):
                x = blk(x)
        return self.head(self.norm(x).mean(dim=1))

    def fold_plan(self):
        plan = [("stage1_conv_embed.2", "prev", ["stage1_conv_embed.0"])]
        for i in range(4):
            if i > 0:
                plan.append((f"merge{i}.norm", "prev", [f"merge{i}.conv"]))
            for j, _ in enumerate(getattr(self, f"stage{i + 1}")):
                p = f"stage{i + 1}.{j}"
                plan.append((f"{p}.norm1", "next", [f"{p}.qkv"]))
                plan.append((f"{p}.norm2", "next", [f"{p}.mlp.fc1"]))
        plan.append(("norm", "next", ["head"]))
        return plan


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------

# Norm settings per official file: LayerNorm eps of the dead norm1 and LinearNorm `step`.
NORMS = {
    "slab_deit": dict(scheme="nested", ln_eps=1e-6, step=60000),     # slab_deit.py
    "deit_tiny_prepbn": dict(scheme="direct"),                       # deit.py (norm_layer=RepBN)
    "deit_small_prepbn": dict(scheme="nested", ln_eps=1e-6, step=300000),  # deit.py
    "slab_swin": dict(scheme="nested", ln_eps=1e-5, step=60000),     # slab_swin.py
    "swin_prepbn": dict(scheme="direct"),                            # swin_transformer.py
    "pvt": dict(scheme="nested", ln_eps=1e-6, step=300000),          # slab_pvt.py (both)
    "cswin": dict(scheme="nested", ln_eps=1e-5, step=120000),        # slab_cswin.py
}

CONFIGS = {
    # --- DeiT ---
    "slab_deit_tiny": dict(family="deit", norm="slab_deit", dim=192, depth=12, heads=3, attn="sla"),
    "slab_deit_small": dict(family="deit", norm="slab_deit", dim=384, depth=12, heads=6, attn="sla"),
    "slab_deit_test": dict(family="deit", norm="slab_deit", img_size=48, patch_size=8, dim=36,
                           depth=2, heads=3, attn="sla", num_classes=10),
    "deit_tiny_prepbn": dict(family="deit", norm="deit_tiny_prepbn", dim=192, depth=12, heads=3,
                             attn="softmax"),
    "deit_small_prepbn": dict(family="deit", norm="deit_small_prepbn", dim=384, depth=12, heads=6,
                              attn="softmax"),
    "deit_prepbn_test": dict(family="deit", norm="deit_tiny_prepbn", img_size=48, patch_size=8,
                             dim=36, depth=2, heads=3, attn="softmax", num_classes=10),
    # --- Swin ---
    "slab_swin_tiny": dict(family="swin", norm="slab_swin", embed_dim=96, depths=(2, 2, 6, 2),
                           heads=(3, 6, 12, 24)),
    "slab_swin_small": dict(family="swin", norm="slab_swin", embed_dim=96, depths=(2, 2, 18, 2),
                            heads=(3, 6, 12, 24)),
    "slab_swin_base": dict(family="swin", norm="slab_swin", embed_dim=128, depths=(2, 2, 18, 2),
                           heads=(4, 8, 16, 32)),
    "slab_swin_test": dict(family="swin", norm="slab_swin", img_size=32, patch_size=2, embed_dim=8,
                           depths=(2, 1, 2, 1), heads=(1, 2, 2, 4), window_size=16, sa_window=2,
                           num_classes=10),
    "swin_tiny_prepbn": dict(family="swin", norm="swin_prepbn", embed_dim=96, depths=(2, 2, 6, 2),
                             heads=(3, 6, 12, 24), window_size=7, sa_window=7, attn_type="SSSS"),
    "swin_prepbn_test": dict(family="swin", norm="swin_prepbn", img_size=32, patch_size=2,
                             embed_dim=8, depths=(2, 1, 2, 1), heads=(1, 2, 2, 4), window_size=2,
                             sa_window=2, attn_type="SSSS", num_classes=10),
    # --- PVT ---
    "slab_pvt_tiny": dict(family="pvt", norm="pvt", depths=(2, 2, 2, 2)),
    "slab_pvt_small": dict(family="pvt", norm="pvt", depths=(3, 4, 6, 3)),
    "slab_pvt_medium": dict(family="pvt", norm="pvt", depths=(3, 4, 18, 3)),
    "slab_pvt_test": dict(family="pvt", norm="pvt", img_size=64, embed_dims=(8, 16, 24, 32),
                          heads=(1, 2, 3, 4), depths=(1, 1, 2, 1), num_classes=10),
    "pvt_tiny_prepbn": dict(family="pvt", norm="pvt", depths=(2, 2, 2, 2), attn_type="SSSS"),
    "pvt_small_prepbn": dict(family="pvt", norm="pvt", depths=(3, 4, 6, 3), attn_type="SSSS"),
    "pvt_medium_prepbn": dict(family="pvt", norm="pvt", depths=(3, 4, 18, 3), attn_type="SSSS"),
    "pvt_prepbn_test": dict(family="pvt", norm="pvt", img_size=64, embed_dims=(8, 16, 24, 32),
                            heads=(1, 2, 3, 4), depths=(1, 1, 2, 1), attn_type="SSSS",
                            num_classes=10),
    # --- CSWin ---
    "slab_cswin_tiny": dict(family="cswin", norm="cswin", depths=(2, 4, 18, 1)),
    "slab_cswin_small": dict(family="cswin", norm="cswin", depths=(2, 4, 32, 2)),
    "slab_cswin_test": dict(family="cswin", norm="cswin", img_size=64, embed_dim=8,
                            depths=(1, 1, 2, 1), heads=(2, 2, 4, 4), split_size=(1, 2, 2, 2),
                            la_split=(16, 8, 4, 2), num_classes=10),
}

FAMILIES = {"deit": DeiT, "swin": Swin, "pvt": PVT, "cswin": CSWin}


def full_config(name):
    """The configuration of `name` with every constructor default filled in (for JSON)."""
    cfg = dict(CONFIGS[name])
    family = cfg.pop("family")
    norm = dict(NORMS[cfg.pop("norm")])
    cls = FAMILIES[family]
    params = inspect.signature(cls.__init__).parameters
    out = {k: (list(v.default) if isinstance(v.default, tuple) else v.default)
           for k, v in params.items() if k not in ("self", "norm")}
    for k, v in cfg.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    if family == "swin" and out.get("sa_window") is None:
        out["sa_window"] = 7 if out["window_size"] <= 56 else 12
    return dict(name=name, family=family, key_scheme=norm["scheme"], bn_eps=BN_EPS,
                ln_eps=norm.get("ln_eps"), linearnorm_step=norm.get("step"), **out)


def build(name):
    """The model `name` in eval mode (float32, weights as constructed: zeros/ones/defaults)."""
    cfg = dict(CONFIGS[name])
    family = cfg.pop("family")
    norm = dict(NORMS[cfg.pop("norm")])
    scheme = norm.pop("scheme")
    model = FAMILIES[family](norm=norm_factory(scheme, **norm), **cfg)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Folding
# ----------------------------------------------------------------------------------------------

def _get(model, path):
    m = model
    for p in path.split("."):
        m = m[int(p)] if p.isdigit() else getattr(m, p)
    return m


def _set(model, path, value):
    parent, _, last = path.rpartition(".")
    p = _get(model, parent) if parent else model
    if last.isdigit():
        p[int(last)] = value
    else:
        setattr(p, last, value)


@torch.no_grad()
def fold_into_next(layer, a, c):
    """layer(a*x + c) == layer'(x) for a Linear, or a Conv2d without padding."""
    w = layer.weight
    if isinstance(layer, nn.Conv2d):
        assert layer.padding in (0, (0, 0)) and layer.groups == 1, "forward fold needs no padding"
        shift = (w * c.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        new_w = w * a.view(1, -1, 1, 1)
    else:
        shift = w @ c
        new_w = w * a.view(1, -1)
    bias = shift if layer.bias is None else layer.bias + shift
    layer.weight = nn.Parameter(new_w)
    layer.bias = nn.Parameter(bias)


@torch.no_grad()
def fold_into_prev(layer, a, c):
    """a*layer(x) + c == layer'(x) for a Linear or Conv2d (per output channel)."""
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    layer.weight = nn.Parameter(layer.weight * a.view(shape))
    b = layer.bias if layer.bias is not None else torch.zeros_like(a)
    layer.bias = nn.Parameter(a * b + c)


@torch.no_grad()
def fold_repbn(model):
    """Copy of `model` with every RepBN folded per model.fold_plan() and replaced by Identity.
    Asserts that every RepBN of the model is covered by the plan."""
    model = copy.deepcopy(model)
    plan = model.fold_plan()
    covered = {n for n, _, _ in plan}
    norms = {n for n, m in model.named_modules() if is_repbn(m)}
    norms = {n for n in norms if not any(n.startswith(o + ".") for o in norms)}
    assert covered == norms, (sorted(norms - covered), sorted(covered - norms))
    for name, direction, targets in plan:
        a, c = _get(model, name).affine()
        for t in targets:
            (fold_into_next if direction == "next" else fold_into_prev)(_get(model, t), a, c)
        _set(model, name, nn.Identity())
    return model


# ----------------------------------------------------------------------------------------------
# Official key check
# ----------------------------------------------------------------------------------------------

def read_official_keys(path):
    """{model name: [(key, shape list, dtype str)]} from the TSV."""
    out, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                head = line[1:].strip()
                if ": " in head and head.split(": ")[1].split(" ")[1] == "keys":
                    cur = head.split(":")[0]
                    out[cur] = []
                continue
            if not line.strip():
                continue
            key, shape, dtype = line.split("\t")
            out[cur].append((key, [int(s) for s in shape.strip("[]").split(",") if s.strip()],
                             dtype))
    return out


def state_dict_signature(model):
    return [(k, list(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in model.state_dict().items()]


def check_official_keys(path=TSV_DEFAULT):
    official = read_official_keys(path)
    assert set(official) >= {"slab_deit_tiny", "slab_swin_tiny", "slab_pvt_tiny",
                             "deit_tiny_prepbn"}, sorted(official)
    for name, want in official.items():
        got = state_dict_signature(build(name))
        if got != want:
            for i, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    raise AssertionError(f"{name}: entry {i}: ours {g} != official {w}")
            raise AssertionError(f"{name}: {len(got)} entries, official {len(want)}")
        print(f"keys OK  {name}: {len(got)} entries identical (name, shape, dtype, order)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tsv", default=TSV_DEFAULT)
    args = ap.parse_args()
    check_official_keys(args.tsv)
    for name in CONFIGS:
        m = build(name)
        n = sum(v.numel() for v in m.state_dict().values())
        print(f"built    {name}: {len(m.state_dict())} entries, {n} values")


if __name__ == "__main__":
    sys.exit(main())
