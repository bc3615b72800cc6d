//! SLAB-PVT and the PVT PRepBN baselines (the PVTv1 layout of `slab_pvt.py`): four stages,
//! each a patch-embedding conv (4×4/4 first, then 2×2/2) with RepBN, plus a learned position
//! embedding, then pre-norm blocks `x += proj(attn(q(RepBN(x)), kv(·))); x += mlp(RepBN(x))`
//! with separate `q` and `kv` linears. SLAB-PVT mixes with SLA over the whole map (spatial
//! reduction 1); the baselines with softmax attention whose keys and values come from a
//! `sr`×`sr` stride-`sr` conv + RepBN (`attn.sr`, `attn.norm`) when `sr > 1`. No final norm:
//! the head reads the token mean of the last stage.
//!
//! Folding: `patch_embed{k}.norm` → the patch conv (the position embedding is added after
//! it); `norm1` → `attn.q` and `attn.kv`, or `attn.q` and the unpadded `attn.sr` conv;
//! `attn.norm` → `attn.kv`; `norm2` → `mlp.fc1`.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::columns::Columns;
use kestrel::ops::conv2d::Conv2dOptions;
use kestrel::ops::reduce::mean_tokens;
use kestrel::weights::WeightSource;
use kestrel::{Context, Recorder, Tensor};

use crate::error::Result;
use crate::params::{HostParams, ParamSource};
use crate::slab::attention::Mixer;
use crate::slab::config::{Mixer as MixerKind, SlabConfig};
use crate::slab::fold::{FoldMode, Folder};
use crate::slab::layers::{Affine, Conv, Mlp, maybe_affine, residual, tokens_to_map};

/// Geometry of one stage.
struct Geometry {
    dim: usize,
    heads: usize,
    /// Map side.
    res: usize,
    /// Patch conv side (= stride).
    patch: usize,
    /// Input channels of the patch conv.
    in_dim: usize,
    /// Spatial-reduction ratio of k and v.
    sr: usize,
    hidden: usize,
}

fn geometry(cfg: &SlabConfig) -> Vec<Geometry> {
    let res0 = cfg.img_size / cfg.patch_size;
    (0..cfg.embed_dims.len())
        .map(|s| Geometry {
            dim: cfg.embed_dims[s],
            heads: cfg.heads[s],
            res: res0 >> s,
            patch: if s == 0 { cfg.patch_size } else { 2 },
            in_dim: if s == 0 { cfg.in_chans } else { cfg.embed_dims[s - 1] },
            sr: cfg.sr_ratio(s),
            hidden: cfg.embed_dims[s] * cfg.mlp_ratios[s],
        })
        .collect()
}

/// Reads a PVT-family checkpoint into folded parameters (official key names).
pub fn fold(src: &dyn WeightSource, cfg: &SlabConfig, mode: FoldMode) -> Result<HostParams> {
    let mut f = Folder::new(src, mode);
    for (s, g) in geometry(cfg).iter().enumerate() {
        let (k, c) = (s + 1, g.dim);
        f.norm_after_conv(&format!("patch_embed{k}.proj"), &[c, g.in_dim, g.patch, g.patch], &format!("patch_embed{k}.norm"))?;
        f.copy(&format!("pos_embed{k}"), &[1, g.res * g.res, c])?;
        for j in 0..cfg.depths[s] {
            let b = format!("block{k}.{j}");
            let (q, kv) = (format!("{b}.attn.q"), format!("{b}.attn.kv"));
            if g.sr > 1 {
                let sr = format!("{b}.attn.sr");
                f.norm_into_layers(&format!("{b}.norm1"), c, &[(&q, &[c, c]), (&sr, &[c, c, g.sr, g.sr])])?;
                f.norm_into_linears(&format!("{b}.attn.norm"), c, &[(&kv, 2 * c)])?;
            } else {
                f.norm_into_linears(&format!("{b}.norm1"), c, &[(&q, c), (&kv, 2 * c)])?;
            }
            f.copy(&format!("{b}.attn.proj.weight"), &[c, c])?;
            f.copy(&format!("{b}.attn.proj.bias"), &[c])?;
            if cfg.mixer == MixerKind::Sla {
                let d = c / g.heads;
                f.copy(&format!("{b}.attn.positional_encoding"), &[1, g.res * g.res, c])?;
                f.copy(&format!("{b}.attn.dwc.weight"), &[d, 1, 5, 5])?;
                f.copy(&format!("{b}.attn.dwc.bias"), &[d])?;
            }
            f.norm_into_linears(&format!("{b}.norm2"), c, &[(&format!("{b}.mlp.fc1"), g.hidden)])?;
            f.copy(&format!("{b}.mlp.fc2.weight"), &[c, g.hidden])?;
            f.copy(&format!("{b}.mlp.fc2.bias"), &[c])?;
        }
    }
    f.copy("head.weight", &[cfg.num_classes, cfg.final_dim()])?;
    f.copy("head.bias", &[cfg.num_classes])?;
    Ok(f.finish())
}

/// The baselines' spatial reduction of the keys' and values' input: conv + RepBN.
struct Reduction {
    conv: Conv,
    norm: Option<Affine>,
}

struct Block {
    norm1: Option<Affine>,
    q: Linear,
    sr: Option<Reduction>,
    kv: Linear,
    mixer: Mixer,
    proj: Linear,
    norm2: Option<Affine>,
    mlp: Mlp,
}

