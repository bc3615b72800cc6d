//! A LLaVA `config.json` (`model_type` `llava`: LLaVA-1.5, `llava_next`: LLaVA-1.6): the CLIP
//! vision tower's config, the language model's, and how image features reach it.

use serde_json::{Map, Value};

use crate::clip::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::llm::config::{LlmConfig, opt_str, opt_usize};

/// transformers' `LlamaConfig` / `MistralConfig` defaults for keys a LLaVA `text_config` may
/// leave out (llava-hf's LLaVA-1.5 configs give only a few).
fn text_defaults(model_type: &str) -> Value {
    match model_type {
        "mistral" => serde_json::json!({
            "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "sliding_window": 4096
        }),
        _ => serde_json::json!({
            "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6
        }),
    }
}

/// Which LLaVA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlavaKind {
    /// LLaVA-1.5 (`LlavaForConditionalGeneration`): one square image, `grid²` features.
    V15,
    /// LLaVA-1.6 / NeXT (`LlavaNextForConditionalGeneration`): "anyres" tiles plus the whole
    /// image, grid rows ended by `image_newline`.
    Next,
}

/// Which vision tokens are projected (`vision_feature_select_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureSelect {
    /// The patch tokens (`default`: the class token dropped).
    Patches,
    /// Every token, the class token first (`full`).
    Full,
}

/// A LLaVA configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LlavaConfig {
    /// LLaVA-1.5 or NeXT.
    pub kind: LlavaKind,
    /// The CLIP vision tower.
    pub vision: VisionConfig,
    /// The language model.
    pub text: LlmConfig,
    /// The placeholder id repeated once per image feature in `input_ids`.
    pub image_token: u32,
    /// `vision_feature_layer` in transformers' `hidden_states` indexing (−2).
    pub feature_layer: isize,
    /// `vision_feature_select_strategy`.
    pub select: FeatureSelect,
    /// Whether the projector's linears have biases (`multimodal_projector_bias`).
    pub projector_bias: bool,
    /// NeXT's candidate resolutions `(height, width)` (`image_grid_pinpoints`); empty for 1.5.
    pub grid_pinpoints: Vec<(usize, usize)>,
}

/// A [`ModelError::Config`] about a LLaVA config.
fn err(detail: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!("LLaVA config.json: {detail}"))
}

impl LlavaConfig {
    /// Parses a LLaVA `config.json` (transformers' defaults for keys it leaves out).
    pub fn from_json(v: &Value) -> Result<LlavaConfig> {
        let kind = match opt_str(v, "model_type")? {
            Some("llava") => LlavaKind::V15,
            Some("llava_next") => LlavaKind::Next,
            other => return Err(err(format!("model_type {other:?} is not `llava` or `llava_next`"))),
        };
        let vision = VisionConfig::from_json(v.get("vision_config").ok_or_else(|| err("no `vision_config`"))?)?;
        let text = v.get("text_config").and_then(Value::as_object).ok_or_else(|| err("no `text_config` object"))?;
        let text_type = text.get("model_type").and_then(Value::as_str).unwrap_or("llama").to_string();
        let mut merged: Map<String, Value> = text_defaults(&text_type).as_object().cloned().unwrap_or_default();
        merged.extend(text.clone());
        merged.insert("model_type".into(), Value::String(text_type));
        let text = LlmConfig::from_hf_config(&Value::Object(merged))?;
        let image_token = opt_usize(v, "image_token_index")?.or(opt_usize(v, "image_token_id")?).unwrap_or(32000);
        let image_token = u32::try_from(image_token).map_err(|_| err(format!("image token id {image_token} is too large")))?;
        let feature_layer = match v.get("vision_feature_layer") {
            None | Some(Value::Null) => -2,
            Some(x) => x.as_i64().ok_or_else(|| err(format!("vision_feature_layer {x} is not one integer")))? as isize,
        };
        let select = match opt_str(v, "vision_feature_select_strategy")?.unwrap_or("default") {
            "default" => FeatureSelect::Patches,
            "full" => FeatureSelect::Full,
            s => return Err(err(format!("vision_feature_select_strategy `{s}` is not `default` or `full`"))),
        };
        let projector_bias = v.get("multimodal_projector_bias").and_then(Value::as_bool).unwrap_or(true);
        match opt_str(v, "projector_hidden_act")?.unwrap_or("gelu") {
            "gelu" => {}
            a => return Err(err(format!("projector_hidden_act `{a}` is not supported (gelu)"))),
        }
        let grid_pinpoints = match kind {
            LlavaKind::V15 => Vec::new(),
            LlavaKind::Next => pinpoints(v.get("image_grid_pinpoints"))?,
        };
        Ok(LlavaConfig { kind, vision, text, image_token, feature_layer, select, projector_bias, grid_pinpoints })
    }

    /// llava-hf's LLaVA-1.5-7B: CLIP ViT-L/14-336 (layer −2, patches), the GELU projector, the
    /// Vicuna-7B decoder (LLaMA: hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary 32064,
    /// 4096 positions), image token 32000; for profiling with seeded weights.
    pub fn llava_15_7b() -> Result<LlavaConfig> {
        LlavaConfig::from_json(&serde_json::json!({
            "model_type": "llava", "image_token_index": 32000, "projector_hidden_act": "gelu",
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
            "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "num_attention_heads": 16,
                              "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768},
            "text_config": {"model_type": "llama", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "vocab_size": 32064}
        }))
    }

    /// Features per image tile: `grid²` (+ 1 with [`FeatureSelect::Full`]).
    pub fn tile_features(&self) -> usize {
        let g = self.vision.grid();
        g * g + usize::from(self.select == FeatureSelect::Full)
    }
}

/// `image_grid_pinpoints`: a non-empty list of `[height, width]` pairs (transformers' default
/// for LLaVA-NeXT when absent).
fn pinpoints(v: Option<&Value>) -> Result<Vec<(usize, usize)>> {
    let Some(list) = v.filter(|x| !x.is_null()) else {
        return Ok(vec![(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]);
    };
    let pairs = list.as_array().ok_or_else(|| err(format!("image_grid_pinpoints {list} is not a list")))?;
    let parsed: Option<Vec<(usize, usize)>> = pairs
        .iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([h, w]) => Some((h.as_u64()? as usize, w.as_u64()? as usize)).filter(|&(h, w)| h > 0 && w > 0),
            _ => None,
        })
        .collect();
    match parsed {
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(err(format!("image_grid_pinpoints {list} is not a list of positive [height, width] pairs"))),
    }
}
