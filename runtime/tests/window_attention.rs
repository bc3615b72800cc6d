//! Window softmax attention (Swin W-MSA / SW-MSA with relative-position bias and shift mask;
//! global attention as one window) vs the CPU reference: awkward window sizes and head
//! dimensions, fused and separate projections, fewer keys than queries, masked rows, errors.

mod common;

use std::sync::Arc;

use common::{all_with_cpu_plain, assert_close, rand_vec};
use kestrel::ops::columns::Columns;
use kestrel::ops::window_attention::{MAX_KEYS, WindowAttentionOptions, window_attention, window_attention_columns};
use kestrel::reference::window_attention::WindowShape;
use kestrel::{Context, DType, KestrelError, Recorder, Tensor, reference};

// Tolerance. Each output is a convex combination of values |v| ≤ `amp` (the data scale): the
// softmax weights carry exp's error (Vulkan: ≤ 3 + 2|x| ulp, |x| ≲ 30 here, so ≲ 4e-6
// relative) and f32 sums over ≤ 1100 keys (rounding of random sign, ~√Tk·2⁻²⁴ ≈ 2e-6); the
// online rescaling adds a few ulp. So 1e-5·amp absolute plus 1e-5 relative.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;

fn upload(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, shape, data).unwrap()
}

/// Columns `[offset, offset + count)` of a row-major array of rows `width` wide, contiguous.
fn cols(data: &[f32], width: usize, offset: usize, count: usize) -> Vec<f32> {
    data.chunks(width).flat_map(|r| r[offset..offset + count].iter().copied()).collect()
}

/// Swin's shift mask for an `h × w` token image in `ws × ws` windows shifted by `shift`:
/// `[nW, ws², ws²]`, 0 where both tokens come from the same region of the rolled image, −100
/// elsewhere (as `SwinTransformerBlock.__init__` builds it).
fn swin_mask(h: usize, w: usize, ws: usize, shift: usize) -> Vec<f32> {
    let region = |x: usize, n: usize| {
        if x < n - ws {
            0
        } else if x < n - shift {
            1
        } else {
            2
        }
    };
    let t = ws * ws;
    let mut out = Vec::new();
    for wy in 0..h / ws {
        for wx in 0..w / ws {
            let id: Vec<usize> = (0..t).map(|i| region(wy * ws + i / ws, h) * 3 + region(wx * ws + i % ws, w)).collect();
            for i in 0..t {
                for j in 0..t {
                    out.push(if id[i] == id[j] { 0.0 } else { -100.0 });
                }
            }
        }
    }
    out
}

/// A fused-qkv case: windows, tokens per window, heads, head dimension, data scale, and the
/// bias / mask (with its window count) to add.
struct Case {
    windows: usize,
    t: usize,
    heads: usize,
    d: usize,
    amp: f32,
    bias: bool,
    mask: Option<(Vec<f32>, usize)>,
}

fn case(windows: usize, t: usize, heads: usize, d: usize) -> Case {
    Case { windows, t, heads, d, amp: 1.0, bias: false, mask: None }
}

fn check_fused(ctx: &Arc<Context>, cfg: &str, c: &Case, seed: u64) {
    let ch = c.heads * c.d;
    let rows = c.windows * c.t;
    let qkv: Vec<f32> = rand_vec(rows * 3 * ch, seed).iter().map(|x| c.amp * x).collect();
    let bias = rand_vec(c.heads * c.t * c.t, seed + 1).iter().map(|x| 2.0 * x).collect::<Vec<f32>>();
    let tqkv = upload(ctx, &[rows, 3 * ch], &qkv);
    let tb = c.bias.then(|| upload(ctx, &[c.heads, c.t, c.t], &bias));
    let tm = c.mask.as_ref().map(|(m, nm)| upload(ctx, &[*nm, c.t, c.t], m));
    let scale = (c.d as f32).powf(-0.5);
    let opts = WindowAttentionOptions { heads: c.heads, window_tokens: c.t, scale };
    let mut rec = Recorder::new(ctx);
    let out = window_attention(&mut rec, &tqkv, tb.as_ref(), tm.as_ref(), &opts).unwrap();
    rec.submit().unwrap();
    assert_eq!(out.shape(), [rows, ch]);
    let shape = WindowShape { windows: c.windows, heads: c.heads, head_dim: c.d, tq: c.t, tk: c.t };
    let (q, k, v) = (cols(&qkv, 3 * ch, 0, ch), cols(&qkv, 3 * ch, ch, ch), cols(&qkv, 3 * ch, 2 * ch, ch));
    let mask = c.mask.as_ref().map(|(m, nm)| (m.as_slice(), *nm));
    let want = reference::window_attention::window_attention(&q, &k, &v, c.bias.then_some(bias.as_slice()), mask, scale, &shape);
    let what = format!("{cfg} nW{} T{} h{} d{} bias {} mask {:?}", c.windows, c.t, c.heads, c.d, c.bias, c.mask.as_ref().map(|m| m.1));
    assert_close(&out.to_vec_f32().unwrap(), &want, ATOL * c.amp, RTOL, &what);
}

