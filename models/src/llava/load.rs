//! Loading LLaVA from a Hugging Face directory: `config.json`, the weights
//! (`model.safetensors`, else shards or `pytorch_model.bin`), `tokenizer.json` and
//! `preprocessor_config.json` when present.
//!
//! Key layouts, all accepted (recognised by where the projector is):
//! - the llava-hf Hub checkpoints (transformers 4): `vision_tower.vision_model.*`,
//!   `multi_modal_projector.*`, `image_newline`, `language_model.model.*`,
//!   `language_model.lm_head.weight`;
//! - transformers 5's `save_pretrained`: the same, the tower without its `vision_model.` level;
//! - transformers' in-memory names: `model.vision_tower.*`, `model.multi_modal_projector.*`,
//!   `model.image_newline`, `model.language_model.*`, `lm_head.weight`.

use std::path::Path;
use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::attention::RopeLayout;
use kestrel::weights::renamed::Renamed;
use kestrel::weights::{WeightDType, WeightSource};
use kestrel::{Context, Tensor};

use super::{LlavaConfig, LlavaKind, LlavaModel};
use crate::clip::VisionTower;
use crate::clip::preprocess::load_config;
use crate::error::{ModelError, Result};
use crate::llm::decoder::{Decoder, DecoderOptions};
use crate::llm::load::{HfDir, dir_tokenizer, hf_dir, model_dir, read_json};
use crate::llm::random::RandomCheckpoint;
use crate::llm::weights::{LoadOptions, Naming, Store, load_weights, refine_config};
use crate::params::{Checkpoint, ParamSource, RandomParams};

/// Where each part of the checkpoint lives in one key layout.
struct Layout {
    /// Prefix of the vision tower (before or at its `vision_model.` level).
    vision: &'static str,
    /// Prefix of `linear_1` / `linear_2` and `image_newline`.
    top: &'static str,
    /// `(logical, stored)` prefixes that present the language model with plain decoder names.
    text: [(&'static str, &'static str); 2],
}

const HUB: Layout =
    Layout { vision: "vision_tower.", top: "", text: [("model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")] };

const NESTED: Layout =
    Layout { vision: "model.vision_tower.", top: "model.", text: [("model.", "model.language_model."), ("lm_head.", "lm_head.")] };

/// The layout of a checkpoint, from where its projector is.
fn layout(src: &dyn WeightSource) -> Result<&'static Layout> {
    [&HUB, &NESTED].into_iter().find(|l| src.info(&format!("{}multi_modal_projector.linear_1.weight", l.top)).is_some()).ok_or_else(|| {
        ModelError::Checkpoint {
            file: src.path().display().to_string(),
            detail: "no `multi_modal_projector.linear_1.weight` (is this a LLaVA checkpoint?)".into(),
        }
    })
}

/// The vision tower's and projector's storage for `quant`: as asked, except w8 for
/// [`Quant::W4`] (4-bit vision encoders lose too much: the tiny fixtures' logits fall to
/// cosine 0.945 of f32 with a 4-bit tower, as llama.cpp keeps its `mmproj` in 16 or 8 bits),
/// and for [`Quant::Native`] f16 when the file stores the tower in 16 bits (`stored_half`),
/// else f32.
pub(crate) fn vision_quant(quant: Quant, stored_half: bool) -> Quant {
    match quant {
        Quant::W4 => Quant::W8,
        Quant::Native if stored_half => Quant::F16,
        Quant::Native => Quant::F32,
        q => q,
    }
}

/// Whether `src` stores the tensor `name` in 16 bits.
pub(crate) fn stored_half(src: &dyn WeightSource, name: &str) -> bool {
    src.info(name).is_some_and(|t| matches!(t.dtype, WeightDType::F16 | WeightDType::BF16))
}

impl LlavaModel {
    /// Whether the `config.json` in `path`'s directory describes a LLaVA model.
    pub fn is_llava(path: &Path) -> bool {
        let Ok(dir) = model_dir(path) else { return false };
        let Ok(v) = read_json(&dir.join("config.json")) else { return false };
        matches!(v.get("model_type").and_then(|t| t.as_str()), Some("llava" | "llava_next"))
    }

