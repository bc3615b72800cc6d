//! The configuration of a LLaMA-family decoder, read from GGUF metadata or a Hugging Face
//! `config.json`.
//!
//! One [`LlmConfig`] describes every variant the decoder runs: LLaMA (MHA or GQA, tied or
//! separate embeddings, optional attention/MLP biases, RoPE with linear or dynamic-NTK scaling),
//! Mistral and Qwen2 (the same graph), SLAB-LLaMA (PRepBN norms: [`NormKind::RepBn`]) and
//! PanGu-π style layers ([`MlpKind::PanguVanilla`], [`LlmConfig::aug_shortcut`]). What the
//! config file cannot say (biases, norm and MLP kind) is refined from the checkpoint's tensor
//! names by the weight loader.

use kestrel::ops::attention::{MAX_HEAD_DIM, MAX_ROTARY_DIM, RopeLayout, RopeScaling};
use serde_json::Value;

use crate::error::{ModelError, Result};

/// Architectures (GGUF `general.architecture`, HF `model_type`) that are this decoder.
pub const ARCHITECTURES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// The normalisation before attention, before the MLP and before the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm with a weight (`x / √(mean(x²) + eps) · γ`).
    RmsNorm,
    /// SLAB's PRepBN `LinearNorm` at inference: only its RepBN runs, `BN(x) + α·x` with the BN's
    /// running statistics and eps = `rms_norm_eps` — a per-channel affine, no normalisation.
    /// The loader folds it into the following q/k/v, gate/up and head linears (which then carry
    /// biases) or keeps it as a separate affine op.
    RepBn,
}

/// The feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// LLaMA: `down(SiLU(gate·x) ⊙ up·x)`.
    SwiGlu,
    /// PanGu-π's "vanilla" MLP: `down((SiLU(gate·x) + QuickGELU(gate2·x)) ⊙ up·x)`.
    PanguVanilla,
}

/// Rotary position embedding parameters (the pair layout depends on the weight file, see
/// [`LlmConfig::gguf_rope_layout`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    /// Base of the frequencies.
    pub theta: f32,
    /// Dims rotated at the start of each head (even, ≤ head_dim).
    pub rotary_dim: usize,
    /// Position scaling.
    pub scaling: RopeScaling,
}

/// A LLaMA-family decoder's hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub architecture: String,
    /// Model width d.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (a divisor of `heads`; fewer than `heads` is GQA).
    pub kv_heads: usize,
    /// Dims per head.
    pub head_dim: usize,
    /// MLP inner width.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// RMSNorm eps (and the BN eps of [`NormKind::RepBn`]).
    pub norm_eps: f32,
    /// RoPE parameters.
    pub rope: RopeConfig,
    /// Positions the model was trained for.
    pub context_length: usize,
    /// The head reuses the embedding table.
    pub tie_embeddings: bool,
    /// q/k/v projections have biases.
    pub qkv_bias: bool,
    /// The output projection has a bias.
    pub o_bias: bool,
    /// gate/up/down projections have biases.
    pub mlp_bias: bool,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Feed-forward kind.
    pub mlp: MlpKind,
    /// PanGu-π's augmented shortcut `h = x + attn + W2·QuickGELU(W1·attn)`: the width of W1's
    /// output (128 in Eve); `None` without it.
    pub aug_shortcut: Option<usize>,
    /// PanGu-π's layer split (Eve's LLM): layers before it are vanilla
    /// ([`MlpKind::PanguVanilla`], no augmented shortcut), the others SwiGLU with the augmented
    /// shortcut of width [`aug_shortcut`](Self::aug_shortcut). `None`: every layer has
    /// [`mlp`](Self::mlp) and [`aug_shortcut`](Self::aug_shortcut).
    pub pangu_split: Option<usize>,
    /// Mixture-of-experts FFN layers (Eve's elastic vision experts); `None` without any.
    pub moe: Option<MoeConfig>,
}

/// Layers whose FFN is a residual mixture of experts (DeepSpeed's MoE with `use_residual`, top-1
/// routing): `c0 · p_e · FFN_e(x) + c1 · FFN_res(x)`, `p = softmax(router(x))`, `e = argmax p`,
/// `c = softmax(coefficient(x))`; every FFN of the layer's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoeConfig {
    /// The layers (ascending, each < the layer count).
    pub layers: Vec<usize>,
    /// Experts per layer (≥ 2).
    pub experts: usize,
}