#[test]
fn swin_windows_with_bias_and_shift_mask() {
    // A 14×14 stage in 7×7 windows shifted by 3 (SLAB-Swin stage 3: heads of 32), one image and
    // a batch of two (windows 4..8 reuse masks 0..4); and the unshifted block (bias only).
    let mask = swin_mask(14, 14, 7, 3);
    for (cfg, ctx) in all_with_cpu_plain() {
        let shifted = Case { bias: true, mask: Some((mask.clone(), 4)), ..case(4, 49, 3, 32) };
        check_fused(&ctx, cfg, &shifted, 10);
        check_fused(&ctx, cfg, &Case { windows: 8, amp: 3.0, ..shifted }, 20);
        check_fused(&ctx, cfg, &Case { bias: true, ..case(4, 49, 12, 32) }, 30);
    }
}

#[test]
fn awkward_windows_and_head_dimensions() {
    // Window sizes 1, 7, 33, 197 (DeiT's global attention), 577 (several key tiles, and split
    // queries); head dimensions 1, 7 (not a multiple of 4), 16, 24, 64; heads 1..12; every
    // bias / mask combination; sharp logits (amp 3).
    let mut cases = vec![
        case(1, 1, 1, 16),
        Case { bias: true, ..case(3, 7, 2, 7) },
        Case {
            mask: Some((rand_vec(2 * 33 * 33, 5).iter().map(|x| if *x < 0.0 { -100.0 } else { 0.0 }).collect(), 2)),
            ..case(4, 33, 12, 1)
        },
        Case { bias: true, mask: Some((rand_vec(33 * 33, 6), 1)), amp: 3.0, ..case(2, 33, 3, 24) },
        Case { amp: 3.0, ..case(1, 197, 3, 64) },
        Case { bias: true, ..case(1, 577, 1, 64) },
    ];
    cases.push(Case { amp: 3.0, ..case(1, 577, 2, 16) });
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, c) in cases.iter().enumerate() {
            check_fused(&ctx, cfg, c, 100 + 10 * i as u64);
        }
    }
}

#[test]
fn separate_projections_with_fewer_or_more_keys() {
    // PVT's attention: q from one linear, k | v from a [Tk, 2C] one over spatially reduced
    // tokens (Tk < Tq), per window; also Tk > Tq with many keys per query, split over up to 32
    // invocations (the host bounds the keys per invocation: llvmpipe silently ends an
    // invocation's loops after 65535 iterations in total).
    let cases = [(1, 49, 7, 2, 32), (2, 33, 5, 1, 64), (1, 7, 1100, 1, 16), (3, 1, 50, 2, 8), (1, 4, 4096, 1, 64)];
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, &(windows, tq, tk, heads, d)) in cases.iter().enumerate() {
            let ch = heads * d;
            let seed = 300 + 10 * i as u64;
            let q: Vec<f32> = rand_vec(windows * tq * ch, seed).iter().map(|x| 2.0 * x).collect();
            let kv = rand_vec(windows * tk * 2 * ch, seed + 1);
            let bias = rand_vec(heads * tq * tk, seed + 2);
            let (tq_t, tkv) = (upload(&ctx, &[windows, tq, ch], &q), upload(&ctx, &[windows * tk, 2 * ch], &kv));
            let tb = upload(&ctx, &[heads, tq, tk], &bias);
            let opts = WindowAttentionOptions { heads, window_tokens: tq, scale: 0.3 };
            let mut rec = Recorder::new(&ctx);
            let (k, v) = (Columns::range(&tkv, 0, ch), Columns::range(&tkv, ch, ch));
            let out = window_attention_columns(&mut rec, Columns::all(&tq_t), k, v, Some(&tb), None, &opts).unwrap();
            rec.submit().unwrap();
            assert_eq!(out.shape(), [windows, tq, ch]);
            let shape = WindowShape { windows, heads, head_dim: d, tq, tk };
            let (kh, vh) = (cols(&kv, 2 * ch, 0, ch), cols(&kv, 2 * ch, ch, ch));
            let want = reference::window_attention::window_attention(&q, &kh, &vh, Some(&bias), None, 0.3, &shape);
            assert_close(&out.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("{cfg} nW{windows} Tq{tq} Tk{tk} h{heads} d{d}"));
        }
    }
}

