//! CLIP (transformers' `CLIPModel`): a vision tower and a text tower, each projected into a
//! joint embedding space, compared by cosine similarity.
//!
//! - [`config`] — `config.json` (`clip`, `clip_vision_model`, `clip_text_model`);
//! - [`encoder`] — the transformer layers both towers share;
//! - [`vision`] — patch embedding, class token, encoder; pooled output or the per-layer patch
//!   features VLMs (LLaVA, Eve) read;
//! - [`text`] — token ids, causal encoder, pooled at end-of-text;
//! - [`preprocess`] — `CLIPImageProcessor`'s resize / crop / normalisation;
//! - [`load`] — a Hugging Face directory (`vision_model.*` / `text_model.*` keys, or a bare
//!   tower's keys without that level as transformers 5 writes them).
//!
//! [`ClipModel::run`] records every requested tower and projection on one recorder, submits
//! once and reads back the projections; normalisation and the logits
//! (`exp(logit_scale) · cosine`) are computed on the host from those few numbers.

pub mod config;
pub mod encoder;
pub mod load;
pub mod preprocess;
pub mod text;
pub mod vision;

use std::sync::Arc;

use kestrel::nn::Linear;
use kestrel::{Context, Recorder, Tensor};

pub use config::{Activation, ClipConfig, EncoderConfig, Pooling, TextConfig, VisionConfig};
pub use text::{TextBatch, TextTower};
pub use vision::VisionTower;

use crate::error::{ModelError, Result};
use crate::llm::tokenizer::Tokenizer;
use crate::vision::PreprocessConfig;

/// A CLIP model on the GPU: either tower may be missing (a bare vision or text checkpoint).
pub struct ClipModel {
    ctx: Arc<Context>,
    config: ClipConfig,
    vision: Option<VisionTower>,
    text: Option<TextTower>,
    visual_projection: Option<Linear>,
    text_projection: Option<Linear>,
    /// `logit_scale` as stored (the logits use its exponential).
    logit_scale: Option<f32>,
    tokenizer: Option<Tokenizer>,
    preprocess: Option<PreprocessConfig>,
}

/// What [`ClipModel::run`] gives, rows per image / per text as transformers' `CLIPOutput`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClipOutput {
    /// The projected pooled image outputs, L2-normalised (`CLIPOutput.image_embeds`).
    pub image_embeds: Vec<Vec<f32>>,
    /// The projected pooled text outputs, L2-normalised (`CLIPOutput.text_embeds`).
    pub text_embeds: Vec<Vec<f32>>,
    /// `exp(logit_scale) · cosine(image, text)`, one row per image, one column per text (empty
    /// rows when no text was given).
    pub logits_per_image: Vec<Vec<f32>>,
}

/// `v / ‖v‖` (transformers divides without an epsilon; a zero vector stays zero here).
fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    v.iter().map(|&x| if norm > 0.0 { (f64::from(x) / norm) as f32 } else { 0.0 }).collect()
}

/// Rows of a `[rows, cols]` tensor read back.
fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let cols = t.shape().last().copied().unwrap_or(1).max(1);
    Ok(t.to_vec_f32()?.chunks(cols).map(<[f32]>::to_vec).collect())
}

impl ClipModel {
    /// The configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The GPU context the weights live in.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The vision tower, if the model has one.
    pub fn vision(&self) -> Option<&VisionTower> {
        self.vision.as_ref()
    }

    /// The text tower, if the model has one.
    pub fn text(&self) -> Option<&TextTower> {
        self.text.as_ref()
    }

    /// The tokenizer (`tokenizer.json` beside the weights), if there is one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The image transform (`preprocessor_config.json` or the defaults), for a model with a
    /// vision tower.
    pub fn preprocess_config(&self) -> Option<&PreprocessConfig> {
        self.preprocess.as_ref()
    }

    fn vision_tower(&self) -> Result<&VisionTower> {
        self.vision.as_ref().ok_or_else(|| ModelError::Input("this CLIP model has no vision tower (it cannot take images)".into()))
    }

    fn text_tower(&self) -> Result<&TextTower> {
        self.text.as_ref().ok_or_else(|| ModelError::Input("this CLIP model has no text tower (it cannot take text)".into()))
    }

    /// Records the image features (`get_image_features`: the projected pooled output, not
    /// normalised) of `pixels` `[B, 3, S, S]`: `[B, projection_dim]`.
    pub fn image_features(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        let pooled = self.vision_tower()?.pooled(rec, pixels)?;
        let proj = self.visual_projection.as_ref().ok_or_else(|| ModelError::Input("the checkpoint has no visual_projection".into()))?;
        Ok(proj.forward(rec, &pooled)?)
    }

