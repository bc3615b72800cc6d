//! Eve's `config.json` as the official `EveLlavaZhiziConfig` and LLaVA-style training write it:
//! the InternLM keys (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
//! `intermediate_size`, `vocab_size`, `rms_norm_eps`, `max_position_embeddings`, `bias`), the
//! `moe` object (`moe_layers_idx`, `num_experts`, `top_k_experts`, `use_residual`) and the
//! multimodal keys (`mm_image_tower`, `mm_hidden_size`, `mm_vision_select_layer`,
//! `mm_vision_select_feature`, `image_projector_type`, `image_aspect_ratio`).
//!
//! The released config names its CLIP tower instead of holding its config: a name ending in
//! `clip-vit-large-patch14-336` is OpenAI's ViT-L/14-336; any other tower needs a
//! `vision_config` object (a `CLIPVisionConfig`) in config.json.

use kestrel::ops::attention::RopeScaling;
use serde_json::Value;

use crate::clip::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::llm::config::{LlmConfig, MlpKind, MoeConfig, NormKind, RopeConfig, opt_f32, opt_str, opt_usize};

/// `model_type`s of Eve checkpoints (with and without the elastic vision experts).
pub const MODEL_TYPES: [&str; 2] = ["moe_llava_zhizi", "llava_zhizi"];

/// The image token id of the official `tokenizer_image_token` (`IMAGE_TOKEN_INDEX`).
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// The tower name the released Eve config gives (a suffix of `mm_image_tower`).
pub const CLIP_L_336: &str = "clip-vit-large-patch14-336";

/// The official PanGu-π split `{layers: first augmented layer}` of the zhizi LLM.
const SPLITS: [(usize, usize); 3] = [(29, 19), (12, 8), (22, 15)];

/// An Eve model's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct EveConfig {
    /// The LLM (PanGu-π split and EVF layers included).
    pub llm: LlmConfig,
    /// The CLIP vision tower.
    pub vision: VisionConfig,
    /// The tower's hidden state the projector reads (transformers' indexing, −2).
    pub select_layer: isize,
    /// `image_aspect_ratio: pad`: images are padded to a square with the CLIP mean colour.
    pub pad_to_square: bool,
}

/// A `Config` error.
fn err(detail: impl Into<String>) -> ModelError {
    ModelError::Config(detail.into())
}

/// A required count at `key`.
fn req(v: &Value, key: &str) -> Result<usize> {
    opt_usize(v, key)?.ok_or_else(|| err(format!("`{key}` is missing")))
}

/// A list of counts at `key` of `v`.
fn counts(v: &Value, key: &str) -> Result<Vec<usize>> {
    let bad = || err(format!("`moe.{key}` must be a list of counts"));
    let arr = v.get(key).and_then(Value::as_array).ok_or_else(bad)?;
    arr.iter().map(|x| x.as_u64().map(|n| n as usize).ok_or_else(bad)).collect()
}

/// The mixture-of-experts layers of the `moe` object, or `None` when it is absent or disabled.
fn moe_config(cfg: &Value, layers: usize) -> Result<Option<MoeConfig>> {
    let Some(moe) = cfg.get("moe").filter(|m| !m.is_null()) else { return Ok(None) };
    if moe.get("moe_enable").and_then(Value::as_bool) == Some(false) {
        return Ok(None);
    }
    let idx = counts(moe, "moe_layers_idx")?;
    let experts = counts(moe, "num_experts")?;
    let n = match experts.as_slice() {
        [first, rest @ ..] if rest.iter().all(|e| e == first) && (experts.len() == idx.len() || experts.len() == 1) => *first,
        _ => return Err(err(format!("`moe.num_experts` {experts:?}: one equal count per MoE layer ({} layers)", idx.len()))),
    };
    if opt_usize(moe, "top_k_experts")?.unwrap_or(1) != 1 {
        return Err(err("`moe.top_k_experts` other than 1 is not supported (Eve routes each token to one expert)"));
    }
    if moe.get("use_residual").and_then(Value::as_bool) != Some(true) {
        return Err(err("`moe.use_residual` must be true (Eve's EVF mixes the experts with a residual FFN)"));
    }
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != idx.len() || sorted.last().is_some_and(|&l| l >= layers) {
        return Err(err(format!("`moe.moe_layers_idx` {idx:?} must name distinct layers below {layers}")));
    }
    Ok(Some(MoeConfig { layers: sorted, experts: n }))
}

/// The vision tower: `vision_config` when present, else the known tower `mm_image_tower` names.
fn vision_config(cfg: &Value) -> Result<VisionConfig> {
    if let Some(v) = cfg.get("vision_config").filter(|v| v.is_object()) {
        return VisionConfig::from_json(v);
    }
    match opt_str(cfg, "mm_image_tower")? {
        Some(name) if name.trim_end_matches('/').ends_with(CLIP_L_336) => Ok(VisionConfig::clip_vit_l_14_336()),
        Some(name) => {
            Err(err(format!("unknown image tower `{name}` and no `vision_config` in config.json (only {CLIP_L_336} is known by name)")))
        }
        None => Err(err("config.json names no image tower (`mm_image_tower`) and has no `vision_config`")),
    }
}

