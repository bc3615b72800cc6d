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
    /// Swin and CSWin: how many leading stages use global SLA instead of window attention
    /// ("LLSS": 2).
    #[serde(default)]
    pub global_stages: usize,
    /// PVT: spatial-reduction ratio of the keys and values per stage (softmax baselines
    /// `[8, 4, 2, 1]`; SLA stages 1). Empty means 1 everywhere.
    #[serde(default)]
    pub sr_ratios: Vec<usize>,
    /// CSWin: stripe width per stage of the cross-shaped window stages (official
    /// `split_size`, `[1, 2, 7, 7]`; only the non-global stages before the last use it).
    #[serde(default)]
    pub split_sizes: Vec<usize>,
}

impl SlabConfig {
    /// Channels of the last stage (the classifier's input).
    pub fn final_dim(&self) -> usize {
        self.embed_dims.last().copied().unwrap_or(0)
    }

    /// PVT: the spatial-reduction ratio of stage `s` (1 when none is configured).
    pub fn sr_ratio(&self, s: usize) -> usize {
        self.sr_ratios.get(s).copied().unwrap_or(1)
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
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) || self.num_classes == 0 || self.in_chans == 0 {
            return bad(format!("image {} / patch {} / classes {} invalid", self.img_size, self.patch_size, self.num_classes));
        }
        if self.family == Family::Swin && (self.window == 0 || stages != 4) {
            return bad("Swin needs 4 stages and a window".into());
        }
        if matches!(self.family, Family::Pvt | Family::Cswin) && !(self.img_size / self.patch_size).is_multiple_of(1 << (stages - 1)) {
            return bad(format!("a {}-pixel map does not halve {} times", self.img_size / self.patch_size, stages - 1));
        }
        if self.family == Family::Pvt {
            self.validate_pvt()?;
        }
        if self.family == Family::Cswin {
            self.validate_cswin()?;
        }
        Ok(())
    }

    fn validate_pvt(&self) -> Result<()> {
        let stages = self.embed_dims.len();
        if !self.sr_ratios.is_empty() && self.sr_ratios.len() != stages {
            return Err(ModelError::Config(format!("{}: sr_ratios need one entry per stage", self.arch)));
        }
        for s in 0..stages {
            let (sr, res) = (self.sr_ratio(s), (self.img_size / self.patch_size) >> s);
            if sr == 0 || res % sr != 0 || (self.mixer == Mixer::Sla && sr != 1) {
                return Err(ModelError::Config(format!(
                    "{}: stage {s}: spatial reduction {sr} of a {res}-token side (SLA stages use 1)",
                    self.arch
                )));
            }
        }
        Ok(())
    }

    fn validate_cswin(&self) -> Result<()> {
        let stages = self.embed_dims.len();
        let bad = |m: String| Err(ModelError::Config(format!("{}: {m}", self.arch)));
        if stages != 4 || self.patch_size != 4 || self.split_sizes.len() != stages || self.global_stages > stages {
            return bad("CSWin needs 4 stages, a stride-4 stem and a split size per stage".into());
        }
        for s in self.global_stages..stages - 1 {
            let (split, res) = (self.split_sizes[s], (self.img_size / self.patch_size) >> s);
            if split == 0 || res % split != 0 || (!self.heads[s].is_multiple_of(2) && split != res) {
                return bad(format!("stage {s}: stripes of width {split} on a {res}-token side with {} heads", self.heads[s]));
            }
        }
        Ok(())
    }
}

/// One row of the model table: each argument is a column of it.
#[allow(clippy::too_many_arguments)]
fn cfg(
    arch: &str,
    family: Family,
    mixer: Mixer,
    patch: usize,
    dims: &[usize],
    depths: &[usize],
    heads: &[usize],
    mlp: &[usize],
) -> SlabConfig {
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
        global_stages: if matches!(family, Family::Swin | Family::Cswin) && mixer == Mixer::Sla { 2 } else { 0 },
        sr_ratios: Vec::new(),
        split_sizes: Vec::new(),
    }
}

