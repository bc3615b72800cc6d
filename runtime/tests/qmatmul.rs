//! Weight-quantised GEMV / matmul kernels vs the CPU reference on the dequantised weights, vs
//! the f32 product (cosine), GGUF block import, and error cases.

mod common;

use std::sync::Arc;

use common::{AWKWARD, all, assert_close, rand_vec};
use kestrel::ops::gemv::{self, GemvVariant};
use kestrel::ops::qmatmul::{qgemv, qgemv_accumulate, qmatmul};
use kestrel::quant::{PackedWeights, QuantScheme, QuantStorage, QuantTensor};
use kestrel::weights::WeightDType;
use kestrel::{Context, KestrelError, Recorder, Tensor, reference};

// Against the reference on the *dequantised* weights the only difference is f32 vs f64
// summation. The kernels sum d·Σq·x + c·Σx per block, where |q| ≤ 15 (4-bit) or 127 (8-bit,
// with d correspondingly smaller): partial sums are up to ~16× larger than the terms they
// stand for, so the worst-case rounding is ≈ K·16·ε·max|w·x| ≈ 577·16·6e-8 ≈ 6e-4·max|w| with
// |w| ≤ ~1 and x in [-1, 1); in practice errors are random-walk (≈ √K) and far smaller.
// 2e-4 absolute + 1e-5 relative leaves ~10× margin over the errors observed.
const ATOL: f32 = 2e-4;
const RTOL: f32 = 1e-5;

/// GEMV shapes (N, K): every awkward size in both roles; K a multiple of 32 for GGUF schemes.
fn gemv_shapes(s: QuantScheme) -> &'static [(usize, usize)] {
    if s.needs_whole_blocks() {
        &[(1, 32), (7, 576), (33, 96), (197, 32), (577, 576), (197, 96)]
    } else {
        &[(1, 1), (1, 577), (7, 33), (33, 7), (197, 577), (577, 197), (577, 1), (33, 33), (7, 197)]
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Quantises `w` with `scheme`, through GGUF block bytes for the GGUF schemes (so the import
/// path is what the kernels read).
fn upload(ctx: &Arc<Context>, scheme: QuantScheme, w: &[f32], n: usize, k: usize) -> (QuantTensor, Vec<f32>) {
    let packed = PackedWeights::quantize(scheme, w, &[n, k]).unwrap();
    let t = match scheme.gguf_block_bytes() {
        Some(_) => QuantTensor::from_gguf_blocks(ctx, scheme, &[n, k], &packed.to_gguf_blocks().unwrap()).unwrap(),
        None => QuantTensor::upload(ctx, &packed).unwrap(),
    };
    (t, packed.dequantize())
}

fn gemv_variants(ctx: &Context) -> Vec<GemvVariant> {
    let mut v = vec![GemvVariant::Workgroup, GemvVariant::Rows];
    if gemv::subgroup_ok(ctx.caps()) {
        v.push(GemvVariant::Subgroup);
    }
    v
}

#[test]
fn qgemv_every_scheme_awkward_shapes() {
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for scheme in QuantScheme::ALL {
            for &(n, k) in gemv_shapes(scheme) {
                {
                    let w = rand_vec(n * k, (n * 1000 + k) as u64);
                    let x = rand_vec(k, k as u64 + 7);
                    let bias = rand_vec(n, 5);
                    let use_bias = (n + k) % 2 == 1;
                    let (tw, deq) = upload(&ctx, scheme, &w, n, k);
                    let tx = Tensor::from_f32(&ctx, &[1, k], &x).unwrap();
                    let tb = Tensor::from_f32(&ctx, &[n], &bias).unwrap();
                    let want = reference::qmatmul::qmatmul(&x, k, &deq, n, use_bias.then_some(bias.as_slice()));
                    for v in gemv_variants(&ctx) {
                        let mut rec = Recorder::new(&ctx);
                        let y = qgemv(&mut rec, &tx, &tw, use_bias.then_some(&tb), v).unwrap();
                        rec.submit().unwrap();
                        assert_eq!(y.shape(), &[1, n]);
                        let what = format!("{cfg} qgemv {v:?} {} n{n} k{k}", scheme.name());
                        assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &what);
                    }
                }
            }
        }
    }
}

