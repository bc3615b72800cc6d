//! Loading a CLIP model from a Hugging Face directory: `config.json`, the weights
//! (`model.safetensors`, else shards or `pytorch_model.bin`), `tokenizer.json` and
//! `preprocessor_config.json` when present.
//!
//! Key layouts: a `CLIPModel` (and the `*WithProjection` models) keep each tower under
//! `vision_model.` / `text_model.`; a bare `CLIPVisionModel` / `CLIPTextModel` saved by
//! transformers 5 drops that level (`embeddings.…`). Both are accepted, recognised by where the
//! tower's embedding weight is. The projections and `logit_scale` are read when present.

use std::path::Path;
use std::sync::Arc;

use kestrel::Context;
use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::weights::WeightSource;

use super::ClipModel;
use super::config::ClipConfig;
use super::preprocess::load_config;
use super::text::TextTower;
use super::vision::VisionTower;
use crate::error::Result;
use crate::llm::load::{HfDir, dir_tokenizer, hf_dir};
use crate::params::{Checkpoint, ParamSource};

/// Where a tower's weights start: `{level}.` when `{level}.{probe}` exists, else no prefix when
/// the checkpoint is the bare tower (`probe` at the top level), else `{level}.` (the missing
/// tensor is then reported by name).
fn tower_prefix(src: &dyn WeightSource, level: &str, probe: &str) -> String {
    let nested = format!("{level}.");
    if src.info(&format!("{nested}{probe}")).is_none() && src.info(probe).is_some() { String::new() } else { nested }
}

/// A projection `[out, inp]` without bias at `name`, if the checkpoint has it.
fn projection(ctx: &Arc<Context>, p: &dyn ParamSource, name: &str, out: usize, inp: usize, quant: Quant) -> Result<Option<Linear>> {
    if !p.has(&format!("{name}.weight")) {
        return Ok(None);
    }
    let w = p.f32(&format!("{name}.weight"), &[out, inp])?;
    Ok(Some(Linear::from_f32(ctx, &w, None, out, inp, quant)?))
}

impl ClipModel {
    /// Loads the CLIP model in directory `dir` (or the directory of the weight file `dir`),
    /// linears stored as `quant` asks.
    pub fn load(ctx: &Arc<Context>, dir: &Path, quant: Quant) -> Result<ClipModel> {
        let HfDir { dir, config, weights } = hf_dir(dir)?;
        let config = ClipConfig::from_json(&config)?;
        let src = kestrel::weights::open(&weights)?;
        let src = src.as_ref();
        let top = Checkpoint::new(src, "");
        let p = config.projection_dim;
        let (vision, visual_projection, preprocess) = match &config.vision {
            Some(cfg) => {
                let tower = Checkpoint::new(src, tower_prefix(src, "vision_model", "embeddings.patch_embedding.weight"));
                (
                    Some(VisionTower::load(ctx, cfg, &tower, quant)?),
                    projection(ctx, &top, "visual_projection", p, cfg.encoder.hidden, quant)?,
                    Some(load_config(&dir, cfg.image_size)?),
                )
            }
            None => (None, None, None),
        };
        let (text, text_projection, tokenizer) = match &config.text {
            Some(cfg) => {
                let tower = Checkpoint::new(src, tower_prefix(src, "text_model", "embeddings.token_embedding.weight"));
                (
                    Some(TextTower::load(ctx, cfg, &tower, quant)?),
                    projection(ctx, &top, "text_projection", p, cfg.encoder.hidden, quant)?,
                    dir_tokenizer(&dir)?,
                )
            }
            None => (None, None, None),
        };
        let logit_scale = if top.has("logit_scale") { Some(top.f32("logit_scale", &[])?[0]) } else { None };
        Ok(ClipModel { ctx: ctx.clone(), config, vision, text, visual_projection, text_projection, logit_scale, tokenizer, preprocess })
    }
}
