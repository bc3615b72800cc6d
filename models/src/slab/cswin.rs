//! SLAB-CSWin (`slab_cswin.py`): a 7×7 stride-4 conv stem with RepBN; four stages of pre-norm
//! blocks `x += proj(branches(qkv(RepBN(x)))); x += mlp(RepBN(x))` joined by 3×3 stride-2 conv
//! merges with RepBN; final RepBN, average pool, head.
//!
//! The leading `global_stages` ("LL") mix with SLA over the whole map (the official
//! `CSWIN_LA_SPLIT_SIZE` 56-28-14-7 is the map itself); the others with softmax attention in
//! cross-shaped stripes: the channels and heads split in two halves, the first attending within
//! vertical stripes (`res`×`split`), the second within horizontal ones (`split`×`res`), the
//! halves concatenated along the channels — one window of the whole map in the last stage.
//! Every branch adds LePE, a depthwise 3×3 conv (zero padding inside each window) over its v.
//!
//! Folding: `stage1_conv_embed.2` → the stem conv; `merge{k}.norm` → `merge{k}.conv`;
//! `norm1` → `qkv`; `norm2` → `mlp.fc1`; final `norm` → `head`.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::columns::Columns;
use kestrel::ops::conv2d::Conv2dOptions;
use kestrel::ops::elementwise::add;
use kestrel::ops::gather::embedding;
use kestrel::ops::layout::{concat, permute, slice};
use kestrel::ops::reduce::mean_tokens;
use kestrel::weights::WeightSource;
use kestrel::{Context, Recorder, Tensor};

use crate::error::Result;
use crate::params::{HostParams, ParamSource};
use crate::slab::attention::Mixer;
use crate::slab::config::SlabConfig;
use crate::slab::fold::{FoldMode, Folder};
use crate::slab::layers::{Affine, Conv, Mlp, maybe_affine, tokens_to_map};
use crate::slab::windows::stripe_order;

/// Kernel side of the stem conv.
const STEM_KERNEL: usize = 7;
/// Zero padding of the stem conv.
const STEM_PADDING: usize = 2;
/// Kernel side of LePE's depthwise conv.
const LEPE_KERNEL: usize = 3;

/// One attention branch: a channel (and head) range attending within `hs`×`ws` windows.
struct BranchGeometry {
    offset: usize,
    channels: usize,
    heads: usize,
    hs: usize,
    ws: usize,
}

/// Geometry of one stage.
struct Geometry {
    dim: usize,
    res: usize,
    /// SLA (over the whole map) instead of softmax stripes.
    global: bool,
    hidden: usize,
    branches: Vec<BranchGeometry>,
}

fn geometry(cfg: &SlabConfig) -> Vec<Geometry> {
    let res0 = cfg.img_size / cfg.patch_size;
    let stages = cfg.embed_dims.len();
    (0..stages)
        .map(|s| {
            let (dim, heads, res) = (cfg.embed_dims[s], cfg.heads[s], res0 >> s);
            let global = s < cfg.global_stages;
            let split = if global { res } else { cfg.split_sizes[s] };
            let branches = if s + 1 == stages || split == res {
                vec![BranchGeometry { offset: 0, channels: dim, heads, hs: res, ws: res }]
            } else {
                let (half, h) = (dim / 2, heads / 2);
                vec![
                    BranchGeometry { offset: 0, channels: half, heads: h, hs: res, ws: split },
                    BranchGeometry { offset: half, channels: half, heads: h, hs: split, ws: res },
                ]
            };
            Geometry { dim, res, global, hidden: dim * cfg.mlp_ratios[s], branches }
        })
        .collect()
}

