//! CPU references of the normalisation ops (rows are the last dimension; f64 accumulation).

/// LayerNorm of every `cols`-long row: `(x − mean) / √(var + eps) · gamma + beta` (biased
/// variance, two-pass).
pub fn layer_norm(x: &[f32], cols: usize, gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            row.iter().enumerate().map(move |(j, &v)| {
                let g = gamma.map_or(1.0, |g| f64::from(g[j]));
                let b = beta.map_or(0.0, |b| f64::from(b[j]));
                ((f64::from(v) - mean) * inv * g + b) as f32
            })
        })
        .collect()
}

/// RMSNorm of every `cols`-long row: `x / √(mean(x²) + eps) · gamma`.
pub fn rms_norm(x: &[f32], cols: usize, gamma: Option<&[f32]>, eps: f32) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / row.len() as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            row.iter().enumerate().map(move |(j, &v)| (f64::from(v) * inv * gamma.map_or(1.0, |g| f64::from(g[j]))) as f32)
        })
        .collect()
}

/// `x · scale[c] + shift[c]` with `c` the index in the last dimension (`scale.len()` long).
pub fn channel_affine(x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let c = scale.len();
    x.iter().enumerate().map(|(i, &v)| (f64::from(v) * f64::from(scale[i % c]) + f64::from(shift[i % c])) as f32).collect()
}