/// A `Config` error.
fn config_err(detail: impl Into<String>) -> ModelError {
    ModelError::Config(detail.into())
}

/// An unsigned integer at `key`, if present.
pub(crate) fn opt_usize(obj: &Value, key: &str) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_u64().and_then(|n| usize::try_from(n).ok()).map(Some).ok_or_else(|| config_err(format!("`{key}` is {v}, not a count")))
        }
    }
}

/// A required unsigned integer at `key`.
fn req_usize(obj: &Value, key: &str) -> Result<usize> {
    opt_usize(obj, key)?.ok_or_else(|| config_err(format!("`{key}` is missing")))
}

/// A number at `key`, if present.
pub(crate) fn opt_f32(obj: &Value, key: &str) -> Result<Option<f32>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        // GGUF metadata spells non-finite floats as these strings (see `gguf::float_json`).
        Some(Value::String(s)) if matches!(s.as_str(), "NaN" | "inf" | "-inf") => {
            Err(config_err(format!("`{key}` is {s}: it must be a finite number")))
        }
        Some(v) => match v.as_f64() {
            Some(x) if (x as f32).is_finite() => Ok(Some(x as f32)),
            Some(x) => Err(config_err(format!("`{key}` is {x}: it does not fit a finite f32"))),
            None => Err(config_err(format!("`{key}` is {v}, not a number"))),
        },
    }
}

/// A boolean at `key`, if present.
fn opt_bool(obj: &Value, key: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| config_err(format!("`{key}` is {v}, not a boolean"))),
    }
}

/// A string at `key`, if present.
pub(crate) fn opt_str<'a>(obj: &'a Value, key: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| config_err(format!("`{key}` is {v}, not a string"))),
    }
}

/// The architecture name, or an error naming an unsupported one.
fn check_architecture(arch: &str) -> Result<String> {
    if ARCHITECTURES.contains(&arch) {
        Ok(arch.to_string())
    } else {
        Err(config_err(format!("unsupported architecture `{arch}` (Kestrel's decoder runs {})", ARCHITECTURES.join(", "))))
    }
}

/// The RoPE scaling from a type name, a factor and the original context length.
fn scaling(kind: Option<&str>, factor: Option<f32>, original: usize) -> Result<RopeScaling> {
    let factor_of = |k: &str| factor.ok_or_else(|| config_err(format!("RoPE scaling `{k}` without a factor")));
    match kind {
        None | Some("none" | "default") => Ok(RopeScaling::None),
        Some("linear") => Ok(RopeScaling::Linear { factor: factor_of("linear")? }),
        Some("dynamic") => Ok(RopeScaling::DynamicNtk { factor: factor_of("dynamic")?, original_max_positions: original }),
        Some(other) => Err(config_err(format!("unsupported RoPE scaling `{other}` (linear and dynamic are supported)"))),
    }
}

