//! Normalisation kernels (LayerNorm, RMSNorm, channel affine) vs the CPU reference.

mod common;

use common::{all, assert_close, rand_vec};
use kestrel::ops::norm;
use kestrel::reference;
use kestrel::{KestrelError, Recorder, Tensor};

/// `[.., C]` shapes: a lone element, awkward row counts and channel counts (including rows longer
/// than the workgroup — 256 invocations on GPU kernels, 32 on CPU ones — e.g. 1000 and 4099, which
/// loop), and a rank-3 tensor.
const SHAPES: &[&[usize]] = &[&[1, 1], &[7, 7], &[33, 33], &[3, 197], &[577, 7], &[5, 577], &[2, 1000], &[3, 4099], &[2, 33, 197], &[197]];

// f32 tolerance: each row's statistics are f32 sums of ≤ 4099 terms reduced as a tree (error
// ~log2(C)·2⁻²⁴ relative), and the outputs are O(1) (normalised, gamma/beta in [-1, 2)); the
// reference accumulates in f64.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;
const EPS: f32 = 1e-5;

fn upload(ctx: &std::sync::Arc<kestrel::Context>, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, shape, data).unwrap()
}

#[test]
fn layer_norm_matches_reference() {
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let n: usize = shape.iter().product();
            let c = *shape.last().unwrap();
            // Non-zero mean and a scale, so centring and the variance both matter.
            let x: Vec<f32> = rand_vec(n, 100 + i as u64).iter().map(|v| 3.0 * v + 0.5).collect();
            let gamma: Vec<f32> = rand_vec(c, 200 + i as u64).iter().map(|v| v * 1.5 + 0.5).collect();
            let beta = rand_vec(c, 300 + i as u64);
            let tx = upload(&ctx, shape, &x);
            let tg = upload(&ctx, &[c], &gamma);
            let tb = upload(&ctx, &[c], &beta);
            for (g, b) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut rec = Recorder::new(&ctx);
                let y = norm::layer_norm(&mut rec, &tx, g.then_some(&tg), b.then_some(&tb), EPS).unwrap();
                rec.submit().unwrap();
                assert_eq!(y.shape(), *shape);
                let want = reference::norm::layer_norm(&x, c, g.then_some(gamma.as_slice()), b.then_some(beta.as_slice()), EPS);
                assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("{cfg} layer_norm {shape:?} gamma={g} beta={b}"));
            }
        }
    }
}

#[test]
fn layer_norm_variance_is_stable_under_a_large_offset() {
    // x = 1000 + u, u ∈ [-1, 1): E[x²] − E[x]² in f32 would lose the variance (~0.33) almost
    // entirely. Tolerance: the inputs themselves are f32 with ulp(1000) = 6.1e-5, so x − mean
    // carries ~1e-4 absolute error even when done perfectly; divided by the std (0.58), outputs
    // may be off by a few 1e-4. 1e-3 admits that and rejects the naive formula (errors ≫ 1e-2).
    for (cfg, ctx) in all() {
        for &c in &[577, 4099] {
            let x: Vec<f32> = rand_vec(2 * c, c as u64).iter().map(|v| 1000.0 + v).collect();
            let tx = upload(&ctx, &[2, c], &x);
            let mut rec = Recorder::new(&ctx);
            let y = norm::layer_norm(&mut rec, &tx, None, None, 0.0).unwrap();
            rec.submit().unwrap();
            let want = reference::norm::layer_norm(&x, c, None, None, 0.0);
            assert_close(&y.to_vec_f32().unwrap(), &want, 1e-3, 0.0, &format!("{cfg} offset layer_norm C={c}"));
        }
    }
}

#[test]
fn rms_norm_matches_reference() {
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let n: usize = shape.iter().product();
            let c = *shape.last().unwrap();
            let x: Vec<f32> = rand_vec(n, 400 + i as u64).iter().map(|v| 2.0 * v + 0.25).collect();
            let gamma: Vec<f32> = rand_vec(c, 500 + i as u64).iter().map(|v| v + 1.0).collect();
            let tx = upload(&ctx, shape, &x);
            let tg = upload(&ctx, &[c], &gamma);
            for g in [false, true] {
                let mut rec = Recorder::new(&ctx);
                let y = norm::rms_norm(&mut rec, &tx, g.then_some(&tg), 1e-6).unwrap();
                rec.submit().unwrap();
                let want = reference::norm::rms_norm(&x, c, g.then_some(gamma.as_slice()), 1e-6);
                assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("{cfg} rms_norm {shape:?} gamma={g}"));
            }
        }
    }
}

