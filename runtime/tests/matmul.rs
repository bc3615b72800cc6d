//! Matmul and GEMV kernels vs the CPU reference.

mod common;

use std::sync::Arc;

use common::{AWKWARD, all_with_cpu_plain, assert_close, f16_round, rand_vec};
use kestrel::ops::elementwise::Unary;
use kestrel::ops::gemv::{self, GemvVariant};
use kestrel::ops::matmul::{MatmulOptions, matmul, matmul_accumulate, matmul_baseline, matmul_gelu};
use kestrel::reference;
use kestrel::{Context, DType, Recorder, Tensor};

// f32: K products summed in f32 (the kernel) vs f64 (the reference); inputs in [-1, 1), so
// |error| grows like K·ε·|terms| ≈ 577 · 6e-8 ≈ 3.5e-5 at worst for these sizes.
const F32_ATOL: f32 = 1e-4;
const F32_RTOL: f32 = 1e-5;

fn run_case(ctx: &std::sync::Arc<kestrel::Context>, a_shape: &[usize], b_shape: &[usize], trans: bool, bias: bool, dt: DType, what: &str) {
    let an: usize = a_shape.iter().product();
    let bn: usize = b_shape.iter().product();
    let n = if trans { b_shape[b_shape.len() - 2] } else { b_shape[b_shape.len() - 1] };
    let mut a = rand_vec(an, an as u64 + 1);
    let mut b = rand_vec(bn, bn as u64 + 2);
    let bias_v = rand_vec(n, 3);
    if dt == DType::F16 {
        // The reference sees exactly the values the f16 tensors hold.
        a = f16_round(&a);
        b = f16_round(&b);
    }
    let ta = Tensor::from_f32_as(ctx, a_shape, &a, dt).unwrap();
    let tb = Tensor::from_f32_as(ctx, b_shape, &b, dt).unwrap();
    let tbias = Tensor::from_f32(ctx, &[n], &bias_v).unwrap();
    let mut rec = Recorder::new(ctx);
    let opts = MatmulOptions { bias: bias.then_some(&tbias), transpose_b: trans };
    let c = matmul(&mut rec, &ta, &tb, &opts).unwrap();
    rec.submit().unwrap();
    let want = reference::matmul::matmul(&a, a_shape, &b, b_shape, trans, bias.then_some(bias_v.as_slice()));
    // f16 storage: inputs are exactly representable (rounded above) and accumulation is f32,
    // so the f32 tolerance applies unchanged.
    assert_close(&c.to_vec_f32().unwrap(), &want, F32_ATOL, F32_RTOL, what);
}

#[test]
fn matmul_awkward_shapes_all_layouts() {
    for (cfg, ctx) in all_with_cpu_plain() {
        for &m in AWKWARD {
            for &(n, k) in &[(1usize, 7usize), (7, 33), (33, 197), (65, 64), (197, 4)] {
                for trans in [false, true] {
                    let bias = (m + n) % 2 == 0;
                    let b_shape = if trans { [n, k] } else { [k, n] };
                    run_case(&ctx, &[m, k], &b_shape, trans, bias, DType::F32, &format!("{cfg} f32 m{m} n{n} k{k} t{trans}"));
                }
            }
        }
    }
}

#[test]
fn matmul_f16_storage() {
    for (cfg, ctx) in all_with_cpu_plain() {
        for &(m, n, k) in &[(7usize, 33usize, 197usize), (64, 64, 64), (33, 1, 8), (2, 130, 577)] {
            for trans in [false, true] {
                let b_shape = if trans { [n, k] } else { [k, n] };
                run_case(&ctx, &[m, k], &b_shape, trans, true, DType::F16, &format!("{cfg} f16 m{m} n{n} k{k} t{trans}"));
            }
        }
    }
}

#[test]
fn matmul_batched_and_shared_b() {
    for (cfg, ctx) in all_with_cpu_plain() {
        run_case(&ctx, &[3, 33, 17], &[17, 7], false, true, DType::F32, &format!("{cfg} shared B"));
        run_case(&ctx, &[2, 3, 7, 33], &[2, 3, 33, 9], false, false, DType::F32, &format!("{cfg} batched B"));
        run_case(&ctx, &[5, 1, 64], &[5, 12, 64], true, false, DType::F32, &format!("{cfg} batched B^T m=1"));
        run_case(&ctx, &[1, 1, 576], &[1536, 576], true, true, DType::F32, &format!("{cfg} m=1 -> gemv"));
        // Large enough for the 8×8-per-invocation tile, with ragged edges.
        run_case(&ctx, &[130, 67], &[67, 257], false, true, DType::F32, &format!("{cfg} tile8"));
        run_case(&ctx, &[197, 64], &[129, 64], true, false, DType::F16, &format!("{cfg} tile8 f16 B^T"));
    }
}