    /// Records, from one pass of the vision tower over `pixels` `[B, 3, S, S]`, the image
    /// features (as [`image_features`](Self::image_features)) `[B, projection_dim]` and the
    /// last layer's patch tokens through `visual_projection` (`last_hidden_state[:, 1:]`, no
    /// `post_layernorm`: Free Video-LLM's region scores) `[B, grid², projection_dim]`.
    pub fn image_features_and_patches(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let (pooled, patches) = self.vision_tower()?.pooled_and_patches(rec, pixels)?;
        let proj = self.visual_projection.as_ref().ok_or_else(|| ModelError::Input("the checkpoint has no visual_projection".into()))?;
        let (b, n, c) = (patches.shape()[0], patches.shape()[1], patches.shape()[2]);
        let projected = proj.forward(rec, &patches.reshape(&[b * n, c])?)?;
        let p = projected.shape()[1];
        Ok((proj.forward(rec, &pooled)?, projected.reshape(&[b, n, p])?))
    }

    /// Records the text features (`get_text_features`) of `ids`: `[B, projection_dim]`.
    pub fn text_features(&self, rec: &mut Recorder, ids: &TextBatch) -> Result<Tensor> {
        let pooled = self.text_tower()?.pooled(rec, ids)?;
        let proj = self.text_projection.as_ref().ok_or_else(|| ModelError::Input("the checkpoint has no text_projection".into()))?;
        Ok(proj.forward(rec, &pooled)?)
    }

    /// Token ids of `prompts` with the model's tokenizer (`<|startoftext|> … <|endoftext|>`),
    /// 0-padded to the longest. A prompt longer than the text tower's positions is truncated
    /// as transformers' `truncation=True` does (its first tokens, then `<|endoftext|>`), with a
    /// warning.
    pub fn tokenize(&self, prompts: &[String]) -> Result<TextBatch> {
        let tower = self.text_tower()?;
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::Input("the model directory has no tokenizer.json (give token ids instead)".into()))?;
        let max = tower.config().max_positions;
        let rows = prompts
            .iter()
            .map(|p| {
                let mut ids = tok.encode(p, true)?;
                if ids.len() > max {
                    log::warn!("prompt {p:?} is {} tokens long; truncated to the text tower's {max} positions", ids.len());
                    let last = ids[ids.len() - 1];
                    ids.truncate(max);
                    ids[max - 1] = last;
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        TextBatch::padded(&rows, 0)
    }

    /// Runs the model on `pixels` (f32 `[B, 3, S, S]` row-major, already preprocessed) and/or
    /// `ids` in one submission: embeds of every given input and, when both are given, the
    /// logits.
    pub fn run(&self, pixels: Option<(&[f32], usize)>, ids: Option<&TextBatch>) -> Result<ClipOutput> {
        let mut rec = Recorder::new(&self.ctx);
        let image = match pixels {
            Some((data, batch)) => {
                let v = self.vision_tower()?.config();
                let shape = [batch, v.channels, v.image_size, v.image_size];
                if batch == 0 || data.len() != shape.iter().product::<usize>() {
                    return Err(ModelError::Input(format!("{} pixel values are not {shape:?}", data.len())));
                }
                let x = Tensor::from_f32(&self.ctx, &shape, data)?;
                Some(self.image_features(&mut rec, &x)?)
            }
            None => None,
        };
        let text = ids.map(|ids| self.text_features(&mut rec, ids)).transpose()?;
        rec.submit()?;
        let image_embeds: Vec<Vec<f32>> = image.map(|t| rows(&t)).transpose()?.unwrap_or_default().iter().map(|r| normalised(r)).collect();
        let text_embeds: Vec<Vec<f32>> = text.map(|t| rows(&t)).transpose()?.unwrap_or_default().iter().map(|r| normalised(r)).collect();
        let logits_per_image = if image_embeds.is_empty() || text_embeds.is_empty() {
            image_embeds.iter().map(|_| Vec::new()).collect()
        } else {
            let scale = self.logit_scale.ok_or_else(|| ModelError::Input("the checkpoint has no logit_scale".into()))?.exp();
            image_embeds
                .iter()
                .map(|i| text_embeds.iter().map(|t| scale * i.iter().zip(t).map(|(a, b)| a * b).sum::<f32>()).collect())
                .collect()
        };
        Ok(ClipOutput { image_embeds, text_embeds, logits_per_image })
    }
}
