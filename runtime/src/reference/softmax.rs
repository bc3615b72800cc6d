//! CPU reference of softmax over the last dimension (f64 arithmetic).

/// `softmax(scale · x + bias)` over the last dimension of `x` (`shape` = `[.., rows, cols]`).
/// `bias` is `(values, shape)` broadcast to `shape` with numpy rules. With `causal`, column `j`
/// of row `i` is masked when `j > i + cols − rows`; masked and `−inf` logits give 0, and a row
/// with nothing left gives zeros.
pub fn softmax(x: &[f32], shape: &[usize], causal: bool, bias: Option<(&[f32], &[usize])>, scale: f32) -> Vec<f32> {
    let cols = shape[shape.len() - 1];
    let rows = if shape.len() >= 2 { shape[shape.len() - 2] } else { 1 };
    // The bias element of output element `g` (right-aligned, size-1 dimensions broadcast).
    let bias_at = |g: usize| -> f64 {
        let Some((b, bs)) = bias else { return 0.0 };
        let (mut rem, mut idx, mut stride) = (g, 0, 1);
        for d in (0..shape.len()).rev() {
            let c = rem % shape[d];
            rem /= shape[d];
            if d + bs.len() >= shape.len() {
                let bd = bs[d + bs.len() - shape.len()];
                if bd != 1 {
                    idx += c * stride;
                }
                stride *= bd;
            }
        }
        f64::from(b[idx])
    };
    let mut out = vec![0.0f32; x.len()];
    for (r, row) in x.chunks(cols).enumerate() {
        let i = (r % rows) as i64;
        let logits: Vec<Option<f64>> = row
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                let l = f64::from(scale) * f64::from(v) + bias_at(r * cols + j);
                let masked = (causal && j as i64 > i + cols as i64 - rows as i64) || l == f64::NEG_INFINITY;
                (!masked).then_some(l)
            })
            .collect();
        let max = logits.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().flatten().map(|l| (l - max).exp()).sum();
        for (o, l) in out[r * cols..(r + 1) * cols].iter_mut().zip(&logits) {
            *o = l.map_or(0.0, |l| ((l - max).exp() / sum) as f32);
        }
    }
    out
}

/// [`softmax`] of each row of `x` (`shape` = `[.., cols]`) with every entry but the first
/// holding the row's maximum set to 0: a mixture of experts' top-1 routing weights.
pub fn softmax_top1(x: &[f32], shape: &[usize]) -> Vec<f32> {
    let cols = shape[shape.len() - 1];
    let mut out = softmax(x, shape, false, None, 1.0);
    for (row, o) in x.chunks(cols).zip(out.chunks_mut(cols)) {
        let winner = (0..cols).fold(0, |best, j| if row[j] > row[best] { j } else { best });
        for (j, v) in o.iter_mut().enumerate() {
            if j != winner {
                *v = 0.0;
            }
        }
    }
    out
}
