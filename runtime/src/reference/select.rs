//! CPU reference of the selection scores.

/// Cosine similarity of each `d`-long row of `x` with `y` (PyTorch's: each side divided by
/// `max(‖·‖, 1e-8)`), in f64.
pub fn cosine_rows(x: &[f32], y: &[f32], d: usize) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|&a| f64::from(a) * f64::from(a)).sum::<f64>().sqrt().max(1e-8);
    let ny = norm(y);
    x.chunks(d).map(|r| (r.iter().zip(y).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() / (norm(r) * ny)) as f32).collect()
}
