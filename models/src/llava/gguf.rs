//! llama.cpp's LLaVA pair: the language model as a GGUF file and the vision tower with its
//! projector as an `mmproj` GGUF (`general.architecture` `clip`, `clip.*` metadata,
//! `v.blk.N.*` / `mm.N.*` / `model.image_newline` tensors).
//!
//! The `mmproj` names are read as transformers' CLIP and LLaVA names. Files written by
//! llama.cpp's legacy converter call CLIP's `fc1` `ffn_down` and `fc2` `ffn_up`; which one a
//! file means is told from the shapes (`fc1` reads the tower's width), as llama.cpp does. The
//! tower keeps the layers up to `clip.vision.feature_layer` (else all `block_count` it has)
//! and is read after the last of them, without `post_ln`.

use std::path::Path;
use std::sync::Arc;

use kestrel::Context;
use kestrel::weights::WeightSource;
use kestrel::weights::renamed::Renamed;
use serde_json::Value;

use super::LlavaModel;
use super::config::{FeatureSelect, LlavaConfig, LlavaKind};
use super::load::{stored_half, vision_parts, vision_quant};
use crate::clip::config::{Activation, EncoderConfig, VisionConfig};
use crate::clip::preprocess::default_config;
use crate::error::{ModelError, Result};
use crate::llm::config::{opt_f32, opt_str, opt_usize};
use crate::llm::decoder::{Decoder, DecoderOptions};
use crate::llm::load::load;
use crate::llm::weights::LoadOptions;
use crate::params::Checkpoint;

/// The image token of a pair whose vocabulary has no `<image>`: an id no tokenizer gives, so
/// images enter only where a prompt's text says `<image>`.
pub const NO_IMAGE_TOKEN: u32 = u32::MAX;

/// A [`ModelError::Config`] about an `mmproj` file.
fn err(path: &Path, detail: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!("{}: {detail}", path.display()))
}

/// A required positive integer of the metadata.
fn req(meta: &Value, key: &str, path: &Path) -> Result<usize> {
    opt_usize(meta, key)?.filter(|&v| v > 0).ok_or_else(|| err(path, format!("no `{key}`")))
}

/// Three numbers at `key`, if present.
fn triple(meta: &Value, key: &str, path: &Path) -> Result<Option<[f32; 3]>> {
    let Some(v) = meta.get(key) else { return Ok(None) };
    match v.as_array().map(|a| a.iter().filter_map(Value::as_f64).map(|x| x as f32).collect::<Vec<_>>()) {
        Some(x) if x.len() == 3 && x.iter().all(|v| v.is_finite()) => Ok(Some([x[0], x[1], x[2]])),
        _ => Err(err(path, format!("`{key}` is {v}, not three numbers"))),
    }
}

/// The `mmproj` name of a transformers name below the tower or the LLaVA model (`fc1_name` /
/// `fc2_name`: what this file calls CLIP's `fc1` and `fc2`).
fn hf_name(stored: &str, fc1_name: &str, fc2_name: &str) -> Option<String> {
    let fixed = match stored {
        "v.patch_embd.weight" => "embeddings.patch_embedding.weight",
        "v.class_embd" => "embeddings.class_embedding",
        "v.position_embd.weight" => "embeddings.position_embedding.weight",
        "model.image_newline" => "image_newline",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.to_string());
    }
    if let Some(rest) = stored.strip_prefix("v.pre_ln.") {
        return Some(format!("pre_layrnorm.{rest}"));
    }
    if let Some(rest) = stored.strip_prefix("mm.") {
        let (index, kind) = rest.split_once('.')?;
        let linear = match index {
            "0" => "linear_1",
            "2" => "linear_2",
            _ => return None,
        };
        return Some(format!("multi_modal_projector.{linear}.{kind}"));
    }
    let rest = stored.strip_prefix("v.blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.split_once('.')?;
    let part = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_out" => "self_attn.out_proj",
        "ln1" => "layer_norm1",
        "ln2" => "layer_norm2",
        p if p == fc1_name => "mlp.fc1",
        p if p == fc2_name => "mlp.fc2",
        _ => return None,
    };
    Some(format!("encoder.layers.{layer}.{part}.{kind}"))
}

