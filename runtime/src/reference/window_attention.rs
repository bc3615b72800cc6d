//! CPU reference of softmax attention within windows (f64 arithmetic).

/// Sizes of a window-attention problem.
#[derive(Clone, Copy, Debug)]
pub struct WindowShape {
    /// Windows.
    pub windows: usize,
    /// Attention heads.
    pub heads: usize,
    /// Channels per head `d`.
    pub head_dim: usize,
    /// Query tokens per window.
    pub tq: usize,
    /// Key/value tokens per window.
    pub tk: usize,
}

/// Attention of contiguous `q` `[nW·Tq, C]`, `k`, `v` `[nW·Tk, C]` (`C = heads · head_dim`):
/// `softmax(scale · q·k + bias[h] + mask[w mod nM]) v` per window `w` and head `h`, with `bias`
/// `[heads, Tq, Tk]` and `mask` `(values [nM, Tq, Tk], nM)`; `−inf` logits are masked and a
/// query with nothing left outputs zeros. Returns `[nW·Tq, C]`.
pub fn window_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<&[f32]>,
    mask: Option<(&[f32], usize)>,
    scale: f32,
    s: &WindowShape,
) -> Vec<f32> {
    let (d, tq, tk) = (s.head_dim, s.tq, s.tk);
    let c_all = s.heads * d;
    let mut out = vec![0.0f32; s.windows * tq * c_all];
    for w in 0..s.windows {
        for h in 0..s.heads {
            for t in 0..tq {
                let qrow = &q[(w * tq + t) * c_all + h * d..][..d];
                let logits: Vec<f64> = (0..tk)
                    .map(|j| {
                        let krow = &k[(w * tk + j) * c_all + h * d..][..d];
                        let dot: f64 = qrow.iter().zip(krow).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                        let mut l = f64::from(scale) * dot;
                        if let Some(b) = bias {
                            l += f64::from(b[(h * tq + t) * tk + j]);
                        }
                        if let Some((m, nm)) = mask {
                            l += f64::from(m[((w % nm) * tq + t) * tk + j]);
                        }
                        l
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let p: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f64 = p.iter().sum();
                for c in 0..d {
                    let acc: f64 = (0..tk).map(|j| p[j] * f64::from(v[(w * tk + j) * c_all + h * d + c])).sum();
                    out[(w * tq + t) * c_all + h * d + c] = (acc / sum) as f32;
                }
            }
        }
    }
    out
}