impl EveConfig {
    /// The config of an Eve `config.json` (see the [module docs](self)). The augmented
    /// shortcut's width and the vocabulary are refined from the checkpoint at load.
    pub fn from_json(cfg: &Value) -> Result<EveConfig> {
        match opt_str(cfg, "model_type")? {
            Some(t) if MODEL_TYPES.contains(&t) => {}
            Some(t) => return Err(err(format!("`model_type` {t} is not Eve ({})", MODEL_TYPES.join(", ")))),
            None => return Err(err("`model_type` is missing")),
        }
        match opt_str(cfg, "image_projector_type")? {
            Some("ldpnet") => {}
            other => return Err(err(format!("image projector {other:?}: only `ldpnet` is supported"))),
        }
        if let Some(f) = opt_str(cfg, "mm_vision_select_feature")?
            && f != "patch"
        {
            return Err(err(format!("`mm_vision_select_feature` {f}: only `patch` is supported")));
        }
        let layers = req(cfg, "num_hidden_layers")?;
        let split = SPLITS
            .iter()
            .find(|(n, _)| *n == layers)
            .map(|&(_, s)| s)
            .ok_or_else(|| err(format!("{layers} layers: the official PanGu-π split table knows {:?}", SPLITS.map(|(n, _)| n))))?;
        let hidden = req(cfg, "hidden_size")?;
        let heads = req(cfg, "num_attention_heads")?;
        let context_length = opt_usize(cfg, "max_position_embeddings")?.unwrap_or(2048);
        let head_dim = hidden.checked_div(heads).unwrap_or(0);
        let llm = LlmConfig {
            architecture: "zhizi".into(),
            hidden,
            layers,
            heads,
            kv_heads: heads,
            head_dim,
            ffn: req(cfg, "intermediate_size")?,
            vocab: req(cfg, "vocab_size")?,
            norm_eps: opt_f32(cfg, "rms_norm_eps")?.unwrap_or(1e-6),
            rope: RopeConfig { theta: 10000.0, rotary_dim: head_dim, scaling: RopeScaling::None },
            context_length,
            tie_embeddings: false,
            qkv_bias: cfg.get("bias").and_then(Value::as_bool).unwrap_or(true),
            o_bias: false,
            mlp_bias: false,
            norm: NormKind::RmsNorm,
            mlp: MlpKind::PanguVanilla,
            aug_shortcut: Some(128),
            pangu_split: Some(split),
            moe: moe_config(cfg, layers)?,
        };
        llm.validate()?;
        let vision = vision_config(cfg)?;
        let mm_hidden = opt_usize(cfg, "mm_hidden_size")?.unwrap_or(vision.encoder.hidden);
        if mm_hidden != vision.encoder.hidden {
            return Err(err(format!("`mm_hidden_size` {mm_hidden} is not the tower's width {}", vision.encoder.hidden)));
        }
        let select_layer = match cfg.get("mm_vision_select_layer") {
            None | Some(Value::Null) => -2,
            Some(v) => v.as_i64().map(|i| i as isize).ok_or_else(|| err(format!("`mm_vision_select_layer` is {v}, not an integer")))?,
        };
        let pad_to_square = match opt_str(cfg, "image_aspect_ratio")? {
            Some("pad") => true,
            None | Some("square" | "resize") => false,
            Some(other) => return Err(err(format!("`image_aspect_ratio` {other}: `pad` or none are supported"))),
        };
        Ok(EveConfig { llm, vision, select_layer, pad_to_square })
    }

    /// Eve-1.8B as the paper describes it (hidden 2048, 22 layers, 16 heads, MLP 5632, vocabulary
    /// 48000, EVF on the even layers, CLIP ViT-L/14-336, LDP), for profiling with seeded weights.
    pub fn eve_1_8b() -> Result<EveConfig> {
        EveConfig::from_json(&serde_json::json!({
            "model_type": "moe_llava_zhizi", "image_projector_type": "ldpnet", "bias": true,
            "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 16, "intermediate_size": 5632,
            "vocab_size": 48000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "image_aspect_ratio": "pad",
            "mm_hidden_size": 1024, "mm_image_tower": "openai/clip-vit-large-patch14-336", "mm_vision_select_layer": -2,
            "moe": {"moe_enable": true, "moe_layers_idx": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20], "num_experts": [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
                    "top_k_experts": 1, "use_residual": true}
        }))
    }

    /// The projector's output width (the LLM's).
    pub fn hidden(&self) -> usize {
        self.llm.hidden
    }

    /// Image tokens per image: the projector halves each side of the patch grid (⌈g/2⌉²).
    pub fn image_tokens(&self) -> usize {
        self.vision.grid().div_ceil(2).pow(2)
    }
}
