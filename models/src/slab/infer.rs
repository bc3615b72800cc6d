//! Recognising which built-in architecture a checkpoint holds, from its tensor names and
//! shapes alone.

use kestrel::weights::WeightSource;

use crate::error::{ModelError, Result};
use crate::slab::config::{ARCHS, Family, Mixer, SlabConfig, lookup};

/// Counts `{prefix}{i}.…` blocks: the number of consecutive `i` from 0 for which some tensor
/// name starts with `{prefix}{i}.`.
fn count_blocks(src: &dyn WeightSource, prefix: &str) -> usize {
    (0..).take_while(|i| {
        let p = format!("{prefix}{i}.");
        src.tensors().iter().any(|t| t.name.starts_with(&p))
    })
    .count()
}

fn dim_of(src: &dyn WeightSource, name: &str) -> Option<usize> {
    src.info(name).and_then(|i| i.shape.first().copied())
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
    } else {
        return Err(ModelError::Checkpoint {
            file: src.path().display().to_string(),
            detail: "not a recognised SLAB/PRepBN checkpoint (no DeiT or Swin blocks found); pass the architecture explicitly".into(),
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
