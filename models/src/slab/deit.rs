//! SLAB-DeiT and the DeiT PRepBN baseline: a 16×16 patch embedding, learned position
//! embedding, `depth` pre-norm blocks `x += attn(RepBN(x)); x += mlp(RepBN(x))`, a final RepBN and
//! the classifier. SLAB-DeiT has no class token (the head reads the mean of the tokens) and
//! mixes with SLA; the baseline prepends a class token, uses softmax attention and classifies
//! that token.
//!
//! Folding: `norm1` → `attn.qkv`, `norm2` → `mlp.fc1`, final `norm` → `head`.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::conv2d::Conv2dOptions;
use kestrel::ops::layout::{concat, slice};
use kestrel::ops::reduce::mean_tokens;
use kestrel::weights::WeightSource;
use kestrel::{Context, Recorder, Tensor};

use crate::error::Result;
use crate::params::{HostParams, ParamSource};
use crate::slab::attention::Mixer;
use crate::slab::config::{Mixer as MixerKind, SlabConfig};
use crate::slab::fold::{FoldMode, Folder};
use crate::slab::layers::{Affine, Conv, Mlp, maybe_affine, residual};

fn grid(cfg: &SlabConfig) -> usize {
    cfg.img_size / cfg.patch_size
}

fn has_cls(cfg: &SlabConfig) -> bool {
    cfg.mixer == MixerKind::Softmax
}

/// Reads a DeiT-family checkpoint into folded parameters (official key names).
pub fn fold(src: &dyn WeightSource, cfg: &SlabConfig, mode: FoldMode) -> Result<HostParams> {
    let c = cfg.embed_dims[0];
    let n = grid(cfg) * grid(cfg);
    let hidden = c * cfg.mlp_ratios[0];
    let head_dim = c / cfg.heads[0];
    let tokens = n + usize::from(has_cls(cfg));
    let mut f = Folder::new(src, mode);
    f.copy("patch_embed.proj.weight", &[c, cfg.in_chans, cfg.patch_size, cfg.patch_size])?;
    f.copy("patch_embed.proj.bias", &[c])?;
    f.copy("pos_embed", &[1, tokens, c])?;
    if has_cls(cfg) {
        f.copy("cls_token", &[1, 1, c])?;
    }
    for i in 0..cfg.depths[0] {
        let b = format!("blocks.{i}");
        f.norm_into_linears(&format!("{b}.norm1"), c, &[(&format!("{b}.attn.qkv"), 3 * c)])?;
        f.copy(&format!("{b}.attn.proj.weight"), &[c, c])?;
        f.copy(&format!("{b}.attn.proj.bias"), &[c])?;
        if cfg.mixer == MixerKind::Sla {
            f.copy(&format!("{b}.attn.positional_encoding"), &[1, n, c])?;
            f.copy(&format!("{b}.attn.dwc.weight"), &[head_dim, 1, 5, 5])?;
            f.copy(&format!("{b}.attn.dwc.bias"), &[head_dim])?;
        }
        f.norm_into_linears(&format!("{b}.norm2"), c, &[(&format!("{b}.mlp.fc1"), hidden)])?;
        f.copy(&format!("{b}.mlp.fc2.weight"), &[c, hidden])?;
        f.copy(&format!("{b}.mlp.fc2.bias"), &[c])?;
    }
    f.norm_into_linears("norm", c, &[("head", cfg.num_classes)])?;
    Ok(f.finish())
}

struct Block {
    norm1: Option<Affine>,
    qkv: Linear,
    mixer: Mixer,
    proj: Linear,
    norm2: Option<Affine>,
    mlp: Mlp,
}

/// A DeiT-family model on the GPU.
pub struct Deit {
    cfg: SlabConfig,
    patch: Conv,
    pos: Tensor,
    cls: Option<Tensor>,
    blocks: Vec<Block>,
    norm: Option<Affine>,
    head: Linear,
}

impl Deit {
    /// Uploads a model from folded (or kept) parameters.
    pub fn load(ctx: &Arc<Context>, cfg: &SlabConfig, p: &dyn ParamSource, quant: Quant) -> Result<Deit> {
        let c = cfg.embed_dims[0];
        let g = grid(cfg);
        let tokens = g * g + usize::from(has_cls(cfg));
        let opts = Conv2dOptions { stride: (cfg.patch_size, cfg.patch_size), padding: (0, 0), groups: 1 };
        let patch = Conv::load(ctx, p, "patch_embed.proj", [c, cfg.in_chans, cfg.patch_size, cfg.patch_size], opts, quant)?;
        let pos = Tensor::from_f32(ctx, &[tokens, c], &p.f32("pos_embed", &[1, tokens, c])?)?;
        let cls = if has_cls(cfg) { Some(Tensor::from_f32(ctx, &[1, c], &p.f32("cls_token", &[1, 1, c])?)?) } else { None };
        let mut blocks = Vec::with_capacity(cfg.depths[0]);
        for i in 0..cfg.depths[0] {
            let b = format!("blocks.{i}");
            let mixer = match cfg.mixer {
                MixerKind::Sla => Mixer::sla(ctx, p, &format!("{b}.attn"), c, cfg.heads[0], (g, g))?,
                MixerKind::Softmax => Mixer::softmax(c, cfg.heads[0]),
            };
            blocks.push(Block {
                norm1: Affine::load(ctx, p, &format!("{b}.norm1"), c)?,
                qkv: p.linear(ctx, &format!("{b}.attn.qkv"), 3 * c, c, quant)?,
                mixer,
                proj: p.linear(ctx, &format!("{b}.attn.proj"), c, c, quant)?,
                norm2: Affine::load(ctx, p, &format!("{b}.norm2"), c)?,
                mlp: Mlp::load(ctx, p, &format!("{b}.mlp"), c, c * cfg.mlp_ratios[0], quant)?,
            });
        }
        Ok(Deit {
            cfg: cfg.clone(),
            patch,
            pos,
            cls,
            blocks,
            norm: Affine::load(ctx, p, "norm", c)?,
            head: p.linear(ctx, "head", cfg.num_classes, c, quant)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SlabConfig {
        &self.cfg
    }

    /// Records the forward pass of one image `[1, 3, H, W]`, giving logits `[1, classes]`.
    pub fn forward(&self, rec: &mut Recorder, image: &Tensor) -> Result<Tensor> {
        let mut x = self.patch.forward_tokens(rec, image)?;
        if let Some(cls) = &self.cls {
            x = concat(rec, &[cls, &x], 0)?;
        }
        x = residual(rec, &x, &self.pos)?;
        for b in &self.blocks {
            let h = maybe_affine(rec, &b.norm1, x.clone())?;
            let qkv = b.qkv.forward(rec, &h)?;
            let a = b.mixer.forward(rec, &qkv)?;
            x = b.proj.forward_residual(rec, &a, x)?;
            let h = maybe_affine(rec, &b.norm2, x.clone())?;
            x = b.mlp.forward_residual(rec, &h, x)?;
        }
        let x = maybe_affine(rec, &self.norm, x)?;
        let pooled = if self.cls.is_some() {
            slice(rec, &x, 0, 0, 1)?
        } else {
            let n = x.shape()[0];
            let c = x.shape()[1];
            mean_tokens(rec, &x.reshape(&[1, n, c])?)?
        };
        Ok(self.head.forward(rec, &pooled)?)
    }
}
