//! SLAB-Swin (the FLatten-Swin layout, attention pattern "LLSS") and the Swin PRepBN
//! baseline. A 4×4 patch embedding with RepBN; four stages; the leading `global_stages` use SLA
//! over the whole map (FLatten clips the 56-token window to the map), the others Swin's
//! window-7 softmax attention with relative position bias, odd blocks shifted by half a window
//! (masked with −100) whenever the map is larger than the window; patch merging (2×2
//! neighbours → RepBN(4C) → linear 4C→2C without bias) between stages; final RepBN, average
//! pool, head.
//!
//! Folding: `patch_embed.norm` → the patch conv; `norm1` → `attn.qkv`; `norm2` → `mlp.fc1`;
//! `downsample.norm` → `downsample.reduction` (which gains a bias); final `norm` → `head`.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::conv2d::Conv2dOptions;
use kestrel::ops::gather::embedding;
use kestrel::ops::reduce::mean_tokens;
use kestrel::weights::WeightSource;
use kestrel::{Context, Recorder, Tensor};

use crate::error::Result;
use crate::params::{HostParams, ParamSource};
use crate::slab::attention::Mixer;
use crate::slab::config::SlabConfig;
use crate::slab::fold::{FoldMode, Folder};
use crate::slab::layers::{Affine, Conv, Mlp, maybe_affine};
use crate::slab::windows::{merge_ids, shift_mask, window_order};

/// Geometry of one stage.
struct Stage {
    dim: usize,
    heads: usize,
    res: usize,
    global: bool,
    /// Window side (the map side when the map is not larger than the window).
    window: usize,
}

fn stages(cfg: &SlabConfig) -> Vec<Stage> {
    let mut res = cfg.img_size / cfg.patch_size;
    let mut out = Vec::new();
    for s in 0..cfg.embed_dims.len() {
        out.push(Stage { dim: cfg.embed_dims[s], heads: cfg.heads[s], res, global: s < cfg.global_stages, window: cfg.window.min(res) });
        res /= 2;
    }
    out
}

/// Shift of block `i` of a window stage: half a window on odd blocks, none when one window
/// covers the map.
fn shift(st: &Stage, i: usize) -> usize {
    if i % 2 == 1 && st.res > st.window { st.window / 2 } else { 0 }
}

/// Reads a Swin-family checkpoint into folded parameters (official key names).
pub fn fold(src: &dyn WeightSource, cfg: &SlabConfig, mode: FoldMode) -> Result<HostParams> {
    let mut f = Folder::new(src, mode);
    let c0 = cfg.embed_dims[0];
    f.norm_after_conv("patch_embed.proj", &[c0, cfg.in_chans, cfg.patch_size, cfg.patch_size], "patch_embed.norm")?;
    let sts = stages(cfg);
    for (s, st) in sts.iter().enumerate() {
        let c = st.dim;
        let hidden = c * cfg.mlp_ratios[s];
        for i in 0..cfg.depths[s] {
            let b = format!("layers.{s}.blocks.{i}");
            f.norm_into_linears(&format!("{b}.norm1"), c, &[(&format!("{b}.attn.qkv"), 3 * c)])?;
            f.copy(&format!("{b}.attn.proj.weight"), &[c, c])?;
            f.copy(&format!("{b}.attn.proj.bias"), &[c])?;
            if st.global {
                f.copy(&format!("{b}.attn.positional_encoding"), &[1, st.res * st.res, c])?;
                f.copy(&format!("{b}.attn.dwc.weight"), &[c / st.heads, 1, 5, 5])?;
                f.copy(&format!("{b}.attn.dwc.bias"), &[c / st.heads])?;
            } else {
                let side = 2 * st.window - 1;
                f.copy(&format!("{b}.attn.relative_position_bias_table"), &[side * side, st.heads])?;
            }
            f.norm_into_linears(&format!("{b}.norm2"), c, &[(&format!("{b}.mlp.fc1"), hidden)])?;
            f.copy(&format!("{b}.mlp.fc2.weight"), &[c, hidden])?;
            f.copy(&format!("{b}.mlp.fc2.bias"), &[c])?;
        }
        if s + 1 < sts.len() {
            let d = format!("layers.{s}.downsample");
            f.norm_into_linears(&format!("{d}.norm"), 4 * c, &[(&format!("{d}.reduction"), 2 * c)])?;
        }
    }
    f.norm_into_linears("norm", cfg.final_dim(), &[("head", cfg.num_classes)])?;
    Ok(f.finish())
}

struct Block {
    norm1: Option<Affine>,
    qkv: Linear,
    mixer: Mixer,
    proj: Linear,
    norm2: Option<Affine>,
    mlp: Mlp,
    /// Token order of the (shifted) windows and its inverse; `None` when it is the identity.
    order: Option<(Tensor, Tensor)>,
}

struct Merge {
    ids: Tensor,
    norm: Option<Affine>,
    reduction: Linear,
    out_tokens: usize,
    in_dim: usize,
}

/// A Swin-family model on the GPU.
pub struct Swin {
    cfg: SlabConfig,
    patch: Conv,
    patch_norm: Option<Affine>,
    blocks: Vec<Vec<Block>>,
    merges: Vec<Merge>,
    norm: Option<Affine>,
    head: Linear,
}