#[test]
fn matmul_windows_split_large_operands() {
    // 1 MiB bindings: A 600×600 f32 (1.4 MiB), B 600×700 in both layouts (1.6 MiB) force
    // M, N and K windows, including K-chunk accumulation.
    for ctx in [common::small_bindings(), common::small_bindings_gpu_kernels()] {
        run_case(&ctx, &[600, 600], &[600, 700], false, true, DType::F32, "windowed row-major B");
        run_case(&ctx, &[600, 600], &[700, 600], true, true, DType::F32, "windowed transposed B");
        run_case(&ctx, &[2, 300, 600], &[600, 700], false, false, DType::F16, "windowed f16 batched");
    }
}

/// Which epilogue an [`epilogue_case`] checks.
#[derive(Clone, Copy, Debug)]
enum Epilogue {
    Gelu,
    Accumulate,
}

/// `GELU(A·B + bias)` or `C0 + A·B + bias` (C0 random, accumulated in place) vs the reference.
fn epilogue_case(ctx: &Arc<Context>, a_shape: &[usize], b_shape: &[usize], trans: bool, bias: bool, epi: Epilogue, what: &str) {
    let an: usize = a_shape.iter().product();
    let bn: usize = b_shape.iter().product();
    let n = if trans { b_shape[b_shape.len() - 2] } else { b_shape[b_shape.len() - 1] };
    let a = rand_vec(an, an as u64 + 5);
    let b = rand_vec(bn, bn as u64 + 6);
    let bias_v = rand_vec(n, 7);
    let ta = Tensor::from_f32(ctx, a_shape, &a).unwrap();
    let tb = Tensor::from_f32(ctx, b_shape, &b).unwrap();
    let tbias = Tensor::from_f32(ctx, &[n], &bias_v).unwrap();
    let opts = MatmulOptions { bias: bias.then_some(&tbias), transpose_b: trans };
    let prod = reference::matmul::matmul(&a, a_shape, &b, b_shape, trans, bias.then_some(bias_v.as_slice()));
    let mut rec = Recorder::new(ctx);
    let (got, want) = match epi {
        Epilogue::Gelu => (matmul_gelu(&mut rec, &ta, &tb, &opts).unwrap(), reference::elementwise::unary(&prod, Unary::GeluErf)),
        Epilogue::Accumulate => {
            let c0 = rand_vec(prod.len(), 8);
            let mut shape = a_shape[..a_shape.len() - 1].to_vec();
            shape.push(n);
            let tc = Tensor::from_f32(ctx, &shape, &c0).unwrap();
            matmul_accumulate(&mut rec, &ta, &tb, &opts, &tc).unwrap();
            (tc, c0.iter().zip(&prod).map(|(c, p)| c + p).collect())
        }
    };
    rec.submit().unwrap();
    // The matmul tolerance: GELU's slope is at most 1.13 and its erf approximation is within
    // 1.5e-7·|x|/2 (|x| < 20 here), below 1e-5; the accumulated |C0| <= 1 adds one f32 rounding.
    assert_close(&got.to_vec_f32().unwrap(), &want, F32_ATOL, F32_RTOL, what);
}

#[test]
fn matmul_epilogues_gelu_and_accumulate() {
    for (cfg, ctx) in all_with_cpu_plain() {
        // Each epilogue is a kernel variant to compile per layout: a few awkward shapes.
        for &m in &[7usize, 197] {
            for &(n, k) in &[(33usize, 197usize), (197, 4)] {
                for trans in [false, true] {
                    for epi in [Epilogue::Gelu, Epilogue::Accumulate] {
                        let b_shape = if trans { [n, k] } else { [k, n] };
                        let bias = (m + n + k) % 2 == 1;
                        epilogue_case(&ctx, &[m, k], &b_shape, trans, bias, epi, &format!("{cfg} {epi:?} m{m} n{n} k{k} t{trans}"));
                    }
                }
            }
        }
        epilogue_case(&ctx, &[2, 33, 17], &[17, 7], false, true, Epilogue::Accumulate, &format!("{cfg} batched +="));
        // N = 95: `matmul_rows`' 12-column tile (96-column blocks), ragged by one column.
        for epi in [Epilogue::Gelu, Epilogue::Accumulate] {
            epilogue_case(&ctx, &[197, 33], &[95, 33], true, true, epi, &format!("{cfg} {epi:?} 12-column tile"));
        }
        // One row with a transposed B: the matmul kernel, not GEMV (which has no epilogues).
        epilogue_case(&ctx, &[1, 33], &[7, 33], true, true, Epilogue::Accumulate, &format!("{cfg} m=1 +="));
    }
    // Windows over M, N and K (1 MiB bindings): the activation only after the last K window,
    // the accumulator added once.
    for ctx in [common::small_bindings(), common::small_bindings_gpu_kernels()] {
        for epi in [Epilogue::Gelu, Epilogue::Accumulate] {
            epilogue_case(&ctx, &[600, 600], &[600, 700], false, true, epi, &format!("windowed row-major B {epi:?}"));
            epilogue_case(&ctx, &[600, 600], &[700, 600], true, true, epi, &format!("windowed transposed B {epi:?}"));
        }
    }
}

