//! The CLIP vision tower (transformers' `CLIPVisionTransformer`): a `patch_size` convolution
//! without bias, the class token prepended, learned positions added, `pre_layrnorm`, the
//! encoder, and `post_layernorm` of the class token as the pooled output.
//!
//! VLMs (LLaVA, Eve) read an intermediate hidden state instead: [`VisionTower::patch_features`]
//! gives `hidden_states[select_layer]` (transformers' indexing, −2 for LLaVA) without the class
//! token, running only the layers it needs.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::ops::conv2d::{Conv2dOptions, conv2d_tokens};
use kestrel::ops::elementwise::add;
use kestrel::ops::layout::{concat, slice_ranges};
use kestrel::{Context, DType, Recorder, Tensor};

use super::config::VisionConfig;
use super::encoder::{Encoder, LayerNorm};
use crate::error::{ModelError, Result};
use crate::params::ParamSource;

/// A vision tower on the GPU.
pub struct VisionTower {
    cfg: VisionConfig,
    /// `[C, channels, patch, patch]`, f32 (f16 under [`Quant::F16`]).
    patch: Tensor,
    /// `[1, 1, C]`.
    class: Tensor,
    /// `[tokens, C]`.
    positions: Tensor,
    pre_norm: LayerNorm,
    encoder: Encoder,
    /// Absent from a checkpoint that keeps only the layers a VLM reads.
    post_norm: Option<LayerNorm>,
}

