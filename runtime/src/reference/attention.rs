//! CPU references of rotary position embeddings and causal grouped-query attention (f64
//! arithmetic throughout, including the RoPE frequencies and angles).

use crate::ops::attention::{RopeLayout, RopeOptions, RopeScaling};

/// RoPE frequencies `inv_freq[i] = 1 / base^(2i / rotary_dim)` for a sequence of `seq` tokens,
/// and the position divisor: Linear scaling divides positions by its factor; DynamicNtk raises
/// the base (Hugging Face `LlamaDynamicNTKScalingRotaryEmbedding`) when `seq` exceeds the
/// original context.
pub fn rope_frequencies(opts: &RopeOptions, seq: usize) -> (Vec<f64>, f64) {
    let dim = opts.rotary_dim as f64;
    let mut base = f64::from(opts.theta);
    let mut divisor = 1.0;
    match opts.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => divisor = f64::from(factor),
        RopeScaling::DynamicNtk { factor, original_max_positions } => {
            if seq > original_max_positions {
                let f = f64::from(factor);
                base *= (f * seq as f64 / original_max_positions as f64 - (f - 1.0)).powf(dim / (dim - 2.0));
            }
        }
    }
    let freqs = (0..opts.rotary_dim / 2).map(|i| 1.0 / base.powf(2.0 * i as f64 / dim)).collect();
    (freqs, divisor)
}

/// RoPE of `x` (`[t, heads, dim]`), token `i` at position `start_pos + i`: pair `j` of the first
/// `rotary_dim` dims — `(j, j + rotary_dim/2)` (RotateHalf) or `(2j, 2j + 1)` (Interleaved) — is
/// rotated by `position / divisor · inv_freq[j]`; the other dims are copied.
pub fn rope(x: &[f32], t: usize, heads: usize, dim: usize, start_pos: usize, opts: &RopeOptions) -> Vec<f32> {
    let (freqs, divisor) = rope_frequencies(opts, start_pos + t);
    let rot2 = opts.rotary_dim / 2;
    let mut out = x.to_vec();
    for ti in 0..t {
        let pos = (start_pos + ti) as f64 / divisor;
        for h in 0..heads {
            let row = (ti * heads + h) * dim;
            for (j, f) in freqs.iter().enumerate() {
                let (a, b) = match opts.layout {
                    RopeLayout::RotateHalf => (j, j + rot2),
                    RopeLayout::Interleaved => (2 * j, 2 * j + 1),
                };
                let (s, c) = (pos * f).sin_cos();
                let (xa, xb) = (f64::from(x[row + a]), f64::from(x[row + b]));
                out[row + a] = (xa * c - xb * s) as f32;
                out[row + b] = (xb * c + xa * s) as f32;
            }
        }
    }
    out
}

/// Causal GQA attention. `q` is `[t, n_heads, head_dim]` for tokens at positions
/// `start_pos..start_pos + t`; `k` and `v` are `[start_pos + t, n_kv, head_dim]` (every position,
/// token-major). Query `i` attends to positions `0..=start_pos + i`; head `h` uses KV head
/// `h / (n_heads / n_kv)`; weights `softmax(scale · q·k)`. Returns `[t, n_heads, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    t: usize,
    n_heads: usize,
    k: &[f32],
    v: &[f32],
    n_kv: usize,
    head_dim: usize,
    start_pos: usize,
    scale: f32,
) -> Vec<f32> {
    let group = n_heads / n_kv;
    let mut out = vec![0.0f32; t * n_heads * head_dim];
    for ti in 0..t {
        let visible = start_pos + ti + 1;
        for h in 0..n_heads {
            let qr = &q[(ti * n_heads + h) * head_dim..][..head_dim];
            let g = h / group;
            let row = |m: &[f32], pos: usize| -> Vec<f64> {
                m[(pos * n_kv + g) * head_dim..][..head_dim].iter().map(|&x| f64::from(x)).collect()
            };
            let scores: Vec<f64> = (0..visible)
                .map(|pos| f64::from(scale) * qr.iter().zip(row(k, pos)).map(|(&a, b)| f64::from(a) * b).sum::<f64>())
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = weights.iter().sum();
            let mut o = vec![0.0f64; head_dim];
            for (pos, w) in weights.iter().enumerate() {
                for (od, vd) in o.iter_mut().zip(row(v, pos)) {
                    *od += w / sum * vd;
                }
            }
            for (d, od) in o.iter().enumerate() {
                out[(ti * n_heads + h) * head_dim + d] = *od as f32;
            }
        }
    }
    out
}
