//! The CLIP text tower (transformers' `CLIPTextTransformer`): token and position embeddings,
//! the encoder under a causal mask, `final_layer_norm`, and the pooled output at the
//! end-of-text token of each sequence (picked on the host from the ids, gathered on the GPU).

use std::sync::Arc;

use kestrel::Quant;
use kestrel::ops::elementwise::add;
use kestrel::ops::gather::embedding;
use kestrel::ops::layout::slice;
use kestrel::{Context, Recorder, Tensor};

use super::config::{Pooling, TextConfig};
use super::encoder::{Encoder, LayerNorm};
use crate::error::{ModelError, Result};
use crate::params::ParamSource;

/// Token ids of `batch` sequences of `len` tokens each, row-major (shorter prompts padded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextBatch {
    ids: Vec<u32>,
    batch: usize,
    len: usize,
}

impl TextBatch {
    /// `batch × len` ids, row-major; both counts positive.
    pub fn new(ids: Vec<u32>, batch: usize, len: usize) -> Result<TextBatch> {
        if batch == 0 || len == 0 || batch.checked_mul(len) != Some(ids.len()) {
            return Err(ModelError::Input(format!("{} token ids do not make {batch} sequences of {len} (both positive)", ids.len())));
        }
        Ok(TextBatch { ids, batch, len })
    }

    /// Sequences of any lengths (at least one id each), padded with `pad` to the longest.
    pub fn padded(rows: &[Vec<u32>], pad: u32) -> Result<TextBatch> {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        if rows.iter().any(Vec::is_empty) {
            return Err(ModelError::Input("an empty token sequence".into()));
        }
        let ids = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(pad, len - r.len()))).collect();
        TextBatch::new(ids, rows.len(), len)
    }

    /// Sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no ids (never, for a constructed batch).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids of sequence `b`.
    pub fn row(&self, b: usize) -> &[u32] {
        &self.ids[b * self.len..(b + 1) * self.len]
    }

    /// The position each sequence is pooled at, as transformers picks it: the first largest id
    /// ([`Pooling::ArgmaxId`]) or the first `eos` (0 when there is none).
    pub fn pooled_positions(&self, pooling: Pooling) -> Vec<usize> {
        (0..self.batch)
            .map(|b| {
                let row = self.row(b);
                match pooling {
                    // The first maximum, as torch.argmax.
                    Pooling::ArgmaxId => row.iter().enumerate().fold(0, |best, (i, &id)| if id > row[best] { i } else { best }),
                    Pooling::FirstEos(eos) => row.iter().position(|&id| id == eos).unwrap_or(0),
                }
            })
            .collect()
    }
}

/// A text tower on the GPU.
pub struct TextTower {
    cfg: TextConfig,
    /// `[vocab, C]`.
    tokens: Tensor,
    /// `[max_positions, C]`.
    positions: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
}

impl TextTower {
    /// Uploads the tower from `p` (transformers' names below the tower: `embeddings.*`,
    /// `encoder.layers.*`, `final_layer_norm`); linears stored as `quant` asks, the embedding
    /// tables f32.
    pub fn load(ctx: &Arc<Context>, cfg: &TextConfig, p: &dyn ParamSource, quant: Quant) -> Result<TextTower> {
        let c = cfg.encoder.hidden;
        let (v, n) = (cfg.vocab_size, cfg.max_positions);
        Ok(TextTower {
            cfg: cfg.clone(),
            tokens: Tensor::from_f32(ctx, &[v, c], &p.f32("embeddings.token_embedding.weight", &[v, c])?)?,
            positions: Tensor::from_f32(ctx, &[n, c], &p.f32("embeddings.position_embedding.weight", &[n, c])?)?,
            encoder: Encoder::load(ctx, p, "encoder", &cfg.encoder, quant)?,
            final_norm: LayerNorm::load(ctx, p, "final_layer_norm", c, cfg.encoder.layer_norm_eps)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Checks that `ids` fits the tower: at most `max_positions` tokens, every id in the
    /// vocabulary.
    pub fn check(&self, ids: &TextBatch) -> Result<()> {
        if ids.len() > self.cfg.max_positions {
            return Err(ModelError::Input(format!("{} tokens exceed the text tower's {} positions", ids.len(), self.cfg.max_positions)));
        }
        if let Some(&id) = ids.ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(ModelError::Input(format!("token id {id} is outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        Ok(())
    }

    /// Records `hidden_states[layers]`: the encoder input (`layers` 0) or the output of layer
    /// `layers` (before `final_layer_norm`), `[B, L, C]`.
    pub fn hidden_state(&self, rec: &mut Recorder, ids: &TextBatch, layers: usize) -> Result<Tensor> {
        self.check(ids)?;
        let ctx = rec.context().clone();
        let (b, l, c) = (ids.batch, ids.len, self.cfg.encoder.hidden);
        let id_tensor = Tensor::from_u32(&ctx, &[b, l], &ids.ids)?;
        let x = embedding(rec, &self.tokens, &id_tensor)?;
        let positions = slice(rec, &self.positions, 0, 0, l)?;
        let x = add(rec, &x, &positions)?.reshape(&[b * l, c])?;
        let causal: Vec<f32> = (0..l * l).map(|i| if i % l > i / l { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_f32(&ctx, &[1, l, l], &causal)?;
        Ok(self.encoder.forward(rec, x, l, Some(&mask), layers)?.reshape(&[b, l, c])?)
    }

    /// Records the pooled output: `final_layer_norm` of the last layer at each sequence's
    /// pooled position ([`TextBatch::pooled_positions`]), `[B, C]`.
    pub fn pooled(&self, rec: &mut Recorder, ids: &TextBatch) -> Result<Tensor> {
        let h = self.hidden_state(rec, ids, self.encoder.len())?;
        let (b, l, c) = (ids.batch, ids.len, self.cfg.encoder.hidden);
        let rows: Vec<u32> = ids.pooled_positions(self.cfg.pooling).iter().enumerate().map(|(i, &p)| (i * l + p) as u32).collect();
        let rows = Tensor::from_u32(rec.context(), &[b], &rows)?;
        let picked = embedding(rec, &h.reshape(&[b * l, c])?, &rows)?;
        self.final_norm.forward(rec, &picked)
    }

    /// Layers of the encoder.
    pub fn layers(&self) -> usize {
        self.encoder.len()
    }
}
