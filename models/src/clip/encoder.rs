//! The transformer encoder both CLIP towers share (`CLIPEncoderLayer`): pre-norm layers
//! `x += out_proj(attn(LN1(x))); x += fc2(act(fc1(LN2(x))))`, softmax attention over each
//! sequence (optionally causal), scale `d^-1/2`. q, k and v are stacked into one linear at load.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::columns::Columns;
use kestrel::ops::elementwise::{Unary, unary};
use kestrel::ops::norm::layer_norm;
use kestrel::ops::window_attention::{WindowAttentionOptions, window_attention_columns};
use kestrel::{Context, Recorder, Tensor};

use super::config::{Activation, EncoderConfig};
use crate::error::{ModelError, Result};
use crate::params::ParamSource;

/// A LayerNorm's affine parameters (`{prefix}.weight`, `{prefix}.bias`) and epsilon.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Loads the norm at `prefix` over `dim` channels.
    pub fn load(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: Tensor::from_f32(ctx, &[dim], &p.f32(&format!("{prefix}.weight"), &[dim])?)?,
            beta: Tensor::from_f32(ctx, &[dim], &p.f32(&format!("{prefix}.bias"), &[dim])?)?,
            eps,
        })
    }

    /// Normalises `x` over its last dimension.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(rec, x, Some(&self.gamma), Some(&self.beta), self.eps)?)
    }
}

/// The linear `[Σ out, inp]` whose rows are those of the linears at `prefixes` (each `[out,
/// inp]` with a bias), stored as `quant` asks.
fn stacked_linear(ctx: &Arc<Context>, p: &dyn ParamSource, prefixes: &[String], out: usize, inp: usize, quant: Quant) -> Result<Linear> {
    let mut weight = Vec::with_capacity(prefixes.len() * out * inp);
    let mut bias = Vec::with_capacity(prefixes.len() * out);
    for prefix in prefixes {
        weight.extend(p.f32(&format!("{prefix}.weight"), &[out, inp])?);
        bias.extend(p.f32(&format!("{prefix}.bias"), &[out])?);
    }
    Ok(Linear::from_f32(ctx, &weight, Some(&bias), prefixes.len() * out, inp, quant)?)
}

/// One encoder layer on the GPU.
struct Layer {
    norm1: LayerNorm,
    qkv: Linear,
    out_proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The encoder layers of one tower.
pub struct Encoder {
    cfg: EncoderConfig,
    layers: Vec<Layer>,
}

impl Encoder {
    /// Loads `{prefix}.layers.{i}` for every layer of `cfg` (transformers' names:
    /// `layer_norm1`, `self_attn.{q,k,v,out}_proj`, `layer_norm2`, `mlp.fc1`, `mlp.fc2`).
    pub fn load(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, cfg: &EncoderConfig, quant: Quant) -> Result<Encoder> {
        let (c, m, eps) = (cfg.hidden, cfg.intermediate, cfg.layer_norm_eps);
        let layers = (0..cfg.layers)
            .map(|i| {
                let l = format!("{prefix}.layers.{i}");
                let qkv: Vec<String> = ["q", "k", "v"].iter().map(|n| format!("{l}.self_attn.{n}_proj")).collect();
                Ok(Layer {
                    norm1: LayerNorm::load(ctx, p, &format!("{l}.layer_norm1"), c, eps)?,
                    qkv: stacked_linear(ctx, p, &qkv, c, c, quant)?,
                    out_proj: p.linear(ctx, &format!("{l}.self_attn.out_proj"), c, c, quant)?,
                    norm2: LayerNorm::load(ctx, p, &format!("{l}.layer_norm2"), c, eps)?,
                    fc1: p.linear(ctx, &format!("{l}.mlp.fc1"), m, c, quant)?,
                    fc2: p.linear(ctx, &format!("{l}.mlp.fc2"), c, m, quant)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder { cfg: cfg.clone(), layers })
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when the encoder has no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Records layers `0..count` on `x` (`[B·T, C]`: `B` sequences of `seq` tokens, row by row),
    /// giving the hidden state after them (`count` 0 gives `x`; more than [`len`](Self::len)
    /// is an error). `mask` is an additive `[1, seq, seq]` attention mask (the text tower's
    /// causal mask), `−inf` masking.
    pub fn forward(&self, rec: &mut Recorder, x: Tensor, seq: usize, mask: Option<&Tensor>, count: usize) -> Result<Tensor> {
        let Some(layers) = self.layers.get(..count) else {
            return Err(ModelError::Input(format!("hidden state {count} asked of an encoder of {} layers", self.layers.len())));
        };
        let c = self.cfg.hidden;
        let opts = WindowAttentionOptions { heads: self.cfg.heads, window_tokens: seq, scale: ((c / self.cfg.heads) as f32).powf(-0.5) };
        let mut x = x;
        for l in layers {
            let h = l.norm1.forward(rec, &x)?;
            let qkv = l.qkv.forward(rec, &h)?;
            let (q, k, v) = (Columns::range(&qkv, 0, c), Columns::range(&qkv, c, c), Columns::range(&qkv, 2 * c, c));
            let a = window_attention_columns(rec, q, k, v, None, mask, &opts)?;
            x = l.out_proj.forward_residual(rec, &a, x)?;
            let h = l.norm2.forward(rec, &x)?;
            let h = match self.cfg.activation {
                Activation::Gelu => l.fc1.forward_gelu(rec, &h)?,
                Activation::QuickGelu => {
                    let y = l.fc1.forward(rec, &h)?;
                    unary(rec, &y, Unary::QuickGelu)?
                }
            };
            x = l.fc2.forward_residual(rec, &h, x)?;
        }
        Ok(x)
    }
}
