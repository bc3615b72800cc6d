//! The CPU-adapter GEMV kernel (`gemv_rows`, [`GemvVariant::Rows`]) vs the CPU reference: f32
//! and f16 weights, awkward shapes (K below, at and past whole 32-element chunks, rows not
//! 8-element aligned), bias, row windows, and error cases. The reduction variants are tested
//! in `matmul.rs`.

mod common;

use std::sync::Arc;

use common::{AWKWARD, all_with_cpu_plain, assert_close, f16_round, rand_vec};
use kestrel::ops::gemv::{GemvVariant, gemv};
use kestrel::{Context, DType, Recorder, Tensor, reference};

// K products summed in f32 (the kernel: 4 partial sums per row, then a tail) vs f64 (the
// reference); inputs in [-1, 1), so |error| ≲ K·ε·max|x·w| ≈ 2048 · 6e-8 ≈ 1.2e-4 at worst
// for these sizes (f16 weights: the reference sees the same f16-rounded values). 4e-4
// absolute + 1e-5 relative, as for the reduction GEMVs in matmul.rs.
const ATOL: f32 = 4e-4;
const RTOL: f32 = 1e-5;

fn check(ctx: &Arc<Context>, n: usize, k: usize, dt: DType, bias: bool, variant: GemvVariant, what: &str) {
    let x = rand_vec(k, k as u64 + 5);
    let mut w = rand_vec(n * k, (n * k) as u64 + 6);
    if dt == DType::F16 {
        w = f16_round(&w);
    }
    let b = rand_vec(n, n as u64 + 7);
    let want = reference::matmul::gemv(&x, &w, n, k, bias.then_some(b.as_slice()));
    let tx = Tensor::from_f32(ctx, &[1, k], &x).unwrap();
    let tw = Tensor::from_f32_as(ctx, &[n, k], &w, dt).unwrap();
    let tb = Tensor::from_f32(ctx, &[n], &b).unwrap();
    let mut rec = Recorder::new(ctx);
    let y = gemv(&mut rec, &tx, &tw, bias.then_some(&tb), variant).unwrap();
    rec.submit().unwrap();
    assert_eq!(y.shape(), &[1, n]);
    assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("{what} {variant:?} {dt:?} n{n} k{k} bias {bias}"));
}

#[test]
fn rows_kernel_matches_reference_at_awkward_shapes() {
    for (cfg, ctx) in all_with_cpu_plain() {
        for &n in AWKWARD {
            for &k in &[1usize, 7, 8, 32, 33, 197, 576, 577] {
                for dt in [DType::F32, DType::F16] {
                    check(&ctx, n, k, dt, n % 2 == 1, GemvVariant::Rows, cfg);
                }
            }
        }
        // Longer rows: many whole chunks plus a tail.
        check(&ctx, 40, 2048 + 36, DType::F16, true, GemvVariant::Rows, cfg);
        check(&ctx, 33, 1536, DType::F32, false, GemvVariant::Rows, cfg);
    }
}

#[test]
fn auto_uses_a_working_kernel() {
    for (cfg, ctx) in all_with_cpu_plain() {
        check(&ctx, 197, 576, DType::F16, true, GemvVariant::Auto, cfg);
        check(&ctx, 33, 577, DType::F32, false, GemvVariant::Auto, cfg);
    }
}

#[test]
fn rows_kernel_windows_rows_over_small_bindings() {
    for ctx in [common::small_bindings(), common::small_bindings_gpu_kernels()] {
        // 1 MiB bindings: W splits into row windows whose starts are not chunk-aligned.
        check(&ctx, 1000, 700, DType::F32, true, GemvVariant::Rows, "small bindings");
        check(&ctx, 1100, 1000, DType::F16, false, GemvVariant::Rows, "small bindings");
    }
}

#[test]
fn rows_kernel_rejects_bad_inputs() {
    let ctx = common::fast();
    let w = Tensor::from_f32(&ctx, &[4, 8], &[0.5; 32]).unwrap();
    let x_bad = Tensor::from_f32(&ctx, &[7], &[1.0; 7]).unwrap();
    let x_u32 = Tensor::from_u32(&ctx, &[8], &[1; 8]).unwrap();
    let x = Tensor::from_f32(&ctx, &[8], &[1.0; 8]).unwrap();
    let bias_bad = Tensor::from_f32(&ctx, &[3], &[0.0; 3]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(gemv(&mut rec, &x_bad, &w, None, GemvVariant::Rows).is_err());
    assert!(gemv(&mut rec, &x_u32, &w, None, GemvVariant::Rows).is_err());
    assert!(gemv(&mut rec, &x, &w, Some(&bias_bad), GemvVariant::Rows).is_err());
    assert!(gemv(&mut rec, &x, &x, None, GemvVariant::Rows).is_err());
}