impl LlmConfig {
    /// The config a GGUF file's metadata describes (`general.architecture` and the
    /// `{arch}.*` keys). The vocabulary comes from `{arch}.vocab_size` or, failing that, the
    /// length of `tokenizer.ggml.tokens`; the loader checks it against the embedding table.
    /// Biases and tied embeddings are refined from the tensors by the loader.
    pub fn from_gguf_metadata(meta: &Value) -> Result<LlmConfig> {
        let arch = opt_str(meta, "general.architecture")?.ok_or_else(|| config_err("`general.architecture` is missing"))?;
        let architecture = check_architecture(arch)?;
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = req_usize(meta, &key("embedding_length"))?;
        let heads = req_usize(meta, &key("attention.head_count"))?;
        let head_dim = match opt_usize(meta, &key("attention.key_length"))? {
            Some(d) => d,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let context_length = req_usize(meta, &key("context_length"))?;
        let vocab = match opt_usize(meta, &key("vocab_size"))? {
            Some(v) => v,
            None => meta.get("tokenizer.ggml.tokens").and_then(Value::as_array).map_or(0, Vec::len),
        };
        let factor = opt_f32(meta, &key("rope.scaling.factor"))?;
        let original = opt_usize(meta, &key("rope.scaling.original_context_length"))?.unwrap_or(context_length);
        let rope_scaling = match (opt_str(meta, &key("rope.scaling.type"))?, opt_f32(meta, &key("rope.scale_linear"))?) {
            (None, Some(f)) => RopeScaling::Linear { factor: f },
            (kind, _) => scaling(kind, factor, original)?,
        };
        let config = LlmConfig {
            architecture,
            hidden,
            layers: req_usize(meta, &key("block_count"))?,
            heads,
            kv_heads: opt_usize(meta, &key("attention.head_count_kv"))?.unwrap_or(heads),
            head_dim,
            ffn: req_usize(meta, &key("feed_forward_length"))?,
            vocab,
            norm_eps: opt_f32(meta, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            rope: RopeConfig {
                theta: opt_f32(meta, &key("rope.freq_base"))?.unwrap_or(10000.0),
                rotary_dim: opt_usize(meta, &key("rope.dimension_count"))?.unwrap_or(head_dim),
                scaling: rope_scaling,
            },
            context_length,
            tie_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            norm: NormKind::RmsNorm,
            mlp: MlpKind::SwiGlu,
            aug_shortcut: None,
            pangu_split: None,
            moe: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// The config of a Hugging Face `config.json` (`LlamaForCausalLM`, `MistralForCausalLM`,
    /// `Qwen2ForCausalLM`): `hidden_size`, `num_hidden_layers`, `num_attention_heads`,
    /// `num_key_value_heads`, `head_dim`, `intermediate_size`, `rms_norm_eps`, `rope_theta` and
    /// `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5),
    /// `max_position_embeddings`, `tie_word_embeddings`, `attention_bias`, `mlp_bias`,
    /// `vocab_size`. A Mistral `sliding_window` shorter than the context caps the context (the
    /// decoder attends to every cached position).
    pub fn from_hf_config(cfg: &Value) -> Result<LlmConfig> {
        let arch = match opt_str(cfg, "model_type")? {
            Some(t) => t,
            None => return Err(config_err("`model_type` is missing")),
        };
        let architecture = check_architecture(arch)?;
        let hidden = req_usize(cfg, "hidden_size")?;
        let heads = req_usize(cfg, "num_attention_heads")?;
        let head_dim = match opt_usize(cfg, "head_dim")? {
            Some(d) => d,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let mut context_length = opt_usize(cfg, "max_position_embeddings")?.unwrap_or(2048);
        let rope_params =
            cfg.get("rope_parameters").filter(|v| v.is_object()).or_else(|| cfg.get("rope_scaling").filter(|v| v.is_object()));
        let theta = match rope_params {
            Some(p) => opt_f32(p, "rope_theta")?,
            None => None,
        };
        let theta = theta.or(opt_f32(cfg, "rope_theta")?).unwrap_or(10000.0);
        let rope_scaling = match rope_params {
            Some(p) => {
                let kind = opt_str(p, "rope_type")?.or(opt_str(p, "type")?);
                let original = opt_usize(p, "original_max_position_embeddings")?.unwrap_or(context_length);
                scaling(kind, opt_f32(p, "factor")?, original)?
            }
            None => RopeScaling::None,
        };
        let partial = opt_f32(cfg, "partial_rotary_factor")?.unwrap_or(1.0);
        let rotary_dim = (head_dim as f32 * partial) as usize;
        if let Some(w) = opt_usize(cfg, "sliding_window")?
            && w > 0
            && w < context_length
            && opt_bool(cfg, "use_sliding_window")? != Some(false)
        {
            context_length = w;
        }
        let attention_bias = opt_bool(cfg, "attention_bias")?;
        let qwen = arch == "qwen2";
        let config = LlmConfig {
            architecture,
            hidden,
            layers: req_usize(cfg, "num_hidden_layers")?,
            heads,
            kv_heads: opt_usize(cfg, "num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            ffn: req_usize(cfg, "intermediate_size")?,
            vocab: req_usize(cfg, "vocab_size")?,
            norm_eps: opt_f32(cfg, "rms_norm_eps")?.unwrap_or(1e-6),
            rope: RopeConfig { theta, rotary_dim, scaling: rope_scaling },
            context_length,
            tie_embeddings: opt_bool(cfg, "tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: attention_bias.unwrap_or(qwen),
            o_bias: attention_bias.unwrap_or(false),
            mlp_bias: opt_bool(cfg, "mlp_bias")?.unwrap_or(false),
            norm: NormKind::RmsNorm,
            mlp: MlpKind::SwiGlu,
            aug_shortcut: None,
            pangu_split: None,
            moe: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// The config stored in a Kestrel model file: an HF `config.json` object (with
    /// `model_type`) or GGUF-style metadata (with `general.architecture`).
    pub fn from_json(value: &Value) -> Result<LlmConfig> {
        if value.get("general.architecture").is_some() {
            LlmConfig::from_gguf_metadata(value)
        } else if value.get("model_type").is_some() {
            LlmConfig::from_hf_config(value)
        } else {
            Err(config_err("neither `model_type` (HF config.json) nor `general.architecture` (GGUF metadata) is present"))
        }
    }

    /// The RoPE pair layout of this architecture's GGUF files: llama.cpp permutes the Q/K rows
    /// of LLaMA/Mistral for adjacent-pair rotation; Qwen2 keeps the Hugging Face (rotate-half)
    /// order. Hugging Face checkpoints are always [`RopeLayout::RotateHalf`].
    pub fn gguf_rope_layout(&self) -> RopeLayout {
        if self.architecture == "qwen2" { RopeLayout::RotateHalf } else { RopeLayout::Interleaved }
    }

    /// The feed-forward kind of layer `i`.
    pub fn layer_mlp(&self, i: usize) -> MlpKind {
        match self.pangu_split {
            Some(split) if i < split => MlpKind::PanguVanilla,
            Some(_) => MlpKind::SwiGlu,
            None => self.mlp,
        }
    }

    /// The augmented-shortcut width of layer `i` (`None`: a plain residual).
    pub fn layer_aug(&self, i: usize) -> Option<usize> {
        match self.pangu_split {
            Some(split) if i < split => None,
            _ => self.aug_shortcut,
        }
    }

    /// Whether layer `i`'s FFN is a mixture of experts.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.layers.contains(&i))
    }

    /// Width of the query projection output (`heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of each of the key and value projection outputs (`kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Checks that the sizes are consistent and within the kernels' limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |d: String| Err(config_err(d));
        for (name, v) in [
            ("hidden size", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv heads", self.kv_heads),
            ("MLP width", self.ffn),
            ("vocabulary", self.vocab),
            ("context length", self.context_length),
        ] {
            if v == 0 {
                return bad(format!("{name} is 0"));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!("{} heads are not a multiple of {} KV heads", self.heads, self.kv_heads));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > MAX_HEAD_DIM {
            return bad(format!("head dim {} must be even and in 2..={MAX_HEAD_DIM}", self.head_dim));
        }
        let rot = self.rope.rotary_dim;
        if rot < 2 || !rot.is_multiple_of(2) || rot > self.head_dim || rot > MAX_ROTARY_DIM {
            return bad(format!("rotary dim {rot} must be even, ≥ 2 and ≤ head dim {}", self.head_dim));
        }
        if !(self.rope.theta.is_finite() && self.rope.theta > 0.0) {
            return bad(format!("rope theta {} must be finite and > 0", self.rope.theta));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad(format!("norm eps {} must be finite and ≥ 0", self.norm_eps));
        }
        if let Some(split) = self.pangu_split
            && split > self.layers
        {
            return bad(format!("PanGu-π split {split} is past the {} layers", self.layers));
        }
        if let Some(moe) = &self.moe {
            if moe.experts < 2 {
                return bad(format!("{} experts per MoE layer (at least 2)", moe.experts));
            }
            if let Some(bad_layer) = moe.layers.iter().find(|&&l| l >= self.layers) {
                return bad(format!("MoE layer {bad_layer} is past the {} layers", self.layers));
            }
        }
        match self.rope.scaling {
            RopeScaling::Linear { factor } | RopeScaling::DynamicNtk { factor, .. } if !(factor.is_finite() && factor > 0.0) => {
                bad(format!("RoPE scaling factor {factor} must be finite and > 0"))
            }
            _ => Ok(()),
        }
    }
}