#[test]
fn gemv_variants_match_reference() {
    for (cfg, ctx) in all_with_cpu_plain().into_iter().chain(common::subgroup_layouts()) {
        for &(n, k) in &[(1usize, 1usize), (7, 7), (33, 33), (197, 577), (577, 197), (130, 2048)] {
            for dt in [DType::F32, DType::F16] {
                let x = rand_vec(k, k as u64);
                let mut w = rand_vec(n * k, (n * k) as u64);
                if dt == DType::F16 {
                    w = f16_round(&w);
                }
                let bias = rand_vec(n, 11);
                let tx = Tensor::from_f32(&ctx, &[1, k], &x).unwrap();
                let tw = Tensor::from_f32_as(&ctx, &[n, k], &w, dt).unwrap();
                let tb = Tensor::from_f32(&ctx, &[n], &bias).unwrap();
                let want = reference::matmul::gemv(&x, &w, n, k, Some(&bias));
                let mut variants = vec![GemvVariant::Workgroup];
                if gemv::subgroup_ok(ctx.caps()) {
                    variants.push(GemvVariant::Subgroup);
                }
                for v in variants {
                    let mut rec = Recorder::new(&ctx);
                    let y = gemv::gemv(&mut rec, &tx, &tw, Some(&tb), v).unwrap();
                    rec.submit().unwrap();
                    assert_eq!(y.shape(), &[1, n]);
                    assert_close(&y.to_vec_f32().unwrap(), &want, F32_ATOL * 4.0, F32_RTOL, &format!("{cfg} gemv {v:?} {dt:?} n{n} k{k}"));
                }
            }
        }
    }
}

#[test]
fn subgroup_variant_is_refused_without_subgroups() {
    let ctx = common::fallback();
    let x = Tensor::from_f32(&ctx, &[4], &[1.0; 4]).unwrap();
    let w = Tensor::from_f32(&ctx, &[2, 4], &[1.0; 8]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(gemv::gemv(&mut rec, &x, &w, None, GemvVariant::Subgroup).is_err());
}

#[test]
fn baseline_matches_reference() {
    let ctx = common::fast();
    for &(m, n, k) in &[(1usize, 1usize, 1usize), (33, 7, 197), (64, 64, 64)] {
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        let ta = Tensor::from_f32(&ctx, &[m, k], &a).unwrap();
        let tb = Tensor::from_f32(&ctx, &[k, n], &b).unwrap();
        let mut rec = Recorder::new(&ctx);
        let c = matmul_baseline(&mut rec, &ta, &tb).unwrap();
        rec.submit().unwrap();
        let want = reference::matmul::matmul(&a, &[m, k], &b, &[k, n], false, None);
        assert_close(&c.to_vec_f32().unwrap(), &want, F32_ATOL, F32_RTOL, "baseline");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = common::fast();
    let a = Tensor::from_f32(&ctx, &[3, 4], &[0.0; 12]).unwrap();
    let b = Tensor::from_f32(&ctx, &[5, 6], &[0.0; 30]).unwrap();
    let ids = Tensor::from_u32(&ctx, &[4, 5], &[0; 20]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(matmul(&mut rec, &a, &b, &MatmulOptions::default()).is_err());
    assert!(matmul(&mut rec, &a, &b, &MatmulOptions { transpose_b: true, ..Default::default() }).is_err());
    assert!(matmul(&mut rec, &a, &ids, &MatmulOptions::default()).is_err());
    let bad_bias = Tensor::from_f32(&ctx, &[3], &[0.0; 3]).unwrap();
    let b_ok = Tensor::from_f32(&ctx, &[4, 6], &[0.0; 24]).unwrap();
    assert!(matmul(&mut rec, &a, &b_ok, &MatmulOptions { bias: Some(&bad_bias), transpose_b: false }).is_err());
    // Accumulators of the wrong shape or dtype, or sharing an operand's buffer.
    let ok = MatmulOptions::default();
    assert!(matmul_accumulate(&mut rec, &a, &b_ok, &ok, &Tensor::from_f32(&ctx, &[3, 5], &[0.0; 15]).unwrap()).is_err());
    assert!(matmul_accumulate(&mut rec, &a, &b_ok, &ok, &Tensor::from_u32(&ctx, &[3, 6], &[0; 18]).unwrap()).is_err());
    let square = Tensor::from_f32(&ctx, &[4, 4], &[0.0; 16]).unwrap();
    let a4 = Tensor::from_f32(&ctx, &[4, 4], &[0.0; 16]).unwrap();
    assert!(matmul_accumulate(&mut rec, &square, &a4, &ok, &square).is_err());
    assert!(matmul_accumulate(&mut rec, &a4, &square, &ok, &square.reshape(&[16]).unwrap().reshape(&[4, 4]).unwrap()).is_err());
    assert!(matmul_gelu(&mut rec, &a, &b, &ok).is_err());
    assert!(rec.is_empty());
}