/// Reads a SLAB-CSWin checkpoint into folded parameters (official key names).
pub fn fold(src: &dyn WeightSource, cfg: &SlabConfig, mode: FoldMode) -> Result<HostParams> {
    let mut f = Folder::new(src, mode);
    let c0 = cfg.embed_dims[0];
    f.norm_after_conv("stage1_conv_embed.0", &[c0, cfg.in_chans, STEM_KERNEL, STEM_KERNEL], "stage1_conv_embed.2")?;
    for (s, g) in geometry(cfg).iter().enumerate() {
        let c = g.dim;
        if s > 0 {
            f.norm_after_conv(&format!("merge{s}.conv"), &[c, cfg.embed_dims[s - 1], 3, 3], &format!("merge{s}.norm"))?;
        }
        for j in 0..cfg.depths[s] {
            let b = format!("stage{}.{j}", s + 1);
            f.norm_into_linears(&format!("{b}.norm1"), c, &[(&format!("{b}.qkv"), 3 * c)])?;
            f.copy(&format!("{b}.proj.weight"), &[c, c])?;
            f.copy(&format!("{b}.proj.bias"), &[c])?;
            for (i, br) in g.branches.iter().enumerate() {
                let a = format!("{b}.attns.{i}");
                f.copy(&format!("{a}.get_v.weight"), &[br.channels, 1, LEPE_KERNEL, LEPE_KERNEL])?;
                f.copy(&format!("{a}.get_v.bias"), &[br.channels])?;
                if g.global {
                    let d = br.channels / br.heads;
                    f.copy(&format!("{a}.positional_encoding"), &[1, br.hs * br.ws, br.channels])?;
                    f.copy(&format!("{a}.dwc.weight"), &[d, 1, 5, 5])?;
                    f.copy(&format!("{a}.dwc.bias"), &[d])?;
                }
            }
            f.norm_into_linears(&format!("{b}.norm2"), c, &[(&format!("{b}.mlp.fc1"), g.hidden)])?;
            f.copy(&format!("{b}.mlp.fc2.weight"), &[c, g.hidden])?;
            f.copy(&format!("{b}.mlp.fc2.bias"), &[c])?;
        }
    }
    f.norm_into_linears("norm", cfg.final_dim(), &[("head", cfg.num_classes)])?;
    Ok(f.finish())
}

/// One attention branch on the GPU.
struct Branch {
    offset: usize,
    channels: usize,
    window: (usize, usize),
    mixer: Mixer,
    lepe: Conv,
    /// Token order of the stripes and its inverse; `None` for one window of the whole map.
    order: Option<(Tensor, Tensor)>,
}

impl Branch {
    fn load(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, br: &BranchGeometry, g: &Geometry, quant: Quant) -> Result<Branch> {
        let mixer = if g.global {
            Mixer::sla(ctx, p, prefix, br.channels, br.heads, (br.hs, br.ws))?
        } else {
            Mixer::windowed_softmax(br.channels, br.heads, br.hs * br.ws)
        };
        let opts = Conv2dOptions { stride: (1, 1), padding: (LEPE_KERNEL / 2, LEPE_KERNEL / 2), groups: br.channels };
        let lepe = Conv::load(ctx, p, &format!("{prefix}.get_v"), [br.channels, 1, LEPE_KERNEL, LEPE_KERNEL], opts, quant)?;
        let order = if br.hs == g.res && br.ws == g.res {
            None
        } else {
            let (fwd, inv) = stripe_order(g.res, br.hs, br.ws);
            Some((Tensor::from_u32(ctx, &[fwd.len()], &fwd)?, Tensor::from_u32(ctx, &[inv.len()], &inv)?))
        };
        Ok(Branch { offset: br.offset, channels: br.channels, window: (br.hs, br.ws), mixer, lepe, order })
    }

    /// The branch's output `[N, channels]` (map order) from the block's `qkv` `[N, 3c]`.
    fn forward(&self, rec: &mut Recorder, qkv: &Tensor, c: usize) -> Result<Tensor> {
        let src = match &self.order {
            Some((fwd, _)) => embedding(rec, qkv, fwd)?,
            None => qkv.clone(),
        };
        let (o, cb) = (self.offset, self.channels);
        let (q, k, v) = (Columns::range(&src, o, cb), Columns::range(&src, c + o, cb), Columns::range(&src, 2 * c + o, cb));
        let a = self.mixer.forward_columns(rec, q, k, v)?;
        let v = slice(rec, &src, 1, 2 * c + o, 2 * c + o + cb)?;
        let lepe = self.lepe_forward(rec, &v)?;
        let y = add(rec, &a, &lepe)?;
        match &self.order {
            Some((_, inv)) => Ok(embedding(rec, &y, inv)?),
            None => Ok(y),
        }
    }

    /// LePE: `v` `[nW·hs·ws, cb]` (window order) → the depthwise conv of each window's map, in
    /// the same layout.
    fn lepe_forward(&self, rec: &mut Recorder, v: &Tensor) -> Result<Tensor> {
        let ((hs, ws), cb, n) = (self.window, self.channels, v.shape()[0]);
        let maps = permute(rec, &v.reshape(&[n / (hs * ws), hs, ws, cb])?, &[0, 3, 1, 2])?;
        let out = self.lepe.forward(rec, &maps)?;
        Ok(permute(rec, &out, &[0, 2, 3, 1])?.reshape(&[n, cb])?)
    }
}

struct Block {
    norm1: Option<Affine>,
    qkv: Linear,
    branches: Vec<Branch>,
    proj: Linear,
    norm2: Option<Affine>,
    mlp: Mlp,
}