/// The vision tower's config from `clip.vision.*`, and the `hidden_states` index to read.
fn vision_config(meta: &Value, path: &Path) -> Result<(VisionConfig, isize)> {
    let key = |k: &str| format!("clip.vision.{k}");
    let layers = req(meta, &key("block_count"), path)?;
    let activation =
        if meta.get("clip.use_gelu").and_then(Value::as_bool) == Some(true) { Activation::Gelu } else { Activation::QuickGelu };
    let vision = VisionConfig {
        encoder: EncoderConfig {
            hidden: req(meta, &key("embedding_length"), path)?,
            intermediate: req(meta, &key("feed_forward_length"), path)?,
            layers,
            heads: req(meta, &key("attention.head_count"), path)?,
            layer_norm_eps: opt_f32(meta, &key("attention.layer_norm_epsilon"))?.unwrap_or(1e-5),
            activation,
        },
        image_size: req(meta, &key("image_size"), path)?,
        patch_size: req(meta, &key("patch_size"), path)?,
        channels: 3,
    };
    vision.validate()?;
    let feature = match meta.get(key("feature_layer")) {
        None => layers,
        Some(v) => match v.as_array().map(Vec::as_slice) {
            Some([one]) => {
                one.as_u64().map(|x| x as usize).filter(|&x| x <= layers).ok_or_else(|| err(path, format!("feature_layer {v}")))?
            }
            _ => return Err(err(path, format!("feature_layer {v}: only one feature layer is supported"))),
        },
    };
    Ok((vision, feature as isize))
}

/// NeXT's candidate resolutions: `clip.vision.image_grid_pinpoints` as flattened
/// `[height, width]` pairs, or none (LLaVA-1.5).
fn pinpoints(meta: &Value, path: &Path) -> Result<Vec<(usize, usize)>> {
    let Some(v) = meta.get("clip.vision.image_grid_pinpoints") else { return Ok(Vec::new()) };
    let values: Option<Vec<usize>> = v.as_array().map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect());
    match values {
        Some(x) if !x.is_empty() && x.len() % 2 == 0 && x.iter().all(|&v| v > 0) => Ok(x.chunks(2).map(|p| (p[0], p[1])).collect()),
        _ => Err(err(path, format!("image_grid_pinpoints {v} is not a list of [height, width] pairs"))),
    }
}

impl LlavaModel {
    /// Loads llama.cpp's pair: the language model GGUF `model` (tokenizer from its metadata)
    /// and the `mmproj` GGUF (vision tower, MLP projector, `image_newline` for NeXT).
    pub fn load_gguf(
        ctx: &Arc<Context>,
        model: &Path,
        mmproj: &Path,
        opts: &LoadOptions,
        decoder: &DecoderOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LlavaModel> {
        let src = kestrel::weights::open(mmproj)?;
        let meta = src.metadata();
        if src.format() != "gguf" || opt_str(&meta, "general.architecture")? != Some("clip") {
            return Err(err(mmproj, "not an mmproj GGUF (general.architecture `clip`)"));
        }
        if meta.get("clip.has_vision_encoder").and_then(Value::as_bool) == Some(false) {
            return Err(err(mmproj, "the mmproj file has no vision encoder"));
        }
        match opt_str(&meta, "clip.projector_type")?.unwrap_or("mlp") {
            "mlp" => {}
            other => return Err(ModelError::Unsupported(format!("{}: projector type `{other}` (LLaVA's `mlp` is)", mmproj.display()))),
        }
        let (vision, feature_layer) = vision_config(&meta, mmproj)?;
        let grid_pinpoints = pinpoints(&meta, mmproj)?;
        let kind = if grid_pinpoints.is_empty() { LlavaKind::V15 } else { LlavaKind::Next };
        let mut preprocess = default_config(vision.image_size);
        preprocess.mean = triple(&meta, "clip.vision.image_mean", mmproj)?.unwrap_or(preprocess.mean);
        preprocess.std = triple(&meta, "clip.vision.image_std", mmproj)?.unwrap_or(preprocess.std);

        // fc1 maps the tower's width to the MLP's: whichever name holds a weight that reads
        // the width is fc1.
        let width = vision.encoder.hidden;
        let legacy =
            src.info("v.blk.0.ffn_down.weight").is_some_and(|t| t.shape.last() == Some(&width) && vision.encoder.intermediate != width);
        let (fc1, fc2) = if legacy { ("ffn_down", "ffn_up") } else { ("ffn_up", "ffn_down") };
        let params = Renamed::map(src, |stored| hf_name(stored, fc1, fc2));
        let projector_bias = params.info("multi_modal_projector.linear_1.bias").is_some();

        let llm = load(ctx, model, opts, progress)?;
        let tokenizer = llm.tokenizer;
        let image_token = tokenizer.as_ref().and_then(|t| t.token_id("<image>")).unwrap_or(NO_IMAGE_TOKEN);
        let config = LlavaConfig {
            kind,
            vision,
            text: llm.config,
            image_token,
            feature_layer,
            select: FeatureSelect::Patches,
            projector_bias,
            grid_pinpoints,
        };
        let vq = vision_quant(opts.quant, stored_half(&params, "encoder.layers.0.self_attn.q_proj.weight"));
        let all = Checkpoint::new(&params, "");
        let (vision, projector, newline) = vision_parts(ctx, &config, &all, &all, vq)?;
        let decoder = Decoder::new(ctx, config.text.clone(), llm.weights, decoder)?;
        Ok(LlavaModel { ctx: ctx.clone(), config, vision, projector, newline, decoder, tokenizer, preprocess })
    }
}