#[test]
fn channel_affine_matches_reference() {
    for (cfg, ctx) in all() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let n: usize = shape.iter().product();
            let c = *shape.last().unwrap();
            let x = rand_vec(n, 600 + i as u64);
            let scale = rand_vec(c, 700 + i as u64);
            let shift = rand_vec(c, 800 + i as u64);
            let mut rec = Recorder::new(&ctx);
            let y =
                norm::channel_affine(&mut rec, &upload(&ctx, shape, &x), &upload(&ctx, &[c], &scale), &upload(&ctx, &[c], &shift)).unwrap();
            rec.submit().unwrap();
            // One f32 multiply-add per element: within 1 ulp-ish of the f64 result.
            assert_close(
                &y.to_vec_f32().unwrap(),
                &reference::norm::channel_affine(&x, &scale, &shift),
                1e-6,
                1e-6,
                &format!("{cfg} affine {shape:?}"),
            );
        }
    }
}

#[test]
fn row_chunks_cover_tensors_larger_than_a_binding() {
    // 1 MiB bindings: [300, 2049] f32 (2.3 MiB) takes three dispatches with unaligned starts.
    let ctx = common::small_bindings();
    let (r, c) = (300, 2049);
    let x: Vec<f32> = rand_vec(r * c, 9).iter().map(|v| v * 4.0 - 1.0).collect();
    let gamma = rand_vec(c, 10);
    let tx = upload(&ctx, &[r, c], &x);
    let tg = upload(&ctx, &[c], &gamma);
    let mut rec = Recorder::new(&ctx);
    let ln = norm::layer_norm(&mut rec, &tx, Some(&tg), Some(&tg), EPS).unwrap();
    let rms = norm::rms_norm(&mut rec, &tx, Some(&tg), EPS).unwrap();
    let aff = norm::channel_affine(&mut rec, &tx, &tg, &tg).unwrap();
    assert!(rec.len() >= 9, "expected chunked dispatches, got {}", rec.len());
    rec.submit().unwrap();
    let want = reference::norm::layer_norm(&x, c, Some(&gamma), Some(&gamma), EPS);
    assert_close(&ln.to_vec_f32().unwrap(), &want, ATOL, RTOL, "chunked layer_norm");
    assert_close(&rms.to_vec_f32().unwrap(), &reference::norm::rms_norm(&x, c, Some(&gamma), EPS), ATOL, RTOL, "chunked rms_norm");
    let want = reference::norm::channel_affine(&x, &gamma, &gamma);
    assert_close(&aff.to_vec_f32().unwrap(), &want, 1e-6, 1e-6, "chunked affine");
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let x = upload(&ctx, &[4, 8], &[0.5; 32]);
    let g8 = upload(&ctx, &[8], &[1.0; 8]);
    let g7 = upload(&ctx, &[7], &[1.0; 7]);
    let g2d = upload(&ctx, &[1, 8], &[1.0; 8]);
    let h = Tensor::from_f32_as_f16(&ctx, &[4, 8], &[0.5; 32]).unwrap();
    let h8 = Tensor::from_f32_as_f16(&ctx, &[8], &[1.0; 8]).unwrap();
    let empty = upload(&ctx, &[4, 0], &[]);
    let scalar = upload(&ctx, &[], &[1.0]);
    let mut rec = Recorder::new(&ctx);
    let shape_err = |r: kestrel::Result<Tensor>| matches!(r, Err(KestrelError::Shape { .. }));
    assert!(shape_err(norm::layer_norm(&mut rec, &x, Some(&g7), None, EPS)));
    assert!(shape_err(norm::layer_norm(&mut rec, &x, None, Some(&g2d), EPS)));
    assert!(shape_err(norm::rms_norm(&mut rec, &x, Some(&g7), EPS)));
    assert!(shape_err(norm::channel_affine(&mut rec, &x, &g8, &g7)));
    assert!(shape_err(norm::layer_norm(&mut rec, &empty, None, None, EPS)));
    assert!(shape_err(norm::rms_norm(&mut rec, &scalar, None, EPS)));
    assert!(matches!(norm::layer_norm(&mut rec, &h, None, None, EPS), Err(KestrelError::UnsupportedDtype { .. })));
    assert!(matches!(norm::rms_norm(&mut rec, &x, Some(&h8), EPS), Err(KestrelError::UnsupportedDtype { .. })));
    assert!(matches!(norm::channel_affine(&mut rec, &h, &g8, &g8), Err(KestrelError::UnsupportedDtype { .. })));
    for eps in [-1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(norm::layer_norm(&mut rec, &x, None, None, eps), Err(KestrelError::InvalidArgument { .. })));
    }
    assert!(rec.is_empty(), "failed ops must not record dispatches");
    // A single row larger than a (1 MiB) binding cannot be windowed.
    let small = common::small_bindings();
    let long = upload(&small, &[1, 300_000], &vec![0.0; 300_000]);
    let mut rec = Recorder::new(&small);
    assert!(matches!(norm::rms_norm(&mut rec, &long, None, EPS), Err(KestrelError::InvalidArgument { .. })));
}
