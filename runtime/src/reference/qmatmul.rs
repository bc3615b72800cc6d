//! CPU reference of the weight-quantised products: the plain product with the dequantised
//! weights (f64 accumulation).

/// `C = A·Wᵀ (+ bias)` with A `[..batch, M, K]` and the dequantised weights `w_deq` `[N, K]`
/// (from [`crate::quant::PackedWeights::dequantize`]).
pub fn qmatmul(a: &[f32], k: usize, w_deq: &[f32], n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let m = a.len() / k;
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for kk in 0..k {
                s += f64::from(a[i * k + kk]) * f64::from(w_deq[j * k + kk]);
            }
            if let Some(bias) = bias {
                s += f64::from(bias[j]);
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}