#[test]
fn fully_masked_queries_output_zeros() {
    // −inf on every key of some queries (and on some keys of others): those queries give zeros,
    // not NaN; the rest ignore their −inf keys. Windows of 7 and of 577 (split queries).
    for (cfg, ctx) in all_with_cpu_plain() {
        for &(t, d) in &[(7usize, 16usize), (577, 32)] {
            let mut mask = vec![0.0f32; t * t];
            for (i, row) in mask.chunks_mut(t).enumerate() {
                for (j, m) in row.iter_mut().enumerate() {
                    if i % 3 == 0 || (i + j) % 4 == 0 {
                        *m = f32::NEG_INFINITY;
                    }
                }
            }
            check_fused(&ctx, cfg, &Case { mask: Some((mask, 1)), bias: true, ..case(1, t, 1, d) }, 400 + t as u64);
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let t = |shape: &[usize]| upload(&ctx, shape, &vec![0.0; shape.iter().product()]);
    let qkv = t(&[98, 192]);
    let opts = WindowAttentionOptions { heads: 2, window_tokens: 49, scale: 0.2 };
    let run = |qkv: &Tensor, bias: Option<&Tensor>, mask: Option<&Tensor>, o: &WindowAttentionOptions| {
        let mut rec = Recorder::new(&ctx);
        window_attention(&mut rec, qkv, bias, mask, o)
    };
    let (bias, mask) = (t(&[2, 49, 49]), t(&[2, 49, 49]));
    assert!(run(&qkv, Some(&bias), Some(&mask), &opts).is_ok());
    let shape_err = |r: kestrel::Result<Tensor>| matches!(r, Err(KestrelError::Shape { .. }));
    // Width not 3C; heads not dividing C; rows not whole windows.
    assert!(shape_err(run(&t(&[98, 190]), None, None, &opts)));
    assert!(shape_err(run(&qkv, None, None, &WindowAttentionOptions { heads: 5, ..opts })));
    assert!(shape_err(run(&qkv, None, None, &WindowAttentionOptions { heads: 0, ..opts })));
    assert!(shape_err(run(&qkv, None, None, &WindowAttentionOptions { window_tokens: 50, ..opts })));
    assert!(shape_err(run(&qkv, None, None, &WindowAttentionOptions { window_tokens: 0, ..opts })));
    // Bias of the wrong shape; mask of the wrong shape or a window count not dividing nW.
    assert!(shape_err(run(&qkv, Some(&t(&[1, 49, 49])), None, &opts)));
    assert!(shape_err(run(&qkv, None, Some(&t(&[2, 49, 48])), &opts)));
    assert!(shape_err(run(&qkv, None, Some(&t(&[3, 49, 49])), &opts)));
    // Head dimension past the kernels' 64; a non-finite scale; too many keys.
    let wide = t(&[49, 3 * 130]);
    assert!(matches!(run(&wide, None, None, &WindowAttentionOptions { heads: 1, ..opts }), Err(KestrelError::InvalidArgument { .. })));
    assert!(matches!(
        run(&qkv, None, None, &WindowAttentionOptions { scale: f32::NAN, ..opts }),
        Err(KestrelError::InvalidArgument { .. })
    ));
    let long = t(&[MAX_KEYS + 1, 3]);
    assert!(matches!(
        run(&long, None, None, &WindowAttentionOptions { heads: 1, window_tokens: MAX_KEYS + 1, ..opts }),
        Err(KestrelError::InvalidArgument { .. })
    ));
    // f16 input, f16 bias.
    let q16 = Tensor::from_f32_as_f16(&ctx, &[98, 192], &[0.0; 98 * 192]).unwrap();
    assert!(matches!(run(&q16, None, None, &opts), Err(KestrelError::UnsupportedDtype { dtype: DType::F16, .. })));
    let b16 = Tensor::from_f32_as_f16(&ctx, &[2, 49, 49], &[0.0; 2 * 49 * 49]).unwrap();
    assert!(matches!(run(&qkv, Some(&b16), None, &opts), Err(KestrelError::UnsupportedDtype { .. })));
    // Separate projections: channel counts that differ; k and v of different lengths.
    let mut rec = Recorder::new(&ctx);
    let (q, kv) = (t(&[49, 64]), t(&[7, 128]));
    let r =
        window_attention_columns(&mut rec, Columns::all(&q), Columns::range(&kv, 0, 32), Columns::range(&kv, 64, 64), None, None, &opts);
    assert!(shape_err(r));
    let v_short = t(&[6, 64]);
    let r = window_attention_columns(&mut rec, Columns::all(&q), Columns::range(&kv, 0, 64), Columns::all(&v_short), None, None, &opts);
    assert!(shape_err(r));
    let r =
        window_attention_columns(&mut rec, Columns::all(&q), Columns::range(&kv, 100, 64), Columns::range(&kv, 64, 64), None, None, &opts);
    assert!(shape_err(r));
}