    /// Loads the LLaVA model in directory `path`: linears stored as `opts.quant` says, a
    /// decoder with `decoder` options. `progress(done, total)` follows the decoder's upload.
    pub fn load(
        ctx: &Arc<Context>,
        path: &Path,
        opts: &LoadOptions,
        decoder: &DecoderOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LlavaModel> {
        let HfDir { dir, config, weights } = hf_dir(path)?;
        let mut config = LlavaConfig::from_json(&config)?;
        let src = kestrel::weights::open(&weights)?;
        let l = layout(src.as_ref())?;

        let nested = format!("{}vision_model.", l.vision);
        let probe = "embeddings.patch_embedding.weight";
        let tower_prefix = if src.info(&format!("{nested}{probe}")).is_some() { nested } else { l.vision.to_string() };
        let vq = vision_quant(opts.quant, stored_half(src.as_ref(), &format!("{tower_prefix}{probe}")));
        let tower = Checkpoint::new(src.as_ref(), tower_prefix);
        let (vision, projector, newline) = vision_parts(ctx, &config, &tower, &Checkpoint::new(src.as_ref(), l.top), vq)?;
        let preprocess = load_config(&dir, config.vision.image_size)?;

        let store = Store::Plain(Box::new(Renamed::new(src, &l.text)));
        refine_config(&mut config.text, &store, Naming::Hf)?;
        let weights = load_weights(ctx, &store, &config.text, Naming::Hf, RopeLayout::RotateHalf, opts, progress)?;
        let decoder = Decoder::new(ctx, config.text.clone(), weights, decoder)?;
        Ok(LlavaModel { ctx: ctx.clone(), config, vision, projector, newline, decoder, tokenizer: dir_tokenizer(&dir)?, preprocess })
    }
}

impl LlavaModel {
    /// A LLaVA of `config` with seeded random weights (`kestrel profile llava-1.5-7b`: latency
    /// and memory do not depend on the values).
    pub fn random(ctx: &Arc<Context>, config: LlavaConfig, opts: &LoadOptions, decoder: &DecoderOptions, seed: u64) -> Result<LlavaModel> {
        let params = RandomParams::new(seed);
        let vq = vision_quant(opts.quant, false);
        let (vision, projector, newline) = vision_parts(ctx, &config, &params, &params, vq)?;
        let store = Store::Plain(Box::new(RandomCheckpoint::new(&config.text, seed)));
        let weights = load_weights(ctx, &store, &config.text, Naming::Hf, RopeLayout::RotateHalf, opts, &mut |_, _| {})?;
        let decoder = Decoder::new(ctx, config.text.clone(), weights, decoder)?;
        let preprocess = crate::clip::preprocess::default_config(config.vision.image_size);
        Ok(LlavaModel { ctx: ctx.clone(), config, vision, projector, newline, decoder, tokenizer: None, preprocess })
    }
}

/// The vision tower (from `tower`), the projector and NeXT's `image_newline` (from `top`:
/// `multi_modal_projector.linear_{1,2}`, `image_newline`).
pub(crate) fn vision_parts(
    ctx: &Arc<Context>,
    config: &LlavaConfig,
    tower: &dyn ParamSource,
    top: &dyn ParamSource,
    quant: Quant,
) -> Result<(VisionTower, [Linear; 2], Option<Tensor>)> {
    let vision = VisionTower::load(ctx, &config.vision, tower, quant)?;
    let (cv, h) = (config.vision.encoder.hidden, config.text.hidden);
    let projector = [
        linear(ctx, top, "multi_modal_projector.linear_1", h, cv, config.projector_bias, quant)?,
        linear(ctx, top, "multi_modal_projector.linear_2", h, h, config.projector_bias, quant)?,
    ];
    let newline = match config.kind {
        LlavaKind::V15 => None,
        LlavaKind::Next => Some(Tensor::from_f32(ctx, &[1, h], &top.f32("image_newline", &[h])?)?),
    };
    Ok((vision, projector, newline))
}

/// The projector linear `[out, inp]` at `name`, with a bias when `bias`.
fn linear(ctx: &Arc<Context>, p: &dyn ParamSource, name: &str, out: usize, inp: usize, bias: bool, quant: Quant) -> Result<Linear> {
    let w = p.f32(&format!("{name}.weight"), &[out, inp])?;
    let b = if bias { Some(p.f32(&format!("{name}.bias"), &[out])?) } else { None };
    Ok(Linear::from_f32(ctx, &w, b.as_deref(), out, inp, quant)?)
}
