//! Architecture configurations of the SLAB vision transformers and their PRepBN baselines
//! (numbers from the SLAB paper and the official model definitions).

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The network family (layout of stages and blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Isotropic ViT (DeiT): one stage of tokens from a 16×16 patch embedding.
    Deit,
    /// Swin: 4 stages, patch merging between them.
    Swin,
    /// PVT: 4 stages, a patch-embedding conv per stage.
    Pvt,
    /// CSWin: conv stem, cross-shaped window stages, conv merging.
    Cswin,
}

/// The token mixer of the attention blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mixer {
    /// SLAB's simplified linear attention (ReLU kernel, learned positional encoding on k,
    /// depthwise 5×5 conv on v).
    Sla,
    /// Softmax attention (the PRepBN baselines).
    Softmax,
}

/// Everything needed to build one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlabConfig {
    /// Canonical name, e.g. `slab_deit_tiny`.
    pub arch: String,
    /// Network family.
    pub family: Family,
    /// Attention type of the global (non-window) stages.
    pub mixer: Mixer,
    /// Input side in pixels (square).
    pub img_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// Classifier outputs.
    pub num_classes: usize,
    /// Patch size of the first embedding.
    pub patch_size: usize,
    /// Channels per stage (one entry for DeiT).
    pub embed_dims: Vec<usize>,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub heads: Vec<usize>,
    /// MLP hidden size / channels, per stage.
    pub mlp_ratios: Vec<usize>,
    /// Swin: window side of the window-attention stages.
    #[serde(default)]
    pub window: usize,
    /// Swin: how many leading stages use global SLA instead of window attention ("LLSS": 2).
    #[serde(default)]
    pub global_stages: usize,
}

impl SlabConfig {
    /// Channels of the last stage (the classifier's input).
    pub fn final_dim(&self) -> usize {
        self.embed_dims.last().copied().unwrap_or(0)
    }

    /// Checks the invariants every builder relies on.
    pub fn validate(&self) -> Result<()> {
        let stages = self.embed_dims.len();
        let bad = |m: String| Err(ModelError::Config(format!("{}: {m}", self.arch)));
        if stages == 0 || self.depths.len() != stages || self.heads.len() != stages || self.mlp_ratios.len() != stages {
            return bad("embed_dims, depths, heads and mlp_ratios need one entry per stage".into());
        }
        for (d, h) in self.embed_dims.iter().zip(&self.heads) {
            if *h == 0 || d % h != 0 {
                return bad(format!("{d} channels do not split into {h} heads"));
            }
        }
        if self.patch_size == 0 || self.img_size % self.patch_size != 0 || self.num_classes == 0 || self.in_chans == 0 {
            return bad(format!("image {} / patch {} / classes {} invalid", self.img_size, self.patch_size, self.num_classes));
        }
        if self.family == Family::Swin && (self.window == 0 || stages != 4) {
            return bad("Swin needs 4 stages and a window".into());
        }
        Ok(())
    }
}

fn cfg(arch: &str, family: Family, mixer: Mixer, patch: usize, dims: &[usize], depths: &[usize], heads: &[usize], mlp: &[usize]) -> SlabConfig {
    SlabConfig {
        arch: arch.to_string(),
        family,
        mixer,
        img_size: 224,
        in_chans: 3,
        num_classes: 1000,
        patch_size: patch,
        embed_dims: dims.to_vec(),
        depths: depths.to_vec(),
        heads: heads.to_vec(),
        mlp_ratios: mlp.to_vec(),
        window: if family == Family::Swin { 7 } else { 0 },
        global_stages: if family == Family::Swin && mixer == Mixer::Sla { 2 } else { 0 },
    }
}

/// Every built-in architecture name (the accepted aliases are listed by [`lookup`]).
pub const ARCHS: &[&str] = &[
    "slab_deit_tiny",
    "slab_deit_small",
    "deit_tiny_prepbn",
    "deit_small_prepbn",
    "slab_swin_tiny",
    "slab_swin_small",
    "slab_swin_base",
    "swin_tiny_prepbn",
];

/// The configuration of a built-in architecture. Accepts the canonical names of [`ARCHS`] and
/// the short forms `slab-deit-t`, `slab-swin-s`, … (case-insensitive, `-` or `_`).
pub fn lookup(name: &str) -> Result<SlabConfig> {
    use Family::*;
    use Mixer::*;
    let key = canonical(name);
    let c = match key.as_str() {
        "slab_deit_tiny" => cfg(&key, Deit, Sla, 16, &[192], &[12], &[3], &[4]),
        "slab_deit_small" => cfg(&key, Deit, Sla, 16, &[384], &[12], &[6], &[4]),
        "deit_tiny_prepbn" => cfg(&key, Deit, Softmax, 16, &[192], &[12], &[3], &[4]),
        "deit_small_prepbn" => cfg(&key, Deit, Softmax, 16, &[384], &[12], &[6], &[4]),
        "slab_swin_tiny" => cfg(&key, Swin, Sla, 4, &[96, 192, 384, 768], &[2, 2, 6, 2], &[3, 6, 12, 24], &[4; 4]),
        "slab_swin_small" => cfg(&key, Swin, Sla, 4, &[96, 192, 384, 768], &[2, 2, 18, 2], &[3, 6, 12, 24], &[4; 4]),
        "slab_swin_base" => cfg(&key, Swin, Sla, 4, &[128, 256, 512, 1024], &[2, 2, 18, 2], &[4, 8, 16, 32], &[4; 4]),
        "swin_tiny_prepbn" => cfg(&key, Swin, Softmax, 4, &[96, 192, 384, 768], &[2, 2, 6, 2], &[3, 6, 12, 24], &[4; 4]),
        _ => return Err(ModelError::Config(format!("unknown architecture `{name}`; known: {}", ARCHS.join(", ")))),
    };
    Ok(c)
}

/// Maps the short aliases to canonical names.
fn canonical(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase().replace('-', "_");
    let size = |s: &str| match s {
        "t" => "tiny",
        "s" => "small",
        "m" => "medium",
        "b" => "base",
        other => other,
    }
    .to_string();
    let parts: Vec<&str> = n.split('_').collect();
    match parts.as_slice() {
        ["slab", fam, s] => format!("slab_{fam}_{}", size(s)),
        [fam, s, "prepbn"] => format!("{fam}_{}_prepbn", size(s)),
        _ => n,
    }
}
