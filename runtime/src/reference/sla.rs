//! CPU reference of Simplified Linear Attention (f64 arithmetic), written after the official
//! SLAB `SimplifiedLinearAttention.forward`, including its choice of einsum order.

/// Sizes of an SLA problem.
#[derive(Clone, Copy, Debug)]
pub struct SlaShape {
    /// Independent sequences (images or windows).
    pub batch: usize,
    /// Attention heads.
    pub heads: usize,
    /// Channels per head `d`.
    pub head_dim: usize,
    /// Rows of the token image.
    pub height: usize,
    /// Columns of the token image (`height · width` query tokens per sequence).
    pub width: usize,
    /// Key/value tokens per sequence.
    pub kv_tokens: usize,
    /// Side of the depthwise kernel.
    pub ksize: usize,
}

/// SLA of contiguous `q` `[B·N, C]`, `k`, `v` `[B·Nk, C]` (`C = heads · head_dim`), positional
/// encoding `pos` `[Nk, C]` added to k, depthwise weights `[d, K·K]` and bias `[d]`; returns
/// `[B·N, C]`. v is linearly interpolated to N tokens for the convolution when `Nk ≠ N`, with
/// the source index computed in f32 as PyTorch does.
pub fn sla(q: &[f32], k: &[f32], v: &[f32], pos: Option<&[f32]>, dwc_weight: &[f32], dwc_bias: &[f32], s: &SlaShape) -> Vec<f32> {
    let (d, n, nk, ks) = (s.head_dim, s.height * s.width, s.kv_tokens, s.ksize);
    let c_all = s.heads * d;
    let mut out = vec![0.0f32; s.batch * n * c_all];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let at = |t: &[f32], row: usize, a: usize| f64::from(t[row * c_all + h * d + a]);
            let qr: Vec<Vec<f64>> = (0..n).map(|i| (0..d).map(|a| at(q, b * n + i, a).max(0.0)).collect()).collect();
            let kr: Vec<Vec<f64>> =
                (0..nk).map(|j| (0..d).map(|a| (at(k, b * nk + j, a) + pos.map_or(0.0, |p| at(p, j, a))).max(0.0)).collect()).collect();
            let vv: Vec<Vec<f64>> = (0..nk).map(|j| (0..d).map(|a| at(v, b * nk + j, a)).collect()).collect();
            let ksum: Vec<f64> = (0..d).map(|a| kr.iter().map(|r| r[a]).sum()).collect();
            let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
            // The official code's einsum order: (q kᵀ) v when that is cheaper, else q (kᵀ v).
            let kv_first = n * nk * (2 * d) > d * d * (n + nk);
            let kv: Vec<Vec<f64>> = if kv_first {
                (0..d).map(|a| (0..d).map(|c| (0..nk).map(|j| kr[j][a] * vv[j][c]).sum()).collect()).collect()
            } else {
                Vec::new()
            };
            let vimg = interpolate(&vv, n);
            for i in 0..n {
                let z = 1.0 / (dot(&qr[i], &ksum) + 1e-6);
                let (y, x) = (i / s.width, i % s.width);
                for c in 0..d {
                    let attn = if kv_first {
                        (0..d).map(|a| qr[i][a] * kv[a][c]).sum::<f64>()
                    } else {
                        (0..nk).map(|j| dot(&qr[i], &kr[j]) * vv[j][c]).sum::<f64>()
                    };
                    let mut conv = f64::from(dwc_bias[c]);
                    for ky in 0..ks {
                        for kx in 0..ks {
                            let (yy, xx) = ((y + ky) as isize - (ks / 2) as isize, (x + kx) as isize - (ks / 2) as isize);
                            if yy < 0 || xx < 0 || yy as usize >= s.height || xx as usize >= s.width {
                                continue;
                            }
                            let tok = yy as usize * s.width + xx as usize;
                            conv += f64::from(dwc_weight[c * ks * ks + ky * ks + kx]) * vimg[tok][c];
                        }
                    }
                    out[(b * n + i) * c_all + h * d + c] = (attn * z + conv) as f32;
                }
            }
        }
    }
    out
}

/// `F.interpolate(rows, size=n, mode='linear', align_corners=False)` over the row index (rows
/// returned unchanged when there are already `n`).
fn interpolate(rows: &[Vec<f64>], n: usize) -> Vec<Vec<f64>> {
    let len = rows.len();
    if len == n {
        return rows.to_vec();
    }
    let scale = len as f32 / n as f32;
    (0..n)
        .map(|i| {
            let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let j0 = (src as usize).min(len - 1);
            let j1 = (j0 + 1).min(len - 1);
            let l1 = f64::from(src - j0 as f32);
            rows[j0].iter().zip(&rows[j1]).map(|(a, b)| (1.0 - l1) * a + l1 * b).collect()
        })
        .collect()
}