fn ids(ctx: &Arc<Context>, v: &[u32]) -> Result<Tensor> {
    Ok(Tensor::from_u32(ctx, &[v.len()], v)?)
}

impl Swin {
    /// Uploads a model from folded (or kept) parameters.
    pub fn load(ctx: &Arc<Context>, cfg: &SlabConfig, p: &dyn ParamSource, quant: Quant) -> Result<Swin> {
        let c0 = cfg.embed_dims[0];
        let opts = Conv2dOptions { stride: (cfg.patch_size, cfg.patch_size), padding: (0, 0), groups: 1 };
        let patch = Conv::load(ctx, p, "patch_embed.proj", [c0, cfg.in_chans, cfg.patch_size, cfg.patch_size], opts, quant)?;
        let sts = stages(cfg);
        let mut blocks = Vec::new();
        let mut merges = Vec::new();
        for (s, st) in sts.iter().enumerate() {
            let c = st.dim;
            let mut stage_blocks = Vec::new();
            for i in 0..cfg.depths[s] {
                let b = format!("layers.{s}.blocks.{i}");
                let (mixer, order) = if st.global {
                    (Mixer::sla(ctx, p, &format!("{b}.attn"), c, st.heads, (st.res, st.res))?, None)
                } else {
                    let sh = shift(st, i);
                    let mask = if sh > 0 { Some(shift_mask(st.res, st.window, sh)) } else { None };
                    let mixer = Mixer::window(ctx, p, &format!("{b}.attn"), c, st.heads, st.window, mask.as_deref())?;
                    let order = if st.window == st.res && sh == 0 {
                        None
                    } else {
                        let (fwd, inv) = window_order(st.res, st.window, sh);
                        Some((ids(ctx, &fwd)?, ids(ctx, &inv)?))
                    };
                    (mixer, order)
                };
                stage_blocks.push(Block {
                    norm1: Affine::load(ctx, p, &format!("{b}.norm1"), c)?,
                    qkv: p.linear(ctx, &format!("{b}.attn.qkv"), 3 * c, c, quant)?,
                    mixer,
                    proj: p.linear(ctx, &format!("{b}.attn.proj"), c, c, quant)?,
                    norm2: Affine::load(ctx, p, &format!("{b}.norm2"), c)?,
                    mlp: Mlp::load(ctx, p, &format!("{b}.mlp"), c, c * cfg.mlp_ratios[s], quant)?,
                    order,
                });
            }
            blocks.push(stage_blocks);
            if s + 1 < sts.len() {
                let d = format!("layers.{s}.downsample");
                merges.push(Merge {
                    ids: ids(ctx, &merge_ids(st.res))?,
                    norm: Affine::load(ctx, p, &format!("{d}.norm"), 4 * c)?,
                    reduction: p.linear(ctx, &format!("{d}.reduction"), 2 * c, 4 * c, quant)?,
                    out_tokens: (st.res / 2) * (st.res / 2),
                    in_dim: c,
                });
            }
        }
        Ok(Swin {
            cfg: cfg.clone(),
            patch,
            patch_norm: Affine::load(ctx, p, "patch_embed.norm", c0)?,
            blocks,
            merges,
            norm: Affine::load(ctx, p, "norm", cfg.final_dim())?,
            head: p.linear(ctx, "head", cfg.num_classes, cfg.final_dim(), quant)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SlabConfig {
        &self.cfg
    }

    /// Records the forward pass of one image `[1, 3, H, W]`, giving logits `[1, classes]`.
    pub fn forward(&self, rec: &mut Recorder, image: &Tensor) -> Result<Tensor> {
        let x = self.patch.forward_tokens(rec, image)?;
        let mut x = maybe_affine(rec, &self.patch_norm, x)?;
        for (s, stage) in self.blocks.iter().enumerate() {
            for b in stage {
                let h = maybe_affine(rec, &b.norm1, x.clone())?;
                let h = match &b.order {
                    Some((fwd, _)) => embedding(rec, &h, fwd)?,
                    None => h,
                };
                let qkv = b.qkv.forward(rec, &h)?;
                let a = b.mixer.forward(rec, &qkv)?;
                // Shifted windows: the attention output is in window order, put back before the
                // projection (a per-row linear, so the same as permuting its output).
                let a = match &b.order {
                    Some((_, inv)) => embedding(rec, &a, inv)?,
                    None => a,
                };
                x = b.proj.forward_residual(rec, &a, x)?;
                let h = maybe_affine(rec, &b.norm2, x.clone())?;
                x = b.mlp.forward_residual(rec, &h, x)?;
            }
            if let Some(m) = self.merges.get(s) {
                let g = embedding(rec, &x, &m.ids)?.reshape(&[m.out_tokens, 4 * m.in_dim])?;
                let g = maybe_affine(rec, &m.norm, g)?;
                x = m.reduction.forward(rec, &g)?;
            }
        }
        let x = maybe_affine(rec, &self.norm, x)?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let pooled = mean_tokens(rec, &x.reshape(&[1, n, c])?)?;
        Ok(self.head.forward(rec, &pooled)?)
    }
}
