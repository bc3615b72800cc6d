//! Eve (arXiv 2501.04322, github rangmiao/Eve): a CLIP ViT-L/14-336 tower (layer −2, class token
//! dropped), the LDP projector ([`ldp`]: 576 patches → 144 tokens) and a PanGu-π LLM whose even
//! layers carry elastic vision experts (a residual top-1-of-2 mixture of experts, routed per
//! token on the GPU by the decoder). The image's tokens replace the prompt's −200 at prefill
//! ([`EveModel::segments`]); decoding runs with the decoder's KV cache.
//!
//! The checkpoint is read with the official key names (`model.image_tower.image_tower.*`,
//! `model.mm_projector.image_spatial_proj.model.*`, `model.layers.*`); its PyTorch reference
//! and fixtures are `tools/eve_reference/`.

pub mod config;
pub mod ldp;
pub mod prompt;

use std::path::Path;
use std::sync::Arc;

use kestrel::Quant;
use kestrel::ops::attention::RopeLayout;
use kestrel::{Context, Recorder, Tensor};

use crate::clip::preprocess::{default_config, load_config};
use crate::clip::vision::VisionTower;
use crate::error::{ModelError, Result};
use crate::llm::decoder::{Decoder, DecoderOptions, Segment};
use crate::llm::load::{HfDir, dir_tokenizer, hf_dir, model_dir, read_json};
use crate::llm::random::RandomCheckpoint;
use crate::llm::tokenizer::Tokenizer;
use crate::llm::weights::{DecoderWeights, LoadOptions, Naming, Store, load_weights, refine_config};
use crate::params::{Checkpoint, RandomParams};
use crate::vision::{DecodeLimits, ImageTensor, PreprocessConfig, load_image, preprocess};

use config::EveConfig;
use ldp::Ldp;
use prompt::{Piece, expand2square, pad_colour, split_image_tokens};

/// Where the CLIP tower's names start in an Eve checkpoint.
pub const VISION_PREFIX: &str = "model.image_tower.image_tower.vision_model.";

/// Where the projector's names start in an Eve checkpoint.
pub const PROJECTOR_PREFIX: &str = "model.mm_projector.image_spatial_proj.model.";

/// An Eve model on the GPU.
pub struct EveModel {
    ctx: Arc<Context>,
    config: EveConfig,
    vision: VisionTower,
    projector: Ldp,
    weights: DecoderWeights,
    tokenizer: Option<Tokenizer>,
    preprocess: PreprocessConfig,
}

/// The storage of the vision tower's and projector's linears for a decoder quantisation: w8
/// under w4 (as LLaVA's: a 4-bit vision encoder costs too much accuracy).
fn vision_quant(quant: Quant) -> Quant {
    match quant {
        Quant::Native | Quant::F32 => Quant::F32,
        Quant::F16 => Quant::F16,
        Quant::W8 | Quant::W4 => Quant::W8,
    }
}

impl EveModel {
    /// Loads the Eve model in directory `dir` (`config.json`, `model.safetensors` or shards or
    /// `pytorch_model.bin`, `tokenizer.json` and `preprocessor_config.json` when present); the
    /// linears stored as `quant` asks (the vision tower and projector in f32 under
    /// [`Quant::Native`]).
    pub fn load(ctx: &Arc<Context>, dir: &Path, quant: Quant) -> Result<EveModel> {
        let HfDir { dir, config, weights: weights_path } = hf_dir(dir)?;
        let mut config = EveConfig::from_json(&config)?;
        let store = Store::Plain(kestrel::weights::open(&weights_path)?);
        refine_config(&mut config.llm, &store, Naming::Hf)?;
        let opts = LoadOptions { quant, ..LoadOptions::default() };
        let weights = load_weights(ctx, &store, &config.llm, Naming::Hf, RopeLayout::RotateHalf, &opts, &mut |_, _| {})?;
        let vq = vision_quant(quant);
        let vision = VisionTower::load(ctx, &config.vision, &Checkpoint::new(store.source(), VISION_PREFIX), vq)?;
        vision.layers_for(config.select_layer)?;
        let projector =
            Ldp::load(ctx, &Checkpoint::new(store.source(), PROJECTOR_PREFIX), config.vision.encoder.hidden, config.hidden(), vq)?;
        let preprocess = load_config(&dir, config.vision.image_size)?;
        Ok(EveModel { ctx: ctx.clone(), config, vision, projector, weights, tokenizer: dir_tokenizer(&dir)?, preprocess })
    }

    /// An Eve of `config` with seeded random weights (`kestrel profile eve-1.8b`: latency and
    /// memory do not depend on the values).
    pub fn random(ctx: &Arc<Context>, config: EveConfig, quant: Quant, seed: u64) -> Result<EveModel> {
        let store = Store::Plain(Box::new(RandomCheckpoint::new(&config.llm, seed)));
        let opts = LoadOptions { quant, ..LoadOptions::default() };
        let weights = load_weights(ctx, &store, &config.llm, Naming::Hf, RopeLayout::RotateHalf, &opts, &mut |_, _| {})?;
        let (vq, params) = (vision_quant(quant), RandomParams::new(seed));
        let vision = VisionTower::load(ctx, &config.vision, &params, vq)?;
        let projector = Ldp::load(ctx, &params, config.vision.encoder.hidden, config.hidden(), vq)?;
        let preprocess = default_config(config.vision.image_size);
        Ok(EveModel { ctx: ctx.clone(), config, vision, projector, weights, tokenizer: None, preprocess })
    }

