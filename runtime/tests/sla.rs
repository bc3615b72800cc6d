//! Simplified Linear Attention (SLAB) vs the CPU reference: fused and separate projections,
//! column views, batches of sequences, fewer keys than queries (interpolated conv input), every
//! kernel size and head-dimension capacity, chunked and single-chunk KV passes.

mod common;

use std::sync::Arc;

use common::{all_with_cpu_plain, assert_close, rand_vec};
use kestrel::ops::columns::Columns;
use kestrel::ops::sla::{SlaOptions, sla, sla_columns, sla_fused};
use kestrel::reference::sla::SlaShape;
use kestrel::{Context, DType, KestrelError, Recorder, Tensor, reference};

// Tolerance. Each output is a ratio of two f32 sums over the Nk ≤ 3136 key tokens
// (Σ_j (q'·k'_j) v_j over Σ_j q'·k'_j, non-negative weights, |v| < 1, so the attention term
// is a weighted mean of values in (−1, 1)) plus a ≤ 49-tap convolution of O(1) terms. The sums
// run over chunk partials of ≤ a few hundred terms each; with rounding errors of random sign
// the absolute error is ~√Nk·2⁻²⁴ ≈ 4e-6 at Nk = 3136 (the worst-case bound Nk·2⁻²⁴ ≈ 2e-4
// is never approached), so: 2e-5 absolute plus 1e-4 relative.
const ATOL: f32 = 2e-5;
const RTOL: f32 = 1e-4;

fn upload(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, shape, data).unwrap()
}

/// Columns `[offset, offset + count)` of a row-major `[rows, width]` array, as a contiguous copy.
fn cols(data: &[f32], width: usize, offset: usize, count: usize) -> Vec<f32> {
    data.chunks(width).flat_map(|r| r[offset..offset + count].iter().copied()).collect()
}

/// One SLA problem: sizes, and whether a positional encoding is used.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    d: usize,
    height: usize,
    width: usize,
    nk: usize,
    ksize: usize,
    pos: bool,
}

impl Case {
    fn new(height: usize, width: usize, heads: usize, d: usize) -> Case {
        Case { batch: 1, heads, d, height, width, nk: height * width, ksize: 5, pos: true }
    }

    fn shape(&self) -> SlaShape {
        SlaShape {
            batch: self.batch,
            heads: self.heads,
            head_dim: self.d,
            height: self.height,
            width: self.width,
            kv_tokens: self.nk,
            ksize: self.ksize,
        }
    }
}

/// Host data of a case: q `[B·N, C]`, k and v `[B·Nk, C]`, pos `[Nk, C]`, weights `[d, K·K]`,
/// bias `[d]`.
struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    pos: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

fn data(case: &Case, seed: u64) -> Data {
    let c = case.heads * case.d;
    let n = case.height * case.width;
    Data {
        q: rand_vec(case.batch * n * c, seed),
        k: rand_vec(case.batch * case.nk * c, seed + 1),
        v: rand_vec(case.batch * case.nk * c, seed + 2),
        pos: rand_vec(case.nk * c, seed + 3).iter().map(|x| 0.5 * x).collect(),
        w: rand_vec(case.d * case.ksize * case.ksize, seed + 4).iter().map(|x| 0.2 * x).collect(),
        b: rand_vec(case.d, seed + 5).iter().map(|x| 0.1 * x).collect(),
    }
}

fn want(case: &Case, x: &Data) -> Vec<f32> {
    reference::sla::sla(&x.q, &x.k, &x.v, case.pos.then_some(x.pos.as_slice()), &x.w, &x.b, &case.shape())
}

/// Uploads the conv weights (as `[d, 1, K, K]`), bias and pos of a case.
fn params(ctx: &Arc<Context>, case: &Case, x: &Data) -> (Tensor, Tensor, Tensor) {
    let c = case.heads * case.d;
    (upload(ctx, &[case.d, 1, case.ksize, case.ksize], &x.w), upload(ctx, &[case.d], &x.b), upload(ctx, &[case.nk, c], &x.pos))
}

