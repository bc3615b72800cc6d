//! Tensors larger than one storage binding: a ~300 MiB weight through a matmul and ~300 MiB
//! operands through an elementwise op, at real size. The binding limit is forced to 128 MiB
//! (lavapipe's and many phones' own), so the windows are the same on every device, however
//! large its real limit (desktop GPUs bind up to 2–4 GiB).

mod common;

use std::sync::{Arc, OnceLock};

use common::{assert_close, rand_vec};
use kestrel::ops::elementwise;
use kestrel::ops::matmul::{MatmulOptions, matmul};
use kestrel::{Context, ContextOptions, Recorder, Tensor};

/// The forced storage-binding limit.
const BINDING: u64 = 128 << 20;

/// The fast paths with at most [`BINDING`] bytes per storage binding.
fn ctx() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| {
        let opts = ContextOptions { max_binding_override: Some(BINDING), ..ContextOptions::from_env() };
        Context::new(&opts).expect("cannot create a GPU context")
    })
    .clone()
}

const K: usize = 1024;
/// 76 800 × 1024 f32 = 300 MiB.
const N: usize = 76_800;

#[test]
fn three_hundred_mib_weight_through_matmul() {
    let ctx = ctx();
    assert!(ctx.caps().max_storage_binding <= BINDING, "the binding limit is forced");
    assert!((N * K * 4) as u64 > 2 * BINDING, "the weight must need three windows");
    let x = rand_vec(K, 1);
    let w = rand_vec(N * K, 2);
    let tx = Tensor::from_f32(&ctx, &[1, K], &x).unwrap();
    let tw = Tensor::from_f32(&ctx, &[N, K], &w).unwrap();
    let mut rec = Recorder::new(&ctx);
    let y = matmul(&mut rec, &tx, &tw, &MatmulOptions { bias: None, transpose_b: true }).unwrap();
    assert!(rec.len() >= 3, "a 300 MiB weight needs at least three windows, got {}", rec.len());
    rec.submit().unwrap();
    let got = y.to_vec_f32().unwrap();
    // Spot-check rows spread over every window (a full f64 reference would dominate run time).
    let rows: Vec<usize> = (0..N).step_by(997).chain([N / 3, N / 3 + 1, 2 * N / 3, N - 1]).collect();
    let want: Vec<f32> = rows.iter().map(|&n| (0..K).map(|k| f64::from(x[k]) * f64::from(w[n * K + k])).sum::<f64>() as f32).collect();
    let got_rows: Vec<f32> = rows.iter().map(|&n| got[n]).collect();
    // f32 dot products of length 1024 with terms in [-1, 1): |error| well below 1e-4.
    assert_close(&got_rows, &want, 1e-4, 1e-5, "300 MiB GEMV");
}

#[test]
fn three_hundred_mib_elementwise() {
    let ctx = ctx();
    let n = N * K;
    let a = rand_vec(n, 3);
    let b = rand_vec(n, 4);
    let ta = Tensor::from_f32(&ctx, &[N, K], &a).unwrap();
    let tb = Tensor::from_f32(&ctx, &[N, K], &b).unwrap();
    let mut rec = Recorder::new(&ctx);
    let c = elementwise::mul(&mut rec, &ta, &tb).unwrap();
    assert!(rec.len() >= 3);
    rec.submit().unwrap();
    let got = c.to_vec_f32().unwrap();
    // One f32 multiply per element: exact against the host's f32 multiply.
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_close(&got, &want, 0.0, 0.0, "300 MiB mul");
}
