//! The token mixers of the SLAB families on the GPU: SLA (simplified linear attention over the
//! map or per window), softmax attention (global for the baselines, per window for CSWin's
//! stripes) and Swin window attention. Each takes q, k and v — the thirds of the block's `qkv`
//! linear (`[N, 3C]`), or any column ranges (PVT's `q` and `kv`) — and gives `[N, C]` before
//! `proj`.

use std::sync::Arc;

use kestrel::ops::columns::Columns;
use kestrel::ops::sla::{SlaOptions, sla_columns};
use kestrel::ops::window_attention::{WindowAttentionOptions, window_attention_columns};
use kestrel::{Context, Recorder, Tensor};

use crate::error::Result;
use crate::params::ParamSource;
use crate::slab::windows::relative_bias;

/// One block's attention.
pub enum Mixer {
    /// SLA over `h × w` token maps (the whole map, or each of consecutive windows).
    Sla {
        /// Heads.
        heads: usize,
        /// Learned positional encoding added to k, `[N, C]`.
        pos: Tensor,
        /// Depthwise 5×5 conv over v, shared by the heads: `[d, 1, 5, 5]`.
        dwc_weight: Tensor,
        /// Its bias `[d]`.
        dwc_bias: Tensor,
        /// Map (or window) height and width (N = h·w query tokens per sequence).
        hw: (usize, usize),
    },
    /// Softmax attention (scale `d^-1/2`, no bias) over all tokens or within windows.
    Softmax {
        /// Heads.
        heads: usize,
        /// Channels.
        dim: usize,
        /// Query tokens per window (consecutive rows); `None`: one window of every query.
        window_tokens: Option<usize>,
    },
    /// Swin window attention with relative position bias and optional shift mask.
    Window {
        /// Heads.
        heads: usize,
        /// Channels.
        dim: usize,
        /// Window side.
        window: usize,
        /// `[heads, T, T]` relative position bias.
        bias: Tensor,
        /// `[nW, T, T]` shift mask.
        mask: Option<Tensor>,
    },
}

impl Mixer {
    /// SLA with the parameters under `prefix` (`positional_encoding`, `dwc.weight`, `dwc.bias`).
    pub fn sla(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, dim: usize, heads: usize, hw: (usize, usize)) -> Result<Mixer> {
        let n = hw.0 * hw.1;
        let d = dim / heads;
        Ok(Mixer::Sla {
            heads,
            pos: Tensor::from_f32(ctx, &[n, dim], &p.f32(&format!("{prefix}.positional_encoding"), &[1, n, dim])?)?,
            dwc_weight: Tensor::from_f32(ctx, &[d, 1, 5, 5], &p.f32(&format!("{prefix}.dwc.weight"), &[d, 1, 5, 5])?)?,
            dwc_bias: Tensor::from_f32(ctx, &[d], &p.f32(&format!("{prefix}.dwc.bias"), &[d])?)?,
            hw,
        })
    }

    /// Global softmax attention (no parameters of its own).
    pub fn softmax(dim: usize, heads: usize) -> Mixer {
        Mixer::Softmax { heads, dim, window_tokens: None }
    }

    /// Softmax attention within windows of `window_tokens` consecutive rows, no bias.
    pub fn windowed_softmax(dim: usize, heads: usize, window_tokens: usize) -> Mixer {
        Mixer::Softmax { heads, dim, window_tokens: Some(window_tokens) }
    }

    /// Window attention with `{prefix}.relative_position_bias_table` and an optional host
    /// mask `[nW, T, T]`.
    pub fn window(
        ctx: &Arc<Context>,
        p: &dyn ParamSource,
        prefix: &str,
        dim: usize,
        heads: usize,
        window: usize,
        mask: Option<&[f32]>,
    ) -> Result<Mixer> {
        let side = 2 * window - 1;
        let t = window * window;
        let table = p.f32(&format!("{prefix}.relative_position_bias_table"), &[side * side, heads])?;
        let bias = Tensor::from_f32(ctx, &[heads, t, t], &relative_bias(&table, heads, window))?;
        let mask = mask.map(|m| Tensor::from_f32(ctx, &[m.len() / (t * t), t, t], m)).transpose()?;
        Ok(Mixer::Window { heads, dim, window, bias, mask })
    }

    /// `qkv` `[N, 3C]` → `[N, C]`.
    pub fn forward(&self, rec: &mut Recorder, qkv: &Tensor) -> Result<Tensor> {
        let c = Columns::all(qkv).width() / 3;
        self.forward_columns(rec, Columns::range(qkv, 0, c), Columns::range(qkv, c, c), Columns::range(qkv, 2 * c, c))
    }

    /// q `[N, C]`, k and v `[Nk, C]` (column ranges of any projections) → `[N, C]`.
    pub fn forward_columns(&self, rec: &mut Recorder, q: Columns, k: Columns, v: Columns) -> Result<Tensor> {
        Ok(match self {
            Mixer::Sla { heads, pos, dwc_weight, dwc_bias, hw } => {
                sla_columns(rec, q, k, v, &SlaOptions { heads: *heads, pos: Some(pos), dwc_weight, dwc_bias, height: hw.0, width: hw.1 })?
            }
            Mixer::Softmax { heads, dim, window_tokens } => {
                let scale = ((dim / heads) as f32).powf(-0.5);
                let opts = WindowAttentionOptions { heads: *heads, window_tokens: window_tokens.unwrap_or(q.rows()), scale };
                window_attention_columns(rec, q, k, v, None, None, &opts)?
            }
            Mixer::Window { heads, dim, window, bias, mask } => {
                let scale = ((dim / heads) as f32).powf(-0.5);
                let opts = WindowAttentionOptions { heads: *heads, window_tokens: window * window, scale };
                window_attention_columns(rec, q, k, v, Some(bias), mask.as_ref(), &opts)?
            }
        })
    }
}