fn opts<'a>(case: &Case, w: &'a Tensor, b: &'a Tensor, pos: &'a Tensor) -> SlaOptions<'a> {
    SlaOptions { heads: case.heads, pos: case.pos.then_some(pos), dwc_weight: w, dwc_bias: b, height: case.height, width: case.width }
}

/// Runs `case` through [`sla_fused`] on a `[B·N, 3C]` projection (needs Nk = N).
fn check_fused(ctx: &Arc<Context>, cfg: &str, case: &Case, seed: u64) {
    let x = data(case, seed);
    let c = case.heads * case.d;
    let rows = case.batch * case.height * case.width;
    let qkv: Vec<f32> =
        (0..rows).flat_map(|r| [&x.q, &x.k, &x.v].into_iter().flat_map(move |t| t[r * c..(r + 1) * c].iter().copied())).collect();
    let tqkv = upload(ctx, &[rows, 3 * c], &qkv);
    let (w, b, pos) = params(ctx, case, &x);
    let mut rec = Recorder::new(ctx);
    let out = sla_fused(&mut rec, &tqkv, &opts(case, &w, &b, &pos)).unwrap();
    rec.submit().unwrap();
    assert_eq!(out.shape(), [rows, c]);
    assert_close(&out.to_vec_f32().unwrap(), &want(case, &x), ATOL, RTOL, &format!("{cfg} fused {case:?}"));
}

#[test]
fn fused_qkv_matches_reference() {
    let mut cases = vec![
        Case::new(1, 1, 1, 16),
        Case::new(1, 7, 2, 7),
        Case::new(7, 7, 3, 32),
        Case::new(14, 14, 3, 64),
        Case { pos: false, ..Case::new(3, 11, 12, 16) },
        Case { batch: 3, ..Case::new(7, 7, 2, 32) },
        Case::new(1, 197, 1, 16),
        Case::new(1, 577, 1, 24),
        Case { batch: 2, ..Case::new(5, 9, 1, 1) },
    ];
    // The first SLAB-Swin stage (56×56 tokens, 3 heads of 32): one image, many KV chunks.
    cases.push(Case::new(56, 56, 3, 32));
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, case) in cases.iter().enumerate() {
            check_fused(&ctx, cfg, case, 100 + 10 * i as u64);
        }
    }
}

#[test]
fn long_sequence_in_one_head() {
    // 16384 tokens in one head of 64: 16 KV chunks even on a CPU adapter (chunks hold ≤ 1024
    // tokens, bounding each invocation's loop iterations: llvmpipe silently ends an
    // invocation's loops after 65535 in total). One configuration: it is the slowest case.
    let ctx = common::fast();
    check_fused(&ctx, "fast", &Case::new(128, 128, 1, 64), 900);
}

#[test]
fn separate_q_and_kv_projection_with_fewer_keys() {
    // PVT: q from its own linear, k | v from a [Nk, 2C] one; with spatial reduction Nk < N and v
    // is interpolated to N tokens for the conv. Also Nk > N (downsampling) and Nk = 1.
    let cases = [
        Case { nk: 16, ..Case::new(7, 7, 2, 32) },
        Case { nk: 49, ..Case::new(14, 14, 1, 64) },
        Case { nk: 1, ..Case::new(8, 8, 1, 16) },
        Case { nk: 20, batch: 2, ..Case::new(3, 3, 2, 8) },
        Case { nk: 49, pos: false, ..Case::new(7, 7, 5, 64) },
    ];
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, case) in cases.iter().enumerate() {
            let x = data(case, 300 + 10 * i as u64);
            let c = case.heads * case.d;
            let kv: Vec<f32> = (0..case.batch * case.nk)
                .flat_map(|r| x.k[r * c..(r + 1) * c].iter().chain(&x.v[r * c..(r + 1) * c]).copied().collect::<Vec<_>>())
                .collect();
            let tq = upload(&ctx, &[case.batch, case.height * case.width, c], &x.q);
            let tkv = upload(&ctx, &[case.batch * case.nk, 2 * c], &kv);
            let (w, b, pos) = params(&ctx, case, &x);
            let mut rec = Recorder::new(&ctx);
            let (k, v) = (Columns::range(&tkv, 0, c), Columns::range(&tkv, c, c));
            let out = sla_columns(&mut rec, Columns::all(&tq), k, v, &opts(case, &w, &b, &pos)).unwrap();
            rec.submit().unwrap();
            assert_eq!(out.shape(), [case.batch, case.height * case.width, c]);
            assert_close(&out.to_vec_f32().unwrap(), &want(case, &x), ATOL, RTOL, &format!("{cfg} q+kv {case:?}"));
        }
    }
}

