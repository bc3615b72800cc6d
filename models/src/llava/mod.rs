//! LLaVA (transformers' `LlavaForConditionalGeneration`, LLaVA-1.5, and
//! `LlavaNextForConditionalGeneration`, LLaVA-1.6 / NeXT): a CLIP vision tower whose
//! `hidden_states[vision_feature_layer]` patch features go through a two-layer GELU projector
//! into a LLaMA-family decoder, in place of the image token.
//!
//! - [`config`] — `config.json` (`llava`, `llava_next`; transformers' defaults filled in);
//! - [`load`] — a Hugging Face directory in any of transformers' key layouts;
//! - [`anyres`] — NeXT's tiles and the order of their features (unpadding, `image_newline`).
//!
//! [`LlavaModel::encode`] records the tower, the projector and (NeXT) the packing gather on
//! one recorder and returns the image's features on the GPU; [`LlavaModel::segments`] puts
//! them in place of the image token in a prompt for [`crate::llm::decoder::Decoder::prefill_segments`].

pub mod anyres;
pub mod config;
pub mod gguf;
pub mod load;

use std::sync::Arc;

use kestrel::nn::Linear;
use kestrel::ops::gather::embedding;
use kestrel::ops::layout::concat;
use kestrel::{Context, Recorder, Tensor};

pub use config::{FeatureSelect, LlavaConfig, LlavaKind};

use crate::clip::VisionTower;
use crate::error::{ModelError, Result};
use crate::llm::decoder::{Decoder, Segment};
use crate::llm::tokenizer::Tokenizer;
use crate::vision::{PreprocessConfig, Rgb8Image, normalize, resize_and_crop};

/// A LLaVA model on the GPU: vision tower, projector, decoder.
pub struct LlavaModel {
    ctx: Arc<Context>,
    config: LlavaConfig,
    vision: VisionTower,
    /// `linear_1` (vision → text width) and `linear_2` (text → text), GELU between.
    projector: [Linear; 2],
    /// NeXT's `image_newline`, `[1, hidden]`.
    newline: Option<Tensor>,
    decoder: Decoder,
    tokenizer: Option<Tokenizer>,
    preprocess: PreprocessConfig,
}

/// An image ready for the vision tower: `[tiles, 3, size, size]` pixel values and, for NeXT,
/// where its tiles came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInput {
    /// The pixel values.
    pub pixels: Vec<f32>,
    /// Tiles (1 for LLaVA-1.5).
    pub tiles: usize,
    /// NeXT: the tile grid `(rows, columns)` after the whole-image tile.
    pub grid: Option<(usize, usize)>,
    /// The original image's `(height, width)` (NeXT drops the features of its padding).
    pub image_size: (usize, usize),
}

impl LlavaModel {
    /// The configuration.
    pub fn config(&self) -> &LlavaConfig {
        &self.config
    }

    /// The GPU context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The language model with its KV cache.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The language model, to prefill and decode.
    pub fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// The language model and the tokenizer at once (to generate).
    pub fn decoder_and_tokenizer(&mut self) -> (&mut Decoder, Option<&Tokenizer>) {
        (&mut self.decoder, self.tokenizer.as_ref())
    }

    /// The tokenizer, when the directory has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The vision tower's image transform.
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// The processor's transform of a decoded image: the CLIP transform (LLaVA-1.5) or the
    /// anyres tiles (NeXT).
    pub fn image_input(&self, image: &Rgb8Image) -> Result<ImageInput> {
        let image_size = (image.height(), image.width());
        match self.config.kind {
            LlavaKind::V15 => {
                let pixels = normalize(&resize_and_crop(image, &self.preprocess)?, self.preprocess.mean, self.preprocess.std).data;
                Ok(ImageInput { pixels, tiles: 1, grid: None, image_size })
            }
            LlavaKind::Next => {
                let t = anyres::tiles(image, &self.preprocess, &self.config.grid_pinpoints)?;
                Ok(ImageInput { pixels: t.pixels, tiles: t.count, grid: Some(t.grid), image_size })
            }
        }
    }

    /// Given pixel values (`--pixel-values`, `[tiles, 3, size, size]`) of an image of
    /// `image_size` `(height, width)`: the input NeXT's packing needs (its grid from the image
    /// size, as transformers' `get_anyres_image_grid_shape`). LLaVA-1.5 takes one tile.
    pub fn image_input_from_pixels(&self, pixels: Vec<f32>, tiles: usize, image_size: (usize, usize)) -> Result<ImageInput> {
        let grid = match self.config.kind {
            LlavaKind::V15 => None,
            LlavaKind::Next => {
                let (h, w) = anyres::best_resolution(image_size.0, image_size.1, &self.config.grid_pinpoints)
                    .ok_or_else(|| ModelError::Config("no image_grid_pinpoints".into()))?;
                let s = self.config.vision.image_size;
                Some((h / s, w / s))
            }
        };
        let want = grid.map_or(1, |(r, c)| 1 + r * c);
        if tiles != want {
            return Err(ModelError::Input(format!("{tiles} image tiles given; an image of {image_size:?} pixels takes {want}")));
        }
        Ok(ImageInput { pixels, tiles, grid, image_size })
    }

    /// Number of features (positions in the prompt) an image input becomes.
    pub fn feature_count(&self, input: &ImageInput) -> usize {
        match input.grid {
            None => self.config.tile_features(),
            Some(grid) => anyres::packed_rows(grid, self.config.vision.grid(), input.image_size).len(),
        }
    }