/// Long rows: llvmpipe silently stops an invocation after 65 535 loop iterations, so per-lane
/// trip counts must stay bounded; K = 8192 (and a K tail) must still give the full dot product.
/// Same tolerances as above: the observed errors grow like √K, i.e. ~4× those at K = 577, still
/// inside the stated margin.
#[test]
fn qgemv_long_rows() {
    for (cfg, ctx) in all() {
        for (scheme, n, k) in [(QuantScheme::Q8_0, 37, 8192), (QuantScheme::Q4_1, 19, 8192), (QuantScheme::W4, 5, 8191)] {
            let w = rand_vec(n * k, 11);
            let x = rand_vec(k, 12);
            let (tw, deq) = upload(&ctx, scheme, &w, n, k);
            let tx = Tensor::from_f32(&ctx, &[k], &x).unwrap();
            let want = reference::qmatmul::qmatmul(&x, k, &deq, n, None);
            for v in gemv_variants(&ctx) {
                let mut rec = Recorder::new(&ctx);
                let y = qgemv(&mut rec, &tx, &tw, None, v).unwrap();
                rec.submit().unwrap();
                let what = format!("{cfg} qgemv {v:?} {} n{n} k{k}", scheme.name());
                assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &what);
            }
        }
    }
}

/// Long rows through the matrix kernels: K = 8192 (and a K tail) with M and N off every tile
/// size. Same tolerances as `qgemv_long_rows` (errors grow like √K, inside the stated margin).
#[test]
fn qmatmul_long_rows() {
    for (cfg, ctx) in all() {
        for (scheme, m, n, k) in [(QuantScheme::Q4_1, 9, 13, 8192), (QuantScheme::W8, 3, 37, 8191)] {
            let w = rand_vec(n * k, 13);
            let a = rand_vec(m * k, 14);
            let (tw, deq) = upload(&ctx, scheme, &w, n, k);
            let ta = Tensor::from_f32(&ctx, &[m, k], &a).unwrap();
            let want = reference::qmatmul::qmatmul(&a, k, &deq, n, None);
            let mut rec = Recorder::new(&ctx);
            let c = qmatmul(&mut rec, &ta, &tw, None).unwrap();
            rec.submit().unwrap();
            let what = format!("{cfg} qmatmul {} m{m} n{n} k{k}", scheme.name());
            assert_close(&c.to_vec_f32().unwrap(), &want, ATOL, RTOL, &what);
        }
    }
}

/// On CPU adapters a K whose block loop would pass llvmpipe's 65 535 loop iterations per
/// invocation is a typed error, not a silently truncated product.
#[test]
fn qmatmul_rows_loop_limit_is_an_error() {
    for (_, ctx) in all() {
        if !ctx.caps().cpu {
            continue;
        }
        let k = 7281 * 32;
        let w = QuantTensor::quantize(&ctx, QuantScheme::W8, &vec![0.5; k], &[1, k]).unwrap();
        let a = Tensor::from_f32(&ctx, &[2, k], &vec![0.0; 2 * k]).unwrap();
        let mut rec = Recorder::new(&ctx);
        assert!(matches!(qmatmul(&mut rec, &a, &w, None), Err(KestrelError::InvalidArgument { .. })));
        assert!(rec.is_empty());
    }
}

#[test]
fn qmatmul_every_scheme_awkward_shapes() {
    // The tiled GPU kernel reading textures too (the other configurations cover the CPU
    // kernels with textures and both kernel sets with buffers).
    for (cfg, ctx) in all().into_iter().chain([("gpu-kernels-textures", common::gpu_kernels_textures())]) {
        for scheme in QuantScheme::ALL {
            let shapes: &[(usize, usize)] = if scheme.needs_whole_blocks() {
                &[(1, 32), (7, 96), (33, 64), (197, 576), (65, 32)]
            } else {
                &[(1, 7), (7, 33), (33, 197), (197, 577), (65, 64)]
            };
            for &m in AWKWARD {
                for &(n, k) in shapes {
                    let w = rand_vec(n * k, (n * 31 + k) as u64);
                    let a = rand_vec(m * k, (m * 7 + k) as u64);
                    let bias = rand_vec(n, 9);
                    let use_bias = (m + n) % 2 == 0;
                    let (tw, deq) = upload(&ctx, scheme, &w, n, k);
                    let ta = Tensor::from_f32(&ctx, &[m, k], &a).unwrap();
                    let tb = Tensor::from_f32(&ctx, &[n], &bias).unwrap();
                    let mut rec = Recorder::new(&ctx);
                    let c = qmatmul(&mut rec, &ta, &tw, use_bias.then_some(&tb)).unwrap();
                    rec.submit().unwrap();
                    assert_eq!(c.shape(), &[m, n]);
                    let want = reference::qmatmul::qmatmul(&a, k, &deq, n, use_bias.then_some(bias.as_slice()));
                    let what = format!("{cfg} qmatmul {} m{m} n{n} k{k}", scheme.name());
                    assert_close(&c.to_vec_f32().unwrap(), &want, ATOL, RTOL, &what);
                }
            }
        }
    }
}