#[test]
fn column_ranges_inside_wider_rows() {
    // CSWin's two branches each read half of q, k and v out of one [N, 3C] projection; here the
    // second half: columns C/2.., C + C/2.., 2C + C/2.. (offsets not multiples of 4).
    let case = Case::new(6, 6, 2, 6);
    let half = case.heads * case.d;
    let c = 2 * half;
    let n = case.height * case.width;
    let qkv = rand_vec(n * 3 * c, 500);
    let x = Data {
        q: cols(&qkv, 3 * c, half, half),
        k: cols(&qkv, 3 * c, c + half, half),
        v: cols(&qkv, 3 * c, 2 * c + half, half),
        ..data(&case, 510)
    };
    for (cfg, ctx) in all_with_cpu_plain() {
        let t = upload(&ctx, &[n, 3 * c], &qkv);
        let (w, b, pos) = params(&ctx, &case, &x);
        let mut rec = Recorder::new(&ctx);
        let (q, k, v) = (Columns::range(&t, half, half), Columns::range(&t, c + half, half), Columns::range(&t, 2 * c + half, half));
        let out = sla_columns(&mut rec, q, k, v, &opts(&case, &w, &b, &pos)).unwrap();
        rec.submit().unwrap();
        assert_close(&out.to_vec_f32().unwrap(), &want(&case, &x), ATOL, RTOL, &format!("{cfg} half columns"));
    }
}