impl Block {
    fn forward(&self, rec: &mut Recorder, x: Tensor, c: usize) -> Result<Tensor> {
        let h = maybe_affine(rec, &self.norm1, x.clone())?;
        let qkv = self.qkv.forward(rec, &h)?;
        let ys = self.branches.iter().map(|b| b.forward(rec, &qkv, c)).collect::<Result<Vec<_>>>()?;
        let y = match ys.as_slice() {
            [one] => one.clone(),
            _ => concat(rec, &ys.iter().collect::<Vec<_>>(), 1)?,
        };
        let x = self.proj.forward_residual(rec, &y, x)?;
        let h = maybe_affine(rec, &self.norm2, x.clone())?;
        self.mlp.forward_residual(rec, &h, x)
    }
}

/// The conv merge before a stage (3×3, stride 2, padding 1) and its RepBN.
struct Merge {
    conv: Conv,
    norm: Option<Affine>,
}

struct Stage {
    dim: usize,
    res: usize,
    merge: Option<Merge>,
    blocks: Vec<Block>,
}

/// A SLAB-CSWin model on the GPU.
pub struct Cswin {
    cfg: SlabConfig,
    stem: Conv,
    stem_norm: Option<Affine>,
    stages: Vec<Stage>,
    norm: Option<Affine>,
    head: Linear,
}

fn load_block(ctx: &Arc<Context>, p: &dyn ParamSource, g: &Geometry, b: &str, quant: Quant) -> Result<Block> {
    let c = g.dim;
    let branches = g
        .branches
        .iter()
        .enumerate()
        .map(|(i, br)| Branch::load(ctx, p, &format!("{b}.attns.{i}"), br, g, quant))
        .collect::<Result<Vec<_>>>()?;
    Ok(Block {
        norm1: Affine::load(ctx, p, &format!("{b}.norm1"), c)?,
        qkv: p.linear(ctx, &format!("{b}.qkv"), 3 * c, c, quant)?,
        branches,
        proj: p.linear(ctx, &format!("{b}.proj"), c, c, quant)?,
        norm2: Affine::load(ctx, p, &format!("{b}.norm2"), c)?,
        mlp: Mlp::load(ctx, p, &format!("{b}.mlp"), c, g.hidden, quant)?,
    })
}

impl Cswin {
    /// Uploads a model from folded (or kept) parameters.
    pub fn load(ctx: &Arc<Context>, cfg: &SlabConfig, p: &dyn ParamSource, quant: Quant) -> Result<Cswin> {
        let c0 = cfg.embed_dims[0];
        let opts = Conv2dOptions { stride: (cfg.patch_size, cfg.patch_size), padding: (STEM_PADDING, STEM_PADDING), groups: 1 };
        let stem = Conv::load(ctx, p, "stage1_conv_embed.0", [c0, cfg.in_chans, STEM_KERNEL, STEM_KERNEL], opts, quant)?;
        let mut stages = Vec::new();
        for (s, g) in geometry(cfg).iter().enumerate() {
            let merge = if s > 0 {
                let opts = Conv2dOptions { stride: (2, 2), padding: (1, 1), groups: 1 };
                let conv = Conv::load(ctx, p, &format!("merge{s}.conv"), [g.dim, cfg.embed_dims[s - 1], 3, 3], opts, quant)?;
                Some(Merge { conv, norm: Affine::load(ctx, p, &format!("merge{s}.norm"), g.dim)? })
            } else {
                None
            };
            let blocks =
                (0..cfg.depths[s]).map(|j| load_block(ctx, p, g, &format!("stage{}.{j}", s + 1), quant)).collect::<Result<Vec<_>>>()?;
            stages.push(Stage { dim: g.dim, res: g.res, merge, blocks });
        }
        Ok(Cswin {
            cfg: cfg.clone(),
            stem,
            stem_norm: Affine::load(ctx, p, "stage1_conv_embed.2", c0)?,
            stages,
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
        let x = self.stem.forward_tokens(rec, image)?;
        let mut x = maybe_affine(rec, &self.stem_norm, x)?;
        let mut res = self.stages.first().map_or(0, |s| s.res);
        for st in &self.stages {
            if let Some(m) = &st.merge {
                let y = tokens_to_map(rec, &x, res, res)?;
                let y = m.conv.forward_tokens(rec, &y)?;
                x = maybe_affine(rec, &m.norm, y)?;
            }
            for b in &st.blocks {
                x = b.forward(rec, x, st.dim)?;
            }
            res = st.res;
        }
        let x = maybe_affine(rec, &self.norm, x)?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let pooled = mean_tokens(rec, &x.reshape(&[1, n, c])?)?;
        Ok(self.head.forward(rec, &pooled)?)
    }
}
