//! CPU reference of matmul and GEMV (f64 accumulation).

/// `C = A·B (+ bias)` with the shapes [`crate::ops::matmul::matmul`] accepts: A
/// `[..batch, M, K]`, B `[K, N]` / `[N, K]` (transposed) or with A's batch dims.
pub fn matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], transpose_b: bool, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, k) = if a_shape.len() == 1 { (1, a_shape[0]) } else { (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]) };
    let batch: usize = a_shape.iter().rev().skip(2).product();
    let n = if transpose_b { b_shape[b_shape.len() - 2] } else { b_shape[b_shape.len() - 1] };
    let b_batched = b_shape.len() > 2;
    let mut c = vec![0f32; batch * m * n];
    for bi in 0..batch {
        let a0 = bi * m * k;
        let b0 = if b_batched { bi * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    let bv = if transpose_b { b[b0 + j * k + kk] } else { b[b0 + kk * n + j] };
                    s += f64::from(a[a0 + i * k + kk]) * f64::from(bv);
                }
                if let Some(bias) = bias {
                    s += f64::from(bias[j]);
                }
                c[bi * m * n + i * n + j] = s as f32;
            }
        }
    }
    c
}

/// `y = W·x (+ bias)` with W `[N, K]`.
pub fn gemv(x: &[f32], w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
    matmul(x, &[1, k], w, &[n, k], true, bias)
}