impl VisionTower {
    /// Uploads the tower from `p` (transformers' names below the tower: `embeddings.*`,
    /// `pre_layrnorm`, `encoder.layers.*`, `post_layernorm` when present). Linears are stored
    /// as `quant` asks; the patch convolution is f32, or f16 under [`Quant::F16`].
    pub fn load(ctx: &Arc<Context>, cfg: &VisionConfig, p: &dyn ParamSource, quant: Quant) -> Result<VisionTower> {
        cfg.validate()?;
        let c = cfg.encoder.hidden;
        let (s, t, eps) = (cfg.patch_size, cfg.tokens(), cfg.encoder.layer_norm_eps);
        let wshape = [c, cfg.channels, s, s];
        let dtype = if quant == Quant::F16 { DType::F16 } else { DType::F32 };
        let post_norm = match p.has("post_layernorm.weight") {
            true => Some(LayerNorm::load(ctx, p, "post_layernorm", c, eps)?),
            false => None,
        };
        Ok(VisionTower {
            cfg: cfg.clone(),
            patch: Tensor::from_f32_as(ctx, &wshape, &p.f32("embeddings.patch_embedding.weight", &wshape)?, dtype)?,
            class: Tensor::from_f32(ctx, &[1, 1, c], &p.f32("embeddings.class_embedding", &[c])?)?,
            positions: Tensor::from_f32(ctx, &[t, c], &p.f32("embeddings.position_embedding.weight", &[t, c])?)?,
            pre_norm: LayerNorm::load(ctx, p, "pre_layrnorm", c, eps)?,
            encoder: Encoder::load(ctx, p, "encoder", &cfg.encoder, quant)?,
            post_norm,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// The images in `pixels`, which must be f32 `[B, channels, image_size, image_size]`.
    pub fn check_pixels(&self, pixels: &Tensor) -> Result<usize> {
        let (ch, s) = (self.cfg.channels, self.cfg.image_size);
        match *pixels.shape() {
            [b, c, h, w] if b > 0 && c == ch && h == s && w == s && pixels.dtype() == DType::F32 => Ok(b),
            _ => Err(ModelError::Input(format!(
                "pixel values of shape {:?} ({:?}); the vision tower takes f32 [batch, {ch}, {s}, {s}]",
                pixels.shape(),
                pixels.dtype()
            ))),
        }
    }

    /// Layers run for `hidden_states[index]` in transformers' indexing: 0 is the encoder input
    /// (after `pre_layrnorm`), `i` the output of layer `i`, negative counts from the end (−1:
    /// the last layer, −2: the one before, LLaVA's `vision_feature_layer`).
    pub fn layers_for(&self, index: isize) -> Result<usize> {
        let n = self.encoder.len() as isize;
        let i = if index < 0 { n + 1 + index } else { index };
        if !(0..=n).contains(&i) {
            return Err(ModelError::Input(format!("hidden state {index} of a tower of {n} layers (valid: {}..={n})", -(n + 1))));
        }
        Ok(i as usize)
    }

    /// Records `hidden_states[index]` (see [`layers_for`](Self::layers_for)) of `pixels`:
    /// `[B, tokens, C]`, the class token first in each image.
    pub fn hidden_state(&self, rec: &mut Recorder, pixels: &Tensor, index: isize) -> Result<Tensor> {
        let count = self.layers_for(index)?;
        let b = self.check_pixels(pixels)?;
        let (c, t, s) = (self.cfg.encoder.hidden, self.cfg.tokens(), self.cfg.patch_size);
        let opts = Conv2dOptions { stride: (s, s), padding: (0, 0), groups: 1 };
        let patches = conv2d_tokens(rec, pixels, &self.patch, None, &opts)?.reshape(&[b, t - 1, c])?;
        let classes = concat(rec, &vec![&self.class; b], 0)?;
        let x = concat(rec, &[&classes, &patches], 1)?;
        let x = add(rec, &x, &self.positions)?;
        let x = self.pre_norm.forward(rec, &x)?.reshape(&[b * t, c])?;
        Ok(self.encoder.forward(rec, x, t, None, count)?.reshape(&[b, t, c])?)
    }

    /// Records the patch features a VLM projects: `hidden_states[index]` without the class
    /// token, `[B, grid², C]` (LLaVA-1.5 with ViT-L/14-336 and index −2: `[B, 576, 1024]`).
    pub fn patch_features(&self, rec: &mut Recorder, pixels: &Tensor, index: isize) -> Result<Tensor> {
        let h = self.hidden_state(rec, pixels, index)?;
        let (b, t, c) = (h.shape()[0], self.cfg.tokens(), self.cfg.encoder.hidden);
        Ok(slice_ranges(rec, &h, &[0..b, 1..t, 0..c])?)
    }

    /// Records the pooled output: `post_layernorm` of the last layer's class token, `[B, C]`.
    pub fn pooled(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        let Some(post_norm) = &self.post_norm else {
            return Err(ModelError::Input("this vision tower has no post_layernorm (it gives hidden states only)".into()));
        };
        let h = self.hidden_state(rec, pixels, -1)?;
        self.pool_hidden(rec, &h, post_norm)
    }

    /// Records the pooled output and the last layer's patch tokens from one pass: `([B, C]`
    /// pooled, `[B, grid², C]` `last_hidden_state[:, 1:]` without `post_layernorm`).
    pub fn pooled_and_patches(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some(post_norm) = &self.post_norm else {
            return Err(ModelError::Input("this vision tower has no post_layernorm (it gives hidden states only)".into()));
        };
        let h = self.hidden_state(rec, pixels, -1)?;
        let (b, t, c) = (h.shape()[0], self.cfg.tokens(), self.cfg.encoder.hidden);
        let patches = slice_ranges(rec, &h, &[0..b, 1..t, 0..c])?;
        Ok((self.pool_hidden(rec, &h, post_norm)?, patches))
    }

    /// `post_layernorm` of the class token of hidden states `h` `[B, tokens, C]`.
    fn pool_hidden(&self, rec: &mut Recorder, h: &Tensor, post_norm: &LayerNorm) -> Result<Tensor> {
        let (b, c) = (h.shape()[0], self.cfg.encoder.hidden);
        let cls = slice_ranges(rec, h, &[0..b, 0..1, 0..c])?.reshape(&[b, c])?;
        post_norm.forward(rec, &cls)
    }
}