#[test]
fn qmatmul_batched_a() {
    for (cfg, ctx) in all() {
        let (n, k) = (19, 70);
        let w = rand_vec(n * k, 1);
        let a = rand_vec(2 * 3 * k, 2);
        let (tw, deq) = upload(&ctx, QuantScheme::W4Asym, &w, n, k);
        let ta = Tensor::from_f32(&ctx, &[2, 3, k], &a).unwrap();
        let mut rec = Recorder::new(&ctx);
        let c = qmatmul(&mut rec, &ta, &tw, None).unwrap();
        rec.submit().unwrap();
        assert_eq!(c.shape(), &[2, 3, n]);
        assert_close(&c.to_vec_f32().unwrap(), &reference::qmatmul::qmatmul(&a, k, &deq, n, None), ATOL, RTOL, cfg);
    }
}

#[test]
fn close_to_the_f32_product() {
    // Random weights in [-1, 1): the cosine between the quantised and the f32 products.
    // Measures quantisation error, not kernel error (that is bounded above).
    let (m, n, k) = (4, 197, 576);
    let w = rand_vec(n * k, 21);
    let a = rand_vec(m * k, 22);
    let exact = reference::matmul::matmul(&a, &[m, k], &w, &[n, k], true, None);
    for (cfg, ctx) in all() {
        for scheme in QuantScheme::ALL {
            let min_cos = if scheme.bits() == 8 { 0.9999 } else { 0.995 };
            let (tw, _) = upload(&ctx, scheme, &w, n, k);
            let ta = Tensor::from_f32(&ctx, &[m, k], &a).unwrap();
            let tx = Tensor::from_f32(&ctx, &[k], &a[..k]).unwrap();
            let mut rec = Recorder::new(&ctx);
            let c = qmatmul(&mut rec, &ta, &tw, None).unwrap();
            let y = qgemv(&mut rec, &tx, &tw, None, GemvVariant::Auto).unwrap();
            rec.submit().unwrap();
            let cm = cosine(&c.to_vec_f32().unwrap(), &exact);
            let cv = cosine(&y.to_vec_f32().unwrap(), &exact[..n]);
            assert!(cm >= min_cos && cv >= min_cos, "{cfg} {}: cosine {cm} / {cv} < {min_cos}", scheme.name());
        }
    }
}

#[test]
fn windows_split_large_weights() {
    // 1 MiB bindings: W8 [1100, 1024] holds 1.07 MiB of values, W4 [2100, 1024] 1.03 MiB; A
    // [300, 1024] f32 (1.2 MiB) and C force M windows too.
    for ctx in [common::small_bindings(), common::small_bindings_gpu_kernels()] {
        for (scheme, n) in [(QuantScheme::W8, 1100), (QuantScheme::W4, 2100), (QuantScheme::Q4_1, 2100)] {
            let k = 1024;
            let w = rand_vec(n * k, 3);
            let (tw, deq) = upload(&ctx, scheme, &w, n, k);
            let bias = rand_vec(n, 4);
            let tb = Tensor::from_f32(&ctx, &[n], &bias).unwrap();
            for m in [1, 300] {
                let a = rand_vec(m * k, 5);
                let ta = Tensor::from_f32(&ctx, &[m, k], &a).unwrap();
                let mut rec = Recorder::new(&ctx);
                let c = qmatmul(&mut rec, &ta, &tw, Some(&tb)).unwrap();
                assert!(rec.len() > 1, "expected several windows");
                rec.submit().unwrap();
                let want = reference::qmatmul::qmatmul(&a, k, &deq, n, Some(&bias));
                // K = 1024: twice the K of the tolerance argument above.
                assert_close(&c.to_vec_f32().unwrap(), &want, 2.0 * ATOL, RTOL, &format!("windowed {} m{m}", scheme.name()));
            }
        }
    }
}