    /// Records the tower and the projector of LLaVA-1.5 on one tile `[1, 3, S, S]`: its
    /// features `[grid², hidden]`.
    pub fn record_image(&self, rec: &mut Recorder, pixels: &Tensor) -> Result<Tensor> {
        if self.vision.check_pixels(pixels)? != 1 || self.config.kind != LlavaKind::V15 {
            return Err(ModelError::Input("record_image takes one tile of LLaVA-1.5".into()));
        }
        let x = self.vision.patch_features(rec, pixels, self.config.feature_layer)?;
        let x = x.reshape(&[x.shape()[1], self.config.vision.encoder.hidden])?;
        self.project(rec, &x)
    }

    /// Records the projector on vision features `[n, C]`: `[n, hidden]`.
    fn project(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let h = self.projector[0].forward_gelu(rec, x)?;
        Ok(self.projector[1].forward(rec, &h)?)
    }

    /// Records the tower, the projector and (NeXT) the packing of `input`; returns its features
    /// `[n, hidden]` on the GPU (nothing read back).
    pub fn encode(&self, input: &ImageInput) -> Result<Tensor> {
        let s = self.config.vision.image_size;
        if input.tiles == 0 || input.pixels.len() != input.tiles * 3 * s * s {
            return Err(ModelError::Input(format!("{} pixel values for {} tiles of 3x{s}x{s}", input.pixels.len(), input.tiles)));
        }
        let mut rec = Recorder::new(&self.ctx);
        let pixels = Tensor::from_f32(&self.ctx, &[input.tiles, 3, s, s], &input.pixels)?;
        let x = match self.config.select {
            FeatureSelect::Patches => self.vision.patch_features(&mut rec, &pixels, self.config.feature_layer)?,
            FeatureSelect::Full => self.vision.hidden_state(&mut rec, &pixels, self.config.feature_layer)?,
        };
        let per_tile = x.shape()[1];
        let x = x.reshape(&[input.tiles * per_tile, self.config.vision.encoder.hidden])?;
        let features = self.project(&mut rec, &x)?;
        let out = match input.grid {
            None => features,
            Some(grid) => {
                let newline = self.newline.as_ref().ok_or_else(|| ModelError::Config("LLaVA-NeXT without image_newline".into()))?;
                if self.config.select != FeatureSelect::Patches {
                    return Err(ModelError::Config("LLaVA-NeXT packing needs vision_feature_select_strategy `default`".into()));
                }
                let table = concat(&mut rec, &[&features, newline], 0)?;
                let rows = anyres::packed_rows(grid, self.config.vision.grid(), input.image_size);
                let ids = Tensor::from_u32(&self.ctx, &[rows.len()], &rows)?;
                embedding(&mut rec, &table, &ids)?
            }
        };
        rec.submit()?;
        Ok(out)
    }

    /// The prompt `ids` with each run of the image token replaced by the features of the next
    /// image (a run of one token, as a tokenizer gives `<image>`, or of exactly as many tokens
    /// as the image has features, as transformers' processor expands it). Errors: runs and
    /// images that do not pair up, a run of another length.
    pub fn segments<'a>(&self, ids: &'a [u32], features: &'a [Tensor]) -> Result<Vec<Segment<'a>>> {
        let token = self.config.image_token;
        let mut out = Vec::new();
        let (mut images, mut start, mut i) = (features.iter(), 0, 0);
        while i < ids.len() {
            if ids[i] != token {
                i += 1;
                continue;
            }
            let run = ids[i..].iter().take_while(|&&id| id == token).count();
            let image = images.next().ok_or_else(|| ModelError::Input("the prompt has more image tokens than images were given".into()))?;
            let n = image.shape().first().copied().unwrap_or(0);
            if run != 1 && run != n {
                return Err(ModelError::Input(format!("a run of {run} image tokens for an image of {n} features")));
            }
            if start < i {
                out.push(Segment::Tokens(&ids[start..i]));
            }
            out.push(Segment::Embeddings(image));
            i += run;
            start = i;
        }
        if start < ids.len() {
            out.push(Segment::Tokens(&ids[start..]));
        }
        if images.next().is_some() {
            return Err(ModelError::Input("more images were given than the prompt has image tokens".into()));
        }
        Ok(out)
    }

    /// Token ids of a prompt text whose `<image>` marks become the image token (one each).
    /// Where the tokenizer knows `<image>` as a token the text is encoded at once; else each
    /// piece around the marks separately (BOS only before the first), joined by the image
    /// token, as LLaVA's `tokenizer_image_token` does.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| ModelError::Input("the model has no tokenizer; give token ids".into()))?;
        if tokenizer.token_id("<image>") == Some(self.config.image_token) {
            return tokenizer.encode(text, true);
        }
        let mut ids = Vec::new();
        for (i, piece) in text.split("<image>").enumerate() {
            if i > 0 {
                ids.push(self.config.image_token);
            }
            ids.extend(tokenizer.encode(piece, i == 0)?);
        }
        Ok(ids)
    }

    /// The prompt text for `question` about one image: `question` itself when it holds
    /// `<image>`, else LLaVA's conversation `USER: <image>\n{question} ASSISTANT:`.
    pub fn prompt_text(question: &str) -> String {
        if question.contains("<image>") { question.to_string() } else { format!("USER: <image>\n{question} ASSISTANT:") }
    }
}
