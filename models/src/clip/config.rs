//! CLIP configurations as transformers writes them: a `CLIPConfig` (`model_type` `clip`, with
//! `vision_config` and `text_config`), a bare `CLIPVisionConfig` (`clip_vision_model`, also
//! the `vision_config` of a LLaVA) or `CLIPTextConfig` (`clip_text_model`). Keys a saved config
//! leaves out take transformers' defaults.

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::llm::config::{opt_f32, opt_str, opt_usize};

/// The MLP activation of the encoder layers (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (`quick_gelu`, OpenAI CLIP).
    QuickGelu,
    /// Erf GELU (`gelu`).
    Gelu,
}

impl Activation {
    /// Parses transformers' `hidden_act` name.
    pub fn from_name(name: &str) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(ModelError::Config(format!("hidden_act {other:?} is not supported (quick_gelu, gelu)"))),
        }
    }
}

/// The transformer encoder both towers share: pre-norm layers
/// `x += out_proj(attn(LN1(x))); x += fc2(act(fc1(LN2(x))))`.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    /// Channels (`hidden_size`).
    pub hidden: usize,
    /// MLP width (`intermediate_size`).
    pub intermediate: usize,
    /// Encoder layers (`num_hidden_layers`).
    pub layers: usize,
    /// Attention heads (`num_attention_heads`).
    pub heads: usize,
    /// LayerNorm epsilon (`layer_norm_eps`).
    pub layer_norm_eps: f32,
    /// MLP activation (`hidden_act`).
    pub activation: Activation,
}