#[test]
fn gguf_blocks_are_read_as_stored() {
    let n = 2;
    // Q4_0: d = 0.5; byte j = (j & 15) | (15 − j) << 4: element j (< 16) = (j − 8)·d,
    // element 16 + j = (15 − j − 8)·d.
    let mut q4_0 = Vec::new();
    let mut want = Vec::new();
    for r in 0..n {
        q4_0.extend_from_slice(&half::f16::from_f32(0.5 * (r + 1) as f32).to_le_bytes());
        q4_0.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let d = 0.5 * (r + 1) as f32;
        want.extend((0..16).map(|j| (j as f32 - 8.0) * d));
        want.extend((0..16).map(|j| ((15 - j) as f32 - 8.0) * d));
    }
    let p = PackedWeights::from_gguf_blocks(QuantScheme::Q4_0, &[n, 32], &q4_0).unwrap();
    assert_eq!(p.dequantize(), want);
    assert_eq!(p.to_gguf_blocks().unwrap(), q4_0);
    // Q4_1: d = 0.25, m = −1: q·d + m.
    let mut q4_1 = half::f16::from_f32(0.25).to_le_bytes().to_vec();
    q4_1.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
    q4_1.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let want: Vec<f32> = (0..16).map(|j| j as f32 * 0.25 - 1.0).chain((0..16).map(|j| (15 - j) as f32 * 0.25 - 1.0)).collect();
    assert_eq!(PackedWeights::from_gguf_blocks(QuantScheme::Q4_1, &[1, 32], &q4_1).unwrap().dequantize(), want);
    // Q8_0: d = 2, q = j − 16 (as i8).
    let mut q8_0 = half::f16::from_f32(2.0).to_le_bytes().to_vec();
    q8_0.extend((0..32i8).map(|j| (j - 16) as u8));
    let want: Vec<f32> = (0..32).map(|j| (j - 16) as f32 * 2.0).collect();
    assert_eq!(PackedWeights::from_gguf_blocks(QuantScheme::Q8_0, &[1, 32], &q8_0).unwrap().dequantize(), want);
    // And the GPU copy dequantises to the same values.
    let ctx = common::fast();
    let t = QuantTensor::from_gguf_blocks(&ctx, QuantScheme::Q8_0, &[1, 32], &q8_0).unwrap();
    assert_eq!(t.dequantize_cpu().unwrap(), want);
}

#[test]
fn quantisers_round_to_nearest_level() {
    let (n, k) = (5, 77);
    let w = rand_vec(n * k, 8);
    for scheme in [QuantScheme::W8, QuantScheme::W4, QuantScheme::W4Asym] {
        let p = PackedWeights::quantize(scheme, &w, &[n, k]).unwrap();
        let deq = p.dequantize();
        // Weights are in [-1, 1): 8-bit steps are ≤ 1/127; 4-bit steps ≤ 1/8 (symmetric, span
        // [−8d, 7d] with |d| ≤ 1/8) or ≤ 2/15 (asymmetric); rounding errs by half a step plus
        // the f16 rounding of the scale (≤ 2⁻¹¹ relative of |w| ≤ 1, times ≤ 15 steps).
        let bound = match scheme {
            QuantScheme::W8 => 0.5 / 127.0 + 1e-6,
            // (a value of the opposite sign to the extreme one may clamp at 7: a full step)
            QuantScheme::W4 => 1.0 / 8.0 + 8.0 / 2048.0,
            _ => 1.0 / 15.0 + 16.0 / 2048.0,
        };
        for (i, (&a, &b)) in w.iter().zip(&deq).enumerate() {
            assert!((a - b).abs() <= bound, "{}: element {i}: {a} -> {b}", scheme.name());
        }
    }
    // All-zero rows quantise to zeros.
    for scheme in QuantScheme::ALL {
        let p = PackedWeights::quantize(scheme, &[0.0; 64], &[2, 32]).unwrap();
        assert!(p.dequantize().iter().all(|&x| x == 0.0), "{}", scheme.name());
    }
}

