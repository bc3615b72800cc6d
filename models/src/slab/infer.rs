//! Recognising which built-in architecture a checkpoint holds, from its tensor names and
//! shapes alone.

use kestrel::weights::WeightSource;

use crate::error::{ModelError, Result};
use crate::slab::config::{ARCHS, Family, Mixer, SlabConfig, lookup};

/// Counts `{prefix}{i}.…` blocks: the number of consecutive `i` from 0 for which some tensor
/// name starts with `{prefix}{i}.`.
fn count_blocks(src: &dyn WeightSource, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            let p = format!("{prefix}{i}.");
            src.tensors().iter().any(|t| t.name.starts_with(&p))
        })
        .count()
}

fn dim_of(src: &dyn WeightSource, name: &str) -> Option<usize> {
    src.info(name).and_then(|i| i.shape.first().copied())
}

/// Widths and depths of stages numbered from 1 (`{stage}1.0.…`, `{stage}2.0.…`, … as PVT's
/// `block{k}` and CSWin's `stage{k}`): the width is the first dimension of block 0's `{proj}`.
fn numbered_stages(src: &dyn WeightSource, stage: &str, proj: &str) -> (Vec<usize>, Vec<usize>) {
    (1..).map_while(|k| dim_of(src, &format!("{stage}{k}.0.{proj}")).map(|d| (d, count_blocks(src, &format!("{stage}{k}."))))).unzip()
}

/// The built-in configuration whose family, mixer, widths and depths match the checkpoint.
pub fn infer_config(src: &dyn WeightSource) -> Result<SlabConfig> {
    let has = |n: &str| src.info(n).is_some();
    let (family, mixer, dims, depths) = if has("layers.0.blocks.0.attn.qkv.weight") {
        let stages = count_blocks(src, "layers.");
        let depths: Vec<usize> = (0..stages).map(|s| count_blocks(src, &format!("layers.{s}.blocks."))).collect();
        let dims: Vec<usize> = (0..stages).filter_map(|s| dim_of(src, &format!("layers.{s}.blocks.0.attn.proj.weight"))).collect();
        let mixer = if has("layers.0.blocks.0.attn.positional_encoding") { Mixer::Sla } else { Mixer::Softmax };
        (Family::Swin, mixer, dims, depths)
    } else if has("blocks.0.attn.qkv.weight") {
        let depths = vec![count_blocks(src, "blocks.")];
        let dims = dim_of(src, "blocks.0.attn.proj.weight").into_iter().collect();
        let mixer = if has("blocks.0.attn.positional_encoding") { Mixer::Sla } else { Mixer::Softmax };
        (Family::Deit, mixer, dims, depths)
    } else if has("block1.0.attn.q.weight") {
        let (dims, depths) = numbered_stages(src, "block", "attn.proj.weight");
        let mixer = if has("block1.0.attn.positional_encoding") { Mixer::Sla } else { Mixer::Softmax };
        (Family::Pvt, mixer, dims, depths)
    } else if has("stage1.0.qkv.weight") {
        let (dims, depths) = numbered_stages(src, "stage", "proj.weight");
        let mixer = if has("stage1.0.attns.0.positional_encoding") { Mixer::Sla } else { Mixer::Softmax };
        (Family::Cswin, mixer, dims, depths)
    } else {
        return Err(ModelError::Checkpoint {
            file: src.path().display().to_string(),
            detail: "not a recognised SLAB/PRepBN checkpoint (no DeiT, Swin, PVT or CSWin blocks found); pass the architecture explicitly"
                .into(),
        });
    };
    for arch in ARCHS {
        let c = lookup(arch)?;
        if c.family == family && c.mixer == mixer && c.embed_dims == dims && c.depths == depths {
            return Ok(c);
        }
    }
    Err(ModelError::Checkpoint {
        file: src.path().display().to_string(),
        detail: format!("a {family:?} checkpoint ({mixer:?}, widths {dims:?}, depths {depths:?}) that matches no built-in architecture"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::HostParams;

    /// The tensors inference looks at, for a PVT (`block{k}.j.attn.…`) or CSWin
    /// (`stage{k}.j.…`) configuration.
    fn skeleton(cfg: &SlabConfig) -> HostParams {
        let mut p = HostParams::new("<skeleton>");
        let pvt = cfg.family == Family::Pvt;
        for (s, (&c, &depth)) in cfg.embed_dims.iter().zip(&cfg.depths).enumerate() {
            let k = s + 1;
            for j in 0..depth {
                let b = if pvt { format!("block{k}.{j}.attn") } else { format!("stage{k}.{j}") };
                let qkv = if pvt { format!("{b}.q.weight") } else { format!("{b}.qkv.weight") };
                p.insert(qkv, vec![1], vec![0.0]).unwrap();
                if j == 0 {
                    p.insert(format!("{b}.proj.weight"), vec![c, c], vec![0.0; c * c]).unwrap();
                }
            }
        }
        if cfg.mixer == Mixer::Sla {
            let pe = if pvt { "block1.0.attn.positional_encoding" } else { "stage1.0.attns.0.positional_encoding" };
            p.insert(pe, vec![1], vec![0.0]).unwrap();
        }
        p
    }

    #[test]
    fn pvt_and_cswin_checkpoints_are_recognised() {
        for arch in ARCHS.iter().filter(|a| a.contains("pvt") || a.contains("cswin")) {
            let cfg = lookup(arch).unwrap();
            assert_eq!(infer_config(&skeleton(&cfg)).unwrap(), cfg, "{arch}");
        }
    }
}