#[test]
fn kernel_sizes_and_weight_layouts() {
    // K = 1, 3, 5, 7 (the official default is 5; SLAB's `kernel_size` option changes it), with
    // the weights given as [d, 1, K, K], [d, K, K] and [d, K·K]; a 1×1 conv on a 1-token image.
    let cases = [
        Case { ksize: 1, ..Case::new(1, 1, 2, 16) },
        Case { ksize: 3, ..Case::new(4, 9, 2, 16) },
        Case { ksize: 7, ..Case::new(9, 4, 1, 32) },
        Case { ksize: 7, ..Case::new(2, 2, 1, 32) },
    ];
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, case) in cases.iter().enumerate() {
            let x = data(case, 700 + 10 * i as u64);
            let c = case.heads * case.d;
            let n = case.height * case.width;
            let (q, k, v) = (upload(&ctx, &[n, c], &x.q), upload(&ctx, &[n, c], &x.k), upload(&ctx, &[n, c], &x.v));
            let (_, b, pos) = params(&ctx, case, &x);
            let kk = case.ksize;
            for wshape in [vec![case.d, 1, kk, kk], vec![case.d, kk, kk], vec![case.d, kk * kk]] {
                let w = upload(&ctx, &wshape, &x.w);
                let mut rec = Recorder::new(&ctx);
                let out = sla(&mut rec, &q, &k, &v, &opts(case, &w, &b, &pos)).unwrap();
                rec.submit().unwrap();
                assert_close(&out.to_vec_f32().unwrap(), &want(case, &x), ATOL, RTOL, &format!("{cfg} {case:?} w{wshape:?}"));
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let t = |shape: &[usize]| upload(&ctx, shape, &vec![0.0; shape.iter().product()]);
    let (q, k, v) = (t(&[49, 64]), t(&[49, 64]), t(&[49, 64]));
    let (w, b, pos) = (t(&[32, 1, 5, 5]), t(&[32]), t(&[49, 64]));
    let good = SlaOptions { heads: 2, pos: Some(&pos), dwc_weight: &w, dwc_bias: &b, height: 7, width: 7 };
    let run = |q: &Tensor, k: &Tensor, v: &Tensor, o: &SlaOptions| {
        let mut rec = Recorder::new(&ctx);
        sla(&mut rec, q, k, v, o)
    };
    assert!(run(&q, &k, &v, &good).is_ok());
    let shape_err = |r: kestrel::Result<Tensor>| matches!(r, Err(KestrelError::Shape { .. }));
    // Heads that do not divide the channels; a head dimension the kernels lack.
    assert!(shape_err(run(&q, &k, &v, &SlaOptions { heads: 3, ..good })));
    assert!(shape_err(run(&q, &k, &v, &SlaOptions { heads: 0, ..good })));
    let (w128, b128, q128) = (t(&[128, 1, 5, 5]), t(&[128]), t(&[49, 128]));
    let big = SlaOptions { heads: 1, pos: None, dwc_weight: &w128, dwc_bias: &b128, ..good };
    assert!(matches!(run(&q128, &q128, &q128, &big), Err(KestrelError::InvalidArgument { .. })));
    // Token image that does not match q's rows; k and v of different lengths.
    assert!(shape_err(run(&q, &k, &v, &SlaOptions { height: 6, ..good })));
    assert!(shape_err(run(&q, &k, &v, &SlaOptions { width: 0, ..good })));
    let short = t(&[48, 64]);
    assert!(shape_err(run(&q, &short, &v, &SlaOptions { pos: None, ..good })));
    // Mismatched channels.
    let narrow = t(&[49, 32]);
    assert!(shape_err(run(&q, &narrow, &narrow, &good)));
    // Conv weights of the wrong head dimension, non-square, even-sized; a wrong bias; wrong pos.
    for bad in [t(&[16, 1, 5, 5]), t(&[32, 1, 5, 3]), t(&[32, 24]), t(&[32, 5])] {
        assert!(shape_err(run(&q, &k, &v, &SlaOptions { dwc_weight: &bad, ..good })), "{bad:?}");
    }
    let even = t(&[32, 1, 4, 4]);
    assert!(matches!(run(&q, &k, &v, &SlaOptions { dwc_weight: &even, ..good }), Err(KestrelError::InvalidArgument { .. })));
    let b_bad = t(&[64]);
    assert!(shape_err(run(&q, &k, &v, &SlaOptions { dwc_bias: &b_bad, ..good })));
    let pos_bad = t(&[48, 64]);
    assert!(shape_err(run(&q, &k, &v, &SlaOptions { pos: Some(&pos_bad), ..good })));
    // f16 operands.
    let q16 = Tensor::from_f32_as_f16(&ctx, &[49, 64], &[0.0; 49 * 64]).unwrap();
    assert!(matches!(run(&q16, &k, &v, &good), Err(KestrelError::UnsupportedDtype { dtype: DType::F16, .. })));
    // Column ranges outside the rows; a fused width that is not 3C; rank-1 operands.
    let mut rec = Recorder::new(&ctx);
    let outside = Columns::range(&q, 40, 32);
    assert!(shape_err(sla_columns(&mut rec, outside, Columns::all(&k), Columns::all(&v), &good)));
    let qkv_bad = t(&[49, 190]);
    assert!(shape_err(sla_fused(&mut rec, &qkv_bad, &good)));
    let flat = t(&[49 * 64]);
    assert!(shape_err(run(&flat, &flat, &flat, &good)));
}