#[test]
fn stacked_rows_dequantise_to_the_stacked_parts() {
    // Parts of 3, 1 and 5 rows with K = 96 (3 blocks): with two f16 scales per word, parts of
    // odd block counts end mid-word, so the stack re-pairs the scales. The result must hold
    // exactly the parts' values, in order, and a GEMV over it the parts' outputs side by side.
    let k = 96;
    let ctx = common::fast();
    for scheme in QuantScheme::ALL {
        let parts: Vec<PackedWeights> = [3, 1, 5]
            .iter()
            .enumerate()
            .map(|(i, &n)| PackedWeights::quantize(scheme, &rand_vec(n * k, 60 + i as u64), &[n, k]).unwrap())
            .collect();
        let stacked = PackedWeights::concat_rows(&parts).unwrap();
        assert_eq!((stacked.n, stacked.k), (9, k));
        let want: Vec<f32> = parts.iter().flat_map(PackedWeights::dequantize).collect();
        assert_eq!(stacked.dequantize(), want, "{}", scheme.name());
        let x = rand_vec(k, 70);
        let w = QuantTensor::upload(&ctx, &stacked).unwrap();
        let tx = Tensor::from_f32(&ctx, &[1, k], &x).unwrap();
        let mut rec = Recorder::new(&ctx);
        let y = qgemv(&mut rec, &tx, &w, None, GemvVariant::Auto).unwrap();
        rec.submit().unwrap();
        let want_y = reference::qmatmul::qmatmul(&x, k, &want, 9, None);
        assert_close(&y.to_vec_f32().unwrap(), &want_y, ATOL, RTOL, &format!("{} stacked GEMV", scheme.name()));
    }
    let (w8, w4) = (
        PackedWeights::quantize(QuantScheme::W8, &[0.5; 64], &[2, 32]).unwrap(),
        PackedWeights::quantize(QuantScheme::W4, &[0.5; 64], &[2, 32]).unwrap(),
    );
    assert!(matches!(PackedWeights::concat_rows(&[w8.clone(), w4]), Err(KestrelError::InvalidArgument { .. })), "mixed schemes");
    let mut short = w8.clone();
    short.scales.pop();
    assert!(matches!(PackedWeights::concat_rows(&[w8, short]), Err(KestrelError::InvalidArgument { .. })), "malformed part");
    assert!(matches!(PackedWeights::concat_rows(&[]), Err(KestrelError::InvalidArgument { .. })), "no parts");
}

#[test]
fn bad_inputs_are_errors() {
    let ctx = common::fast();
    // GGUF schemes need K a multiple of 32: a typed shape error.
    for scheme in [QuantScheme::Q4_0, QuantScheme::Q4_1, QuantScheme::Q8_0] {
        let r = PackedWeights::quantize(scheme, &[0.5; 33 * 2], &[2, 33]);
        assert!(matches!(r, Err(KestrelError::Shape { .. })), "{}: {r:?}", scheme.name());
        let r = QuantTensor::from_gguf_blocks(&ctx, scheme, &[1, 33], &[0; 40]);
        assert!(matches!(r, Err(KestrelError::Shape { .. })), "{}", scheme.name());
        // Wrong byte count.
        assert!(QuantTensor::from_gguf_blocks(&ctx, scheme, &[2, 32], &[0; 20]).is_err());
    }
    assert!(QuantTensor::from_gguf_blocks(&ctx, QuantScheme::W8, &[1, 32], &[0; 64]).is_err());
    assert_eq!(WeightDType::F16.gguf_scheme(), None);
    assert_eq!(WeightDType::Q4_1.gguf_scheme(), Some(QuantScheme::Q4_1));
    assert!(PackedWeights::quantize(QuantScheme::W4, &[1.0; 6], &[2, 4]).is_err());
    assert!(PackedWeights::quantize(QuantScheme::W4, &[1.0; 8], &[8]).is_err());
    assert!(PackedWeights::quantize(QuantScheme::W4, &[1.0; 0], &[0, 4]).is_err());
    assert!(PackedWeights::quantize(QuantScheme::W8, &[f32::NAN; 4], &[1, 4]).is_err());
    assert!(PackedWeights::quantize(QuantScheme::Q8_0, &[1e9; 32], &[1, 32]).is_err());
    assert!(PackedWeights::to_gguf_blocks(&PackedWeights::quantize(QuantScheme::W8, &[1.0; 4], &[1, 4]).unwrap()).is_err());

    let w = QuantTensor::quantize(&ctx, QuantScheme::W4, &rand_vec(6 * 40, 1), &[6, 40]).unwrap();
    let mut rec = Recorder::new(&ctx);
    let x_bad = Tensor::from_f32(&ctx, &[39], &[0.0; 39]).unwrap();
    let x2 = Tensor::from_f32(&ctx, &[2, 40], &[0.0; 80]).unwrap();
    let x16 = Tensor::from_f32_as(&ctx, &[40], &[0.0; 40], kestrel::DType::F16).unwrap();
    let bias_bad = Tensor::from_f32(&ctx, &[5], &[0.0; 5]).unwrap();
    let x = Tensor::from_f32(&ctx, &[40], &[0.0; 40]).unwrap();
    assert!(matches!(qgemv(&mut rec, &x_bad, &w, None, GemvVariant::Auto), Err(KestrelError::Shape { .. })));
    assert!(matches!(qgemv(&mut rec, &x2, &w, None, GemvVariant::Auto), Err(KestrelError::Shape { .. })));
    assert!(matches!(qgemv(&mut rec, &x16, &w, None, GemvVariant::Auto), Err(KestrelError::UnsupportedDtype { .. })));
    assert!(matches!(qgemv(&mut rec, &x, &w, Some(&bias_bad), GemvVariant::Auto), Err(KestrelError::Shape { .. })));
    assert!(matches!(qmatmul(&mut rec, &x_bad, &w, None), Err(KestrelError::Shape { .. })));
    assert!(matches!(qmatmul(&mut rec, &x16, &w, None), Err(KestrelError::UnsupportedDtype { .. })));
    assert!(matches!(qmatmul(&mut rec, &x2, &w, Some(&bias_bad)), Err(KestrelError::Shape { .. })));
    assert!(rec.is_empty());

    let fb = common::fallback();
    let w = QuantTensor::quantize(&fb, QuantScheme::W8, &[1.0; 8], &[2, 4]).unwrap();
    let x = Tensor::from_f32(&fb, &[4], &[1.0; 4]).unwrap();
    let mut rec = Recorder::new(&fb);
    assert!(qgemv(&mut rec, &x, &w, None, GemvVariant::Subgroup).is_err());
}

