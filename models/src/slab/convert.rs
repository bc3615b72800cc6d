//! Converting a SLAB checkpoint into a Kestrel model file: folded once (no BatchNorm left),
//! quantised as asked, with the [`SlabConfig`] in the metadata so the file loads with no
//! re-processing and no architecture argument.

use std::path::Path;

use kestrel::Quant;
use kestrel::weights::WeightSource;
use kestrel::weights::convert::{ConvertOptions, ConvertSummary, convert};

use crate::error::Result;
use crate::slab::config::SlabConfig;
use crate::slab::fold::FoldMode;
use crate::slab::{CONFIG_KEY, fold_checkpoint};

/// Folds `src` (a checkpoint of `cfg`'s architecture) and writes it to `out` stored as
/// `quant`, calling `progress(done, total)` per tensor written.
pub fn convert_checkpoint(
    src: &dyn WeightSource,
    cfg: &SlabConfig,
    quant: Quant,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<ConvertSummary> {
    let folded = fold_checkpoint(src, cfg, FoldMode::Fold)?;
    let config = serde_json::json!({ CONFIG_KEY: cfg });
    let opts = ConvertOptions { quant, architecture: Some(cfg.arch.clone()), config: Some(config) };
    Ok(convert(&folded, out, &opts, progress)?)
}