impl EncoderConfig {
    /// Reads the encoder keys of a tower config, `defaults` for the missing ones.
    fn from_json(v: &Value, defaults: EncoderConfig) -> Result<EncoderConfig> {
        let cfg = EncoderConfig {
            hidden: opt_usize(v, "hidden_size")?.unwrap_or(defaults.hidden),
            intermediate: opt_usize(v, "intermediate_size")?.unwrap_or(defaults.intermediate),
            layers: opt_usize(v, "num_hidden_layers")?.unwrap_or(defaults.layers),
            heads: opt_usize(v, "num_attention_heads")?.unwrap_or(defaults.heads),
            layer_norm_eps: opt_f32(v, "layer_norm_eps")?.unwrap_or(defaults.layer_norm_eps),
            activation: opt_str(v, "hidden_act")?.map(Activation::from_name).transpose()?.unwrap_or(defaults.activation),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that every size is positive, the heads divide the channels and eps is positive.
    pub fn validate(&self) -> Result<()> {
        let err = |d: String| Err(ModelError::Config(d));
        if self.hidden == 0 || self.intermediate == 0 || self.layers == 0 || self.heads == 0 {
            return err(format!(
                "sizes must be positive: hidden {}, intermediate {}, layers {}, heads {}",
                self.hidden, self.intermediate, self.layers, self.heads
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return err(format!("{} heads do not divide hidden_size {}", self.heads, self.hidden));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return err(format!("layer_norm_eps {} is not a positive number", self.layer_norm_eps));
        }
        Ok(())
    }
}

/// The vision tower: a `patch_size` convolution (no bias) of an `image_size` square image,
/// a class token, learned positions, `pre_layrnorm`, the encoder and `post_layernorm`.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    /// The encoder.
    pub encoder: EncoderConfig,
    /// Side of the square input (`image_size`).
    pub image_size: usize,
    /// Side of a patch (`patch_size`).
    pub patch_size: usize,
    /// Input channels (`num_channels`).
    pub channels: usize,
}

impl VisionConfig {
    /// A `CLIPVisionConfig` object (transformers' defaults: ViT-B/32).
    pub fn from_json(v: &Value) -> Result<VisionConfig> {
        let defaults = EncoderConfig {
            hidden: 768,
            intermediate: 3072,
            layers: 12,
            heads: 12,
            layer_norm_eps: 1e-5,
            activation: Activation::QuickGelu,
        };
        let cfg = VisionConfig {
            encoder: EncoderConfig::from_json(v, defaults)?,
            image_size: opt_usize(v, "image_size")?.unwrap_or(224),
            patch_size: opt_usize(v, "patch_size")?.unwrap_or(32),
            channels: opt_usize(v, "num_channels")?.unwrap_or(3),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// OpenAI's ViT-L/14 at 336 pixels (the vision tower of LLaVA-1.5): 24 layers of 1024
    /// channels, 16 heads, MLP 4096, 577 tokens.
    pub fn clip_vit_l_14_336() -> VisionConfig {
        VisionConfig {
            encoder: EncoderConfig {
                hidden: 1024,
                intermediate: 4096,
                layers: 24,
                heads: 16,
                layer_norm_eps: 1e-5,
                activation: Activation::QuickGelu,
            },
            image_size: 336,
            patch_size: 14,
            channels: 3,
        }
    }

    /// Checks the encoder and that at least one patch fits the image.
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        if self.patch_size == 0 || self.channels == 0 || self.image_size < self.patch_size {
            return Err(ModelError::Config(format!(
                "image_size {} / patch_size {} / num_channels {} give no patch",
                self.image_size, self.patch_size, self.channels
            )));
        }
        Ok(())
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: the class token and `grid²` patches.
    pub fn tokens(&self) -> usize {
        1 + self.grid() * self.grid()
    }
}

/// How the text tower picks the token it pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The position of the largest id (`eos_token_id` 2 in the config: transformers' legacy
    /// rule, right for the original vocabulary where `<|endoftext|>` has the largest id).
    ArgmaxId,
    /// The first position holding this id (0 when none does, as transformers' argmax gives).
    FirstEos(u32),
}

/// The text tower: token and position embeddings, the encoder (causal), `final_layer_norm`,
/// pooled at the end-of-text token.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// The encoder.
    pub encoder: EncoderConfig,
    /// Token ids (`vocab_size`).
    pub vocab_size: usize,
    /// Positions (`max_position_embeddings`, 77).
    pub max_positions: usize,
    /// The pooled token.
    pub pooling: Pooling,
}

impl TextConfig {
    /// A `CLIPTextConfig` object (transformers' defaults: the ViT-B/32 text tower).
    pub fn from_json(v: &Value) -> Result<TextConfig> {
        let defaults = EncoderConfig {
            hidden: 512,
            intermediate: 2048,
            layers: 12,
            heads: 8,
            layer_norm_eps: 1e-5,
            activation: Activation::QuickGelu,
        };
        let eos = match opt_usize(v, "eos_token_id")?.unwrap_or(49407) {
            2 => Pooling::ArgmaxId,
            id => Pooling::FirstEos(u32::try_from(id).map_err(|_| ModelError::Config(format!("eos_token_id {id} is out of range")))?),
        };
        let cfg = TextConfig {
            encoder: EncoderConfig::from_json(v, defaults)?,
            vocab_size: opt_usize(v, "vocab_size")?.unwrap_or(49408),
            max_positions: opt_usize(v, "max_position_embeddings")?.unwrap_or(77),
            pooling: eos,
        };
        if cfg.vocab_size == 0 || cfg.max_positions == 0 {
            return Err(ModelError::Config(format!(
                "vocab_size {} / max_position_embeddings {} must be positive",
                cfg.vocab_size, cfg.max_positions
            )));
        }
        Ok(cfg)
    }
}

/// A CLIP model's configuration: either tower may be absent (a bare vision or text model).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    /// The vision tower, if the model has one.
    pub vision: Option<VisionConfig>,
    /// The text tower, if the model has one.
    pub text: Option<TextConfig>,
    /// Width of the joint embedding space (`projection_dim`).
    pub projection_dim: usize,
}

impl ClipConfig {
    /// Reads a `config.json` object by its `model_type`: `clip` (both towers; a missing
    /// sub-config takes the defaults, as transformers does), `clip_vision_model` or
    /// `clip_text_model`.
    pub fn from_json(v: &Value) -> Result<ClipConfig> {
        let projection = |obj: &Value| -> Result<usize> {
            match opt_usize(obj, "projection_dim")?.unwrap_or(512) {
                0 => Err(ModelError::Config("projection_dim must be positive".into())),
                p => Ok(p),
            }
        };
        let empty = Value::Object(Default::default());
        let sub = |key: &str| v.get(key).filter(|s| !s.is_null()).unwrap_or(&empty);
        match opt_str(v, "model_type")? {
            Some("clip") => Ok(ClipConfig {
                vision: Some(VisionConfig::from_json(sub("vision_config"))?),
                text: Some(TextConfig::from_json(sub("text_config"))?),
                projection_dim: projection(v)?,
            }),
            Some("clip_vision_model") => {
                Ok(ClipConfig { vision: Some(VisionConfig::from_json(v)?), text: None, projection_dim: projection(v)? })
            }
            Some("clip_text_model") => {
                Ok(ClipConfig { vision: None, text: Some(TextConfig::from_json(v)?), projection_dim: projection(v)? })
            }
            Some(other) => {
                Err(ModelError::Config(format!("model_type {other:?} is not a CLIP model (clip, clip_vision_model, clip_text_model)")))
            }
            None => Err(ModelError::Config("config.json has no model_type".into())),
        }
    }
}