#[test]
fn texture_storage_round_trips() {
    // Values and scales spanning several texture rows, the last one partial.
    let ctx = common::gpu_kernels_textures();
    for (scheme, n, k) in [(QuantScheme::W4Asym, 577, 600), (QuantScheme::Q8_0, 300, 96), (QuantScheme::W8, 5000, 3)] {
        let packed = PackedWeights::quantize(scheme, &rand_vec(n * k, 11), &[n, k]).unwrap();
        let t = QuantTensor::upload(&ctx, &packed).unwrap();
        assert!(matches!(t.storage(), QuantStorage::Textures { .. }), "{}", scheme.name());
        assert_eq!(t.download().unwrap(), packed, "{}", scheme.name());
    }
}

#[test]
fn qgemv_accumulates_in_place() {
    for (cfg, ctx) in all() {
        for (scheme, n, k) in
            [(QuantScheme::Q4_1, 197, 96), (QuantScheme::W8, 33, 197), (QuantScheme::Q8_0, 577, 64), (QuantScheme::W4, 64, 64)]
        {
            let w = rand_vec(n * k, 21);
            let x = rand_vec(k, 22);
            let r = rand_vec(n, 23);
            let b = rand_vec(n, 24);
            let (tw, deq) = upload(&ctx, scheme, &w, n, k);
            let mut want = reference::qmatmul::qmatmul(&x, k, &deq, n, Some(&b));
            for (w, r) in want.iter_mut().zip(&r) {
                *w += r;
            }
            let tx = Tensor::from_f32(&ctx, &[1, k], &x).unwrap();
            let tb = Tensor::from_f32(&ctx, &[n], &b).unwrap();
            for v in gemv_variants(&ctx) {
                let tr = Tensor::from_f32(&ctx, &[1, n], &r).unwrap();
                let mut rec = Recorder::new(&ctx);
                qgemv_accumulate(&mut rec, &tx, &tw, Some(&tb), v, &tr).unwrap();
                rec.submit().unwrap();
                let what = format!("{cfg} qgemv_accumulate {v:?} {} n{n} k{k}", scheme.name());
                assert_close(&tr.to_vec_f32().unwrap(), &want, ATOL, RTOL, &what);
            }
            // An accumulator that is an operand, or of the wrong shape, is an error.
            let mut rec = Recorder::new(&ctx);
            assert!(qgemv_accumulate(&mut rec, &tx, &tw, None, GemvVariant::Auto, &tb).is_err());
            let xr = Tensor::from_f32(&ctx, &[1, n], &r).unwrap();
            if n == k {
                assert!(qgemv_accumulate(&mut rec, &xr, &tw, None, GemvVariant::Auto, &xr).is_err());
            }
        }
    }
}