    /// The GPU context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The configuration (refined from the checkpoint).
    pub fn config(&self) -> &EveConfig {
        &self.config
    }

    /// The tokenizer (`None` for a checkpoint without one).
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The LLM's weights.
    pub fn weights(&self) -> &DecoderWeights {
        &self.weights
    }

    /// A decoder over the LLM (sharing its weights) with an empty KV cache.
    pub fn decoder(&self, opts: &DecoderOptions) -> Result<Decoder> {
        Decoder::new(&self.ctx, self.config.llm.clone(), self.weights.clone(), opts)
    }

    /// The pixel values of the image at `path`: padded to a square with the CLIP mean colour
    /// (`image_aspect_ratio: pad`), then CLIP's preprocessing (`[1, 3, S, S]`).
    pub fn pixels_from_file(&self, path: &Path) -> Result<ImageTensor> {
        let image = load_image(path, &DecodeLimits::default())?;
        let image = if self.config.pad_to_square { expand2square(&image, pad_colour())? } else { image };
        preprocess(&image, &self.preprocess)
    }

    /// Records the patch features of `pixels` (`[1, 3, S, S]` f32): `hidden_states[−2]` without
    /// the class token, `[grid², C]`.
    pub fn record_vision(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        if self.vision.check_pixels(pixels)? != 1 {
            return Err(ModelError::Input(format!("pixel values {:?}: Eve takes one image", pixels.shape())));
        }
        let f = self.vision.patch_features(rec, pixels, self.config.select_layer)?;
        let (n, c) = (f.shape()[1], f.shape()[2]);
        Ok(f.reshape(&[n, c])?)
    }

    /// Records the projection of patch features `[N, C]` into the LLM's space: `[N', hidden]`.
    pub fn record_projector(&self, rec: &mut Recorder, features: &Tensor) -> Result<Tensor> {
        self.projector.forward(rec, features)
    }

    /// The image's tokens for the LLM (`[image_tokens, hidden]` on the GPU): the tower and the
    /// projector in one submission.
    pub fn image_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut rec = Recorder::new(&self.ctx);
        let f = self.record_vision(&mut rec, pixels)?;
        let tokens = self.record_projector(&mut rec, &f)?;
        rec.submit()?;
        Ok(tokens)
    }

    /// [`image_tokens`](Self::image_tokens) of host pixel values.
    pub fn image_tokens_of(&self, pixels: &ImageTensor) -> Result<Tensor> {
        let t = Tensor::from_f32(&self.ctx, &pixels.shape, &pixels.data)?;
        self.image_tokens(&t)
    }

    /// The "v1" prompt ids of `question` about one image (one [`config::IMAGE_TOKEN_INDEX`]).
    pub fn prompt_ids(&self, question: &str) -> Result<Vec<i64>> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| ModelError::Input("this Eve model has no tokenizer".into()))?;
        prompt::tokenizer_image_token(tokenizer, &prompt::v1_prompt(question))
    }

    /// The pieces of a prompt of ids with one image placeholder each image — checked to hold
    /// exactly `images` placeholders.
    pub fn pieces(ids: &[i64], images: usize) -> Result<Vec<Piece>> {
        let pieces = split_image_tokens(ids)?;
        let n = pieces.iter().filter(|p| **p == Piece::Image).count();
        if n != images {
            return Err(ModelError::Input(format!(
                "the prompt has {n} image placeholders ({}) for {images} image(s)",
                config::IMAGE_TOKEN_INDEX
            )));
        }
        Ok(pieces)
    }

    /// The decoder segments of `pieces` with `image` (`[n, hidden]`, from
    /// [`image_tokens`](Self::image_tokens)) at every image piece; an image piece without an
    /// image is an error.
    pub fn segments<'a>(pieces: &'a [Piece], image: Option<&'a Tensor>) -> Result<Vec<Segment<'a>>> {
        pieces
            .iter()
            .map(|p| match (p, image) {
                (Piece::Tokens(ids), _) => Ok(Segment::Tokens(ids)),
                (Piece::Image, Some(image)) => Ok(Segment::Embeddings(image)),
                (Piece::Image, None) => Err(ModelError::Input(format!(
                    "the prompt has an image placeholder ({}) but no image was given",
                    config::IMAGE_TOKEN_INDEX
                ))),
            })
            .collect()
    }

    /// Whether `path` is an Eve model directory (or a weight file in one): its `config.json`
    /// has an Eve `model_type`.
    pub fn is_eve(path: &Path) -> bool {
        let Ok(dir) = model_dir(path) else { return false };
        let Ok(cfg) = read_json(&dir.join("config.json")) else { return false };
        cfg.get("model_type").and_then(serde_json::Value::as_str).is_some_and(|t| config::MODEL_TYPES.contains(&t))
    }
}