struct Stage {
    dim: usize,
    res: usize,
    patch: Conv,
    patch_norm: Option<Affine>,
    pos: Tensor,
    blocks: Vec<Block>,
}

/// A PVT-family model on the GPU.
pub struct Pvt {
    cfg: SlabConfig,
    stages: Vec<Stage>,
    head: Linear,
}

fn load_block(ctx: &Arc<Context>, cfg: &SlabConfig, p: &dyn ParamSource, g: &Geometry, b: &str, quant: Quant) -> Result<Block> {
    let c = g.dim;
    let a = format!("{b}.attn");
    let sr = if g.sr > 1 {
        let opts = Conv2dOptions { stride: (g.sr, g.sr), padding: (0, 0), groups: 1 };
        Some(Reduction {
            conv: Conv::load(ctx, p, &format!("{a}.sr"), [c, c, g.sr, g.sr], opts, quant)?,
            norm: Affine::load(ctx, p, &format!("{a}.norm"), c)?,
        })
    } else {
        None
    };
    let mixer = match cfg.mixer {
        MixerKind::Sla => Mixer::sla(ctx, p, &a, c, g.heads, (g.res, g.res))?,
        MixerKind::Softmax => Mixer::softmax(c, g.heads),
    };
    Ok(Block {
        norm1: Affine::load(ctx, p, &format!("{b}.norm1"), c)?,
        q: p.linear(ctx, &format!("{a}.q"), c, c, quant)?,
        sr,
        kv: p.linear(ctx, &format!("{a}.kv"), 2 * c, c, quant)?,
        mixer,
        proj: p.linear(ctx, &format!("{a}.proj"), c, c, quant)?,
        norm2: Affine::load(ctx, p, &format!("{b}.norm2"), c)?,
        mlp: Mlp::load(ctx, p, &format!("{b}.mlp"), c, g.hidden, quant)?,
    })
}

impl Pvt {
    /// Uploads a model from folded (or kept) parameters.
    pub fn load(ctx: &Arc<Context>, cfg: &SlabConfig, p: &dyn ParamSource, quant: Quant) -> Result<Pvt> {
        let mut stages = Vec::new();
        for (s, g) in geometry(cfg).iter().enumerate() {
            let (k, c, n) = (s + 1, g.dim, g.res * g.res);
            let opts = Conv2dOptions { stride: (g.patch, g.patch), padding: (0, 0), groups: 1 };
            let blocks =
                (0..cfg.depths[s]).map(|j| load_block(ctx, cfg, p, g, &format!("block{k}.{j}"), quant)).collect::<Result<Vec<_>>>()?;
            stages.push(Stage {
                dim: c,
                res: g.res,
                patch: Conv::load(ctx, p, &format!("patch_embed{k}.proj"), [c, g.in_dim, g.patch, g.patch], opts, quant)?,
                patch_norm: Affine::load(ctx, p, &format!("patch_embed{k}.norm"), c)?,
                pos: Tensor::from_f32(ctx, &[n, c], &p.f32(&format!("pos_embed{k}"), &[1, n, c])?)?,
                blocks,
            });
        }
        Ok(Pvt { cfg: cfg.clone(), stages, head: p.linear(ctx, "head", cfg.num_classes, cfg.final_dim(), quant)? })
    }

    /// The configuration.
    pub fn config(&self) -> &SlabConfig {
        &self.cfg
    }

    /// Records the forward pass of one image `[1, 3, H, W]`, giving logits `[1, classes]`.
    pub fn forward(&self, rec: &mut Recorder, image: &Tensor) -> Result<Tensor> {
        // The image for the first stage, then the previous stage's token rows.
        let mut x = image.clone();
        for (s, st) in self.stages.iter().enumerate() {
            let map = match s.checked_sub(1) {
                Some(prev) => tokens_to_map(rec, &x, self.stages[prev].res, self.stages[prev].res)?,
                None => x,
            };
            let t = st.patch.forward_tokens(rec, &map)?;
            let t = maybe_affine(rec, &st.patch_norm, t)?;
            x = residual(rec, &t, &st.pos)?;
            for b in &st.blocks {
                x = block_forward(rec, b, x, st.dim, st.res)?;
            }
        }
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let pooled = mean_tokens(rec, &x.reshape(&[1, n, c])?)?;
        Ok(self.head.forward(rec, &pooled)?)
    }
}

/// One block on token rows `[res², c]`.
fn block_forward(rec: &mut Recorder, b: &Block, x: Tensor, c: usize, res: usize) -> Result<Tensor> {
    let h = maybe_affine(rec, &b.norm1, x.clone())?;
    let q = b.q.forward(rec, &h)?;
    let kv_in = match &b.sr {
        Some(r) => {
            let m = tokens_to_map(rec, &h, res, res)?;
            let y = r.conv.forward_tokens(rec, &m)?;
            maybe_affine(rec, &r.norm, y)?
        }
        None => h,
    };
    let kv = b.kv.forward(rec, &kv_in)?;
    let a = b.mixer.forward_columns(rec, Columns::all(&q), Columns::range(&kv, 0, c), Columns::range(&kv, c, c))?;
    let x = b.proj.forward_residual(rec, &a, x)?;
    let h = maybe_affine(rec, &b.norm2, x.clone())?;
    b.mlp.forward_residual(rec, &h, x)
}