/// A PVT configuration: SLA (spatial reduction 1) or the softmax baseline (ratios 8, 4, 2, 1).
fn pvt(arch: &str, mixer: Mixer, depths: &[usize]) -> SlabConfig {
    let sr = if mixer == Mixer::Sla { [1; 4] } else { [8, 4, 2, 1] };
    SlabConfig { sr_ratios: sr.to_vec(), ..cfg(arch, Family::Pvt, mixer, 4, &[64, 128, 320, 512], depths, &[1, 2, 5, 8], &[8, 8, 4, 4]) }
}

/// A SLAB-CSWin configuration ("LLSS", stripes of width 7 in stage 3).
fn cswin(arch: &str, depths: &[usize]) -> SlabConfig {
    SlabConfig {
        split_sizes: vec![1, 2, 7, 7],
        ..cfg(arch, Family::Cswin, Mixer::Sla, 4, &[64, 128, 256, 512], depths, &[2, 4, 8, 16], &[4; 4])
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
    "slab_pvt_tiny",
    "slab_pvt_small",
    "slab_pvt_medium",
    "pvt_tiny_prepbn",
    "pvt_small_prepbn",
    "pvt_medium_prepbn",
    "slab_cswin_tiny",
    "slab_cswin_small",
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
        "slab_pvt_tiny" => pvt(&key, Sla, &[2, 2, 2, 2]),
        "slab_pvt_small" => pvt(&key, Sla, &[3, 4, 6, 3]),
        "slab_pvt_medium" => pvt(&key, Sla, &[3, 4, 18, 3]),
        "pvt_tiny_prepbn" => pvt(&key, Softmax, &[2, 2, 2, 2]),
        "pvt_small_prepbn" => pvt(&key, Softmax, &[3, 4, 6, 3]),
        "pvt_medium_prepbn" => pvt(&key, Softmax, &[3, 4, 18, 3]),
        "slab_cswin_tiny" => cswin(&key, &[2, 4, 18, 1]),
        "slab_cswin_small" => cswin(&key, &[2, 4, 32, 2]),
        _ => return Err(ModelError::Config(format!("unknown architecture `{name}`; known: {}", ARCHS.join(", ")))),
    };
    Ok(c)
}

/// Maps the short aliases to canonical names.
fn canonical(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase().replace('-', "_");
    let size = |s: &str| {
        match s {
            "t" => "tiny",
            "s" => "small",
            "m" => "medium",
            "b" => "base",
            other => other,
        }
        .to_string()
    };
    let parts: Vec<&str> = n.split('_').collect();
    match parts.as_slice() {
        ["slab", fam, s] => format!("slab_{fam}_{}", size(s)),
        [fam, s, "prepbn"] => format!("{fam}_{}_prepbn", size(s)),
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_config_is_valid_and_has_a_short_alias() {
        for arch in ARCHS {
            let c = lookup(arch).unwrap();
            c.validate().unwrap();
            let short: Vec<&str> =
                arch.split('_').map(|p| if matches!(p, "tiny" | "small" | "medium" | "base") { &p[..1] } else { p }).collect();
            assert_eq!(lookup(&short.join("-")).unwrap().arch, *arch);
        }
    }

    #[test]
    fn pvt_and_cswin_numbers() {
        let t = lookup("slab-pvt-t").unwrap();
        assert_eq!(
            (t.embed_dims.as_slice(), t.heads.as_slice(), t.mlp_ratios.as_slice()),
            (&[64, 128, 320, 512][..], &[1, 2, 5, 8][..], &[8, 8, 4, 4][..])
        );
        assert_eq!(t.sr_ratios, [1; 4]);
        assert_eq!(lookup("pvt_medium_prepbn").unwrap().sr_ratios, [8, 4, 2, 1]);
        assert_eq!(lookup("slab_pvt_medium").unwrap().depths, [3, 4, 18, 3]);
        let c = lookup("slab-cswin-s").unwrap();
        assert_eq!((c.depths.as_slice(), c.global_stages, c.split_sizes.as_slice()), (&[2, 4, 32, 2][..], 2, &[1, 2, 7, 7][..]));
    }
}
